"""Server-to-client requests through a virtual server: a member's ``sampling/createMessage``,
``elicitation/create`` or ``roots/list`` relayed to the client, and the client's answer back.

Decision (2026-12-01, issue 16). A 2025-era member that needs the client during a call sends a
request on the call's SSE stream (the member session's). The virtual server passes it on to the
client on the client's own stream of that call (the POST answer turned into SSE by ``Relay``, or a
legacy ``/sse`` stream) under a **new id the gateway chooses** (``mcpgw-`` + 128 random bits), and
remembers ``new id → (member, member's own id)`` in the client session's ``Backchannel``. The client
POSTs its JSON-RPC response to the virtual server with its session id; the gateway maps the id back
and POSTs the response on the member session (through the data plane, as every member call).

Why a new id rather than the member's: member ids are small counters, the same across members and
sessions (two members both asking ``id: 0`` at once would collide on one client session), and a
guessable id would let anything that can post on the session pick which pending request an answer
lands on. The gateway's id is unguessable and only valid on the session it was sent on.

What keeps this from being a way in (docs/security.md):

- an answer is accepted only on the client session it was sent to (the session id is checked as for
  every request: same user, same server); anything else — unknown, foreign, already answered, after
  the call ended — is refused with a 400 naming the id, and nothing reaches a member;
- one answer per id (the entry is taken when answered), and entries end with the member call that
  asked (a late answer is refused, as the member no longer waits for it);
- at most ``MAX_PENDING`` requests wait per client session: a member asking for more gets the
  refusal of a client without the capability; a flood of bogus answers stores nothing;
- only the capabilities the client declared in its own ``initialize`` are declared to members, and a
  request for a capability it did not declare is refused at once (``-32601``), as before.

Limits (docs/servers.md): the answer must reach the gateway replica holding the call (the pending
table is in process); stateless 2026-07-28 callers have no session to answer on, so their member's
requests are refused; requests a member sends on its standalone GET stream are not seen (the
gateway holds none), only those on a call's own stream.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

#: Requests a member may send to the client during a call, by the client capability they need.
NEEDS = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
#: Server-to-client requests waiting for the client's answer, per client session.
MAX_PENDING = 32
#: Prefix of the ids the gateway gives relayed requests.
ID_PREFIX = "mcpgw-"
#: Longest sealed capability text kept in a session id (past it, only the capability names are kept).
MAX_SEALED_CAPS = 512

#: Delivers a client's response to the member that asked: (the answering request's scope, message).
Deliver = Callable[[Mapping[str, Any], dict[str, Any]], Awaitable[None]]


def relayed_capabilities(declared: Any) -> dict[str, Any]:
    """The part of a client's ``initialize`` capabilities that members may use through the gateway.

    ``roots.listChanged`` is dropped: the client's ``notifications/roots/list_changed`` is not passed
    on to member sessions, so a member must not count on it.
    """
    if not isinstance(declared, dict):
        return {}
    out: dict[str, Any] = {}
    for name in ("sampling", "elicitation", "roots"):
        value = declared.get(name)
        if isinstance(value, dict):
            out[name] = {k: v for k, v in value.items() if name != "roots" or k != "listChanged"}
    return out


def seal_capabilities(capabilities: Mapping[str, Any]) -> str:
    """The relayed capabilities as compact JSON for a sealed session id ("" for none); past
    ``MAX_SEALED_CAPS`` bytes only the names are kept (a client cannot grow every session id)."""
    if not capabilities:
        return ""
    text = msgspec.json.encode(dict(capabilities)).decode()
    if len(text) > MAX_SEALED_CAPS:
        text = msgspec.json.encode({key: {} for key in capabilities}).decode()
    return text


def unseal_capabilities(text: str) -> dict[str, Any]:
    """The inverse of ``seal_capabilities`` (anything unreadable: none)."""
    if not text:
        return {}
    try:
        return relayed_capabilities(msgspec.json.decode(text))
    except msgspec.DecodeError:
        return {}


def named(ident: Any) -> str:
    """An id as error messages show it (bounded: the id is the client's)."""
    return repr(ident)[:80]


class AnswerRefused(Exception):
    """A client's response the gateway does not pass on; ``message`` names the id and why."""

    def __init__(self, ident: Any, message: str) -> None:
        super().__init__(message)
        self.ident = ident
        self.message = message


@dataclass(frozen=True)
class Pending:
    """One relayed request: who asked (``member``, ``deliver``) and under which id (``member_id``)."""

    member: str
    member_id: Any
    deliver: Deliver


class Backchannel:
    """The server-to-client requests of one client session waiting for the client's answer."""

    def __init__(self, capabilities: Mapping[str, Any], *, limit: int = MAX_PENDING) -> None:
        self.capabilities = dict(capabilities)
        self._limit = limit
        self._pending: dict[str, Pending] = {}

    @property
    def waiting(self) -> int:
        """How many relayed requests wait for the client's answer."""
        return len(self._pending)

    def allows(self, method: Any) -> bool:
        """Whether the client declared the capability ``method`` needs."""
        need = NEEDS.get(method) if isinstance(method, str) else None
        return need is not None and need in self.capabilities

    def hold(self, member: str, member_id: Any, deliver: Deliver) -> str | None:
        """Remember a member's request; its new id for the client, or None when the table is full."""
        if len(self._pending) >= self._limit:
            return None
        ident = ID_PREFIX + secrets.token_urlsafe(16)
        self._pending[ident] = Pending(member, member_id, deliver)
        return ident

    def forget(self, idents: list[str]) -> None:
        """The call that asked is over: its requests no longer take answers."""
        for ident in idents:
            self._pending.pop(ident, None)

    async def answer(self, scope: Mapping[str, Any], message: dict[str, Any]) -> str:
        """Pass a client's response on to the member that asked; returns the member's name.

        Raises AnswerRefused for anything that does not answer a request pending on this session.
        """
        ident = message.get("id")
        shown = ident if isinstance(ident, (str, int)) and not isinstance(ident, bool) else None
        has_result, has_error = "result" in message, "error" in message
        if has_result == has_error:
            raise AnswerRefused(shown, f"the response to id {named(ident)} needs exactly one of result and error")
        if has_error and not isinstance(message["error"], dict):
            raise AnswerRefused(shown, f"the error of the response to id {named(ident)} must be an object")
        pending = self._pending.pop(ident, None) if isinstance(ident, str) else None
        if pending is None:
            raise AnswerRefused(
                shown,
                f"no request with id {named(ident)} is waiting for an answer on this session "
                "(unknown, already answered, or its call is over)",
            )
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": pending.member_id}
        out["result" if has_result else "error"] = message["result" if has_result else "error"]
        await pending.deliver(scope, out)
        return pending.member
