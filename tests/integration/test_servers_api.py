"""The /servers REST API (issue 16) against a real gateway process: validation naming the field,
access rules, etag/If-Match, paging, and members that go missing when their adapter is deleted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import GatewayProcess, example_adapter, problem, start_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MCPGW_EXAMPLE_ADAPTER": "false", "MCPGW_SERVER_MAX_MEMBERS": "3"}
    with start_gateway(tmp_path_factory.mktemp("servers-api") / "data", env) as g:
        with g.client("alice") as alice:
            for name in ("calc", "text"):
                assert alice.post("/adapters", json=example_adapter(name, replicas=0)).status_code == 201
        with g.client("bob") as bob:
            assert bob.post("/adapters", json=example_adapter("bobs", replicas=0)).status_code == 201
        yield g


@pytest.fixture
def alice(gw: GatewayProcess) -> Iterator[httpx.Client]:
    with gw.client("alice") as c:
        yield c


def server(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "two adapters",
        "members": [
            {"adapter": "calc", "prefix": "calc_", "tools": ["add", "echo*"], "exclude": ["debug*"]},
            {"adapter": "text", "prefix": "text_"},
        ],
        **extra,
    }


MEMBERS = server("x")["members"]
INVALID = [
    ({"members": []}, "members", 400),
    ({"members": [*MEMBERS, {"adapter": "bobs", "prefix": "b_"}, {"adapter": "d", "prefix": "d_"}]}, "members", 400),
    ({"members": [MEMBERS[0], {"adapter": "text", "prefix": "bad prefix"}]}, "members[1].prefix", 400),
    ({"members": [MEMBERS[0], {"adapter": "Bad", "prefix": "b_"}]}, "members[1].adapter", 400),
    ({"members": [MEMBERS[0], {"adapter": "text", "prefix": "t_", "tools": [""]}]}, "members[1].tools[0]", 400),
    ({"members": [MEMBERS[0], {"adapter": "text", "prefix": "t_", "extra": 1}]}, "extra", 400),
    ({"requiredRoles": [""]}, "requiredRoles[0]", 400),
    ({"name": "Upper"}, "name", 400),
    # Schema-valid bodies that cannot be carried out: 422 naming the field.
    ({"members": [MEMBERS[0], {"adapter": "text", "prefix": "calc_"}]}, "members[1].prefix", 422),
    ({"members": [MEMBERS[0], {"adapter": "calc", "prefix": "c2_"}]}, "members[1].adapter", 422),
    ({"members": [{"adapter": "bobs", "prefix": "b_"}]}, "members[0].adapter", 422),  # bob's: alice may not read
    ({"members": [{"adapter": "ghost", "prefix": "g_"}]}, "members[0].adapter", 422),  # same answer as unreadable
]


@pytest.mark.parametrize(("change", "field", "status"), INVALID, ids=[f"{f}-{st}" for _, f, st in INVALID])
def test_invalid_server_is_4xx_naming_the_field(
    alice: httpx.Client, change: dict[str, Any], field: str, status: int
) -> None:
    body = problem(alice.post("/servers", json={**server("bad"), **change}), status)
    assert body["field"] == field, body


def test_create_read_update_delete_with_etags(gw: GatewayProcess, alice: httpx.Client) -> None:
    created = alice.post("/servers", json=server("crud"))
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/servers/crud"
    etag = created.headers["etag"]
    assert created.json()["members"][0] == {
        "adapter": "calc",
        "prefix": "calc_",
        "tools": ["add", "echo*"],
        "exclude": ["debug*"],
    }
    assert created.json()["createdBy"] == "alice"
    problem(alice.post("/servers", json=server("crud")), 409)
    got = alice.get("/servers/crud")
    assert got.status_code == 200 and got.headers["etag"] == etag
    updated = alice.put("/servers/crud", json=server("crud", description="new"), headers={"If-Match": etag})
    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] != etag and updated.json()["description"] == "new"
    problem(alice.put("/servers/crud", json=server("crud"), headers={"If-Match": etag}), 412)
    problem(alice.put("/servers/crud", json=server("other")), 409)
    with gw.client("bob") as bob:
        problem(bob.get("/servers/crud"), 403)
        problem(bob.delete("/servers/crud"), 403)
    with gw.client("carol", roles="mcp.admin") as admin:
        assert admin.get("/servers/crud").status_code == 200
    assert alice.delete("/servers/crud").status_code == 204
    problem(alice.get("/servers/crud"), 404)


def test_required_roles_grant_read_not_write(gw: GatewayProcess, alice: httpx.Client) -> None:
    assert alice.post("/servers", json=server("shared", requiredRoles=["team"])).status_code == 201
    with gw.client("dave", roles="team") as dave:
        assert dave.get("/servers/shared").status_code == 200
        assert [s["name"] for s in dave.get("/servers").json()["items"]] == ["shared"]
        problem(dave.put("/servers/shared", json=server("shared")), 403)
    with gw.client("erin") as erin:
        assert erin.get("/servers").json()["items"] == []


def test_list_pages(alice: httpx.Client) -> None:
    for name in ("page-a", "page-b", "page-c"):
        assert alice.post("/servers", json=server(name)).status_code == 201
    first = alice.get("/servers", params={"limit": 2}).json()
    names = [s["name"] for s in first["items"]]
    cursor = first["nextCursor"]
    while cursor:
        page = alice.get("/servers", params={"limit": 2, "cursor": cursor}).json()
        names += [s["name"] for s in page["items"]]
        cursor = page["nextCursor"]
    assert [n for n in names if n.startswith("page-")] == ["page-a", "page-b", "page-c"]
    assert names == sorted(names)
    problem(alice.get("/servers", params={"limit": 0}), 400)


def test_deleting_an_adapter_leaves_the_server_with_the_member_missing(alice: httpx.Client) -> None:
    assert alice.post("/adapters", json=example_adapter("doomed", replicas=0)).status_code == 201
    body = {"name": "keeps", "members": [{"adapter": "calc", "prefix": "c_"}, {"adapter": "doomed", "prefix": "d_"}]}
    assert alice.post("/servers", json=body).status_code == 201
    assert alice.delete("/adapters/doomed").status_code == 204
    status = alice.get("/servers/keeps/status")
    assert status.status_code == 200, status.text
    members = {m["adapter"]: m for m in status.json()["members"]}
    assert members["calc"]["present"] is True and members["calc"]["readable"] is True
    assert members["doomed"]["present"] is False and "does not exist" in members["doomed"]["message"]
    assert status.json()["missingMembers"] == 1
    # The server can still be updated with its missing member kept (only new members are checked).
    etag = alice.get("/servers/keeps").headers["etag"]
    assert alice.put("/servers/keeps", json={**body, "description": "d"}, headers={"If-Match": etag}).status_code == 200
