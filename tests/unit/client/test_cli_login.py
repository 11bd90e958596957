"""``mcp-gateway login`` against the local provider posing as Entra ID (MSAL's ``http_client`` injection).

The device-code sign-in writes the token cache scripts/get_token.py uses and a profile beside it;
a later command gets the token from them silently, and the gateway's authenticator accepts it.
"""

from __future__ import annotations

import argparse
import io
import json
import stat
from pathlib import Path

import pytest

from gateway.client._login import cached_token, login, profile_path
from gateway.client._msal import default_cache_path
from tests.fixtures.auth import CLIENT_ID, PUBLIC_AUTHORITY, TENANT_ID, OidcServer
from tests.unit.scripts.test_auth_get_token import RedirectingHttpClient, get_token, user_of


def login_args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "tenant_id": TENANT_ID,
        "client_id": CLIENT_ID,
        "scopes": None,
        "authority": PUBLIC_AUTHORITY,
        "account": None,
    }
    return argparse.Namespace(**(values | overrides))


async def test_login_caches_a_token_that_later_commands_send_without_a_new_sign_in(
    provider: OidcServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    http = RedirectingHttpClient(provider)
    try:
        err = io.StringIO()
        assert login(login_args(), http_client=http, err=err) == 0, err.getvalue()
        assert "enter the code ABCD-EFGH" in err.getvalue()
        profile = json.loads(profile_path().read_text())
        assert profile["tenantId"] == TENANT_ID and profile["scopes"] == [f"api://{CLIENT_ID}/.default"]
        assert stat.S_IMODE(profile_path().stat().st_mode) == 0o600
        # The same cache file as scripts/get_token.py.
        assert default_cache_path() == get_token.default_cache_path() == tmp_path / "mcp-gateway/msal-token-cache.json"

        token = cached_token(io.StringIO(), http_client=http)
    finally:
        http.close()
    assert token is not None and await user_of(provider, token) == "device-user"
    grants = [form.get("grant_type") for _, path, form in provider.requests if path.endswith("/token")]
    assert grants == ["urn:ietf:params:oauth:grant-type:device_code"] * len(grants)  # no second sign-in


def test_without_login_no_token_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cached_token(io.StringIO()) is None


def test_login_without_tenant_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    assert login(login_args(tenant_id=None), err=err) == 2
    assert "--tenant-id" in err.getvalue()
