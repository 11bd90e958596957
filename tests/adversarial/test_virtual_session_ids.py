"""Hostile virtual-server session ids: forged, tampered, replayed on another server, of another kind.

A virtual server's 2025-era session id is sealed with the key ring of the adapters' session ids, as
kind ``vmcp`` naming its server (``servers/<name>`` or ``servers/*`` for ``/mcp``). Each case must get
the same 404 "session not found" (JSON-RPC -32001) as an unknown id, never a 5xx, and must leave the
owner's session working.

Observed on main before this (2026-11-30): a session id of ``/servers/duo/mcp`` was accepted on
``/servers/other/mcp`` and on ``/mcp`` (one dict for every server, only the user was compared), and a
legacy SSE ``session_id`` was accepted as an ``Mcp-Session-Id`` of the streamable route (same dict).
The forged and tampered cases were already refused (random keys); they are pinned here because the
ids are now sealed tokens that any gateway opens.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready

ACCEPT = {"Accept": "application/json, text/event-stream"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
CAP = 6
"""MCPGW_SESSION_MAX_PER_USER here: above the member sessions the other tests open on ``example``."""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MCPGW_EXAMPLE_ADAPTER": "false", "MCPGW_SESSION_MAX_PER_USER": str(CAP)}
    with start_gateway(tmp_path_factory.mktemp("vsess-hostile") / "data", env) as g:
        with g.client() as api:
            assert api.post("/adapters", json=example_adapter("example")).status_code == 201
            wait_ready(api, "example", 1, timeout=40)
            for name in ("duo", "other"):
                spec = {"name": name, "members": [{"adapter": "example", "prefix": "ex_"}]}
                assert api.post("/servers", json=spec).status_code == 201
        yield g


def opened(gw: GatewayProcess, path: str) -> str:
    response = httpx.post(f"{gw.url}{path}", json=INIT, headers=ACCEPT, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def send(gw: GatewayProcess, path: str, token: str, body: dict[str, Any] = LIST) -> httpx.Response:
    # JSON only on virtual servers: a session that takes SSE gets SSE answers (gateway/servers/streams.py).
    accept = ACCEPT if path.startswith("/adapters/") else {"Accept": "application/json"}
    headers = {**accept, "Mcp-Session-Id": token}
    return httpx.post(f"{gw.url}{path}", json=body, headers=headers, timeout=30)


def refused(response: httpx.Response) -> bool:
    return response.status_code == 404 and response.json()["error"]["code"] == -32001


def tampered(token: str) -> str:
    """The same sealed id with one bit of the ciphertext flipped."""
    body = token[3:]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return "g1." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def test_forged_tampered_and_replayed_virtual_session_ids_get_404(gw: GatewayProcess) -> None:
    duo = opened(gw, "/servers/duo/mcp")
    everything = opened(gw, "/mcp")
    forged = "g1." + base64.urlsafe_b64encode(b"\x00" * 80).decode().rstrip("=")
    cases = {
        "forged": ("/servers/duo/mcp", forged),
        "not sealed": ("/servers/duo/mcp", "0123456789abcdef"),
        "tampered": ("/servers/duo/mcp", tampered(duo)),
        "too long": ("/servers/duo/mcp", duo + "A" * 5000),
        "another server's": ("/servers/other/mcp", duo),
        "/mcp's on a server": ("/servers/duo/mcp", everything),
        "a server's on /mcp": ("/mcp", duo),
    }
    for case, (path, token) in cases.items():
        response = send(gw, path, token)
        assert refused(response), (case, response.status_code, response.text[:200])
        deleted = httpx.delete(f"{gw.url}{path}", headers={"Mcp-Session-Id": token}, timeout=30)
        assert deleted.status_code == 404, (case, deleted.status_code)
    # the owners' sessions were not ended by any of it
    assert send(gw, "/servers/duo/mcp", duo).status_code == 200
    assert send(gw, "/mcp", everything).status_code == 200
    assert "Traceback" not in gw.log_text()


def test_adapter_and_virtual_session_ids_are_not_accepted_on_each_others_routes(gw: GatewayProcess) -> None:
    adapter = opened(gw, "/adapters/example/mcp")
    virtual = opened(gw, "/servers/duo/mcp")
    assert adapter.startswith("g1.") and virtual.startswith("g1.")  # one key ring, two kinds
    assert refused(send(gw, "/servers/duo/mcp", adapter))
    assert refused(send(gw, "/mcp", adapter))
    assert refused(send(gw, "/adapters/example/mcp", virtual))
    for path, token in (("/servers/duo/mcp", adapter), ("/adapters/example/mcp", virtual)):
        deleted = httpx.delete(f"{gw.url}{path}", headers={"Mcp-Session-Id": token}, timeout=30)
        assert deleted.status_code == 404, (path, deleted.text)
    # both still work where they belong
    assert send(gw, "/adapters/example/mcp", adapter).status_code == 200
    assert send(gw, "/servers/duo/mcp", virtual).status_code == 200
    assert "Traceback" not in gw.log_text()


def test_a_legacy_sse_session_id_is_not_a_streamable_session_id(gw: GatewayProcess) -> None:
    with httpx.stream("GET", f"{gw.url}/servers/duo/sse", timeout=30) as stream:
        lines = stream.iter_lines()  # held: a dropped iterator closes the stream
        endpoint = next(line for line in lines if line.startswith("data: "))
        session_id = endpoint.split("session_id=", 1)[1]
        assert refused(send(gw, "/servers/duo/mcp", session_id))
        ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
        assert httpx.post(f"{gw.url}{endpoint[len('data: ') :]}", json=ping, timeout=30).status_code == 202


def test_one_user_cannot_open_unbounded_sessions_on_a_virtual_server(gw: GatewayProcess) -> None:
    """Each session is a store record now: the adapters' per-user cap bounds them per server."""
    url = f"{gw.url}/servers/other/mcp"
    tokens = [opened(gw, "/servers/other/mcp") for _ in range(CAP)]
    over = httpx.post(url, json=INIT, headers=ACCEPT, timeout=30)
    assert over.status_code == 429 and "Retry-After" in over.headers
    error = over.json()["error"]
    assert error["code"] == -32008 and "MCPGW_SESSION_MAX_PER_USER" in error["message"]
    assert httpx.delete(url, headers={"Mcp-Session-Id": tokens[0]}, timeout=30).status_code == 200
    assert httpx.post(url, json=INIT, headers=ACCEPT, timeout=30).status_code == 200  # a slot freed
    assert "Traceback" not in gw.log_text()
