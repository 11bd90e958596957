"""Adapter environment variables cannot change how a replica's program is loaded (issue 12).

Observed on main before the deny-list (embedded mode, a user with no roles): ``PYTHONWARNINGS`` +
``BROWSER`` ran a shell command as the gateway's user, ``PYTHONPATH`` ran a ``sitecustomize.py``,
``LD_PRELOAD`` reached the loader. Each is now refused at ``POST`` and ``PUT /adapters`` with a
400 naming the variable, and refused by the local runtime (stripped by the Kubernetes one) when a
record holding one is already in the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import kubernetes_runtime_config
from gateway.envpolicy import ALLOWED_PYTHON, DEFAULT_POLICY, EnvPolicy
from gateway.models import AdapterRecord
from gateway.runtime._kube_manifests import REPLICA_ID_ENV, statefulset_manifest
from gateway.runtime._local_process import OWNER_ENV
from gateway.settings import Settings
from gateway.store.sqlite import SqliteAdapterStore
from tests.fixtures.gateway import GatewayProcess, example_adapter, replica_processes, start_gateway, wait_for
from tests.fixtures.local_runtime import RuntimeFactory, record


def exploits(marker: Path) -> dict[str, dict[str, str]]:
    """The observed attacks, each as the environment an adapter creator sent."""
    return {
        # warnings filter category 'antigravity.Foo' imports antigravity, which opens a browser: BROWSER.
        "pythonwarnings-browser": {
            "PYTHONWARNINGS": "all::antigravity.Foo",
            "BROWSER": f"/usr/bin/touch {marker} %s",
        },
        "pythonpath": {"PYTHONPATH": str(marker.parent)},  # a sitecustomize.py there runs at start-up
        "ld-preload": {"LD_PRELOAD": str(marker.parent / "evil.so")},
    }


ATTACKS = exploits(Path("/tmp/owned/marker"))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One embedded gateway whose operator added their own globs to the deny-list."""
    with start_gateway(tmp_path_factory.mktemp("envdeny") / "data", {"MCPGW_ENV_DENY": "SECRET_*, Extra"}) as g:
        yield g


@pytest.fixture
def nobody(gw: GatewayProcess) -> Iterator[httpx.Client]:
    """A caller with no roles at all: anyone may create adapters."""
    with gw.client("mallory") as c:
        yield c


def assert_refused(response: httpx.Response, names: set[str]) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    field = body["field"]
    assert field.startswith("environmentVariables."), body
    name = field.split(".", 1)[1]
    assert name in names and repr(name) in body["detail"], body


@pytest.mark.parametrize("attack", ATTACKS)
def test_observed_attack_is_refused_at_post_with_400_naming_the_variable(nobody: httpx.Client, attack: str) -> None:
    env = ATTACKS[attack]
    assert_refused(
        nobody.post("/adapters", json=example_adapter(f"post-{attack}", 0, environmentVariables=env)), set(env)
    )
    assert nobody.get(f"/adapters/post-{attack}").status_code == 404


@pytest.mark.parametrize("attack", ATTACKS)
def test_observed_attack_is_refused_at_put_with_400_naming_the_variable(nobody: httpx.Client, attack: str) -> None:
    name = f"put-{attack}"
    created = nobody.post("/adapters", json=example_adapter(name, 0, environmentVariables={"GREETING": "hi"}))
    assert created.status_code == 201, created.text
    env = ATTACKS[attack]
    assert_refused(nobody.put(f"/adapters/{name}", json=example_adapter(name, 0, environmentVariables=env)), set(env))
    assert nobody.get(f"/adapters/{name}").json()["environmentVariables"] == {"GREETING": "hi"}


@pytest.mark.parametrize(
    "name", ["ld_preload", "Path", "NODE_OPTIONS", "MCPGW_SESSION_KEYS", "PORT", OWNER_ENV, "SECRET_TOKEN", "extra"]
)
def test_other_denied_names_case_insensitively_and_operator_globs(nobody: httpx.Client, name: str) -> None:
    body = example_adapter("other", 0, environmentVariables={"OK": "1", name: "x"})
    assert_refused(nobody.post("/adapters", json=body), {name})


def test_harmless_python_variables_and_ordinary_names_are_accepted(nobody: httpx.Client) -> None:
    env = {name: "1" for name in ALLOWED_PYTHON} | {"GREETING": "hello", "API_URL": "https://x.example"}
    response = nobody.post("/adapters", json=example_adapter("harmless", 0, environmentVariables=env))
    assert response.status_code == 201, response.text


# --- the deny-list itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "DYLD_INSERT_LIBRARIES",
        "GCONV_PATH",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONWARNINGS",
        "PYTHONHOME",
        "PYTHONINSPECT",
        "NODE_OPTIONS",
        "NODE_PATH",
        "npm_config_script_shell",
        "PATH",
        "BASH_ENV",
        "ENV",
        "PERL5OPT",
        "PERL5LIB",
        "RUBYOPT",
        "RUBYLIB",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "BROWSER",
        "HOME",
        "VIRTUAL_ENV",
        "MCPGW_DATA_DIR",
        "HOST",
        "PORT",
        OWNER_ENV,
        REPLICA_ID_ENV,
        "TMPDIR",
        "GIT_SSH_COMMAND",
    ],
)
def test_deny_list_covers(name: str) -> None:
    assert DEFAULT_POLICY.denied(name) and DEFAULT_POLICY.denied(name.lower())


def test_deny_list_allows_a_documented_few_and_ordinary_names() -> None:
    for name in [*ALLOWED_PYTHON, "GREETING", "API_KEY", "LOG_LEVEL", "NODE_ENV", "LANG"]:
        assert not DEFAULT_POLICY.denied(name), name
    extended = EnvPolicy(["secret_*", " FOO "])
    assert extended.denied("SECRET_X") and extended.denied("foo") and not extended.denied("FOOD")
    assert extended.denied_names({"B": "", "LD_AUDIT": "", "SECRET_A": ""}) == ["LD_AUDIT", "SECRET_A"]


# --- records already in the store ---------------------------------------------------------------


async def test_local_runtime_refuses_a_record_holding_an_observed_attack(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    """The runtime does not trust the API: an old record with PYTHONWARNINGS + BROWSER starts nothing."""
    marker = tmp_path / "browser-ran"
    runtime = await make_runtime()
    for attack, env in exploits(marker).items():
        rec = record(attack, 1, env=env)
        await runtime.apply(rec)
        status = await runtime.status(rec)
        [issue] = status.issues
        assert issue.reason == "EnvironmentRefused"
        assert all(name in issue.message for name in env), issue.message
        assert status.ready == 0 and runtime.endpoints(attack) == ()
    assert not (tmp_path / "data" / "logs").exists() or not any((tmp_path / "data" / "logs").iterdir())
    assert not marker.exists()


async def test_local_runtime_honours_the_operator_globs(make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime(env_deny=("TEAM_*",))
    rec = record("team", 1, env={"TEAM_TOKEN": "x"})
    await runtime.apply(rec)
    assert [i.reason for i in (await runtime.status(rec)).issues] == ["EnvironmentRefused"]


def test_kubernetes_manifest_strips_denied_names_and_keeps_its_own_replica_id() -> None:
    rec = AdapterRecord(
        name="old",
        image_name="mcp-example",
        image_version="1.0.0",
        environment_variables={"LD_PRELOAD": "/x.so", "GREETING": "hi", REPLICA_ID_ENV: "forged", "TEAM_X": "1"},
    )
    [container] = statefulset_manifest(
        rec, kubernetes_runtime_config(Settings(runtime="kubernetes", env_deny=("TEAM_*",)))
    )["spec"]["template"]["spec"]["containers"]
    assert container["env"] == [
        {"name": "GREETING", "value": "hi"},
        {"name": REPLICA_ID_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def test_record_written_to_the_store_before_the_upgrade_starts_nothing(tmp_path: Path) -> None:
    """A gateway upgraded over a database that already holds LD_PRELOAD: status says why, nothing runs."""
    data = tmp_path / "data"

    async def seed() -> None:
        store = SqliteAdapterStore(data / "gateway.db")
        await store.start()
        now = datetime.now(UTC)
        await store.create(
            AdapterRecord(
                name="legacy",
                image_name="mcp-example",
                image_version="1.0.0",
                environment_variables={"LD_PRELOAD": "/tmp/evil.so", "PYTHONPATH": "/tmp"},
                replica_count=1,
                created_by="mallory",
                created_at=now,
                last_updated_at=now,
            )
        )
        await store.close()

    asyncio.run(seed())
    with start_gateway(data) as gw, gw.client("mallory") as client:

        def refused() -> dict[str, Any] | None:
            status: dict[str, Any] = client.get("/adapters/legacy/status").json()
            ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
            return status if ready and ready[0]["reason"] == "EnvironmentRefused" else None

        status = wait_for(refused, timeout=20, what="EnvironmentRefused on the legacy adapter")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert "LD_PRELOAD" in ready["message"] and "PYTHONPATH" in ready["message"]
        assert replica_processes(data) == {}
