"""A replica started by a user with no roles cannot reach the gateway's secrets (issue 12).

Observed on main before isolation: a replica ran as the gateway's user and could read
``session.key`` (forging anyone's session ids), read and write ``gateway.db`` and read
``/proc/<gateway pid>/environ``. Here a real gateway runs ``tests/upstreams/hostile_replica.py``
for a caller with no roles; the replica tries every one of those, plus making a file appear in
the data dir and in a world-writable folder outside its working area, and reports what it could
do in its log. The data dir's parents are traversable on purpose: only the gateway's own
mechanisms stand in the way (the data dir's mode, the replica user, the sandbox).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.child_process import SETPRIV
from gateway.runtime import _local_isolation
from gateway.runtime._local_isolation import bwrap_works, detect
from tests.fixtures.gateway import GatewayProcess, example_adapter, replica_processes, start_gateway, wait_for
from tests.fixtures.local_runtime import write_catalog

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent.parent
SYSTEM_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "python3"
"""A python3 every user may run (the gateway's own may live under /root, out of the replica user's reach)."""
HOSTILE = {"command": [SYSTEM_PYTHON, "{repo}/tests/upstreams/hostile_replica.py"], "ready_path": "/healthz"}
SECRETS = [
    "read session.key",
    "read gateway.db",
    "open gateway.db for writing",
    "list the data dir",
    "list the logs",
    "read the gateway's environ",
    "find any MCPGW_ environment",
    "create a file in the data dir",
]
IS_ROOT = os.geteuid() == 0
BWRAP = bwrap_works() or bool(os.environ.get("CI"))


@pytest.fixture
def arena() -> Iterator[Path]:
    """A folder under /tmp that everybody may enter (0755), with a world-writable 'outside' in it."""
    root = Path(tempfile.mkdtemp(prefix="mcpgw-isolation-"))
    root.chmod(0o755)
    (root / "outside").mkdir()
    (root / "outside").chmod(0o1777)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_hostile(arena: Path, settings: dict[str, str]) -> tuple[GatewayProcess, dict[str, str]]:
    """Start a gateway with ``settings``, let a no-role user deploy the hostile replica; its report."""
    catalog = write_catalog(arena / "catalog.toml", {"hostile:1": HOSTILE})
    data = arena / "data"
    with start_gateway(data, {"MCPGW_IMAGE_CATALOG": str(catalog), **settings}) as gw, gw.client("mallory") as user:
        # A first adapter, so there are other adapters' logs to look for.
        assert user.post("/adapters", json=example_adapter("bystander", 0)).status_code == 201
        env = {
            "HOSTILE_DATA_DIR": str(data),
            "HOSTILE_GATEWAY_PID": str(gw.pid),
            "HOSTILE_OUTSIDE": str(arena / "outside"),
        }
        body = {"name": "hostile", "imageName": "hostile", "imageVersion": "1", "replicaCount": 1}
        created = user.post("/adapters", json={**body, "environmentVariables": env})
        assert created.status_code == 201, created.text

        def report() -> dict[str, str] | None:
            logs = user.get("/adapters/hostile/logs", params={"tail": 200}).text
            lines = [line for line in logs.splitlines() if line.startswith("HOSTILE-REPORT ")]
            return json.loads(lines[-1].split(" ", 1)[1]) if lines else None

        attempts: dict[str, str] = wait_for(report, timeout=30, what="the hostile replica's report")
        assert replica_processes(data), "the marker must still find replicas that run as another user"
        return gw, attempts


def refused(attempts: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The attempts among ``names`` that were not refused (empty when all were)."""
    return {name: attempts[name] for name in names if not str(attempts[name]).startswith("refused")}


@pytest.mark.skipif(not BWRAP, reason="bubblewrap cannot create a sandbox on this machine")
def test_sandboxed_replica_reaches_no_secret_and_writes_only_its_own_area(arena: Path) -> None:
    gw, attempts = run_hostile(arena, {"MCPGW_LOCAL_SANDBOX": "bwrap"})
    assert refused(attempts, [*SECRETS, "create a file outside"]) == {}, attempts
    assert attempts["write its own working area"].startswith("done"), attempts
    assert list((arena / "outside").iterdir()) == []
    assert not list((arena / "data").glob("owned-by-*"))
    if IS_ROOT:
        assert attempts["whoami"].startswith("uid 65534 "), attempts
    assert int(attempts["capabilities"], 16) == 0, attempts
    assert "in a bubblewrap sandbox" in gw.log_text()
    assert_private(arena / "data")


@pytest.mark.skipif(not IS_ROOT, reason="replicas run as another user only when the gateway is root")
def test_replica_as_another_user_reaches_no_secret(arena: Path) -> None:
    """Without the sandbox, the replica user alone keeps the data dir and the environment away.

    (It can still write world-writable folders such as /tmp: the start-up log and
    docs/security.md say so.)
    """
    gw, attempts = run_hostile(arena, {"MCPGW_LOCAL_SANDBOX": "off"})
    assert refused(attempts, SECRETS) == {}, attempts
    assert attempts["whoami"].startswith("uid 65534 ") and int(attempts["capabilities"], 16) == 0, attempts
    assert attempts["write its own working area"].startswith("done"), attempts
    assert not list((arena / "data").glob("owned-by-*"))
    assert "without a sandbox (MCPGW_LOCAL_SANDBOX=off): they cannot read the data dir" in gw.log_text()
    assert_private(arena / "data")


def test_without_isolation_the_gateway_warns_and_the_replica_reaches_everything(arena: Path) -> None:
    """What main did (and what an unprivileged gateway without bwrap still does): say so loudly."""
    gw, attempts = run_hostile(arena, {"MCPGW_LOCAL_SANDBOX": "off", "MCPGW_LOCAL_REPLICA_USER": ""})
    assert attempts["read session.key"].startswith("done"), attempts
    assert attempts["read the gateway's environ"].startswith("done"), attempts
    warning = [line for line in gw.log_text().splitlines() if "replicas are NOT isolated" in line]
    assert len(warning) == 1 and "WARNING" in warning[0] and "docs/security.md" in warning[0], gw.log_text()


@pytest.mark.skipif(not (BWRAP and IS_ROOT), reason="needs root and a working bubblewrap")
def test_root_replica_in_the_sandbox_has_no_capabilities_and_the_gateway_warns(arena: Path) -> None:
    """MCPGW_LOCAL_REPLICA_USER='': the replica keeps uid 0 (bwrap would keep every capability)."""
    gw, attempts = run_hostile(arena, {"MCPGW_LOCAL_SANDBOX": "bwrap", "MCPGW_LOCAL_REPLICA_USER": ""})
    assert attempts["whoami"].startswith("uid 0 ") and int(attempts["capabilities"], 16) == 0, attempts
    # As uid 0 it may write the empty tmpfs that stands in for the data dir: nothing reaches the host.
    in_tmpfs = ["list the data dir", "create a file in the data dir"]
    assert refused(attempts, [*(n for n in SECRETS if n not in in_tmpfs), "create a file outside"]) == {}, attempts
    assert attempts["list the data dir"] == "done: []", attempts
    assert not list((arena / "data").glob("owned-by-*")) and list((arena / "outside").iterdir()) == []
    assert "but as root (MCPGW_LOCAL_REPLICA_USER is empty)" in gw.log_text()


def assert_private(data: Path) -> None:
    """The data dir is 0700 and every file the gateway keeps in it 0600."""
    assert data.stat().st_mode & 0o777 == 0o700
    for name in ("session.key", "logs", "runtime"):
        mode = (data / name).stat().st_mode & 0o777
        assert mode in (0o600, 0o700), (name, oct(mode))
    for log in (data / "logs").iterdir():
        assert log.stat().st_mode & 0o777 == 0o600, log


@pytest.mark.skipif(not BWRAP, reason="bubblewrap cannot create a sandbox on this machine")
def test_sandbox_hides_container_secret_mounts_even_when_world_readable(
    arena: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod's service-account token or a Docker secret is often 0644: the sandbox shows it empty."""
    # Not under /tmp (the sandbox replaces all of /tmp anyway, and the checkout may live there): a
    # folder the sandbox would show.
    parent = next((p for p in ("/var/lib", "/srv", "/opt") if os.access(p, os.W_OK)), str(REPO))
    secrets = Path(tempfile.mkdtemp(dir=parent, prefix=".mcpgw-run-secrets-"))
    try:
        secrets.chmod(0o755)
        (secrets / "token").write_text("eyJ-not-for-replicas")
        (secrets / "token").chmod(0o644)
        monkeypatch.setattr(_local_isolation, "SECRET_MOUNTS", (str(secrets),))
        isolation, why = detect(data_dir=arena / "data", replica_user="nobody", sandbox="bwrap", setpriv=SETPRIV)
        assert why is None
        start = isolation.launch(["/bin/ls", "-A", str(secrets)], cwd="/", replica="probe")
        listed = subprocess.run(start.argv, cwd=start.cwd, capture_output=True, text=True, check=True, timeout=10)
        assert listed.stdout == ""
        monkeypatch.setattr(_local_isolation, "SECRET_MOUNTS", ())
        isolation, _ = detect(data_dir=arena / "data", replica_user="nobody", sandbox="bwrap", setpriv=SETPRIV)
        start = isolation.launch(["/bin/ls", "-A", str(secrets)], cwd="/", replica="probe")
        listed = subprocess.run(start.argv, cwd=start.cwd, capture_output=True, text=True, check=True, timeout=10)
        assert listed.stdout == "token\n"  # the same folder, not declared secret: visible (the check is real)
    finally:
        shutil.rmtree(secrets, ignore_errors=True)


def test_working_dirs_outside_the_sandbox_are_private_and_leftovers_go(arena: Path) -> None:
    """Each replica's HOME is its own 0700 folder; a killed gateway's leftovers go on next use."""
    first, _ = detect(data_dir=arena / "data", replica_user="nobody", sandbox="off", setpriv=SETPRIV)
    home = Path(first.launch(["/bin/true"], cwd="/", replica="a-0").env["HOME"])
    (home / "left-behind").write_text("x")  # the gateway is SIGKILLed: no cleanup()
    assert home.stat().st_mode & 0o777 == 0o700 and home.parent.stat().st_mode & 0o777 == 0o711
    if IS_ROOT:
        assert home.stat().st_uid == 65534
    second, _ = detect(data_dir=arena / "data", replica_user="nobody", sandbox="off", setpriv=SETPRIV)
    again = Path(second.launch(["/bin/true"], cwd="/", replica="b-0").env["HOME"])
    assert again.parent == home.parent and not home.exists()
    second.cleanup()
    assert not again.parent.exists()
