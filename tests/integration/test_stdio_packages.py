"""npm/PyPI package adapters and MCP Registry ``server.json`` imports (issue 17).

The documents in tests/fixtures/serverjson/ follow the official ones of modelcontextprotocol/servers
with versions that are published (the official ones pin unpublished versions). The last two tests run
the packages for real: the local runtime installs them with ``npx``/``uvx`` into the adapter's cache
(the registry must be reachable).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from gateway.control import serverjson
from gateway.control.validation import validate_input
from gateway.errors import Unprocessable
from gateway.models import AdapterInput, PackageRef
from tests.fixtures.gateway import GatewayProcess, start_gateway, wait_ready
from tests.fixtures.mcp_results import first_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "serverjson"
REPO = Path(__file__).resolve().parents[2]


def doc(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((FIXTURES / f"{name}.server.json").read_text())
    return result


def resolve(body: dict[str, Any], registries: tuple[str, ...] = serverjson.LOCAL_REGISTRIES) -> AdapterInput:
    data = msgspec.convert(body, AdapterInput)
    resolved, _ = serverjson.resolve(data, registries=registries)
    validate_input(resolved, max_replicas=10)
    return resolved


# --- server.json → adapter fields (unit) -------------------------------------------------------


def test_pypi_stdio_document_becomes_a_uvx_package_with_its_arguments() -> None:
    data = resolve({"name": "time", "serverJson": doc("time")})
    assert data.package == PackageRef(registry="pypi", name="mcp-server-time", version="2026.10.19")
    assert data.transport == "stdio"
    assert data.args == ["--local-timezone", "UTC"]
    assert data.server_json is None and not data.image_name


def test_required_argument_without_a_value_needs_the_callers_args() -> None:
    with pytest.raises(Unprocessable) as err:
        resolve({"name": "fs", "serverJson": doc("filesystem")})
    assert err.value.field == "serverJson.packages[1].packageArguments[0]"
    assert "allowed_directory" in err.value.detail
    data = resolve({"name": "fs", "serverJson": doc("filesystem"), "args": ["/srv/files"]})
    assert data.package is not None and data.package.registry == "npm" and data.args == ["/srv/files"]


def test_kubernetes_picks_the_oci_package() -> None:
    data = resolve({"name": "fs", "serverJson": doc("filesystem")}, serverjson.KUBERNETES_REGISTRIES)
    assert (data.image_name, data.image_version, data.package) == ("docker.io/mcp/filesystem", "1.0.2", None)
    with pytest.raises(Unprocessable) as err:
        resolve({"name": "t", "serverJson": doc("time")}, serverjson.KUBERNETES_REGISTRIES)
    assert err.value.field == "serverJson.packages" and "pypi" in err.value.detail


def test_missing_required_environment_variables_are_each_named() -> None:
    document = doc("everything")
    document["packages"][0]["environmentVariables"].append({"name": "API_TOKEN", "isRequired": True})
    with pytest.raises(Unprocessable) as err:
        resolve({"name": "ev", "serverJson": document})
    assert err.value.field == "environmentVariables.EVERYTHING_GREETING"
    assert "EVERYTHING_GREETING, API_TOKEN" in err.value.detail
    data = resolve(
        {"name": "ev", "serverJson": document, "environmentVariables": {"EVERYTHING_GREETING": "hi", "API_TOKEN": "x"}}
    )
    # The streamable-http package comes first; PORT's default is not kept: the runtime sets PORT.
    assert data.transport == "streamable-http" and data.args == ["streamableHttp"]
    assert data.environment_variables == {"EVERYTHING_GREETING": "hi", "API_TOKEN": "x"}


@pytest.mark.parametrize("version", [None, "latest", "^1.2.0", ">=2026"])
def test_package_versions_must_be_exact(version: str | None) -> None:
    document = doc("time")
    document["packages"][0]["version"] = version
    with pytest.raises(Unprocessable) as err:
        resolve({"name": "t", "serverJson": document})
    assert err.value.field == "serverJson.packages[0].version"


def test_http_package_must_serve_mcp_at_slash_mcp() -> None:
    document = doc("everything")
    document["packages"][0]["transport"]["url"] = "http://localhost:{PORT}/rpc"
    with pytest.raises(Unprocessable) as err:
        resolve({"name": "ev", "serverJson": document, "environmentVariables": {"EVERYTHING_GREETING": "x"}})
    assert err.value.field == "serverJson.packages[0].transport.url"


def test_command_and_args_are_bounded_and_nul_free() -> None:
    base = {"name": "a", "imageName": "mcp-example", "imageVersion": "1.0.0"}
    extra: dict[str, Any]
    for extra in (
        {"command": []},
        {"command": [""]},
        {"args": ["ok", "bad\x00"]},
        {"args": ["x"] * 65},
        {"command": ["a" * 4097]},
        {"package": {"registry": "npm", "name": "x", "version": "^1.0.0"}},
    ):
        with pytest.raises(msgspec.ValidationError):  # schema keywords: 400 at decoding, in the OpenAPI document
            msgspec.convert({**base, **extra}, AdapterInput)
    with pytest.raises(Unprocessable) as err:
        validate_input(msgspec.convert({"name": "a"}, AdapterInput), max_replicas=3)
    assert err.value.field == "imageName"
    both = {**base, "package": {"registry": "npm", "name": "x", "version": "1.0.0"}}
    with pytest.raises(Unprocessable) as err:
        validate_input(msgspec.convert(both, AdapterInput), max_replicas=3)
    assert err.value.field == "package"


# --- through REST and the CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with start_gateway(tmp_path_factory.mktemp("packages") / "data", env={"MCPGW_LOCAL_PACKAGES": "true"}) as g:
        yield g


def test_server_json_import_through_rest_stores_what_was_chosen(gw: GatewayProcess) -> None:
    with gw.client() as api:
        r = api.post("/adapters", json={"name": "time-doc", "serverJson": doc("time"), "replicaCount": 0})
        assert r.status_code == 201, r.text
        stored = api.get("/adapters/time-doc").json()
        assert stored["package"] == {"registry": "pypi", "name": "mcp-server-time", "version": "2026.10.19"}
        assert stored["transport"] == "stdio" and stored["args"] == ["--local-timezone", "UTC"]
        assert stored["serverName"] == "io.github.modelcontextprotocol/time"
        assert api.get("/adapters/time-doc/status").json()["image"] == "pypi:mcp-server-time==2026.10.19"

        r = api.post("/adapters", json={"name": "ev-doc", "serverJson": doc("everything"), "replicaCount": 0})
        assert r.status_code == 422
        assert r.json()["field"] == "environmentVariables.EVERYTHING_GREETING"
        assert "EVERYTHING_GREETING" in r.json()["detail"]

        r = api.post("/adapters", json={"name": "fs-doc", "serverJson": doc("filesystem"), "replicaCount": 0})
        assert r.status_code == 422 and "allowed_directory" in r.json()["detail"]


def test_cli_import_posts_the_document(gw: GatewayProcess) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "import", *args, "--url", gw.url, "--replicas", "0", "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = cli(str(FIXTURES / "filesystem.server.json"), "--arg", "/srv/files")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["name"] == "filesystem"
    done = cli(str(FIXTURES / "everything.server.json"))
    assert done.returncode == 1 and "EVERYTHING_GREETING" in done.stdout + done.stderr
    done = cli(str(FIXTURES / "everything.server.json"), "--env", "EVERYTHING_GREETING=hello")
    assert done.returncode == 0, done.stdout + done.stderr
    with gw.client() as api:
        stored = api.get("/adapters/everything").json()
    assert stored["transport"] == "streamable-http" and stored["environmentVariables"] == {
        "EVERYTHING_GREETING": "hello"
    }


# --- packages run for real (npx / uvx into the adapter's cache) ----------------------------------


def test_pypi_stdio_package_runs_with_uvx_on_two_replicas(gw: GatewayProcess) -> None:
    with gw.client() as api:
        body = {"name": "time-pkg", "serverJson": doc("time"), "replicaCount": 2}
        assert api.post("/adapters", json=body).status_code == 201
        wait_ready(api, "time-pkg", 2, timeout=120)

    async def run() -> None:
        for client in (
            Client(gw.url + "/adapters/time-pkg/mcp", mode="legacy"),
            Client(sse_client(gw.url + "/adapters/time-pkg/sse"), mode="legacy"),
        ):
            async with client:
                for _ in range(2):
                    result = await client.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
                    assert json.loads(first_text(result))["timezone"] == "Asia/Tokyo"

    anyio.run(run)
    cache = gw.data_dir / "packages" / "time-pkg" / "uv"
    assert cache.is_dir(), "uvx installed into the adapter's cache under the data dir"
    with gw.client() as api:
        assert api.delete("/adapters/time-pkg").status_code == 204
    assert not cache.parent.exists(), "the cache goes with the adapter"


def test_npm_streamable_http_package_runs_with_npx_on_two_replicas(gw: GatewayProcess) -> None:
    with gw.client() as api:
        body = {
            "name": "everything-pkg",
            "package": {"registry": "npm", "name": "@modelcontextprotocol/server-everything", "version": "2026.8.31"},
            "args": ["streamableHttp"],
            "replicaCount": 2,
        }
        r = api.post("/adapters", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["transport"] is None  # the default: streamable-http
        wait_ready(api, "everything-pkg", 2, timeout=120)

    async def run() -> None:
        for _ in range(2):
            async with Client(gw.url + "/adapters/everything-pkg/mcp", mode="legacy") as client:
                for _ in range(2):
                    result = await client.call_tool("echo", {"message": "through the gateway"})
                    assert "through the gateway" in first_text(result)

    anyio.run(run)


def test_packages_run_only_when_the_operator_allows_them(tmp_path: Path) -> None:
    with start_gateway(tmp_path / "data") as g, g.client() as api:
        body = {"name": "pkg", "transport": "stdio", "serverJson": doc("time"), "replicaCount": 1}
        assert api.post("/adapters", json=body).status_code == 201

        def refused() -> dict[str, Any] | None:
            status = api.get("/adapters/pkg/status").json()
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            return ready if ready["reason"] == "PackagesDisabled" else None

        from tests.fixtures.gateway import wait_for

        ready = wait_for(refused, timeout=20, what="PackagesDisabled")
        assert "MCPGW_LOCAL_PACKAGES=true" in ready["message"]
        assert not (g.data_dir / "packages" / "pkg").exists()
