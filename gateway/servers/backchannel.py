"""Server-to-client requests through a virtual server: a member's ``sampling/createMessage``,
``elicitation/create`` or ``roots/list`` relayed to the client, and the client's answer back.

Decision (2026-12-01, issue 16). A 2025-era member that needs the client during a call sends a
request on the call's SSE stream (the member session's). The virtual server passes it on to the
client on the client's own stream of that call (the POST answer turned into SSE by ``Relay``, or a
legacy ``/sse`` stream) under a **new id the gateway chooses** (``mcpgw-`` + random bits or a sealed claim, below), and
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
  the call ended, tampered — is refused with a 400 naming the id, and nothing reaches a member;
- one answer per id on the gateway that relayed the request (the entry is taken when answered), and
  entries end with the member call that asked (a late answer is refused, as the member no longer
  waits for it);
- at most ``MAX_PENDING`` requests wait per client session: a member asking for more gets the
  refusal of a client without the capability; a flood of bogus answers stores nothing;
- only the capabilities the client declared in its own ``initialize`` are declared to members, and a
  request for a capability it did not declare is refused at once (``-32601``), as before.

Across gateways (2026-12-01). Behind a load balancer that is not sticky the answer may reach another
gateway replica than the one holding the call. For a sealed 2025-era client session the new id is
therefore not random but ``mcpgw-`` + a sealed claim (the session key ring, kind ``vask``: never
accepted as a session id, and no session id is accepted as one) binding the client session, the
user, the member, the member session's own sealed id, the member's request id and the gateway
process that relayed it. A gateway that does not hold the request opens the id, checks session,
user and age (``FORWARD_MAX_AGE``) and posts the answer on the member session through its own data
plane (which checks the member session's seal, user and adapter again). On the gateway that relayed
it, an id no longer pending stays refused (answered, or its call over). On another gateway, one
answer per id is not enforced (that would need a store write per answer): a second answer reaches
the member, which drops answers to requests it no longer waits for — and only the session's own
user can send it, to their own member session. Cost, measured on the 2-core machine: the id is
about 490 characters (the member session id inside is about 240), sealing it 13 us per relayed
request, opening it 15 us per forwarded answer. Ids stay random (this gateway only) for legacy
``/sse`` sessions, which live on one gateway anyway, and for a member without a session id.

Limits (docs/servers.md): stateless 2026-07-28 callers have no session to answer on, so their
member's requests are refused; requests a member sends on its standalone GET stream are not seen
(the gateway holds none), only those on a call's own stream.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.proxy.sealing import MAX_TOKEN_CHARS, SessionClaims, SessionSealer

#: Requests a member may send to the client during a call, by the client capability they need.
NEEDS = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
#: Server-to-client requests waiting for the client's answer, per client session.
MAX_PENDING = 32
#: Prefix of the ids the gateway gives relayed requests.
ID_PREFIX = "mcpgw-"
#: Longest sealed capability text kept in a session id (past it, only the capability names are kept).
MAX_SEALED_CAPS = 512

#: Kind of the sealed claim in a relayed request's id (never a session kind).
ASK_KIND = "vask"
#: Seconds a relayed request's sealed id may be answered through another gateway.
FORWARD_MAX_AGE = 3600.0

#: Delivers a client's response to the member that asked: (the answering request's scope, message).
Deliver = Callable[[Mapping[str, Any], dict[str, Any]], Awaitable[None]]
#: Posts a response on a member session from any gateway: (scope, member adapter, member session id, message).
Forward = Callable[[Mapping[str, Any], str, str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Sealing:
    """What sealed, forwardable ids need: the key ring, this gateway process's id, and the way to a
    member session from here."""

    sealer: SessionSealer
    instance: str
    forward: Forward


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

    def __init__(
        self,
        capabilities: Mapping[str, Any],
        *,
        session: SessionClaims | None = None,
        sealing: Sealing | None = None,
        limit: int = MAX_PENDING,
    ) -> None:
        self.capabilities = dict(capabilities)
        self._limit = limit
        self._pending: dict[str, Pending] = {}
        self._session = session  # the sealed client session's claims: ids are sealed and forwardable
        self._sealing = sealing if session is not None else None

    @property
    def waiting(self) -> int:
        """How many relayed requests wait for the client's answer."""
        return len(self._pending)

    def allows(self, method: Any) -> bool:
        """Whether the client declared the capability ``method`` needs."""
        need = NEEDS.get(method) if isinstance(method, str) else None
        return need is not None and need in self.capabilities

    def hold(self, member: str, member_id: Any, deliver: Deliver, member_session: str | None = None) -> str | None:
        """Remember a member's request; its new id for the client, or None when the table is full.

        Sealed (forwardable by any gateway) when the client session is sealed and the member has a
        session of its own; else random, answerable on this gateway only.
        """
        if len(self._pending) >= self._limit:
            return None
        ident = self._sealed(member, member_id, member_session) or ID_PREFIX + secrets.token_urlsafe(16)
        self._pending[ident] = Pending(member, member_id, deliver)
        return ident

    def _sealed(self, member: str, member_id: Any, member_session: str | None) -> str | None:
        if self._sealing is None or self._session is None or not member_session:
            return None
        claims = SessionClaims(
            kind=ASK_KIND,
            sid=self._session.sid,
            adapter=member,
            replica=self._sealing.instance,
            replica_uid=msgspec.json.encode(member_id).decode(),
            upstream=member_session,
            user_id=self._session.user_id,
            issued_at=time.time(),
        )
        token = self._sealing.sealer.seal(claims)
        return ID_PREFIX + token if len(token) <= MAX_TOKEN_CHARS else None

    def _forwardable(self, ident: Any) -> SessionClaims | None:
        """The claims of a sealed id another gateway relayed on this client session, else None."""
        if self._sealing is None or self._session is None or not isinstance(ident, str):
            return None
        if not ident.startswith(ID_PREFIX):
            return None
        claims = self._sealing.sealer.open(ident[len(ID_PREFIX) :])
        if claims is None or claims.kind != ASK_KIND or claims.replica == self._sealing.instance:
            return None  # not ours, or relayed by this process and no longer pending (answered, call over)
        if claims.sid != self._session.sid or claims.user_id != self._session.user_id:
            return None
        if time.time() - claims.issued_at > FORWARD_MAX_AGE:
            return None
        return claims

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
        forwardable = self._forwardable(ident) if pending is None else None
        if forwardable is not None and self._sealing is not None:  # relayed by another gateway
            try:
                member_id = msgspec.json.decode(forwardable.replica_uid)
            except msgspec.DecodeError:
                member_id = None
            if isinstance(member_id, (str, int)) and not isinstance(member_id, bool):
                out: dict[str, Any] = {"jsonrpc": "2.0", "id": member_id}
                out["result" if has_result else "error"] = message["result" if has_result else "error"]
                await self._sealing.forward(scope, forwardable.adapter, forwardable.upstream, out)
                return forwardable.adapter
        if pending is None:
            raise AnswerRefused(
                shown,
                f"no request with id {named(ident)} is waiting for an answer on this session "
                "(unknown, already answered, or its call is over)",
            )
        out = {"jsonrpc": "2.0", "id": pending.member_id}
        out["result" if has_result else "error"] = message["result" if has_result else "error"]
        await pending.deliver(scope, out)
        return pending.member
