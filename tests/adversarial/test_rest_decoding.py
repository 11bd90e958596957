"""Every REST decoding error is a 400 problem that names the parameter; nothing hostile reaches a 500.

Query parameters, path parameters and bodies a client can get wrong — non-ASCII cursors, numbers
as text, text as numbers, integers beyond 64 bits, ``0`` for a boolean — each get 400 with
``field`` naming the part at fault (a real gateway, dev auth). A well-formed cursor this API never
returned is a position in name order, not an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir: Path = tmp_path_factory.mktemp("decoding") / "data"
    with start_gateway(data_dir, {"MCPGW_MAX_REPLICAS": "3"}) as gateway:
        with gateway.client() as client:
            assert client.post("/adapters", json=example_adapter("known", replicas=0)).status_code == 201
        yield gateway


@pytest.fixture
def api(gw: GatewayProcess) -> Iterator[httpx.Client]:
    with gw.client() as client:
        yield client


def bad_request(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == 400 and body["detail"]
    return body


QUERIES = [
    ("/adapters?cursor=%C3%A9", "cursor"),  # was a 500: non-ASCII text in base64 decoding
    ("/adapters?cursor=%00", "cursor"),
    ("/adapters?cursor=abcde", "cursor"),  # 4n+1 characters are never base64url
    ("/adapters?cursor=" + "A" * 300, "cursor"),
    ("/adapters?limit=abc", "limit"),
    ("/adapters?limit=0", "limit"),
    ("/adapters?limit=1.5", "limit"),
    ("/adapters?limit=99999999999999999999999999", "limit"),
    ("/adapters?limit=101", "limit"),
    ("/adapters/known/logs?tail=x", "tail"),
    ("/adapters/known/logs?tail=0", "tail"),
    ("/adapters/known/logs?tail=10001", "tail"),
    ("/adapters/known/logs?instance=-1", "instance"),
    ("/adapters/known/logs?instance=%C3%A9", "instance"),
    ("/adapters/Upper-Case", "name"),
    ("/adapters/%C3%A9/status", "name"),
    ("/adapters/" + "a" * 60, "name"),
]


@pytest.mark.parametrize(("url", "field"), QUERIES, ids=[u for u, _ in QUERIES])
def test_bad_parameters_are_400_naming_the_parameter(api: httpx.Client, url: str, field: str) -> None:
    assert bad_request(api.get(url))["field"] == field


BODIES: list[tuple[dict[str, object], str]] = [
    ({"replicaCount": "2"}, "replicaCount"),  # Litestar's lax conversion accepted this
    ({"replicaCount": 1.5}, "replicaCount"),
    ({"replicaCount": 2**70}, "replicaCount"),
    ({"useWorkloadIdentity": 0}, "useWorkloadIdentity"),
    ({"useWorkloadIdentity": "false"}, "useWorkloadIdentity"),
    ({"environmentVariables": {"A": 1}}, "environmentVariables"),
    ({"requiredRoles": "reader"}, "requiredRoles"),
    ({"name": 7}, "name"),
]


@pytest.mark.parametrize(("patch", "field"), BODIES, ids=[f"{f}={p[f]!r}"[:40] for p, f in BODIES])
def test_body_fields_of_the_wrong_type_are_400_naming_the_field(
    api: httpx.Client, patch: dict[str, Any], field: str
) -> None:
    body = {**example_adapter("typed", replicas=0), **patch}
    assert bad_request(api.post("/adapters", json=body))["field"] == field
    update = {**example_adapter("known", replicas=0), **patch}
    assert bad_request(api.put("/adapters/known", json=update))["field"] == field
    assert api.get("/adapters/typed").status_code == 404


@pytest.mark.parametrize("raw", [b"", b"[]", b"null", b"{", b'"x"', b"\xff\xfe"])
def test_bodies_that_are_not_an_object_are_400(api: httpx.Client, raw: bytes) -> None:
    response = api.post("/adapters", content=raw, headers={"Content-Type": "application/json"})
    bad_request(response)


def test_an_integral_float_is_an_integer_as_json_schema_says(api: httpx.Client) -> None:
    created = api.post("/adapters", json={**example_adapter("floaty", replicas=0), "replicaCount": 0.0})
    assert created.status_code == 201 and created.json()["replicaCount"] == 0
    assert api.delete("/adapters/floaty").status_code == 204


def test_a_well_formed_cursor_is_a_position_in_name_order(api: httpx.Client) -> None:
    # base64url("kn") sorts before "known"; base64url("zzz") after everything.
    assert [a["name"] for a in api.get("/adapters", params={"cursor": "a24"}).json()["items"]] == ["known"]
    assert api.get("/adapters", params={"cursor": "enp6"}).json() == {"items": [], "nextCursor": None}


def test_changing_an_immutable_field_is_409(api: httpx.Client) -> None:
    renamed = api.put("/adapters/known", json=example_adapter("other-name", replicas=0))
    assert renamed.status_code == 409 and renamed.json()["field"] == "name"


def test_denied_environment_names_can_be_written_into_the_schema(tmp_path: Path) -> None:
    """The env deny-list (case-insensitive globs) as one JSON Schema pattern, so schemathesis avoids it."""
    from litestar.openapi.spec import Schema

    from gateway.app import build_components, create_litestar
    from gateway.control.openapi import complete_openapi, globs_pattern
    from gateway.settings import Settings

    pattern = globs_pattern(["LD_*", "PATH", "NODE_OPTIONS", "?ASH_ENV"])
    assert pattern is not None
    denied = re.compile(pattern)
    for name in ("LD_PRELOAD", "ld_library_path", "Path", "node_options", "BASH_ENV"):
        assert denied.match(name), name
    for name in ("PATHS", "MY_LD_X", "NODE", "ASH_ENV"):
        assert not denied.match(name), name
    doc = create_litestar(build_components(Settings(example_adapter=False, data_dir=tmp_path))).openapi_schema
    complete_openapi(doc, max_replicas=2, list_max_limit=7, denied_env_globs=["LD_*"])
    assert doc.components.schemas is not None
    props = doc.components.schemas["AdapterInput"].properties
    assert props is not None
    env = props["environmentVariables"]
    assert isinstance(env, Schema) and isinstance(env.property_names, Schema)
    assert env.property_names.to_schema()["not"] == {"pattern": "^([Ll][Dd]_.*)$"}
