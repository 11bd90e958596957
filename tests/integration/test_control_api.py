"""The /adapters REST API against a real gateway process: validation, errors, access, paging."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import GatewayProcess, example_adapter, problem, start_gateway


@pytest.fixture(scope="module", params=["sqlite", "cosmos"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The same API tests run with the SQLite store and with Cosmos DB (a Cosmos-protocol server)."""
    env = {"MCPGW_MAX_REPLICAS": "5"}
    if request.param == "cosmos":
        from tests.fixtures.cosmos import shared_cosmos_emulator

        emulator = shared_cosmos_emulator()
        env.update(emulator.env(emulator.settings()))
    with start_gateway(tmp_path_factory.mktemp(f"control-{request.param}") / "data", env) as g:
        yield g


@pytest.fixture
def alice(gw: GatewayProcess) -> Iterator[httpx.Client]:
    with gw.client("alice") as c:
        yield c


VALID = example_adapter("valid", replicas=0)

INVALID_BODIES = [
    ({**VALID, "name": "Upper"}, "name"),
    ({**VALID, "name": "1starts-with-digit"}, "name"),
    ({**VALID, "name": "ends-with-dash-"}, "name"),
    ({**VALID, "name": "a" * 53}, "name"),
    ({**VALID, "name": "under_score"}, "name"),
    ({**VALID, "imageName": "Bad Image"}, "imageName"),
    ({**VALID, "imageName": "a..b"}, "imageName"),
    ({**VALID, "imageName": "../etc"}, "imageName"),
    ({**VALID, "imageVersion": "-1"}, "imageVersion"),
    ({**VALID, "imageVersion": "v" * 129}, "imageVersion"),
    ({**VALID, "replicaCount": -1}, "replicaCount"),
    ({**VALID, "replicaCount": 6}, "replicaCount"),
    ({**VALID, "replicaCount": "two"}, "replicaCount"),
    ({**VALID, "environmentVariables": {"1BAD": "x"}}, "environmentVariables.1BAD"),
    ({**VALID, "environmentVariables": {"OK": 1}}, "environmentVariables"),
    ({**VALID, "requiredRoles": [""]}, "requiredRoles"),
    ({**VALID, "unexpected": True}, "unexpected"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_BODIES, ids=[f for _, f in INVALID_BODIES])
def test_invalid_adapter_is_rejected_with_400_naming_the_field(
    alice: httpx.Client, body: dict[str, Any], field: str
) -> None:
    details = problem(alice.post("/adapters", json=body), 400)
    assert details["field"] == field, details
    assert alice.get(f"/adapters/{body.get('name', 'valid')}").status_code in (400, 404)


def test_adapter_without_an_image_source_is_422_naming_image_name(alice: httpx.Client) -> None:
    # imageName became optional (issue 17: a package or a serverJson may stand instead): the body is
    # schema-valid, what it asks for is not deployable.
    body = {k: v for k, v in VALID.items() if k != "imageName"}
    assert problem(alice.post("/adapters", json=body), 422)["field"] == "imageName"


def test_malformed_json_gets_400(alice: httpx.Client) -> None:
    problem(alice.post("/adapters", content=b"{not json", headers={"content-type": "application/json"}), 400)


def test_create_returns_201_location_etag_and_the_resource(alice: httpx.Client) -> None:
    body = example_adapter("created", replicas=0, description="hello", requiredRoles=["reader", "reader"])
    response = alice.post("/adapters", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/adapters/created"
    assert response.headers["etag"].startswith('"')
    resource = response.json()
    assert resource["id"] == resource["name"] == "created"
    assert resource["createdBy"] == "alice"
    assert resource["requiredRoles"] == ["reader"]
    assert resource["createdAt"] == resource["lastUpdatedAt"]
    assert resource["generation"] == 1
    assert list(resource)[:4] == ["id", "name", "imageName", "imageVersion"]
    problem(alice.post("/adapters", json=body), 409)


def test_unknown_adapter_is_404_everywhere(alice: httpx.Client) -> None:
    for method, path in [
        ("GET", "/adapters/ghost"),
        ("GET", "/adapters/ghost/status"),
        ("GET", "/adapters/ghost/logs"),
        ("DELETE", "/adapters/ghost"),
    ]:
        problem(alice.request(method, path), 404)
    problem(alice.put("/adapters/ghost", json=example_adapter("ghost")), 404)


def test_access_rules_of_reader_writer_admin_and_stranger(gw: GatewayProcess, alice: httpx.Client) -> None:
    created = alice.post("/adapters", json=example_adapter("owned", replicas=0, requiredRoles=["readers"]))
    assert created.status_code == 201
    with (
        gw.client("bob") as stranger,
        gw.client("carol", roles="readers") as reader,
        gw.client("root", roles="mcp.admin") as admin,
    ):
        problem(stranger.get("/adapters/owned"), 403)
        problem(stranger.get("/adapters/owned/status"), 403)
        problem(stranger.delete("/adapters/owned"), 403)
        assert "owned" not in [a["name"] for a in stranger.get("/adapters").json()["items"]]

        assert reader.get("/adapters/owned").status_code == 200
        assert reader.get("/adapters/owned/status").status_code == 200
        assert "owned" in [a["name"] for a in reader.get("/adapters").json()["items"]]
        problem(reader.put("/adapters/owned", json=example_adapter("owned", replicas=0)), 403)
        problem(reader.delete("/adapters/owned"), 403)

        assert admin.get("/adapters/owned").status_code == 200
        updated = admin.put("/adapters/owned", json=example_adapter("owned", replicas=0, description="by admin"))
        assert updated.status_code == 200 and updated.json()["createdBy"] == "alice"
        assert admin.delete("/adapters/owned").status_code == 204
    problem(alice.get("/adapters/owned"), 404)


def test_workload_identity_needs_admin_and_is_immutable(gw: GatewayProcess, alice: httpx.Client) -> None:
    body = example_adapter("wi", replicas=0, useWorkloadIdentity=True)
    assert problem(alice.post("/adapters", json=body), 403)["field"] == "useWorkloadIdentity"
    with gw.client("root", roles="mcp.admin") as admin:
        assert admin.post("/adapters", json=body).status_code == 201
        changed = admin.put("/adapters/wi", json={**body, "useWorkloadIdentity": False})
        assert problem(changed, 409)["field"] == "useWorkloadIdentity"


def test_put_rules_name_immutable_generation_and_etags(alice: httpx.Client) -> None:
    created = alice.post("/adapters", json=example_adapter("gen", replicas=0)).json()
    assert problem(alice.put("/adapters/gen", json=example_adapter("other", replicas=0)), 409)["field"] == "name"

    meta_only = alice.put("/adapters/gen", json=example_adapter("gen", replicas=0, description="new words"))
    assert meta_only.status_code == 200 and meta_only.json()["generation"] == created["generation"]
    assert meta_only.json()["lastUpdatedAt"] >= created["lastUpdatedAt"]

    spec = alice.put("/adapters/gen", json=example_adapter("gen", replicas=0, environmentVariables={"A": "1"}))
    assert spec.json()["generation"] == created["generation"] + 1

    stale = alice.put(
        "/adapters/gen", json=example_adapter("gen", replicas=0), headers={"If-Match": meta_only.headers["etag"]}
    )
    problem(stale, 412)
    fresh = alice.put(
        "/adapters/gen", json=example_adapter("gen", replicas=0), headers={"If-Match": spec.headers["etag"]}
    )
    assert fresh.status_code == 200


def test_list_pages_with_limit_and_cursor(gw: GatewayProcess) -> None:
    with gw.client("pager") as pager:
        names = [f"page-{i:02d}" for i in range(7)]
        for name in names:
            assert pager.post("/adapters", json=example_adapter(name, replicas=0)).status_code == 201
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = pager.get("/adapters", params=params).json()
            assert len(page["items"]) <= 3
            seen += [a["name"] for a in page["items"]]
            cursor = page["nextCursor"]
            if not cursor:
                break
        assert seen == names  # only pager's own adapters, in name order
        assert problem(pager.get("/adapters", params={"limit": 0}), 400)["field"] == "limit"
        assert problem(pager.get("/adapters", params={"cursor": "%%%"}), 400)["field"] == "cursor"


def test_logs_parameters_are_validated(alice: httpx.Client) -> None:
    alice.post("/adapters", json=example_adapter("logparams", replicas=1))
    assert problem(alice.get("/adapters/logparams/logs", params={"tail": 0}), 400)["field"] == "tail"
    assert problem(alice.get("/adapters/logparams/logs", params={"instance": -1}), 400)["field"] == "instance"
    problem(alice.get("/adapters/logparams/logs", params={"instance": 5}), 404)
    assert problem(alice.get("/adapters/logparams/logs", params={"tail": "x"}), 400)["field"] == "tail"


def test_unknown_image_is_refused_at_post_and_put_with_422_naming_image_name(alice: httpx.Client) -> None:
    # Issue 17: the local runtime asks its image catalog before anything is stored. Before, the adapter
    # was stored and its status said ImageNotFound (records stored then still do: test_local_runtime.py).
    refused = problem(alice.post("/adapters", json=example_adapter("noimage", imageName="does-not-exist")), 422)
    assert refused["field"] == "imageName"
    assert "does-not-exist:1.0.0" in refused["detail"] and "mcp-example:1.0.0" in refused["detail"]
    problem(alice.get("/adapters/noimage"), 404)

    assert alice.post("/adapters", json=example_adapter("noimage", replicas=0)).status_code == 201
    moved = example_adapter("noimage", replicas=0, imageVersion="0.0.0-missing")
    assert problem(alice.put("/adapters/noimage", json=moved), 422)["field"] == "imageName"
    assert alice.get("/adapters/noimage").json()["imageVersion"] == "1.0.0"
    assert alice.delete("/adapters/noimage").status_code == 204


def test_health_endpoints_need_no_identity(gw: GatewayProcess) -> None:
    assert httpx.get(gw.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"store": "ok", "runtime": "ok"}


def test_unknown_route_and_method_are_problem_json(alice: httpx.Client) -> None:
    problem(alice.get("/nope"), 404)
    problem(alice.patch("/adapters/x"), 405)


def test_bad_dev_identity_header_is_400(gw: GatewayProcess) -> None:
    response = httpx.get(gw.url + "/adapters", headers={"X-Dev-User-Id": "bad user!"})
    assert problem(response, 400)["field"] == "X-Dev-User-Id"


def test_openapi_document_is_served(gw: GatewayProcess) -> None:
    doc = httpx.get(gw.url + "/openapi/openapi.json").json()
    assert "/adapters" in doc["paths"] and "/adapters/{name}/status" in doc["paths"]


def test_checked_in_openapi_matches_the_app() -> None:
    import json

    from gateway.cli import openapi_document

    path = Path(__file__).resolve().parents[2] / "openapi" / "mcp-gateway.openapi.json"
    assert path.exists(), "run `mcp-gateway openapi` to write openapi/mcp-gateway.openapi.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(openapi_document())), (
        "openapi/mcp-gateway.openapi.json is stale: run `mcp-gateway openapi`"
    )


def test_limits_doc_lists_every_setting() -> None:
    from gateway.cli import settings_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "limits.md").read_text()
    assert settings_markdown() in doc, "docs/limits.md is stale: regenerate its table with `mcp-gateway settings`"
