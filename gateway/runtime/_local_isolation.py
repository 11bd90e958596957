"""How local replicas are kept away from the gateway's secrets: another user and a sandbox.

Why (2026-11-30, issue 12): a replica ran as the gateway's user with the gateway's view of the
machine. It could read ``<data_dir>/session.key`` (and forge anyone's session ids), read and
write ``gateway.db``, and read ``/proc/<gateway pid>/environ``. Two layers, each used when the
machine allows it (measured at start, never assumed):

* **Another user.** When the gateway runs as root, every replica runs as ``local_replica_user``
  (default ``nobody``): ``setpriv --reuid --regid --clear-groups --no-new-privs``. The data dir is
  0700 and its files 0600, so that user cannot open them, and ``/proc/<gateway>/environ`` is
  readable only by the gateway's own user.
* **A sandbox** (``bwrap``, Debian ``bubblewrap``; setting ``local_sandbox``). Its own mount, pid,
  IPC and UTS namespaces (not the network: the replica listens on loopback): the root file system
  read-only; empty private ``/tmp`` and ``/var/tmp`` (the replica's working area: ``HOME`` and
  ``TMPDIR`` point there); the data dir, the gateway user's home, ``XDG_RUNTIME_DIR`` and
  ``/run/secrets`` (Docker secrets, a pod's service-account token) replaced by empty tmpfs; a
  ``/proc`` that shows only the sandbox's own processes. The paths the program needs that would
  be hidden or unreachable for the replica user (the catalog's ``cwd``, absolute paths in its
  command, the interpreter's prefix: ``{python}`` may live under ``/root``) are bound back
  read-only, never the data dir. With root, bwrap sets up the mounts as root, drops every
  capability (bwrap run by root keeps them all unless told: measured, ``CapEff`` full) but
  CAP_SETUID/CAP_SETGID for the ``setpriv`` inside that drops to the replica user; without root it
  uses an unprivileged user namespace (the replica then keeps the gateway's uid: it can read, not
  write, what that user can outside the hidden folders).

When neither is possible (a gateway that is not root, no working bwrap), replicas run as the
gateway's user and ``LocalRuntime.start`` logs one WARNING saying what that means.

Outside the sandbox a replica gets a working dir of its own, ``<work root>/<replica>`` (work root
``/tmp/mcp-gateway-replicas-<hash of the data dir>``, 0711, emptied when a runtime first uses it
and removed on close; the replica's dir 0700 and owned by the replica user), as ``HOME``
and ``TMPDIR``; the log file is opened by the gateway and handed over as stdout/stderr, so the
replica never needs to open the log dir.

Measured 2026-11-30 on the dev container (Debian 12, kernel 6.18, root, bwrap 0.8.0, 2 shared
cores; 20 starts of ``/bin/true``): plain 8.1 ms median, as another user 8.9 ms, in the sandbox
31.4 ms (p90 44 ms) — about 23 ms more per replica start; the start-up probe of bwrap takes about
30 ms once. ``setpriv --pdeathsig`` still kills the whole sandbox when the gateway is SIGKILLed
(bwrap ``--die-with-parent``; the pid namespace takes every process in it), and the pdeathsig
survives the drop to the replica user because setpriv sets it after changing uid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gateway.child_process import SETPRIV, launch

log = logging.getLogger("gateway.runtime.local")

BWRAP_EXIT_SIGNAL_BASE = 128
"""bwrap exits with 128 + n when the program inside was killed by signal n."""


SECRET_MOUNTS = ("/run/secrets", "/var/run/secrets")
"""Where container runtimes mount the gateway's secrets; hidden in the sandbox when present."""


class IsolationError(ValueError):
    """Isolation was asked for and cannot be had; the message names the setting and the cause."""


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaUser:
    """The unprivileged account replicas run as (resolved once, at start)."""

    name: str
    uid: int
    gid: int


@dataclasses.dataclass(frozen=True, slots=True)
class Launch:
    """How to start one replica process: argv, working directory and environment overrides."""

    argv: list[str]
    cwd: str | None
    env: dict[str, str]


def resolve_user(spec: str) -> ReplicaUser:
    """A user name or numeric uid → its account (a uid without a passwd entry uses gid = uid)."""
    spec = spec.strip()
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except KeyError:
        if spec.isdigit():
            return ReplicaUser(name=spec, uid=int(spec), gid=int(spec))
        raise IsolationError(
            f"MCPGW_LOCAL_REPLICA_USER (--local-replica-user): no user {spec!r} on this machine; "
            "name an existing unprivileged account (e.g. nobody) or a numeric uid"
        ) from None
    return ReplicaUser(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def _traversable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & 0o001)
    except OSError:
        return False


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class Isolation:
    """The isolation in force for one runtime; builds each replica's launch."""

    def __init__(
        self,
        *,
        data_dir: Path,
        user: ReplicaUser | None,
        bwrap: str | None,
        setpriv: str | None,
        gateway_home: Path | None,
        runtime_dir: Path | None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.user = user
        self.bwrap = bwrap
        self.setpriv = setpriv
        self._hidden = [p for p in (gateway_home, runtime_dir) if p is not None and p != Path("/")]
        # Secrets a container runtime mounts for the gateway (Docker secrets, a pod's
        # service-account token) are often world-readable: the sandbox shows them empty.
        self._hidden += sorted({Path(os.path.realpath(p)) for p in SECRET_MOUNTS if os.path.isdir(p)})
        self._work_root: Path | None = None

    # --- what is in force ------------------------------------------------------------------

    @property
    def sandboxed(self) -> bool:
        """True when replicas run inside bwrap."""
        return self.bwrap is not None

    @property
    def isolated(self) -> bool:
        """True when replicas run as another user or in a sandbox (or both)."""
        return self.user is not None or self.bwrap is not None

    def describe(self) -> str:
        """One line for the start-up log."""
        who = f"user {self.user.name} (uid {self.user.uid})" if self.user else f"this gateway's uid {os.geteuid()}"
        where = "in a bubblewrap sandbox" if self.bwrap else "without a sandbox"
        return f"replicas run as {who} {where}"

    def exit_code(self, returncode: int) -> int:
        """The program's own exit status (bwrap reports a signal death as 128 + signal)."""
        if self.bwrap is not None and BWRAP_EXIT_SIGNAL_BASE < returncode < BWRAP_EXIT_SIGNAL_BASE + 65:
            return -(returncode - BWRAP_EXIT_SIGNAL_BASE)
        return returncode

    # --- working dirs (outside the sandbox) -----------------------------------------------

    def _open_work_root(self) -> Path:
        """``/tmp/mcp-gateway-replicas-<hash of the data dir>``, emptied of a killed gateway's leftovers.

        /tmp is shared: a folder of that name that is not a directory of ours (someone else made
        it, or made it a symlink) is left alone and a random ``mkdtemp`` folder used instead.
        """
        root = self._shared_work_root()
        if not self.remove_leftovers():
            return Path(tempfile.mkdtemp(prefix="mcp-gateway-replicas-"))
        try:
            root.mkdir(mode=0o711)
        except FileExistsError:
            return Path(tempfile.mkdtemp(prefix="mcp-gateway-replicas-"))
        return root

    def _shared_work_root(self) -> Path:
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"mcp-gateway-replicas-{digest}"

    def remove_leftovers(self) -> bool:
        """Remove a killed gateway's work root for this data dir; False when that name is not ours."""
        root = self._shared_work_root()
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            return True
        if not (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()):
            return False
        shutil.rmtree(root, ignore_errors=True)
        return True

    def _work_dir(self, replica: str) -> Path:
        if self._work_root is None:
            self._work_root = self._open_work_root()
            self._work_root.chmod(0o711)  # replicas may enter their own dir, not list the others
        path = self._work_root / replica
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o700)
        if self.user is not None:
            os.chown(path, self.user.uid, self.user.gid)
        return path

    def cleanup(self) -> None:
        """Remove the working dirs (the runtime closed)."""
        if self._work_root is not None:
            shutil.rmtree(self._work_root, ignore_errors=True)
            self._work_root = None

    # --- launching ------------------------------------------------------------------------

    def shares_data_dir_folders(self) -> bool:
        """True when a folder under the data dir can be handed to a replica (``launch(writable=...)``).

        In the sandbox it is bound in; as the gateway's own user it is reachable anyway; as another
        user without a sandbox it is not (the data dir is 0700), and callers do without.
        """
        return self.bwrap is not None or self.user is None

    def launch(
        self,
        command: Sequence[str],
        *,
        cwd: str | None,
        replica: str,
        writable: Sequence[Path] = (),
        expose: Sequence[Path] = (),
    ) -> Launch:
        """The full argv (``setpriv --pdeathsig KILL`` first), cwd and env overrides of a replica.

        Without a sandbox the drop to the replica user happens in the same ``setpriv`` as
        ``--pdeathsig``: the kernel clears the parent-death signal when a process changes its
        uid, and setpriv sets it after the change (a second setpriv would lose it).
        """
        if self.bwrap is not None:
            sandbox = self.sandbox_argv(command, cwd=cwd, writable=writable, expose=expose)
            argv = launch([*sandbox, *self._drop(), *command])
            return Launch(argv=argv, cwd="/", env={"HOME": "/tmp", "TMPDIR": "/tmp"})
        work = str(self._work_dir(replica))
        env = {"HOME": work, "TMPDIR": work}
        if self.user is not None and self.setpriv is not None:
            drop = self._drop()[1:]  # without the program name: merged into the pdeathsig setpriv
            return Launch(argv=[self.setpriv, "--pdeathsig", "KILL", *drop, *command], cwd=cwd, env=env)
        return Launch(argv=launch(command), cwd=cwd, env=env)

    def _drop(self) -> list[str]:
        if self.user is None or self.setpriv is None:
            return []
        uid, gid = str(self.user.uid), str(self.user.gid)
        return [self.setpriv, "--reuid", uid, "--regid", gid, "--clear-groups", "--no-new-privs", "--"]

    def sandbox_argv(
        self, command: Sequence[str], *, cwd: str | None, writable: Sequence[Path] = (), expose: Sequence[Path] = ()
    ) -> list[str]:
        """``bwrap <options> --`` for a program ``command`` run in ``cwd`` (see the module docstring).

        ``writable`` folders under the data dir (a package adapter's cache, issue 17) are bound back
        read-write at their own path; the data dir itself stays an empty tmpfs (0711: traversable,
        not listable), so nothing else in it shows. ``expose`` lists trusted paths to make visible
        read-only like the ``cwd`` (the catalog command's programs and scripts, a stdio server's own
        working directory); nothing in ``command`` itself is exposed.
        """
        assert self.bwrap is not None
        hidden = [Path("/tmp"), Path("/var/tmp"), *self._hidden]
        exposed = self._exposures(cwd, hidden, expose)
        if self.user is not None:
            # Directories the replica user could not traverse become empty tmpfs too, so that the
            # exposed paths below them are reachable (and nothing else in them is visible).
            for path in exposed:
                for ancestor in reversed(path.parents):
                    if ancestor != Path("/") and not _traversable_by_others(ancestor):
                        hidden.append(ancestor)
                        break
        hidden = sorted(
            {h for h in hidden if not any(o != h and _under(h, o) for o in hidden)}, key=lambda p: len(p.parts)
        )
        argv = [
            self.bwrap,
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
        ]
        for path in hidden:
            argv += ["--perms", "1777" if path in (Path("/tmp"), Path("/var/tmp")) else "0755", "--tmpfs", str(path)]
        made: set[Path] = set()
        for path in sorted(exposed, key=lambda p: len(p.parts)):
            # bwrap would create the missing folders above a bind with the modes of the originals
            # (0700 ones stay closed to the replica user): create them traversable first.
            for parent in reversed(path.parents):
                if parent not in made and any(_under(parent, h) and parent != h for h in hidden):
                    argv += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
            argv += ["--ro-bind", str(path), str(path)]
        shared = [Path(w).resolve() for w in writable if _under(Path(w).resolve(), self.data_dir)]
        # Last: hidden even inside an exposed path.
        argv += ["--perms", "0711" if shared else "0700", "--tmpfs", str(self.data_dir)]
        for path in shared:
            for parent in reversed(path.parents):
                if _under(parent, self.data_dir) and parent != self.data_dir and parent not in made:
                    argv += ["--perms", "0711", "--dir", str(parent)]
                    made.add(parent)
            argv += ["--bind", str(path), str(path)]
        argv += ["--chdir", cwd or "/"]
        if os.geteuid() == 0:
            # bwrap run by root keeps every capability unless told: drop them all, keep only what
            # the setpriv inside needs to become the replica user (it loses those with the uid).
            argv += ["--cap-drop", "ALL"]
            if self.user is not None:
                argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        return [*argv, "--"]

    def _exposures(self, cwd: str | None, hidden: list[Path], extra: Sequence[Path] = ()) -> list[Path]:
        """Folders the program needs that the sandbox would hide or the replica user could not reach.

        Candidates: the interpreter's prefixes, the catalog's ``cwd``, and ``extra`` — folders as
        they are, files by their folder (a program's prefix, ``bin/..``, for an executable). Only
        trusted paths come in as ``extra`` (the catalog's command, the gateway's own wrappers): the
        adapter's ``command``/``args`` are the creator's, and a path there must not make a folder
        visible that the replica user could not reach otherwise (issue 12). Never the data dir or
        anything in it, nor a folder holding a hidden one (binding it would undo that).
        """
        candidates: list[Path] = [Path(sys.prefix), Path(sys.base_prefix)]
        if cwd:
            candidates.append(Path(cwd))
        for item in extra:
            if os.path.isfile(item):
                for path in {Path(item), Path(os.path.realpath(item))}:
                    candidates.append(path.parent.parent if path.parent.name == "bin" else path.parent)
            else:
                candidates.append(Path(item))
        exposed: set[Path] = set()
        for candidate in candidates:
            try:
                path = candidate.resolve()
                if not path.is_dir():
                    continue
            except OSError:
                continue
            if _under(path, self.data_dir) or any(_under(h, path) for h in hidden):
                continue
            unreachable = self.user is not None and not all(_traversable_by_others(a) for a in path.parents)
            if unreachable or any(_under(path, h) for h in hidden):
                exposed.add(path)
        return sorted(exposed)


def detect(
    *,
    data_dir: Path,
    replica_user: str,
    sandbox: str,
    setpriv: str | None,
    environ: dict[str, str] | None = None,
) -> tuple[Isolation, str | None]:
    """The isolation this machine allows, and why the sandbox is off (None when it is on or off by choice).

    Raises IsolationError when ``sandbox`` is ``bwrap`` and bwrap does not work, or the replica
    user does not exist.
    """
    environ = dict(os.environ) if environ is None else environ
    if setpriv is None:
        log.warning(
            "util-linux setpriv is not on PATH: replicas start without a parent-death signal, so if this "
            "gateway is killed (SIGKILL, OOM) they keep running until the next start on this data dir kills "
            "them (owner marker); install util-linux (Debian/Ubuntu: apt-get install util-linux)"
        )
    user: ReplicaUser | None = None
    if os.geteuid() == 0 and replica_user.strip():
        user = resolve_user(replica_user)
        if user.uid == 0:
            user = None
        elif setpriv is None:
            raise IsolationError(
                "MCPGW_LOCAL_REPLICA_USER (--local-replica-user): dropping to another user needs util-linux's "
                "setpriv, which is not on PATH; install util-linux or set the setting to '' (not isolated)"
            )
    home = _gateway_home(environ)
    runtime_dir = Path(environ["XDG_RUNTIME_DIR"]) if environ.get("XDG_RUNTIME_DIR") else None
    isolation = Isolation(
        data_dir=data_dir, user=user, bwrap=None, setpriv=setpriv, gateway_home=home, runtime_dir=runtime_dir
    )
    if sandbox == "off":
        return isolation, None
    reason = _probe_bwrap(isolation)
    if reason is not None:
        if sandbox == "bwrap":
            raise IsolationError(f"MCPGW_LOCAL_SANDBOX (--local-sandbox) is bwrap, but {reason}")
        return isolation, reason
    return (
        Isolation(
            data_dir=data_dir,
            user=user,
            bwrap=shutil.which("bwrap"),
            setpriv=setpriv,
            gateway_home=home,
            runtime_dir=runtime_dir,
        ),
        None,
    )


def _gateway_home(environ: dict[str, str]) -> Path | None:
    try:
        home = Path(environ.get("HOME") or pwd.getpwuid(os.geteuid()).pw_dir).resolve()
    except (KeyError, OSError):
        return None
    return None if home == Path("/") else home


def _probe_bwrap(isolation: Isolation) -> str | None:
    """None when a sandbox like the replicas' starts here; else what went wrong."""
    path = shutil.which("bwrap")
    if path is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = Isolation(
        data_dir=isolation.data_dir,
        user=isolation.user,
        bwrap=path,
        setpriv=isolation.setpriv,
        gateway_home=None,
        runtime_dir=None,
    )
    true = shutil.which("true") or "/bin/true"
    argv = [*probe.sandbox_argv([true], cwd="/"), *probe._drop(), true]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not start: {exc}"
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        return f"bwrap cannot create a sandbox here ({err[-1] if err else f'exit {done.returncode}'})"
    return None


def bwrap_works() -> bool:
    """True when a replica sandbox can be created on this machine (for tests and diagnostics)."""
    try:
        isolation, _ = detect(
            data_dir=Path(tempfile.gettempdir()), replica_user="nobody", sandbox="auto", setpriv=SETPRIV
        )
    except IsolationError:
        return False
    return isolation.sandboxed
