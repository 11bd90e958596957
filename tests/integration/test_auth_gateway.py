"""Access rules, session binding and OAuth discovery on a real gateway in entra mode.

The gateway process validates tokens against the local OpenID provider (MCPGW_ENTRA_AUTHORITY points
at it); every token is an RS256 JWT minted by the test with the provider's published key.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator, Iterator
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata
from pydantic import AnyUrl

from tests.fixtures.auth import CLIENT_ID, TENANT_ID, MemoryTokenStorage, OidcServer, browser_visit
from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready
from tests.fixtures.mcp_results import first_text

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}

#: What a caller who may not read an adapter gets for it, on both planes (403 today: see docs/auth.md).
HIDDEN = 403

USERS: dict[str, tuple[str, list[str]] | None] = {
    "creator": ("oid-creator", []),
    "admin": ("oid-admin", ["mcp.admin"]),
    "reader": ("oid-reader", ["reader-role"]),
    "stranger": ("oid-stranger", ["other-role"]),
    "anonymous": None,
}
READ = {"creator": 200, "admin": 200, "reader": 200, "stranger": HIDDEN, "anonymous": 401}


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcServer]:
    server = OidcServer().start()
    try:
        yield server
    finally:
        server.stop()


def headers_for(idp: OidcServer, user: str) -> dict[str, str]:
    who = USERS[user]
    if who is None:
        return {}
    return {"Authorization": f"Bearer {idp.entra_token(who[0], who[1])}"}


@contextlib.contextmanager
def api(gw: GatewayProcess, idp: OidcServer, user: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, headers=headers_for(idp, user), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def gw(idp: OidcServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {
        "MCPGW_AUTH": "entra",
        "MCPGW_ENTRA_TENANT_ID": TENANT_ID,
        "MCPGW_ENTRA_CLIENT_ID": CLIENT_ID,
        "MCPGW_ENTRA_AUTHORITY": idp.url,
        "MCPGW_IMAGE_CATALOG": str(CATALOG),
        "MCPGW_WORKLOAD_IDENTITY_ROLES": "wi-role",
    }
    with start_gateway(tmp_path_factory.mktemp("auth") / "data", env) as g:
        with api(g, idp, "creator") as creator:
            rec = example_adapter("rec", imageName="recorder", imageVersion="1.0", requiredRoles=["reader-role"])
            assert creator.post("/adapters", json=rec).status_code == 201
            assert (
                creator.post("/adapters", json=example_adapter("ex", requiredRoles=["reader-role"])).status_code == 201
            )
            wait_ready(creator, "rec", 1)
            wait_ready(creator, "ex", 1)
        yield g


def check(gw: GatewayProcess, response: httpx.Response, expected: int, who: str) -> None:
    """The status, and on 401 the RFC 9728 challenge pointing at this path's metadata."""
    assert response.status_code == expected, f"{who}: {response.request.method} {response.request.url.path} -> " + (
        f"{response.status_code} {response.text[:300]}"
    )
    if expected == 401:
        path = response.request.url.path
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith(
            f'Bearer resource_metadata="{gw.url}/.well-known/oauth-protected-resource{path}"'
        ), challenge
        assert 'error="invalid_request"' in challenge and "error_description=" in challenge


# --- control plane ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/adapters/rec", "/adapters/rec/status", "/adapters/rec/logs?instance=0&tail=5"], ids=str
)
@pytest.mark.parametrize("user", list(USERS))
def test_reads_are_for_creator_admin_and_role_holders(
    gw: GatewayProcess, idp: OidcServer, path: str, user: str
) -> None:
    with api(gw, idp, user) as client:
        check(gw, client.get(path), READ[user], user)


@pytest.mark.parametrize("user", list(USERS))
def test_list_shows_only_readable_adapters(gw: GatewayProcess, idp: OidcServer, user: str) -> None:
    with api(gw, idp, user) as client:
        response = client.get("/adapters")
        check(gw, response, 401 if user == "anonymous" else 200, user)
        if user != "anonymous":
            names = {item["name"] for item in response.json()["items"]}
            assert ({"rec", "ex"} <= names) == (READ[user] == 200), names
            if user == "stranger":
                assert not names & {"rec", "ex"}


@pytest.mark.parametrize(
    ("user", "put", "delete"),
    [
        ("creator", 200, 204),
        ("admin", 200, 204),
        ("reader", 403, 403),
        ("stranger", HIDDEN, HIDDEN),
        ("anonymous", 401, 401),
    ],
)
def test_writes_are_for_creator_and_admin(
    gw: GatewayProcess, idp: OidcServer, user: str, put: int, delete: int
) -> None:
    name = f"w-{user}"
    body = example_adapter(name, replicas=0, requiredRoles=["reader-role"])
    with api(gw, idp, "creator") as creator:
        assert creator.post("/adapters", json=body).status_code == 201
    with api(gw, idp, user) as client:
        check(gw, client.put(f"/adapters/{name}", json={**body, "description": "changed"}), put, user)
        check(gw, client.delete(f"/adapters/{name}"), delete, user)
    with api(gw, idp, "admin") as admin:
        assert admin.get(f"/adapters/{name}").status_code == (404 if delete == 204 else 200)
        admin.delete(f"/adapters/{name}")


@pytest.mark.parametrize(
    ("user", "plain", "workload"),
    [("creator", 201, 403), ("admin", 201, 201), ("stranger", 201, 403), ("anonymous", 401, 401)],
)
def test_any_user_creates_but_workload_identity_needs_admin_or_its_role(
    gw: GatewayProcess, idp: OidcServer, user: str, plain: int, workload: int
) -> None:
    with api(gw, idp, user) as client:
        check(gw, client.post("/adapters", json=example_adapter(f"c-{user}", replicas=0)), plain, user)
        wi = example_adapter(f"wi-{user}", replicas=0, useWorkloadIdentity=True)
        check(gw, client.post("/adapters", json=wi), workload, user)
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        token = idp.entra_token("oid-wi", ["wi-role"])
        response = client.post(
            "/adapters",
            json=example_adapter(f"wi-role-{user}", replicas=0, useWorkloadIdentity=True),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text
    with api(gw, idp, "admin") as admin:
        for name in (f"c-{user}", f"wi-{user}", f"wi-role-{user}"):
            admin.delete(f"/adapters/{name}")


def test_created_by_is_the_entra_object_id(gw: GatewayProcess, idp: OidcServer) -> None:
    with api(gw, idp, "reader") as reader:
        assert reader.get("/adapters/rec").json()["createdBy"] == "oid-creator"


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("expired", "token expired at"),
        ("wrong audience", "audience"),
        ("foreign key", "signature"),
        ("alg none", "alg 'none'"),
    ],
)
def test_bad_tokens_get_401_with_the_reason_on_both_planes(
    gw: GatewayProcess, idp: OidcServer, token: str, fragment: str
) -> None:
    from tests.fixtures.auth import SigningKey, unsigned_token

    claims = idp.entra_claims("oid-creator")
    bad = {
        "expired": lambda: idp.mint({**claims, "exp": 1_000_000, "nbf": 999_000, "iat": 999_000}),
        "wrong audience": lambda: idp.mint({**claims, "aud": "api://other"}),
        "foreign key": lambda: idp.mint(claims, SigningKey.generate(), kid=idp.keys[0].kid),
        "alg none": lambda: unsigned_token(claims, kid=idp.keys[0].kid),
    }[token]()
    for method, path, body, headers in (
        ("GET", "/adapters/rec", None, {}),
        ("POST", "/adapters/rec/mcp", TOOLS_LIST, ACCEPT),
    ):
        response = httpx.request(
            method, gw.url + path, headers={**headers, "Authorization": f"Bearer {bad}"}, json=body, timeout=10
        )
        assert response.status_code == 401, response.text
        challenge = response.headers["www-authenticate"]
        assert f'resource_metadata="{gw.url}/.well-known/oauth-protected-resource{path}"' in challenge
        assert 'error="invalid_token"' in challenge and fragment in challenge, challenge


# --- data plane ---------------------------------------------------------------------------


@pytest.mark.parametrize("user", list(USERS))
def test_streamable_http_use_needs_read_access(gw: GatewayProcess, idp: OidcServer, user: str) -> None:
    with api(gw, idp, user) as client:
        response = client.post("/adapters/rec/mcp", json=TOOLS_LIST, headers=ACCEPT)
        check(gw, response, READ[user], user)
        if response.status_code == 200:
            seen = response.json()["result"]["headers"]
            assert "authorization" not in seen
            who = USERS[user]
            assert who is not None
            assert seen["x-mcp-user-id"] == who[0]
            assert set(filter(None, seen["x-mcp-roles"].split(","))) == set(who[1])


def test_client_sent_identity_headers_and_token_never_reach_the_upstream(gw: GatewayProcess, idp: OidcServer) -> None:
    with api(gw, idp, "reader") as client:
        forged = {**ACCEPT, "X-Mcp-User-Id": "oid-creator", "X-Mcp-Roles": "mcp.admin"}
        seen = client.post("/adapters/rec/mcp", json=TOOLS_LIST, headers=forged).json()["result"]["headers"]
    assert "authorization" not in seen
    assert seen["x-mcp-user-id"] == "oid-reader" and seen["x-mcp-roles"] == "reader-role"


def open_sse(client: httpx.Client, path: str) -> tuple[httpx.Response, str | None, contextlib.ExitStack]:
    """GET an SSE stream; the endpoint event's URL when the stream opened."""
    stack = contextlib.ExitStack()
    response = stack.enter_context(client.stream("GET", path, headers={"Accept": "text/event-stream"}))
    if response.status_code != 200:
        response.read()
        return response, None, stack
    event = None
    # Keep the line iterator referenced until the stack closes: dropping it would close the stream.
    lines = response.iter_lines()
    assert isinstance(lines, Generator)  # httpx iterates with a generator: close() ends it
    stack.callback(lines.close)
    for line in lines:
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event == "endpoint":
            return response, line.split(":", 1)[1].strip(), stack
    raise AssertionError("SSE stream ended without an endpoint event")


@pytest.mark.parametrize("user", list(USERS))
def test_legacy_sse_use_needs_read_access(gw: GatewayProcess, idp: OidcServer, user: str) -> None:
    with api(gw, idp, user) as client:
        response, endpoint, stack = open_sse(client, "/adapters/ex/sse")
        with stack:
            check(gw, response, READ[user], user)
            if READ[user] == 200:
                assert endpoint is not None and endpoint.startswith("/adapters/ex/messages")


def test_sse_session_replayed_with_another_users_token_is_404(gw: GatewayProcess, idp: OidcServer) -> None:
    with api(gw, idp, "creator") as creator:
        _, endpoint, stack = open_sse(creator, "/adapters/ex/sse")
        with stack:
            assert endpoint is not None
            ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
            for user, expected in (("reader", 404), ("admin", 404), ("stranger", HIDDEN), ("anonymous", 401)):
                with api(gw, idp, user) as other:
                    check(gw, other.post(endpoint, json=ping), expected, user)
            # The owner's session still works after the attempts.
            assert creator.post(endpoint, json=INITIALIZE).status_code == 202


def test_streamable_session_replayed_with_another_users_token_is_404(gw: GatewayProcess, idp: OidcServer) -> None:
    with api(gw, idp, "creator") as creator:
        opened = creator.post("/adapters/ex/mcp", json=INITIALIZE, headers=ACCEPT)
        assert opened.status_code == 200, opened.text
        session = opened.headers["mcp-session-id"]
        with_session = {**ACCEPT, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}
        for user, expected in (("reader", 404), ("admin", 404), ("stranger", HIDDEN), ("anonymous", 401)):
            with api(gw, idp, user) as other:
                check(gw, other.post("/adapters/ex/mcp", json=TOOLS_LIST, headers=with_session), expected, user)
        assert creator.post("/adapters/ex/mcp", json=TOOLS_LIST, headers=with_session).status_code == 200


# --- MCP OAuth discovery ------------------------------------------------------------------


def test_mcp_sdk_client_finds_the_metadata_from_a_401_signs_in_and_calls_tools(
    gw: GatewayProcess, idp: OidcServer
) -> None:
    url = f"{gw.url}/adapters/ex/mcp"
    idp.authorize_user = "oid-creator"
    callback: dict[str, str] = {}

    async def redirect_handler(authorization_url: str) -> None:
        location = await anyio.to_thread.run_sync(lambda: browser_visit(authorization_url, deliver=False))
        callback.update(httpx.URL(location).params)

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=callback["code"], state=callback["state"], iss=callback["iss"])

    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            redirect_uris=[AnyUrl("http://127.0.0.1:9/callback")], token_endpoint_auth_method="none", client_name="test"
        ),
        storage=MemoryTokenStorage(
            OAuthClientInformationFull(
                client_id=CLIENT_ID,
                redirect_uris=[AnyUrl("http://127.0.0.1:9/callback")],
                token_endpoint_auth_method="none",
            )
        ),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )

    async def run() -> list[str]:
        async with (
            httpx2.AsyncClient(auth=provider, timeout=30) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            tools = [tool.name for tool in (await client.list_tools()).tools]
            reply = await client.call_tool("echo", {"text": "signed in"})
            assert first_text(reply) == "signed in"
            return tools

    tools = anyio.run(run)
    assert {"add", "echo", "whoami"} <= set(tools)
    prm = provider.context.protected_resource_metadata
    assert prm is not None and str(prm.resource) == url
    assert provider.context.auth_server_url == idp.entra_issuer
    metadata = httpx.get(f"{gw.url}/.well-known/oauth-protected-resource/adapters/ex/mcp").json()
    assert metadata["resource"] == url and metadata["scopes_supported"] == [f"api://{CLIENT_ID}/.default"]
    assert json.dumps(metadata)  # the document is plain JSON


def test_protected_resource_metadata_needs_no_token_and_reveals_nothing(gw: GatewayProcess) -> None:
    for path in ("", "/adapters/rec/mcp", "/adapters/no-such-adapter/sse"):
        response = httpx.get(f"{gw.url}/.well-known/oauth-protected-resource{path}")
        assert response.status_code == 200
        assert response.json()["resource"] == gw.url + path
