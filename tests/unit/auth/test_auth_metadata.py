"""RFC 9728 protected-resource metadata, the 401 challenge, and the MCP SDK's OAuth discovery through them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
from litestar import Litestar, Request, Response, post
from litestar.params import FromPath
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata
from pydantic import AnyUrl

from gateway.auth.base import Authenticator
from gateway.auth.factory import build_authenticator
from gateway.auth.metadata import metadata_url, protected_resource_metadata, resource_url, www_authenticate
from gateway.auth.routes import protected_resource_router
from gateway.errors import GatewayError, Unauthenticated
from gateway.settings import Settings
from tests.fixtures.auth import (
    CLIENT_ID,
    OIDC_AUDIENCE,
    TENANT_ID,
    MemoryTokenStorage,
    OidcServer,
    bound_socket,
    serve_asgi,
)

PUBLIC = "https://mcp.example.com"


def entra(**extra: Any) -> Settings:
    return Settings(auth="entra", entra_tenant_id=TENANT_ID, entra_client_id=CLIENT_ID, **extra)


def test_challenge_points_at_the_path_inserted_metadata_of_the_called_endpoint() -> None:
    value = www_authenticate(entra(public_url=PUBLIC), "/adapters/weather/mcp")
    assert value == (
        'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/adapters/weather/mcp"'
    )


def test_challenge_carries_error_and_a_header_safe_description() -> None:
    value = www_authenticate(
        entra(public_url=PUBLIC + "/"), "/adapters/a/sse", "invalid_token", 'token audience "x" is wrong \\ é'
    )
    assert value == (
        'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/adapters/a/sse", '
        'error="invalid_token", error_description="token audience \'x\' is wrong ? ?"'
    )


def test_challenge_for_the_root_and_for_rest_routes() -> None:
    settings = entra(public_url=PUBLIC)
    assert (
        www_authenticate(settings, "/")
        == 'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource"'
    )
    assert www_authenticate(settings, "/adapters?limit=5").endswith('oauth-protected-resource/adapters"')


def test_public_url_with_a_path_prefix_inserts_well_known_after_the_host() -> None:
    settings = entra(public_url="https://example.com/gw")
    assert resource_url(settings, "/adapters/a/mcp") == "https://example.com/gw/adapters/a/mcp"
    assert metadata_url(settings, "/adapters/a/mcp") == (
        "https://example.com/.well-known/oauth-protected-resource/gw/adapters/a/mcp"
    )
    # The document served there names exactly that resource.
    assert (
        protected_resource_metadata(settings, "/gw/adapters/a/mcp")["resource"]
        == "https://example.com/gw/adapters/a/mcp"
    )


def test_dev_mode_challenge_has_no_metadata_to_point_at() -> None:
    assert www_authenticate(Settings(), "/adapters/a/mcp") == "Bearer"
    assert www_authenticate(Settings(), "/adapters/a/mcp", "invalid_request", "bad") == (
        'Bearer error="invalid_request", error_description="bad"'
    )


def test_default_origin_comes_from_host_and_port() -> None:
    settings = entra(port=8123)
    assert metadata_url(settings, "/adapters/a/mcp") == (
        "http://127.0.0.1:8123/.well-known/oauth-protected-resource/adapters/a/mcp"
    )


def harness_app(settings: Settings, authenticator: Authenticator) -> Litestar:
    """The metadata routes plus one protected MCP-shaped route that challenges the way the gateway does."""

    @post("/adapters/{name:str}/mcp", status_code=200)
    async def mcp(request: Request[Any, Any, Any], name: FromPath[str]) -> dict[str, Any]:
        identity = await authenticator.authenticate({k.lower(): v for k, v in request.headers.items()})
        return {"adapter": name, "user": identity.user_id, "roles": sorted(identity.roles)}

    def unauthenticated(request: Request[Any, Any, Any], exc: Unauthenticated) -> Response[dict[str, Any]]:
        challenge = www_authenticate(settings, request.url.path, exc.error, exc.detail)
        return Response({"detail": exc.detail}, status_code=401, headers={"WWW-Authenticate": challenge})

    def gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[dict[str, Any]]:
        return Response({"status": exc.status, "detail": exc.detail}, status_code=exc.status)

    async def startup() -> None:
        await authenticator.start()

    async def shutdown() -> None:
        await authenticator.close()

    return Litestar(
        route_handlers=[protected_resource_router(settings), mcp],
        exception_handlers={Unauthenticated: unauthenticated, GatewayError: gateway_error},
        on_startup=[startup],
        on_shutdown=[shutdown],
    )


@asynccontextmanager
async def running(settings_for: Any) -> AsyncIterator[tuple[str, Settings]]:
    sock = bound_socket()
    settings: Settings = settings_for(sock.getsockname()[1])
    async with serve_asgi(harness_app(settings, build_authenticator(settings)), sock) as url:
        yield url, settings


async def test_entra_metadata_documents_name_the_exact_endpoint(oidc_server: OidcServer) -> None:
    def settings_for(port: int) -> Settings:
        return entra(port=port, entra_authority=oidc_server.url)

    async with running(settings_for) as (url, _), httpx.AsyncClient() as client:
        r = await client.get(f"{url}/.well-known/oauth-protected-resource/adapters/weather/mcp")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.json() == {
            "resource": f"{url}/adapters/weather/mcp",
            "authorization_servers": [oidc_server.entra_issuer],
            "scopes_supported": [f"api://{CLIENT_ID}/.default"],
            "bearer_methods_supported": ["header"],
            "resource_name": "MCP Gateway",
        }
        root = (await client.get(f"{url}/.well-known/oauth-protected-resource")).json()
        assert root["resource"] == url
        # Unknown adapters get a document too: the metadata reveals nothing about what exists.
        other = await client.get(f"{url}/.well-known/oauth-protected-resource/adapters/nope/sse")
        assert other.status_code == 200 and other.json()["resource"] == f"{url}/adapters/nope/sse"


async def test_oidc_metadata_uses_the_issuer_and_configured_scopes(oidc_server: OidcServer) -> None:
    def settings_for(port: int) -> Settings:
        return Settings(
            auth="oidc",
            port=port,
            oidc_issuer=oidc_server.oidc_issuer,
            oidc_audience=OIDC_AUDIENCE,
            auth_scopes=("mcp:tools", "openid"),
            public_url="https://gw.example.net",
        )

    async with running(settings_for) as (url, _), httpx.AsyncClient() as client:
        doc = (await client.get(f"{url}/.well-known/oauth-protected-resource/adapters/a/messages")).json()
        assert doc["resource"] == "https://gw.example.net/adapters/a/messages"
        assert doc["authorization_servers"] == [oidc_server.oidc_issuer]
        assert doc["scopes_supported"] == ["mcp:tools", "openid"]


async def test_dev_mode_has_no_metadata() -> None:
    async with running(lambda port: Settings(port=port)) as (url, _), httpx.AsyncClient() as client:
        for path in ("", "/adapters/a/mcp"):
            r = await client.get(f"{url}/.well-known/oauth-protected-resource{path}")
            assert r.status_code == 404
            assert "dev auth" in r.json()["detail"]


async def test_401_carries_the_challenge_with_error_and_description(oidc_server: OidcServer) -> None:
    def settings_for(port: int) -> Settings:
        return entra(port=port, entra_authority=oidc_server.url)

    async with running(settings_for) as (url, _), httpx.AsyncClient() as client:
        r = await client.post(f"{url}/adapters/a/mcp", json={})
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == (
            f'Bearer resource_metadata="{url}/.well-known/oauth-protected-resource/adapters/a/mcp", '
            'error="invalid_request", error_description="missing bearer token: send \'Authorization: Bearer <token>\'"'
        )
        expired = oidc_server.mint(oidc_server.entra_claims(exp=1_000_000, iat=999_000, nbf=999_000))
        r = await client.post(f"{url}/adapters/a/mcp", json={}, headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401
        assert (
            'error="invalid_token", error_description="token expired at 1970-01-12T13:46:40Z"'
            in (r.headers["www-authenticate"])
        )
        ok = await client.post(
            f"{url}/adapters/a/mcp", json={}, headers={"Authorization": f"Bearer {oidc_server.entra_token('u9')}"}
        )
        assert ok.status_code == 200 and ok.json()["user"] == "u9"


@pytest.mark.parametrize("mode", ["entra", "oidc"])
async def test_mcp_sdk_client_discovers_metadata_from_a_401_and_gets_in(oidc_server: OidcServer, mode: str) -> None:
    def settings_for(port: int) -> Settings:
        if mode == "entra":
            return entra(port=port, entra_authority=oidc_server.url)
        return Settings(
            auth="oidc", port=port, oidc_issuer=oidc_server.oidc_issuer, oidc_audience=CLIENT_ID, auth_scopes=("mcp",)
        )

    redirect_uri = "http://127.0.0.1:9/callback"
    seen: dict[str, Any] = {}

    async def redirect_handler(authorization_url: str) -> None:
        # Play the browser: the provider signs the user in and redirects back with a code.
        seen["authorize"] = {k: v[0] for k, v in parse_qs(urlsplit(authorization_url).query).items()}
        async with httpx.AsyncClient() as browser:
            r = await browser.get(authorization_url)
        assert r.status_code == 302
        seen["callback"] = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}

    async def callback_handler() -> AuthorizationCodeResult:
        cb = seen["callback"]
        return AuthorizationCodeResult(code=cb["code"], state=cb["state"], iss=cb["iss"])

    async with running(settings_for) as (url, _):
        mcp_url = f"{url}/adapters/weather/mcp"
        storage = MemoryTokenStorage(
            OAuthClientInformationFull(
                client_id=CLIENT_ID, redirect_uris=[AnyUrl(redirect_uri)], token_endpoint_auth_method="none"
            )
        )
        provider = OAuthClientProvider(
            server_url=mcp_url,
            client_metadata=OAuthClientMetadata(
                redirect_uris=[AnyUrl(redirect_uri)], token_endpoint_auth_method="none", client_name="test"
            ),
            storage=storage,
            redirect_handler=redirect_handler,
            callback_handler=callback_handler,
        )
        async with httpx2.AsyncClient(auth=provider, timeout=10) as client:
            r = await client.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert r.status_code == 200, r.text
        assert r.json()["user"] == "browser-user"
        prm = provider.context.protected_resource_metadata
        assert prm is not None and str(prm.resource) == mcp_url
        issuer = oidc_server.entra_issuer if mode == "entra" else oidc_server.oidc_issuer
        assert provider.context.auth_server_url == issuer
        assert seen["authorize"]["resource"] == mcp_url
        assert seen["authorize"]["scope"] == (f"api://{CLIENT_ID}/.default" if mode == "entra" else "mcp")
        assert storage.tokens is not None
