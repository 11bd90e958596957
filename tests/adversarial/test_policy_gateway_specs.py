"""Hostile toolPolicy / rateLimits specs through the REST API, and tool names with glob metacharacters
through the data plane (issue 15). A spec is refused with 400 naming the field, or stored and enforced
as written; a call naming a glob never matches more than the literal name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import GatewayProcess, example_adapter, replica_processes, start_gateway, wait_ready

CATALOG = Path(__file__).resolve().parent.parent / "upstreams" / "images.toml"
VALID = example_adapter("hostile", replicas=0)
RULE = {"tools": ["add"], "roles": ["r"]}
LIMIT = {"per": "user", "requests": 1, "seconds": 1}

HOSTILE: list[tuple[dict[str, Any], str | None]] = [
    ({"toolPolicy": [{"tools": [], "roles": ["r"]}]}, "toolPolicy[0].tools"),
    ({"toolPolicy": [{"tools": ["a b"], "roles": ["r"]}]}, "toolPolicy[0].tools[0]"),
    ({"toolPolicy": [{"tools": ["x" * 129], "roles": ["r"]}]}, "toolPolicy[0].tools[0]"),
    ({"toolPolicy": [{"tools": ["\u00e9cho"], "roles": ["r"]}]}, "toolPolicy[0].tools[0]"),
    ({"toolPolicy": [{"tools": ["ok", "bad\x00"], "roles": ["r"]}]}, "toolPolicy[0].tools[1]"),
    ({"toolPolicy": [{"tools": ["add"], "roles": []}]}, "toolPolicy[0].roles"),
    ({"toolPolicy": [{"tools": ["add"], "roles": ["r\n"]}]}, "toolPolicy[0].roles[0]"),
    ({"toolPolicy": [RULE] * 101}, "toolPolicy"),
    ({"toolPolicy": [{"tools": ["t"] * 201, "roles": ["r"]}]}, "toolPolicy[0].tools"),
    ({"toolPolicy": [{**RULE, "admin": True}]}, None),  # unknown key: refused while decoding
    ({"toolPolicy": [{"tools": "add", "roles": ["r"]}]}, None),  # not a list
    ({"toolPolicy": {"tools": ["add"], "roles": ["r"]}}, None),  # not a list of rules
    ({"rateLimits": [{**LIMIT, "requests": 0}]}, "rateLimits[0].requests"),
    ({"rateLimits": [{**LIMIT, "requests": 10**7}]}, "rateLimits[0].requests"),
    ({"rateLimits": [{**LIMIT, "seconds": 0}]}, "rateLimits[0].seconds"),
    ({"rateLimits": [{**LIMIT, "seconds": -5}]}, "rateLimits[0].seconds"),
    ({"rateLimits": [{**LIMIT, "seconds": 1e308}]}, "rateLimits[0].seconds"),
    ({"rateLimits": [{**LIMIT, "tools": ["a b"]}]}, "rateLimits[0].tools[0]"),
    ({"rateLimits": [{**LIMIT, "per": "world"}]}, None),
    ({"rateLimits": [{**LIMIT, "requests": "1"}]}, None),
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MCPGW_IMAGE_CATALOG": str(CATALOG)}
    with start_gateway(tmp_path_factory.mktemp("hostile-policy") / "data", env) as g:
        with g.client() as api:
            body = example_adapter(
                "globby",
                imageName="recorder",
                imageVersion="1.0",
                requiredRoles=["g.reader"],
                toolPolicy=[{"tools": ["add", "echo*", "[x]"], "roles": ["g.user"]}],
            )
            assert api.post("/adapters", json=body).status_code == 201
            wait_ready(api, "globby", 1, timeout=40)
        yield g


@pytest.mark.parametrize(("extra", "field"), HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_specs_are_refused_naming_the_field(
    gw: GatewayProcess, extra: dict[str, Any], field: str | None
) -> None:
    with gw.client() as api:
        response = api.post("/adapters", json={**VALID, **extra})
        assert response.status_code == 400, response.text
        if field is not None:
            assert response.json()["field"] == field, response.text
        assert api.get("/adapters/hostile").status_code == 404


def recorder_requests(gw: GatewayProcess) -> int:
    _, port = replica_processes(gw.data_dir)["globby-0"]
    count: int = httpx.get(f"http://127.0.0.1:{port}/stats").json()["requests"]
    return count


@pytest.mark.parametrize("name", ["ad*", "a?d", "[a]dd", "*", "add ", "Add", "add\u200b", "[x", "[x]", "ech"])
def test_tool_names_with_glob_metacharacters_match_only_literally(gw: GatewayProcess, name: str) -> None:
    before = recorder_requests(gw)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}
    headers = {"Accept": "application/json, text/event-stream", "X-Dev-User-Id": "u", "X-Dev-Roles": "g.reader,g.user"}
    response = httpx.post(f"{gw.url}/adapters/globby/mcp", json=body, headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == -32006
    assert recorder_requests(gw) == before


def test_glob_rules_still_admit_their_names(gw: GatewayProcess) -> None:
    headers = {"Accept": "application/json, text/event-stream", "X-Dev-User-Id": "u", "X-Dev-Roles": "g.reader,g.user"}
    for name in ("add", "echo", "echo*", "echo-x", "x"):  # "x" is what the glob "[x]" names
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}
        response = httpx.post(f"{gw.url}/adapters/globby/mcp", json=body, headers=headers)
        assert response.status_code == 200, (name, response.text)
