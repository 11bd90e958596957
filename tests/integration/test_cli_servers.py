"""``mcp-gateway servers ...`` and ``tools``/``call`` on a virtual server, against a real gateway.

The same style as tests/integration/test_cli.py (whose ``cli`` runner is reused: the entry point's ``main`` in
this process, ``--json`` parsed, exit statuses 0 done / 1 the gateway said no / 2 usage), with a
gateway of its own holding one ready replica of the example adapter to compose.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.client._http import GatewayApi
from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready
from tests.integration.test_cli import cli, ok_json

PREFIX = "ex_"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway (dev auth, local runtime) with a ready ``calc`` (the example server) and a virtual server over it."""
    with start_gateway(tmp_path_factory.mktemp("cli-servers") / "data") as gateway:
        with gateway.client() as client:
            assert client.post("/adapters", json=example_adapter("calc")).status_code == 201
            wait_ready(client, "calc", 1)
        yield gateway


@pytest.fixture(scope="module")
def combo(gw: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The virtual server ``combo``: calc with its tools prefixed ``ex_``, created through the CLI."""
    home = tmp_path_factory.mktemp("cli-servers-home")
    created = ok_json(
        cli(
            gw,
            *("servers", "create", "combo", "--member", f"calc:{PREFIX}", "--description", "from the cli", "--json"),
            home=home,
        )
    )
    assert isinstance(created, dict)
    return created


def _json(result: Any) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the resource --------------------------------------------------------------------------------


def test_create_get_list_as_json(gw: GatewayProcess, combo: dict[str, Any], tmp_path: Path) -> None:
    assert combo["name"] == "combo" and combo["description"] == "from the cli"
    assert [(m["adapter"], m["prefix"]) for m in combo["members"]] == [("calc", PREFIX)]
    got = ok_json(cli(gw, "servers", "get", "combo", "--json", home=tmp_path))
    assert isinstance(got, dict) and got["members"] == combo["members"] and got["createdBy"] == "dev"
    listed = ok_json(cli(gw, "servers", "list", "--json", home=tmp_path))
    assert isinstance(listed, list) and "combo" in {s["name"] for s in listed}
    people = cli(gw, "servers", "list", home=tmp_path)
    assert people.returncode == 0 and people.stdout.startswith("NAME ")
    assert f"calc:{PREFIX}" in people.stdout, people.stdout  # members as the --member flag spells them


def test_status_json_and_table_show_present_and_missing_members(
    gw: GatewayProcess, combo: dict[str, Any], tmp_path: Path
) -> None:
    status = ok_json(cli(gw, "servers", "status", "combo", "--json", home=tmp_path))
    assert isinstance(status, dict) and status["presentMembers"] == 1 and status["missingMembers"] == 0
    [member] = status["members"]
    assert member["adapter"] == "calc" and member["present"] is True and member["readyReplicas"] == 1
    # A server whose member adapter is deleted keeps the member, shown missing.
    with gw.client() as client:
        assert client.post("/adapters", json=example_adapter("gone", replicas=0)).status_code == 201
    assert (
        cli(gw, "servers", "create", "half", "--member", "calc:c_", "--member", "gone:g_", home=tmp_path).returncode
        == 0
    )
    with gw.client() as client:
        assert client.delete("/adapters/gone").status_code == 204
    people = cli(gw, "servers", "status", "half", home=tmp_path)
    assert people.returncode == 0, people.stderr
    assert "members 1/2 present, 1 missing" in people.stdout, people.stdout
    lines = people.stdout.splitlines()
    assert lines[1].split() == ["MEMBER", "PREFIX", "STATE", "READABLE", "READY", "MESSAGE"], people.stdout
    rows = {cells[0]: cells for cells in (line.split() for line in lines[2:])}
    assert rows["calc"][1:5] == ["c_", "present", "yes", "1"], people.stdout
    assert rows["gone"][1:5] == ["g_", "missing", "no", "0"] and "does not exist" in lines[3], people.stdout
    # An update keeps the missing member (the gateway checks only newly added members).
    updated = ok_json(cli(gw, "servers", "update", "half", "--description", "still half", "--json", home=tmp_path))
    assert isinstance(updated, dict) and [m["adapter"] for m in updated["members"]] == ["calc", "gone"]
    assert cli(gw, "servers", "delete", "half", home=tmp_path).returncode == 0


def test_update_keeps_what_the_flags_do_not_change_and_sends_if_match(
    gw: GatewayProcess, combo: dict[str, Any], tmp_path: Path
) -> None:
    updated = ok_json(
        cli(gw, "servers", "update", "combo", "--description", "changed", "--role", "team", "--json", home=tmp_path)
    )
    assert isinstance(updated, dict)
    assert updated["description"] == "changed" and updated["requiredRoles"] == ["team"]
    assert updated["members"] == combo["members"]
    # The update sent the ETag it read: a stale one is refused with 412 (checked at the HTTP level,
    # since the CLI always reads just before it writes).
    with gw.client() as client:
        current = client.get("/servers/combo")
        body = {k: current.json()[k] for k in ("name", "description", "requiredRoles", "members")}
        assert client.put("/servers/combo", json=body, headers={"If-Match": '"stale"'}).status_code == 412
    # A reader by role sees the server but not the member's tools: a server does not lend its members.
    got = ok_json(cli(gw, "servers", "get", "combo", "--json", "--user", "bob", "--roles", "team", home=tmp_path))
    assert isinstance(got, dict) and got["name"] == "combo"
    tools = ok_json(cli(gw, "tools", "servers/combo", "--json", "--user", "bob", "--roles", "team", home=tmp_path))
    assert tools == []
    cleared = ok_json(cli(gw, "servers", "update", "combo", "--role", "", "--json", home=tmp_path))
    assert isinstance(cleared, dict) and cleared["requiredRoles"] == [] and cleared["description"] == "changed"


def test_update_puts_with_the_etag_it_read(
    gw: GatewayProcess, combo: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, dict[str, str], str | None]] = []
    request = GatewayApi.request

    def spy(self: GatewayApi, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = request(self, method, path, **kwargs)
        sent.append((method, dict(kwargs.get("headers") or {}), response.headers.get("ETag")))
        return response

    monkeypatch.setattr(GatewayApi, "request", spy)
    assert cli(gw, "servers", "update", "combo", "--description", "etag", home=tmp_path).returncode == 0
    (get, _, read_etag), (put, put_headers, _) = sent
    assert (get, put) == ("GET", "PUT") and read_etag and put_headers == {"If-Match": read_etag}


def test_create_from_a_file_with_tool_filters(gw: GatewayProcess, tmp_path: Path) -> None:
    spec = tmp_path / "server.json"
    spec.write_text(json.dumps({"members": [{"adapter": "calc", "prefix": "f_", "tools": ["add", "echo"]}]}))
    created = ok_json(cli(gw, "servers", "create", "filtered", "--file", str(spec), "--json", home=tmp_path))
    assert isinstance(created, dict) and created["members"][0]["tools"] == ["add", "echo"]
    people = cli(gw, "servers", "list", home=tmp_path)
    assert "calc:f_ tools=add|echo" in people.stdout, people.stdout
    listed = ok_json(cli(gw, "tools", "servers/filtered", "--json", home=tmp_path))
    assert isinstance(listed, list) and sorted(t["name"] for t in listed) == ["f_add", "f_echo"]
    # --member replaces the members and keeps the rest
    updated = ok_json(cli(gw, "servers", "update", "filtered", "--member", "calc:g_", "--json", home=tmp_path))
    assert isinstance(updated, dict) and [(m["prefix"], m["tools"]) for m in updated["members"]] == [("g_", None)]
    assert cli(gw, "servers", "delete", "filtered", home=tmp_path).returncode == 0


def test_invalid_member_exits_1_naming_the_field(gw: GatewayProcess, tmp_path: Path) -> None:
    result = cli(gw, "servers", "create", "bad", "--member", "no-such-adapter:x_", home=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: 422 ") and "(field: members[0].adapter)" in result.stderr, result.stderr
    result = cli(gw, "servers", "create", "bad", "--member", "calc:a_", "--member", "calc:b_", "--json", home=tmp_path)
    assert result.returncode == 1
    error = json.loads(result.stderr)["error"]
    assert error["status"] == 422 and error["field"] == "members[1].adapter"
    result = cli(gw, "servers", "create", "bad", "--member", "calc:bad prefix", home=tmp_path)
    assert result.returncode == 1 and "(field: members[0].prefix)" in result.stderr, result.stderr


def test_unknown_server_exits_1(gw: GatewayProcess, tmp_path: Path) -> None:
    for action in ("get", "status", "delete"):
        result = cli(gw, "servers", action, "no-such-server", home=tmp_path)
        assert result.returncode == 1 and "404" in result.stderr and "no-such-server" in result.stderr, result.stderr
    result = cli(gw, "tools", "servers/no-such-server", home=tmp_path)
    assert result.returncode == 1 and "404" in result.stderr


def test_another_user_cannot_read_a_server(gw: GatewayProcess, combo: dict[str, Any], tmp_path: Path) -> None:
    result = cli(gw, "servers", "get", "combo", "--user", "mallory", home=tmp_path)
    assert result.returncode == 1 and "403" in result.stderr
    listed = ok_json(cli(gw, "servers", "list", "--json", "--user", "mallory", home=tmp_path))
    assert isinstance(listed, list) and "combo" not in {s["name"] for s in listed}


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert cli(None, "servers", home=tmp_path).returncode == 2  # no action
    assert cli(None, "servers", "get", home=tmp_path).returncode == 2  # no name
    assert cli(None, "servers", "frobnicate", "x", home=tmp_path).returncode == 2
    result = cli(None, "servers", "create", "x", home=tmp_path)  # no member: caught before any request
    assert result.returncode == 2 and "--member" in result.stderr, result.stderr
    result = cli(None, "servers", "create", "x", "--member", ":p_", home=tmp_path)
    assert result.returncode == 2 and "--member" in result.stderr, result.stderr
    assert cli(None, "tools", "servers/", home=tmp_path).returncode == 2
    assert cli(None, "call", "servers/x", home=tmp_path).returncode == 2  # no tool


# --- through the data plane ----------------------------------------------------------------------


def test_tools_on_a_server_lists_the_prefixed_tools(gw: GatewayProcess, combo: dict[str, Any], tmp_path: Path) -> None:
    listed = ok_json(cli(gw, "tools", "servers/combo", "--json", home=tmp_path))
    assert isinstance(listed, list)
    names = {t["name"] for t in listed}
    assert {f"{PREFIX}add", f"{PREFIX}echo"} <= names and "add" not in names
    # --server says the same as servers/<name>
    again = ok_json(cli(gw, "tools", "combo", "--server", "--json", home=tmp_path))
    assert isinstance(again, list) and {t["name"] for t in again} == names
    people = cli(gw, "tools", "servers/combo", home=tmp_path)
    assert people.returncode == 0 and f"{PREFIX}add" in people.stdout and "a:number b:number" in people.stdout


def test_call_on_a_server_prints_5(gw: GatewayProcess, combo: dict[str, Any], tmp_path: Path) -> None:
    result = cli(gw, "call", "servers/combo", f"{PREFIX}add", "a=2", "b=3", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "5"
    result = cli(gw, "call", "combo", "--server", f"{PREFIX}add", "a=2", "b=3", "--json", home=tmp_path)
    reply = _json(result)
    assert reply["content"][0]["text"] == "5" and not reply.get("isError")
    result = cli(gw, "call", "servers/combo", "add", "a=2", "b=3", home=tmp_path)  # unprefixed: not here
    assert result.returncode == 2 and "no tool 'add'" in result.stderr, result.stderr


def test_delete_then_get_exits_1(gw: GatewayProcess, tmp_path: Path) -> None:
    assert cli(gw, "servers", "create", "short-lived", "--member", "calc", home=tmp_path).returncode == 0
    result = cli(gw, "servers", "delete", "short-lived", home=tmp_path)
    assert result.returncode == 0 and "deleted server short-lived" in result.stdout
    assert cli(gw, "servers", "get", "short-lived", home=tmp_path).returncode == 1
    assert cli(gw, "adapters", "get", "calc", home=tmp_path).returncode == 0  # the member adapter stays
