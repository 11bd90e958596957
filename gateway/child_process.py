"""Children that must not outlive their parent: how they are started and signalled.

Shared by the local runtime (``gateway/runtime/_local_isolation.py``, ``_local_replica.py``) and
the stdio bridge (``gateway/stdio/bridge.py``): the runtime imports the stdio package (the pod's
commands), so the bridge may not import the runtime back (issue 20: no import cycle between
packages). Linux only, like both users.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

SETPRIV = shutil.which("setpriv")


def launch(command: Sequence[str]) -> list[str]:
    """The argv that starts ``command`` so that it dies with the gateway (pair it with start_new_session=True).

    With util-linux's ``setpriv --pdeathsig KILL`` the kernel SIGKILLs the child when the gateway
    dies, however it dies, and no Python code runs between fork and exec. That matters: a
    ``preexec_fn`` makes CPython run every library's at-fork hooks in the child, and a hook that
    touches a lock or a thread pool (OpenTelemetry's providers and batch processors register
    such hooks) can hang the forked child of a threaded gateway forever, before it ever execs.

    Without setpriv (not a util-linux system) the command runs as is, without a parent-death
    signal (2026-11-30; it used to be a ``preexec_fn`` calling ``prctl``, which brought back the
    at-fork hazard and needed the SDK's private fork hooks overridden). The local runtime logs a
    WARNING at start (``_local_isolation.detect``); replicas of a SIGKILLed gateway then keep
    running until the next start on the same data dir, which kills every process carrying its
    owner marker. A clean stop (SIGTERM, Ctrl-C) stops every replica either way.
    """
    if SETPRIV is not None:
        return [SETPRIV, "--pdeathsig", "KILL", "--", *command]
    return list(command)


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True
