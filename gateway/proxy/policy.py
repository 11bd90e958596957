"""The MCP-aware stages of the data plane: classify → tool authorization → rate limits (issue 15).

Thin wiring around gateway/policy (each decision is made there; see gateway/policy/README.md and
tests/unit/policy/test_policy_composition.py, the reference for this order). ``McpStages.plan`` runs the three
stages on one buffered request body and returns a :class:`Plan`: what to forward, or the local
answer, and what the response filters and the audit need after forwarding.

Nothing is parsed that no configured stage needs: ``McpStages.active(record)`` is False for an
adapter without ``toolPolicy`` and ``rateLimits`` when no default rate is set and audit is off, and
then the proxy never buffers or parses the body (today's hot path, measured in scripts/bench_proxy.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.models import AdapterRecord, Identity
from gateway.policy.audit import AuditTrail, CredentialAudit, Event
from gateway.policy.classify import Classification, Message, RequestId, classify
from gateway.policy.ratelimit import (
    AdapterLimits,
    RateLimiter,
    limited_responses,
    limited_status,
    retry_after_header,
)
from gateway.policy.toolpolicy import (
    BatchSplit,
    PolicyCache,
    ToolPolicy,
    local_status,
    split_batch,
    tool_call_decision,
)

_encoder = msgspec.json.Encoder()
AUDITED: tuple[Event, ...] = ("tools/call", "resources/read", "prompts/get")
PARSE_ERROR = -32700


@dataclass(slots=True)
class LocalAnswer:
    """What the gateway answers itself (nothing, or only part of a batch, was forwarded)."""

    status: int
    body: bytes
    responses: list[dict[str, Any]]
    """The JSON-RPC responses in ``body`` (legacy SSE sends them as events on the client's stream)."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Plan:
    """The outcome of the MCP stages for one request."""

    body: bytes
    """The body to forward (the original bytes when nothing was held back)."""
    local: LocalAnswer | None = None
    """Set: answer this and forward nothing."""
    merged: list[dict[str, Any]] = field(default_factory=list)
    """Local errors for requests held back from a forwarded batch: merged into the upstream's answer."""
    listing_ids: set[RequestId] = field(default_factory=set)
    """Ids of forwarded ``tools/list`` requests whose answers the response filter trims."""
    policy: ToolPolicy | None = None
    """The policy to trim with (None: nothing to trim for this caller)."""
    audited: tuple[Message, ...] = ()
    """Forwarded messages to audit once the upstream answered."""
    era: str = ""
    started: float = 0.0
    request_id: str | None = None
    trace_id: str | None = None
    credential: CredentialAudit | None = None
    """The upstream credential the request was forwarded with (``upstreamAuth``), for ``audited``'s records."""
    rpc_id: RequestId = None
    """The JSON-RPC id of a single-request body: gateway errors after this stage answer with it (issue 17).
    None for a batch, a notification or a body that is not JSON-RPC (their errors carry ``id: null``)."""


class McpStages:
    """Classify, authorize and limit one MCP request; see the module docstring."""

    def __init__(
        self,
        *,
        limiter: RateLimiter,
        audit: AuditTrail,
        default_user_rate: tuple[int, float] | None = None,
    ) -> None:
        self.limiter = limiter
        self.audit = audit
        self._default = default_user_rate
        self._policies = PolicyCache()
        self._limits: dict[str, tuple[str, AdapterLimits]] = {}
        self.denials: dict[str, int] = {}
        """tools/call requests refused by toolPolicy, by adapter (a metric)."""
        self.limited_by: dict[tuple[str, str], int] = {}
        """Requests refused by a rate limit, by (adapter, limit name) (a metric)."""

    def active(self, record: AdapterRecord) -> bool:
        """Whether any stage has work for requests to ``record`` (else the body is not even buffered)."""
        return (
            record.tool_policy is not None
            or bool(record.rate_limits)
            or self._default is not None
            or self.audit.enabled
        )

    def policy(self, record: AdapterRecord) -> ToolPolicy | None:
        """The compiled ``toolPolicy`` of ``record`` (None when it has none)."""
        if record.tool_policy is None:
            return None
        return self._policies.get(record.name, record.etag, record.tool_policy)

    def _adapter_limits(self, record: AdapterRecord) -> AdapterLimits:
        entry = self._limits.get(record.name)
        if entry is not None and entry[0] == record.etag:
            return entry[1]
        limits = AdapterLimits(record.name, record.rate_limits, default_user=self._default)
        self._limits[record.name] = (record.etag, limits)
        return limits

    async def plan(
        self,
        record: AdapterRecord,
        identity: Identity,
        headers: dict[str, str],
        body: bytes,
        *,
        legacy: bool,
        request_id: str | None = None,
        trace_id: str | None = None,
    ) -> Plan:
        """Run classify → tool authorization → rate limits on one request body (ids: for the audit)."""
        started = time.perf_counter()
        name = record.name
        roles = identity.roles
        # --- classify: the body is authoritative; headers that disagree with it → 400
        c = classify(headers, body, legacy=legacy)
        if c.error is not None:
            error = {"jsonrpc": "2.0", "id": single_id(c), "error": {"code": c.error.code, "message": c.error.message}}
            return _local(c.error.status, error, started)
        policy = self.policy(record)
        restricted = policy is not None and policy.restricts(roles)
        if c.malformed and restricted:
            error = {"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": "parse error"}}
            return _local(400, error, started)
        # --- tool authorization
        if restricted and policy is not None:
            split = split_batch(body, c.messages, c.batch, tool_call_decision(policy, roles, name))
        else:
            split = BatchSplit(forward=body, local=(), forwarded=c.messages, denied=(), batch=c.batch)
        if split.denied:
            self.denials[name] = self.denials.get(name, 0) + len(split.denied)
        for m in split.denied:
            self.audit.record(
                "tools/call", "denied", user=identity.user_id, roles=roles, adapter=name, target=m.name,
                status=403, rpc_id=m.id, era=c.era, request_id=request_id, trace_id=trace_id, body=body,
            )  # fmt: skip
        if split.forward is None:
            return _local(local_status(split), list(split.local), started, batch=split.batch)
        # --- rate limits
        limits = self._adapter_limits(record)
        if not limits.empty:
            checks = limits.checks(identity.user_id, split.forwarded)
            if checks:
                decision = await self.limiter.check_all(checks)
                if not decision.allowed:
                    limit = decision.limit.name if decision.limit else None
                    key = (name, limit or "unavailable")
                    self.limited_by[key] = self.limited_by.get(key, 0) + 1
                    for m in split.forwarded:
                        if m.method in AUDITED and m.has_id:
                            self.audit.record(
                                m.method, "limited", user=identity.user_id, roles=roles, adapter=name,
                                target=m.name, status=limited_status(decision), rpc_id=m.id, era=c.era, limit=limit,
                                request_id=request_id, trace_id=trace_id, body=body,
                            )  # fmt: skip
                    errors = limited_responses(split.forwarded, decision) + list(split.local)
                    answer = _local(limited_status(decision), errors, started, batch=split.batch)
                    answer.local.headers["Retry-After"] = retry_after_header(decision)  # type: ignore[union-attr]
                    return answer
        listing: set[RequestId] = {
            m.id for m in split.forwarded if m.method == "tools/list" and m.has_id and m.id is not None
        }
        audited = tuple(m for m in split.forwarded if m.method in AUDITED) if self.audit.enabled else ()
        return Plan(
            body=split.forward,
            merged=list(split.local),
            listing_ids=listing if restricted else set(),
            policy=policy if restricted else None,
            audited=audited,
            era=c.era,
            started=started,
            request_id=request_id,
            trace_id=trace_id,
            rpc_id=single_id(c),
        )

    def answered(self, plan: Plan, record: AdapterRecord, identity: Identity, status: int) -> None:
        """Audit the forwarded calls once the upstream answered (``status`` 0: it could not be reached)."""
        if not plan.audited:
            return
        latency = (time.perf_counter() - plan.started) * 1000
        outcome = "allowed" if 0 < status < 400 else "upstream_error"
        for m in plan.audited:
            self.audit.record(
                m.method, outcome, user=identity.user_id, roles=identity.roles, adapter=record.name,  # type: ignore[arg-type]
                target=m.name, status=status or None, latency_ms=round(latency, 3), rpc_id=m.id, era=plan.era,
                request_id=plan.request_id, trace_id=plan.trace_id, body=plan.body, credential=plan.credential,
            )  # fmt: skip

    def credential_audit(
        self,
        plan: Plan | None,
        record: AdapterRecord,
        identity: Identity,
        credential: CredentialAudit,
        *,
        status: int | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        """Audit the upstream credential of one request to an adapter with ``upstreamAuth`` (issue 18).

        The request's audited calls carry it: in ``answered`` once the upstream answered, or here at
        once when the credential failed (nothing is forwarded; outcome ``error``, ``status`` the
        client's). A request without audited calls (``initialize``, ``tools/list``, a GET stream, a
        DELETE) gets one ``upstream.credential`` record, so every issued token is in the trail.
        """
        failed = credential.outcome == "failed"
        if plan is not None and plan.audited:
            if not failed:
                plan.credential = credential
                return
            latency = round((time.perf_counter() - plan.started) * 1000, 3)
            for m in plan.audited:
                self.audit.record(
                    m.method, "error", user=identity.user_id, roles=identity.roles, adapter=record.name,  # type: ignore[arg-type]
                    target=m.name, status=status, latency_ms=latency, rpc_id=m.id, era=plan.era,
                    request_id=plan.request_id, trace_id=plan.trace_id, detail=credential.reason,
                    body=plan.body, credential=credential,
                )  # fmt: skip
            return
        self.audit.record(
            "upstream.credential", "error" if failed else "allowed", user=identity.user_id, roles=identity.roles,
            adapter=record.name, status=status, era=plan.era if plan is not None else None,
            request_id=plan.request_id if plan is not None else request_id,
            trace_id=plan.trace_id if plan is not None else trace_id, detail=credential.reason, credential=credential,
        )  # fmt: skip


def single_id(c: Classification) -> RequestId:
    """The id of a body holding one JSON-RPC request; None for a batch, a notification or no parsed body."""
    if c.parsed and not c.batch and len(c.messages) == 1 and c.messages[0].has_id:
        return c.messages[0].id
    return None


def _local(
    status: int, responses: dict[str, Any] | list[dict[str, Any]], started: float, *, batch: bool = False
) -> Plan:
    items = responses if isinstance(responses, list) else [responses]
    if status == 202:
        body = b""
    elif batch:
        body = _encoder.encode(items)
    else:
        body = _encoder.encode(items[0])
    return Plan(body=b"", local=LocalAnswer(status=status, body=body, responses=items), started=started)
