"""scripts/get_token.py against the local provider, through MSAL's ``http_client`` injection (no network).

The injected client is a real HTTP client that sends MSAL's requests for
https://login.microsoftonline.com to the local OidcServer instead, so discovery, the device code,
token and refresh grants all run over HTTP, and the tokens it prints are validated by the gateway's
own authenticator.
"""

from __future__ import annotations

import importlib.util
import io
import json
import stat
import threading
import webbrowser
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from gateway.auth.jwt import JwtAuthenticator, JwtConfig
from gateway.settings import Settings
from tests.fixtures.auth import CLIENT_ID, PUBLIC_AUTHORITY, TENANT_ID, OidcServer, browser_visit

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "get_token.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("get_token", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


get_token = load_script()


class RedirectingTransport(httpx.AsyncBaseTransport):
    """For the gateway's authenticator: the public authority is the local provider."""

    def __init__(self, server: OidcServer) -> None:
        self.server = server
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = httpx.URL(str(request.url).replace(PUBLIC_AUTHORITY, self.server.url))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class RedirectingHttpClient:
    """MSAL's http_client: requests for the public authority go to the local provider."""

    def __init__(self, server: OidcServer) -> None:
        self.server = server
        self.client = httpx.Client(timeout=10)
        self.urls: list[str] = []

    def _url(self, url: str) -> str:
        self.urls.append(url)
        return url.replace(PUBLIC_AUTHORITY, self.server.url)

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> httpx.Response:
        return self.client.get(self._url(url), params=params, headers=headers)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> httpx.Response:
        return self.client.post(self._url(url), params=params, data=data, headers=headers)

    def close(self) -> None:
        self.client.close()


def run(server: OidcServer, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    http = RedirectingHttpClient(server)
    try:
        code = get_token.main(
            ["--tenant-id", TENANT_ID, "--client-id", CLIENT_ID, *args], http_client=http, out=out, err=err
        )
    finally:
        http.close()
    return code, out.getvalue(), err.getvalue()


def grants(server: OidcServer) -> list[str]:
    return [form.get("grant_type", "") for method, path, form in server.requests if path.endswith("/token")]


async def user_of(server: OidcServer, token: str) -> str:
    settings = Settings(auth="entra", entra_tenant_id=TENANT_ID, entra_client_id=CLIENT_ID)
    async with httpx.AsyncClient(transport=RedirectingTransport(server)) as http:
        auth = JwtAuthenticator(JwtConfig.entra(settings), http_client=http)
        await auth.start()
        try:
            return (await auth.authenticate({"authorization": f"Bearer {token}"})).user_id
        finally:
            await auth.close()


async def test_device_code_sign_in_prints_a_token_the_gateway_accepts(
    provider: OidcServer,
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache" / "tokens.json"
    provider.device_pending_polls = 1  # the user takes one polling interval to sign in
    code, out, err = run(provider, "--device-code", "--cache-file", str(cache))
    assert code == 0, err
    assert "enter the code ABCD-EFGH" in err
    token = out.strip()
    assert await user_of(provider, token) == "device-user"
    assert grants(provider) == ["urn:ietf:params:oauth:grant-type:device_code"] * 2
    device_request = next(form for _, path, form in provider.requests if path.endswith("/devicecode"))
    assert f"api://{CLIENT_ID}/.default" in device_request["scope"].split()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert json.loads(cache.read_text())["AccessToken"]


async def test_second_run_reuses_the_cached_token_without_network(
    provider: OidcServer,
    tmp_path: Path,
) -> None:
    cache = tmp_path / "tokens.json"
    code, first, _ = run(provider, "--device-code", "--cache-file", str(cache))
    assert code == 0
    seen = len(provider.requests)
    code, second, err = run(provider, "--device-code", "--cache-file", str(cache), "--header")
    assert code == 0, err
    assert second.strip() == f"Authorization: Bearer {first.strip()}"
    assert "enter the code" not in err
    # Only MSAL's metadata look-ups (tenant and instance discovery), no sign-in and no token request.
    later = {path for _, path, _ in provider.requests[seen:]}
    assert later <= {f"/{TENANT_ID}/v2.0/.well-known/openid-configuration", "/common/discovery/instance"}, later
    assert grants(provider) == ["urn:ietf:params:oauth:grant-type:device_code"]


async def test_an_expiring_cached_token_is_refreshed_silently(provider: OidcServer, tmp_path: Path) -> None:
    cache = tmp_path / "tokens.json"
    provider.token_lifetime = 120  # MSAL refreshes tokens that expire within five minutes
    code, first, _ = run(provider, "--device-code", "--cache-file", str(cache))
    assert code == 0
    code, second, err = run(provider, "--device-code", "--cache-file", str(cache))
    assert code == 0, err
    assert second.strip() != first.strip()
    assert "enter the code" not in err
    assert grants(provider) == ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
    assert await user_of(provider, second.strip()) == "device-user"


async def test_interactive_sign_in_goes_through_the_browser(
    provider: OidcServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No browser runs here; browser_visit submits the provider's form_post page to MSAL's localhost listener.
    opened: list[str] = []

    def browser(url: str, *args: Any, **kwargs: Any) -> bool:
        opened.append(url)
        rewrite = (PUBLIC_AUTHORITY, provider.url)
        threading.Thread(target=browser_visit, args=(url, rewrite), daemon=True).start()
        return True

    monkeypatch.setattr(webbrowser, "open", browser)
    provider.authorize_user = "browser-user"
    code, out, err = run(
        provider, "--cache-file", str(tmp_path / "tokens.json"), "--scope", f"api://{CLIENT_ID}/access"
    )
    assert code == 0, err
    assert opened and opened[0].startswith(f"{provider.entra_issuer}/authorize?")
    assert await user_of(provider, out.strip()) == "browser-user"
    assert grants(provider) == ["authorization_code"]


def test_missing_tenant_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCPGW_ENTRA_TENANT_ID", raising=False)
    err = io.StringIO()
    assert get_token.main(["--client-id", CLIENT_ID], out=io.StringIO(), err=err) == 2
    assert "--tenant-id" in err.getvalue()


def test_declined_sign_in_exits_1_with_the_providers_error(provider: OidcServer) -> None:
    provider.device_declined = True
    code, out, err = run(provider, "--no-cache", "--device-code")
    assert code == 1 and out == ""
    assert "sign-in failed: authorization_declined: the user declined" in err
