"""The replica runtime protocol: where an adapter's replicas run.

Implementations: ``local`` (child processes) and ``kubernetes`` (a StatefulSet per adapter).
The reconciler drives ``apply``/``remove``; the data plane reads ``endpoints`` on every request,
so ``endpoints`` must answer from memory without I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from gateway.errors import RuntimeUnavailable
from gateway.models import AdapterRecord, InstanceStatus


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """A replica the data plane may route to.

    ``replica`` is the stable name (``mcp-example-1``); ``uid`` changes whenever the replica is
    replaced (a new process, a new pod), so a session pinned to a dead incarnation is detected.
    ``draining``: the replica was replaced or scaled away (issue 13): it still serves the sessions
    pinned to it, until they end or ``replica_drain_timeout`` passes, but takes no new session and
    no stateless request.
    """

    replica: str
    uid: str
    url: str
    draining: bool = False


def accepting(endpoints: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
    """The endpoints that take new sessions and stateless requests (not draining)."""
    if not any(e.draining for e in endpoints):
        return endpoints
    return tuple(e for e in endpoints if not e.draining)


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimeIssue:
    """Why replicas are not ready: a machine reason (``ImageNotFound``, ``CrashLoopBackOff`` …) and a message."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimeStatus:
    """What the runtime observes of one adapter."""

    observed_generation: int
    image: str
    desired: int
    ready: int
    updated: int
    available: int
    instances: tuple[InstanceStatus, ...] = ()
    issues: tuple[RuntimeIssue, ...] = ()
    progressing: bool = False


class InstanceNotFound(Exception):
    """logs() was asked for a replica index the adapter does not have."""


class NotLeading(RuntimeUnavailable):
    """A change to the runtime was refused: this gateway is not (or no longer) the reconciler leader."""

    def __init__(self, message: str) -> None:
        super().__init__("Kubernetes API", message)


class StaleGeneration(Exception):
    """An apply was refused: the runtime already runs a newer generation of the adapter."""


class Leadership(Protocol):
    """Who may change the runtime when several gateways share it (the Kubernetes Lease).

    Runtimes without one (the local runtime has its own leader lock) act on every call.
    """

    @property
    def leading(self) -> bool:
        """True while this gateway may apply and remove."""

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(leading)`` whenever this gateway starts or stops leading."""

    async def release(self) -> None:
        """Stop leading for good and let another gateway lead at once (shutdown)."""


EndpointListener = Callable[[str], None]
"""Called with an adapter name whenever its ready endpoints change."""

SessionCounter = Callable[[str, str], Awaitable[int]]
"""``counter(adapter, replica_uid)``: live sessions pinned to that replica incarnation."""


class Runtime(Protocol):
    """Runs replicas of adapters and reports on them."""

    async def start(self) -> None:
        """Connect, discover what already runs, begin watching."""

    async def close(self) -> None:
        """Stop watching. The local runtime also stops every replica it started."""

    async def ping(self) -> None:
        """Raise RuntimeUnavailable when the runtime cannot be reached."""

    def check_image(self, image_name: str, image_version: str) -> str | None:
        """Why this runtime cannot run the image (the control plane answers 422 naming ``imageName``), or None.

        The local runtime answers from its image catalog; Kubernetes accepts any image (a missing one
        shows as ``ImagePullBackOff`` in status). Called on POST/PUT, so it reads no network.
        """

    async def apply(self, adapter: AdapterRecord) -> None:
        """Make the adapter's replicas match the record (idempotent; rolls on spec change)."""

    async def remove(self, name: str) -> None:
        """Stop and remove every replica and object of the adapter (idempotent)."""

    async def deployed(self) -> dict[str, int]:
        """Adapters this runtime manages, with the generation each was last applied at."""

    async def status(self, adapter: AdapterRecord) -> RuntimeStatus:
        """Observed state of the adapter's replicas."""

    async def logs(self, name: str, instance: int, tail: int) -> str:
        """The last ``tail`` lines of replica ``instance``; raise InstanceNotFound."""

    async def follow_logs(self, name: str, instance: int, tail: int) -> AsyncIterator[str]:
        """The last ``tail`` lines of replica ``instance``, then each new line as the replica writes it.

        Awaiting checks the instance (raise InstanceNotFound at once, before a response starts);
        the iterator yields lines without their newline and ends when the replica is removed.
        Closing it (``aclose``) stops following.
        """

    def endpoints(self, name: str) -> tuple[Endpoint, ...]:
        """Ready replicas of the adapter, draining ones included (flagged), from memory (hot path: no I/O)."""

    def set_session_counter(self, counter: SessionCounter) -> None:
        """How many live sessions are pinned to a replica: a draining replica stops when it has none."""

    def add_listener(self, listener: EndpointListener) -> None:
        """Call ``listener(name)`` whenever the endpoints of an adapter change."""
