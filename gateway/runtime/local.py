"""The local runtime: every replica is a child process of the gateway on a free loopback port.

How it works (Linux; asyncio or uvloop):

* **Images.** ``imageName:imageVersion`` resolves through the image catalog (``images.toml`` beside
  this module, overlaid by the user catalog of setting ``image_catalog``) to a command line. An
  image no catalog knows is refused by the API (``check_image``: 422 naming ``imageName``); a record
  stored before (or whose catalog entry was removed since) starts nothing: status reports
  ``ImageNotFound`` and ``deployed()`` still counts the generation as applied, so the reconciler does
  not retry in a loop.
* **Replicas.** Replica ``i`` of adapter ``N`` runs as ``N-i`` with a minimal environment (PATH,
  locale, TZ, VIRTUAL_ENV, PYTHONPATH; never the gateway's ``MCPGW_*`` settings or
  secrets), then the catalog's env, the adapter's ``environmentVariables``, ``HOME`` and
  ``TMPDIR`` (its own working area), and ``HOST``, ``PORT``, ``MCP_REPLICA_ID``. Output goes to
  ``<data_dir>/logs/N-i.log`` (opened by the gateway), appended across restarts with a marker
  line per start and exit.
* **Isolation** (issue 12; ``_local_isolation``). An adapter whose ``environmentVariables`` hold a
  name of the deny-list (``gateway/envpolicy.py``: ``LD_*``, ``PYTHON*``, ``PATH`` …, plus setting
  ``env_deny``) starts nothing: status reports ``EnvironmentRefused`` naming the variables (the
  API refuses them too; this catches records stored before). Replicas run as
  ``local_replica_user`` when the gateway is root and in a bubblewrap sandbox when bwrap works
  (``local_sandbox``); the data dir is made 0700 with its files 0600. Start-up logs what is in
  force, and a WARNING when replicas are not isolated at all.
* **Readiness.** HTTP GET of the catalog's ``ready_path`` (else a TCP connect) until it answers or
  ``local_ready_timeout`` passes, and the socket listening on the port must belong to the
  replica's own process tree (a port another program took first never becomes an endpoint);
  later probes every few seconds take a stuck replica out. Only
  ready replicas are endpoints; listeners hear of every change; ``endpoints()`` reads memory.
* **Crashes.** A crashed replica leaves the endpoints at once and restarts after a backoff that
  doubles from 0.5 s up to ``local_restart_backoff_max``; restarts show in status, and a
  replica failing twice in a row shows as ``CrashLoopBackOff``.
* **Updates.** A spec change (image, command, env) replaces each ready replica by surge: the new
  process starts on a new port, and when it is ready it takes the endpoint and the old one is
  stopped. Replicas that were not ready are replaced at once. Scaling adds or stops replicas
  from the highest index; ``replica_count`` 0 is allowed.
* **No orphans.** Each child gets its own process group and ``PR_SET_PDEATHSIG = SIGKILL`` (the
  kernel kills it when the gateway dies, however it dies), via ``setpriv --pdeathsig KILL``; without
  setpriv, a WARNING at start, and the owner-marker sweep below at the next start. ``close()`` sends SIGTERM to each
  group, then SIGKILL after a grace period. Every child carries ``MCP_GATEWAY_RUNTIME_OWNER``
  (a hash of the data dir) in its environment; ``<data_dir>/runtime/replicas.pid`` lists what runs
  and is removed on a clean close. When a runtime becomes leader it kills every process that
  carries its marker (a grandchild that escaped a killed gateway, say): the marker, read from
  ``/proc/<pid>/environ``, proves ownership, so a reused pid is never killed by mistake.
* **Shared data dir: leader and followers.** Two gateways on one machine may share a data dir
  (scale-out tests, a second gateway behind one Redis). The runtime that holds an flock on
  ``<data_dir>/runtime/local.lock`` is the leader: it runs the processes and publishes endpoints
  and status to ``<data_dir>/runtime/state.json`` (written whole, then renamed). Any other runtime
  is a follower: it runs nothing, ``apply`` and ``remove`` do nothing, and ``deployed()``,
  ``endpoints()``, ``status()`` and ``logs()`` answer from the leader's published state (re-read
  when its mtime changes, polled every 0.25 s; listeners fire on changes). A follower retries the
  lock every second; when it gets it (the leader closed or died), it kills the leader's leftovers
  and becomes leader with nothing deployed, and tells ``on_leadership`` callbacks (the gateway
  kicks its reconciler, which re-applies every adapter at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import msgspec

from gateway.child_process import SETPRIV
from gateway.envpolicy import EnvPolicy
from gateway.errors import RuntimeUnavailable
from gateway.models import AdapterRecord, InstanceStatus
from gateway.runtime._local_catalog import REPO_DIR, CatalogError, ImageCatalog, ImageEntry
from gateway.runtime._local_isolation import Isolation, IsolationError, detect
from gateway.runtime._local_process import (
    base_environment,
    follow_lines,
    kill_owned_processes,
    owner_marker,
    tail_lines,
)
from gateway.runtime._local_replica import LaunchSpec, Replica, ReplicaContext
from gateway.runtime.base import (
    Endpoint,
    EndpointListener,
    InstanceNotFound,
    RuntimeIssue,
    RuntimeStatus,
    SessionCounter,
)

log = logging.getLogger("gateway.runtime.local")

PACKAGE_TOOL_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "UV_DEFAULT_INDEX",
    "UV_INDEX_URL",
    "npm_config_registry",
)
"""Gateway variables a package adapter's npx/uvx also gets: how this machine reaches npm and PyPI (its CA
bundle, proxy, mirror). Measured 2026-11-30: without SSL_CERT_FILE, uvx in the sandbox fails with
"invalid peer certificate: UnknownIssuer" behind this machine's TLS-inspecting proxy."""
FOLLOWER_POLL = 0.25
"""Seconds between a follower's checks of the leader's state file."""
LOCK_RETRY = 1.0
"""Seconds between a follower's attempts to take the leader lock."""
DRAIN_POLL = 1.0
"""Seconds between a draining replica's checks of how many sessions are still pinned to it."""


class IssueSnapshot(msgspec.Struct):
    """A RuntimeIssue as published in state.json."""

    reason: str
    message: str


class EndpointSnapshot(msgspec.Struct):
    """An Endpoint as published in state.json."""

    replica: str
    uid: str
    url: str
    draining: bool = False


class AdapterSnapshot(msgspec.Struct, kw_only=True):
    """What the leader observes of one adapter; state.json holds one per adapter."""

    generation: int
    image: str
    desired: int
    ready: int
    updated: int
    available: int
    progressing: bool
    instances: list[InstanceStatus]
    issues: list[IssueSnapshot]
    endpoints: list[EndpointSnapshot]


class SharedState(msgspec.Struct, kw_only=True):
    """Contents of ``<data_dir>/runtime/state.json``."""

    leader_pid: int
    adapters: dict[str, AdapterSnapshot] = msgspec.field(default_factory=dict)


class _Slot:
    """Replica index ``i`` of an adapter: the serving replica and, during a rollout, its successor."""

    __slots__ = ("current", "next")

    def __init__(self, current: Replica | None = None) -> None:
        self.current = current
        self.next: Replica | None = None

    def replicas(self) -> list[Replica]:
        return [r for r in (self.current, self.next) if r is not None]


class _Draining:
    """A replaced or scaled-away replica serving its pinned sessions until ``until`` (wall clock)."""

    __slots__ = ("replica", "until")

    def __init__(self, replica: Replica, until: float) -> None:
        self.replica = replica
        self.until = until


class _Deployment:
    """The leader's view of one adapter: what was applied and the replicas running it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.generation = 0
        self.image = ""
        self.desired = 0
        self.spec: LaunchSpec | None = None
        self.issue: RuntimeIssue | None = None
        self.record: AdapterRecord | None = None
        self.slots: dict[int, _Slot] = {}
        self.draining: list[_Draining] = []

    def replicas(self) -> list[Replica]:
        return [r for slot in self.slots.values() for r in slot.replicas()] + [d.replica for d in self.draining]

    def endpoints(self) -> tuple[Endpoint, ...]:
        serving = tuple(
            slot.current.endpoint
            for _, slot in sorted(self.slots.items())
            if slot.current is not None and slot.current.ready
        )
        draining = tuple(
            dataclasses.replace(d.replica.endpoint, draining=True) for d in self.draining if d.replica.ready
        )
        return serving + draining

    def snapshot(self) -> AdapterSnapshot:
        instances = []
        for i in range(max([self.desired, *(k + 1 for k in self.slots)])):
            slot = self.slots.get(i)
            r = slot.current if slot is not None else None
            if r is None:
                message = self.issue.message if self.issue is not None else ""
                instances.append(
                    InstanceStatus(instance=i, name=f"{self.name}-{i}", ready=False, state="Pending", message=message)
                )
                continue
            message = r.message
            nxt = slot.next if slot is not None else None
            if nxt is not None:
                extra = f"being replaced by generation {nxt.generation} ({nxt.state.lower()}"
                extra += f": {nxt.message})" if nxt.message else ")"
                message = f"{message}; {extra}" if message else extra
            instances.append(
                InstanceStatus(
                    instance=i,
                    name=r.name,
                    ready=r.ready,
                    state=r.state,
                    restarts=r.restarts,
                    generation=r.generation,
                    message=message,
                )
            )
        for d in self.draining:
            r = d.replica
            until = time.strftime("%H:%M:%S", time.gmtime(d.until))
            instances.append(
                InstanceStatus(
                    instance=r.index,
                    name=r.name,
                    ready=False,
                    state="Draining",
                    restarts=r.restarts,
                    generation=r.generation,
                    message=f"replaced: serves the sessions pinned to it, takes no new ones; stops when the last "
                    f"one ends or at {until} UTC",
                )
            )
        serving = [s.current for s in self.slots.values() if s.current is not None]
        ready = sum(1 for r in serving if r.ready)
        updated = 0
        progressing = False
        if self.spec is not None:
            updated = sum(1 for s in self.slots.values() if any(r.spec == self.spec for r in s.replicas()))
            progressing = (
                any(
                    s.next is not None
                    or s.current is None
                    or s.current.spec != self.spec
                    or (not s.current.ready and s.current.restarts == 0)
                    for s in self.slots.values()
                )
                or len(self.slots) < self.desired
            )
        issues = [IssueSnapshot(self.issue.reason, self.issue.message)] if self.issue is not None else []
        for r in self.replicas():
            if r.crash_looping:
                issues.append(
                    IssueSnapshot(
                        "CrashLoopBackOff",
                        f"replica {r.name} keeps failing ({r.restarts} restarts, last: {r.last_failure}); "
                        f"see its logs (instance {r.index})",
                    )
                )
        return AdapterSnapshot(
            generation=self.generation,
            image=self.image,
            desired=self.desired,
            ready=ready,
            updated=updated,
            available=ready,
            progressing=progressing,
            instances=instances,
            issues=issues,
            endpoints=[EndpointSnapshot(e.replica, e.uid, e.url, e.draining) for e in self.endpoints()],
        )


def _status_from(snapshot: AdapterSnapshot) -> RuntimeStatus:
    return RuntimeStatus(
        observed_generation=snapshot.generation,
        image=snapshot.image,
        desired=snapshot.desired,
        ready=snapshot.ready,
        updated=snapshot.updated,
        available=snapshot.available,
        instances=tuple(snapshot.instances),
        issues=tuple(RuntimeIssue(i.reason, i.message) for i in snapshot.issues),
        progressing=snapshot.progressing,
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LocalRuntimeConfig:
    """What the local runtime reads, and nothing else (issue 20, 2026-12-01).

    ``gateway/app.py`` builds it from the ``MCPGW_*`` settings of the same names (``local_*``,
    ``stdio_*``, ``image_catalog``, ``env_deny``, ``replica_drain_timeout``; defaults are the
    settings' defaults, which tests/unit/app/test_component_configs.py checks); a test builds one directly.
    """

    data_dir: Path
    """The gateway's data dir: replica logs (``logs/``), the leader lock (``runtime/``), package caches."""
    image_catalog: Path | None = None
    """TOML catalog of ``imageName:imageVersion`` → command, on top of the built-in one."""
    env_deny: tuple[str, ...] = ()
    """Extra env var names or globs adapters may not set (on top of the built-in deny-list)."""
    replica_user: str = "nobody"
    """User replicas run as when the gateway runs as root; empty: root (not isolated)."""
    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    """Bubblewrap sandbox per replica: when it works, required, or off."""
    expose: tuple[str, ...] = ()
    """Folders an adapter's command line may name to have them shown read-only in its sandbox."""
    ready_timeout: float = 30.0
    """Seconds a replica may take to accept connections."""
    restart_backoff_max: float = 30.0
    """Longest wait before restarting a crashed replica."""
    packages: bool = False
    """Whether npm/PyPI package adapters run (npx/uvx)."""
    stdio_max_sessions: int = 32
    """Processes one replica of a stdio adapter runs at once."""
    stdio_idle_timeout: float = 600.0
    """Seconds a stdio session may stay idle before its process ends."""
    stdio_allow_roots: bool = False
    """Pass the client's roots capability to stdio servers."""
    replica_drain_timeout: float = 60.0
    """Seconds a replaced or scaled-away replica keeps serving its pinned sessions (0: stop at once)."""


class LocalRuntime:
    """Runs adapter replicas as child processes of this gateway (see the module docstring)."""

    def __init__(self, config: LocalRuntimeConfig) -> None:
        self._config = config
        self._data_dir = config.data_dir
        self._log_dir = config.data_dir / "logs"
        self._run_dir = config.data_dir / "runtime"
        self._catalog = ImageCatalog(config.image_catalog)
        self._env_policy = EnvPolicy(config.env_deny)
        self._isolation: Isolation | None = None
        self._marker = ""
        self._role: Literal["leader", "follower"] | None = None
        self._lock_fd: int | None = None
        self._deployments: dict[str, _Deployment] = {}
        self._shared = SharedState(leader_pid=0)
        self._shared_stamp: tuple[int, int, int] | None = None
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self._listeners: list[EndpointListener] = []
        self._leadership_listeners: list[Callable[[], None]] = []
        self._ctx: ReplicaContext | None = None
        self._apply_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._follower_task: asyncio.Task[None] | None = None
        self._publish_pending = False
        self._session_counter: SessionCounter | None = None
        self._drainers: set[asyncio.Task[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def role(self) -> Literal["leader", "follower"] | None:
        """``leader`` (runs the processes), ``follower`` (mirrors a leader) or None (not started)."""
        return self._role

    async def start(self) -> None:
        """Take the leader lock (or follow its holder) and clean up leftovers of a killed run."""
        if self._role is not None:
            return
        try:
            self._catalog.load()
        except CatalogError as exc:
            raise RuntimeUnavailable("local runtime", str(exc)) from None
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._run_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._restrict_data_dir)
        try:
            isolation, sandbox_off = await asyncio.to_thread(
                detect,
                data_dir=self._data_dir,
                replica_user=self._config.replica_user,
                sandbox=self._config.sandbox,
                setpriv=SETPRIV,
            )
        except IsolationError as exc:
            raise RuntimeUnavailable("local runtime", str(exc)) from None
        self._isolation = isolation
        self._log_isolation(isolation, sandbox_off)
        self._marker = owner_marker(self._data_dir)
        self._ctx = ReplicaContext(
            log_dir=self._log_dir,
            base_env=base_environment(os.environ),
            marker=self._marker,
            ready_timeout=self._config.ready_timeout,
            backoff_max=self._config.restart_backoff_max,
            isolation=isolation,
            on_change=self._replica_changed,
        )
        self._lock_fd = os.open(self._run_dir / "local.lock", os.O_RDWR | os.O_CREAT, 0o600)
        if self._try_lock():
            self._become_leader()
        else:
            self._role = "follower"
            log.info("local runtime: another gateway holds %s; following it", self._run_dir / "local.lock")
            self._read_shared()
            self._follower_task = asyncio.create_task(self._follow(), name="local-runtime-follower")

    async def close(self) -> None:
        """Stop every replica (SIGTERM, then SIGKILL after a grace period) and release the lock."""
        if self._role is None:
            return
        if self._follower_task is not None:
            self._follower_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower_task
            self._follower_task = None
        for drainer in list(self._drainers):
            drainer.cancel()
        if self._role == "leader":
            replicas = [r for d in self._deployments.values() for r in d.replicas()]
            self._deployments.clear()
            await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._role == "leader":
            self._write_shared(SharedState(leader_pid=os.getpid()))
            with contextlib.suppress(FileNotFoundError):
                (self._run_dir / "replicas.pid").unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if self._isolation is not None:
            await asyncio.to_thread(self._isolation.cleanup)
        self._endpoints.clear()
        self._publish_pending = False
        self._role = None

    def _restrict_data_dir(self) -> None:
        """Data dir 0700, the files in it 0600, logs and runtime dirs 0700: only the gateway's user."""
        for path in (self._data_dir, self._log_dir, self._run_dir):
            with contextlib.suppress(OSError):
                path.chmod(0o700)
        for folder in (self._data_dir, self._log_dir, self._run_dir):
            with contextlib.suppress(OSError), os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_uid == os.geteuid():
                        with contextlib.suppress(OSError):
                            os.chmod(entry.path, 0o600)

    def _log_isolation(self, isolation: Isolation, sandbox_off: str | None) -> None:
        if not isolation.isolated:
            log.warning(
                "local runtime: replicas are NOT isolated from this gateway: they run as its own user "
                "(uid %d) without a sandbox (%s). A replica can read %s (session key, database, logs) and "
                "this gateway's environment. Run the gateway as root (replicas then run as "
                "MCPGW_LOCAL_REPLICA_USER) or install bubblewrap; see docs/security.md, 'Local isolation'.",
                os.geteuid(),
                sandbox_off or "MCPGW_LOCAL_SANDBOX=off",
                self._data_dir,
            )
        elif not isolation.sandboxed:
            log.warning(
                "local runtime: %s (%s): they cannot read the data dir or this gateway's environment, but "
                "can write world-writable folders such as /tmp and see each other's processes; see "
                "docs/security.md, 'Local isolation'.",
                isolation.describe(),
                sandbox_off or "MCPGW_LOCAL_SANDBOX=off",
            )
        elif isolation.user is None and os.geteuid() == 0:
            log.warning(
                "local runtime: %s, but as root (MCPGW_LOCAL_REPLICA_USER is empty): they cannot see the data dir "
                "or this gateway's environment, but can read root-only files elsewhere on this machine; see "
                "docs/security.md, 'Local isolation'.",
                isolation.describe(),
            )
        else:
            log.info("local runtime: %s", isolation.describe())

    async def ping(self) -> None:
        """Raise RuntimeUnavailable unless the runtime was started."""
        self._require_started()

    def _require_started(self) -> None:
        if self._role is None:
            raise RuntimeUnavailable("local runtime", "not started (or already closed)")

    # --- desired state -------------------------------------------------------------------

    def _resolve(self, record: AdapterRecord) -> tuple[LaunchSpec | None, RuntimeIssue | None]:
        if record.package is not None:
            entry, writable, issue = self._package_entry(record)
            if issue is not None:
                return None, issue
            assert entry is not None
            trusted = entry.command[:1]  # npx or uvx; the rest names the package and the creator's args
        else:
            writable = ()
            try:
                found = self._catalog.lookup(record.image)
                known = sorted(self._catalog.load())
            except CatalogError as exc:
                return None, RuntimeIssue("InvalidImageCatalog", str(exc))
            if found is None:
                return None, RuntimeIssue("ImageNotFound", self._unknown_image(record.image, known))
            entry = dataclasses.replace(found, command=(*(record.command or found.command), *(record.args or ())))
            trusted = found.command  # the operator's; the adapter's command and args are the creator's
        denied = self._env_policy.denied_names(record.environment_variables)
        if denied:
            return None, RuntimeIssue(
                "EnvironmentRefused",
                f"environmentVariables {', '.join(denied)} may not be set: they could change how the replica's "
                "program is loaded or interpreted (see docs/security.md, 'Adapter environment'); "
                "remove them with PUT /adapters/" + record.name,
            )
        env = dict(entry.env)
        env.update(record.environment_variables)
        command, ready_path, cwd = entry.command, entry.ready_path, entry.cwd
        # The sandbox makes visible the folders of absolute paths in the trusted command, and the
        # creator's paths only under the operator's local_expose folders (issue 12).
        expose: tuple[str, ...] = tuple(a for a in trusted if a.startswith("/"))
        expose += tuple(a for a in command if a not in expose and self._creator_may_expose(a))
        if (record.transport or entry.transport) == "stdio":
            # The replica is the stdio bridge wrapping the command (gateway/stdio/bridge.py): an HTTP
            # replica like any other, in the same isolation; its children inherit user and sandbox.
            command = (
                sys.executable,
                "-m",
                "gateway.stdio.bridge",
                "--port",
                "{port}",
                "--max-sessions",
                str(self._config.stdio_max_sessions),
                "--idle-timeout",
                f"{self._config.stdio_idle_timeout:g}",
                *(["--allow-roots"] if self._config.stdio_allow_roots else []),
                # One argument: an absolute path on its own would make the sandbox expose its parent.
                *([f"--cwd={cwd}"] if cwd else []),
                "--",
                *command,
            )
            ready_path, cwd, expose = "/healthz", str(REPO_DIR), (*expose, *((cwd,) if cwd else ()))
        spec = LaunchSpec(
            image=record.image,
            command=command,
            env=tuple(sorted(env.items())),
            ready_path=ready_path,
            cwd=cwd,
            writable=writable,
            expose=expose,
        )
        return spec, None

    def _creator_may_expose(self, arg: str) -> bool:
        if not arg.startswith("/") or not self._config.expose:
            return False
        path = Path(os.path.realpath(arg))  # a symlink inside an allowed folder must not lead out of it
        roots = [Path(os.path.realpath(root)) for root in self._config.expose]
        return any(path == root or root in path.parents for root in roots)

    def _unknown_image(self, image: str, known: list[str]) -> str:
        where = (
            "the built-in catalog"
            if self._config.image_catalog is None
            else f"the built-in catalog or {self._config.image_catalog}"
        )
        return (
            f"image {image} is not in {where}; known images: {', '.join(known) or 'none'}. "
            "Add it to the catalog file named by MCPGW_IMAGE_CATALOG."
        )

    def check_image(self, image_name: str, image_version: str) -> str | None:
        """Why ``image_name:image_version`` cannot run here (no catalog knows it), or None (issue 17).

        The control plane asks before it stores an adapter, so an unknown image is a 422 naming
        ``imageName`` instead of a record whose status says ``ImageNotFound``. A follower has the same
        catalog files, so it answers as the leader would. A broken catalog file refuses nothing here:
        the request is not at fault, and status reports ``InvalidImageCatalog``.
        """
        image = f"{image_name}:{image_version}"
        try:
            if self._catalog.lookup(image) is not None:
                return None
            known = sorted(self._catalog.load())
        except CatalogError:
            return None
        return self._unknown_image(image, known)

    def _package_entry(self, record: AdapterRecord) -> tuple[ImageEntry | None, tuple[str, ...], RuntimeIssue | None]:
        """How a package adapter runs: ``npx -y name@version`` or ``uvx --from name==version bin`` (issue 17).

        Each adapter has its own cache, ``<data_dir>/packages/<name>``, owned by the replica user and
        bound into the sandbox, so a restart or a second replica starts warm (measured: filesystem
        via npx cold 5.4 s, warm 0.95 s; time via uvx cold 2.5 s, warm 1.3 s). Installing needs the
        registry (npm, PyPI): the sandbox shares the gateway's network namespace.
        """
        pkg = record.package
        assert pkg is not None
        if not self._config.packages:
            # Opt-in: a package runs code fetched from a public registry on this machine (in the sandbox).
            return (
                None,
                (),
                RuntimeIssue(
                    "PackagesDisabled",
                    f"package {record.image} is not run: this gateway does not run npm/PyPI packages; "
                    "an operator can allow them with MCPGW_LOCAL_PACKAGES=true",
                ),
            )
        cache = self._data_dir / "packages" / record.name
        assert self._isolation is not None
        writable: tuple[str, ...] = ()
        env: dict[str, str] = {}
        if self._isolation.shares_data_dir_folders():
            cache.mkdir(parents=True, exist_ok=True)
            cache.chmod(0o700)
            if self._isolation.user is not None:  # what the replica writes in it is its own already
                os.chown(cache, self._isolation.user.uid, self._isolation.user.gid)
            writable = (str(cache),)
        env.update({name: os.environ[name] for name in PACKAGE_TOOL_ENV if os.environ.get(name)})
        if pkg.registry == "npm":
            npx = shutil.which("npx")
            if npx is None:
                return None, (), RuntimeIssue("PackageToolMissing", "npx is not on PATH: install Node.js 20+ and npm")
            spec = f"{pkg.name}@{pkg.version}"
            command = [npx, "-y", "--package", spec, *record.command] if record.command else [npx, "-y", spec]
            env.update(npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false")
            if writable:
                env["npm_config_cache"] = str(cache / "npm")
        else:
            uvx = shutil.which("uvx") or str(Path(sys.executable).with_name("uvx"))
            if not os.path.exists(uvx):
                return None, (), RuntimeIssue("PackageToolMissing", "uvx is not on PATH: pip install uv")
            command = [uvx, "--from", f"{pkg.name}=={pkg.version}", *(record.command or [pkg.name])]
            env.update(UV_PYTHON=os.path.realpath(sys.executable), UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
            if writable:
                env["UV_CACHE_DIR"] = str(cache / "uv")
        command += record.args or []
        transport = record.transport or "streamable-http"
        entry = ImageEntry(
            command=tuple(command),
            env=tuple(env.items()),
            ready_path="/mcp" if transport == "streamable-http" else None,
            cwd=None,
            transport=transport,
        )
        return entry, writable, None

    def _new_replica(self, name: str, index: int, spec: LaunchSpec, generation: int) -> Replica:
        assert self._ctx is not None
        replica = Replica(name, index, spec, generation, self._ctx)
        replica.start()
        return replica

    async def apply(self, adapter: AdapterRecord) -> None:
        """Converge the adapter's replicas to the record (idempotent; surges on spec change)."""
        self._require_started()
        if self._role != "leader":
            return
        to_stop: list[Replica] = []
        async with self._apply_lock:
            spec, issue = self._resolve(adapter)
            dep = self._deployments.get(adapter.name)
            if dep is None:
                dep = self._deployments[adapter.name] = _Deployment(adapter.name)
            dep.generation, dep.image, dep.desired = adapter.generation, adapter.image, adapter.replica_count
            dep.spec, dep.issue, dep.record = spec, issue, adapter
            for index in sorted(dep.slots):
                if index >= adapter.replica_count:
                    slot = dep.slots.pop(index)
                    if slot.next is not None:
                        to_stop.append(slot.next)
                    if slot.current is not None and not self._drain(dep, slot.current):
                        to_stop.append(slot.current)
            for index in range(adapter.replica_count):
                to_stop.extend(self._converge_slot(dep, index))
            self._refresh(adapter.name)
        if to_stop:
            await self._stop_all(to_stop)
            for index in {r.index for r in to_stop}:
                self._delete_scaled_away_log(adapter.name, index)

    def _delete_scaled_away_log(self, name: str, index: int) -> None:
        """Logs of replicas scaled away go with them (issue 17), unless the index is back (or draining)."""
        dep = self._deployments.get(name)
        if dep is None or index < dep.desired or any(d.replica.index == index for d in dep.draining):
            return
        for suffix in (".log", ".log.1"):
            with contextlib.suppress(FileNotFoundError):
                (self._log_dir / f"{name}-{index}{suffix}").unlink()

    def set_session_counter(self, counter: SessionCounter) -> None:
        """How many sessions are pinned to a replica: a draining replica with none stops before its timeout."""
        self._session_counter = counter

    def _drain(self, dep: _Deployment, replica: Replica) -> bool:
        """Let a replaced or scaled-away replica drain (issue 13); False when it should stop now instead.

        A ready replica keeps serving the sessions pinned to it, and takes no new session or stateless
        request, until its last session ends (asked every DRAIN_POLL seconds of the session counter)
        or ``replica_drain_timeout`` passes; a crash ends the drain too (it is not restarted).
        """
        timeout = self._config.replica_drain_timeout
        if timeout <= 0 or not replica.ready:
            return False
        entry = _Draining(replica, time.time() + timeout)
        dep.draining.append(entry)
        task = asyncio.get_running_loop().create_task(self._drain_then_stop(dep.name, entry, limit=timeout))
        self._drainers.add(task)
        task.add_done_callback(self._drainers.discard)
        log.info("replica %s (generation %d) draining for up to %gs", replica.name, replica.generation, timeout)
        return True

    async def _drain_then_stop(self, name: str, entry: _Draining, *, limit: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        why = f"drain timeout ({limit:g}s)"
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(DRAIN_POLL, left))
            if not entry.replica.ready:
                why = "it stopped being ready"
                break
            if self._session_counter is not None and loop.time() < deadline:
                try:
                    pinned = await self._session_counter(name, entry.replica.uid)
                except Exception as exc:  # the session store is down: keep draining until the timeout
                    log.debug("draining replica %s: cannot count its sessions: %s", entry.replica.name, exc)
                    continue
                if pinned == 0:
                    why = "its last session ended"
                    break
        log.info("replica %s (generation %d) drained: %s", entry.replica.name, entry.replica.generation, why)
        dep = self._deployments.get(name)
        if dep is not None and entry in dep.draining:
            dep.draining.remove(entry)
        self._refresh(name)
        await entry.replica.stop()
        self._delete_scaled_away_log(name, entry.replica.index)

    def _converge_slot(self, dep: _Deployment, index: int) -> list[Replica]:
        """Bring replica ``index`` towards the deployment's spec; return the replicas to stop."""
        spec, generation = dep.spec, dep.generation
        slot = dep.slots.get(index)
        to_stop: list[Replica] = []
        if spec is None:
            # Unknown image: keep what still serves, start nothing.
            if slot is not None:
                if slot.next is not None:
                    to_stop.append(slot.next)
                    slot.next = None
                if slot.current is not None and not slot.current.ready:
                    to_stop.append(slot.current)
                    slot.current = None
                if slot.current is None:
                    del dep.slots[index]
            return to_stop
        if slot is None:
            dep.slots[index] = _Slot(self._new_replica(dep.name, index, spec, generation))
        elif slot.current is not None and slot.current.spec == spec:
            # Same spec (a scale change, or a rollback mid-rollout): keep the process.
            slot.current.generation = generation
            if slot.next is not None:
                to_stop.append(slot.next)
                slot.next = None
        elif slot.current is None or not slot.current.ready:
            # Nothing to keep serving: replace in place (by the successor, if it is already right).
            to_stop.extend([slot.current] if slot.current is not None else [])
            if slot.next is not None and slot.next.spec == spec:
                slot.current, slot.next = slot.next, None
                slot.current.generation = generation
            else:
                to_stop.extend([slot.next] if slot.next is not None else [])
                slot.current, slot.next = self._new_replica(dep.name, index, spec, generation), None
        elif slot.next is not None and slot.next.spec == spec:
            slot.next.generation = generation
        else:
            # Surge: the successor takes over in _replica_changed once it is ready.
            to_stop.extend([slot.next] if slot.next is not None else [])
            slot.next = self._new_replica(dep.name, index, spec, generation)
        return to_stop

    async def _stop_all(self, replicas: list[Replica]) -> None:
        # Shielded: a cancelled apply (the reconciler gave up on it) still finishes stopping.
        task = asyncio.ensure_future(asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True))
        self._track(task)
        await asyncio.shield(task)

    def _track(self, task: asyncio.Future[Any]) -> None:
        async def wait() -> None:
            with contextlib.suppress(Exception):
                await task

        bg = asyncio.ensure_future(wait())
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)

    async def remove(self, name: str) -> None:
        """Stop every replica of the adapter and delete its log files (idempotent)."""
        self._require_started()
        if self._role != "leader":
            return
        async with self._apply_lock:
            dep = self._deployments.pop(name, None)
            self._refresh(name)
        if dep is None:
            return
        await self._stop_all(dep.replicas())
        await asyncio.to_thread(shutil.rmtree, self._data_dir / "packages" / name, True)
        for index in set(dep.slots) | set(range(dep.desired)):
            for suffix in (".log", ".log.1"):
                with contextlib.suppress(FileNotFoundError):
                    (self._log_dir / f"{name}-{index}{suffix}").unlink()

    async def deployed(self) -> dict[str, int]:
        """Adapters and the generation last applied (the leader's, for a follower)."""
        self._require_started()
        if self._role == "leader":
            return {name: self._applied_generation(dep) for name, dep in self._deployments.items()}
        return {name: snap.generation for name, snap in self._shared.adapters.items()}

    def _applied_generation(self, dep: _Deployment) -> int:
        """The generation applied, or -1 when the image catalog has changed what it stands for.

        The catalog's content is part of what is applied (issue 17): an edited entry (command, env,
        transport) or an image that appeared reaches existing adapters at the reconciler's next pass,
        as a rolling replacement, without recreating them. The catalog is re-read only when a file's
        mtime or size changed, so a pass costs two stat calls and a tuple comparison per adapter.
        """
        record = dep.record
        if record is None or record.package is not None:
            return dep.generation
        spec, issue = self._resolve(record)
        if spec != dep.spec or (spec is None and issue != dep.issue):
            log.info("local runtime: the image catalog changed %s for adapter %s; applying again", dep.image, dep.name)
            return -1
        return dep.generation

    # --- observation ---------------------------------------------------------------------

    def _snapshot(self, name: str) -> AdapterSnapshot | None:
        if self._role == "leader":
            dep = self._deployments.get(name)
            return None if dep is None else dep.snapshot()
        return self._shared.adapters.get(name)

    async def status(self, adapter: AdapterRecord) -> RuntimeStatus:
        """What runs for the adapter now; an adapter never applied shows observed generation 0."""
        self._require_started()
        snapshot = self._snapshot(adapter.name)
        if snapshot is None:
            return RuntimeStatus(
                observed_generation=0,
                image=adapter.image,
                desired=adapter.replica_count,
                ready=0,
                updated=0,
                available=0,
                progressing=adapter.replica_count > 0,
            )
        return _status_from(snapshot)

    async def logs(self, name: str, instance: int, tail: int) -> str:
        """The last ``tail`` lines of replica ``instance``'s log file."""
        self._require_started()
        snapshot = self._snapshot(name)
        if snapshot is None or not 0 <= instance < max(snapshot.desired, len(snapshot.instances)):
            count = 0 if snapshot is None else snapshot.desired
            raise InstanceNotFound(f"adapter {name} has no replica {instance} (it has {count})")
        return await asyncio.to_thread(tail_lines, self._log_dir / f"{name}-{instance}.log", tail)

    async def follow_logs(self, name: str, instance: int, tail: int) -> AsyncIterator[str]:
        """The last ``tail`` lines of replica ``instance``'s log file, then its new lines until it is removed."""
        self._require_started()
        if not self._has_instance(name, instance):
            snapshot = self._snapshot(name)
            count = 0 if snapshot is None else snapshot.desired
            raise InstanceNotFound(f"adapter {name} has no replica {instance} (it has {count})")
        return follow_lines(
            self._log_dir / f"{name}-{instance}.log", tail, alive=lambda: self._has_instance(name, instance)
        )

    def _has_instance(self, name: str, instance: int) -> bool:
        snapshot = self._snapshot(name)
        return snapshot is not None and 0 <= instance < max(snapshot.desired, len(snapshot.instances))

    def endpoints(self, name: str) -> tuple[Endpoint, ...]:
        """Ready replicas of the adapter (memory only)."""
        return self._endpoints.get(name, ())

    def on_leadership(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when this follower takes over as leader (with nothing deployed)."""
        self._leadership_listeners.append(callback)

    def add_listener(self, listener: EndpointListener) -> None:
        """Call ``listener(name)`` whenever the adapter's endpoints change."""
        self._listeners.append(listener)

    # --- change propagation --------------------------------------------------------------

    def _replica_changed(self, replica: Replica) -> None:
        dep = self._deployments.get(replica.adapter)
        slot = dep.slots.get(replica.index) if dep is not None else None
        if slot is not None and dep is not None and slot.next is replica and replica.ready:
            # The successor is ready: it takes the endpoint, the old process drains, then goes.
            old, slot.current, slot.next = slot.current, replica, None
            if old is not None and not self._drain(dep, old):
                self._track(asyncio.ensure_future(old.stop()))
        self._refresh(replica.adapter)

    def _refresh(self, name: str) -> None:
        """Recompute the adapter's endpoints, tell listeners if they changed, publish soon."""
        dep = self._deployments.get(name)
        self._set_endpoints(name, () if dep is None else dep.endpoints())
        self._schedule_publish()

    def _set_endpoints(self, name: str, endpoints: tuple[Endpoint, ...]) -> None:
        if self._endpoints.get(name, ()) == endpoints:
            return
        if endpoints:
            self._endpoints[name] = endpoints
        else:
            self._endpoints.pop(name, None)
        for listener in list(self._listeners):
            try:
                listener(name)
            except Exception:
                log.exception("endpoint listener failed for adapter %s", name)

    # --- leader: lock, leftovers, publishing ---------------------------------------------

    def _try_lock(self) -> bool:
        assert self._lock_fd is not None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _become_leader(self) -> None:
        pid_file = self._run_dir / "replicas.pid"
        if pid_file.exists():
            log.warning("local runtime: the previous gateway on %s did not stop cleanly", self._data_dir)
        killed = kill_owned_processes(self._marker)
        if killed:
            log.warning("local runtime: killed %d leftover replica process(es): %s", len(killed), killed)
        if self._isolation is not None:
            self._isolation.remove_leftovers()  # the working dirs of the previous leader's replicas
        self._role = "leader"
        previous = self._shared
        self._shared = SharedState(leader_pid=os.getpid())
        for name in previous.adapters:
            self._set_endpoints(name, ())
        self._publish()
        log.info("local runtime: leader for %s", self._data_dir)

    def _schedule_publish(self) -> None:
        if self._role != "leader" or self._publish_pending:
            return
        self._publish_pending = True
        asyncio.get_running_loop().call_soon(self._publish)

    def _publish(self) -> None:
        self._publish_pending = False
        if self._role != "leader":
            return
        state = SharedState(
            leader_pid=os.getpid(), adapters={name: d.snapshot() for name, d in self._deployments.items()}
        )
        self._write_shared(state)
        pids = "".join(f"{r.pid} {r.name} {r.uid}\n" for d in self._deployments.values() for r in d.replicas() if r.pid)
        self._write_atomic(self._run_dir / "replicas.pid", f"# gateway {os.getpid()}\n{pids}".encode())

    def _write_shared(self, state: SharedState) -> None:
        self._write_atomic(self._run_dir / "state.json", msgspec.json.encode(state))

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as exc:
            log.warning("local runtime: cannot write %s: %s", path, exc)

    # --- follower ------------------------------------------------------------------------

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        next_lock_try = loop.time() + LOCK_RETRY
        while self._role == "follower":
            await asyncio.sleep(FOLLOWER_POLL)
            if loop.time() >= next_lock_try:
                next_lock_try = loop.time() + LOCK_RETRY
                if self._try_lock():
                    self._become_leader()
                    for callback in list(self._leadership_listeners):
                        callback()
                    return
            self._read_shared()

    def _read_shared(self) -> None:
        path = self._run_dir / "state.json"
        try:
            st = path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._shared_stamp:
                return
            state = msgspec.json.decode(path.read_bytes(), type=SharedState)
        except FileNotFoundError:
            state, stamp = SharedState(leader_pid=0), (0, 0, 0)
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("local runtime: cannot read the leader's state %s: %s", path, exc)
            return
        self._shared_stamp = stamp
        old = self._shared
        self._shared = state
        for name in set(old.adapters) | set(state.adapters):
            snap = state.adapters.get(name)
            endpoints = (
                () if snap is None else tuple(Endpoint(e.replica, e.uid, e.url, e.draining) for e in snap.endpoints)
            )
            self._set_endpoints(name, endpoints)
