"""Adapter status: conditions computed from the stored spec and what the runtime observes."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from gateway.models import AdapterRecord, AdapterStatus, Condition, ConditionStatus, ConditionType
from gateway.runtime.base import RuntimeStatus


class ConditionClock:
    """Remembers when each condition last changed status, for lastTransitionTime.

    With ``path`` the history is kept in a small JSON file (written whole, then renamed, on each
    transition), so a restarted gateway reports when a condition really changed, not when it came
    back (issue 17). Transitions are rare: a write per change of a condition's status.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._seen: dict[tuple[str, str], tuple[str, datetime]] = {}
        if path is not None:
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                for adapter, types in json.loads(path.read_text()).items():
                    for type_, (status, stamp) in types.items():
                        self._seen[(adapter, type_)] = (status, datetime.fromisoformat(stamp))

    def stamp(self, adapter: str, type_: str, status: str, *, since: datetime | None = None) -> datetime:
        """The time ``type_`` entered ``status`` (now, if it just did).

        ``since``: when the condition is known to have held from, for its first observation (``Accepted``
        is True from the adapter's creation, not from the first status read: issue 17, a newcomer's
        adapter created at 21:36:54 read ``Accepted`` since 21:37:49, when they first asked).
        """
        key = (adapter, type_)
        previous = self._seen.get(key)
        if previous is not None and previous[0] == status:
            return previous[1]
        now = since if previous is None and since is not None else datetime.now(UTC)
        self._seen[key] = (status, now)
        self._save()
        return now

    def forget(self, adapter: str) -> None:
        """Drop the history of a deleted adapter."""
        for key in [k for k in self._seen if k[0] == adapter]:
            del self._seen[key]
        self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        doc: dict[str, dict[str, tuple[str, str]]] = {}
        for (adapter, type_), (status, stamp) in self._seen.items():
            doc.setdefault(adapter, {})[type_] = (status, stamp.isoformat())
        tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(doc))
            os.chmod(tmp, 0o600)
            tmp.replace(self._path)


def build_status(record: AdapterRecord, rs: RuntimeStatus, clock: ConditionClock) -> AdapterStatus:
    """The API status of an adapter."""
    desired = record.replica_count
    current = rs.observed_generation >= record.generation

    def condition(
        type_: ConditionType, status: ConditionStatus, reason: str, message: str, since: datetime | None = None
    ) -> Condition:
        return Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=clock.stamp(record.name, type_, status, since=since),
        )

    stored = f"spec stored at generation {record.generation}"
    conditions = [condition("Accepted", "True", "Stored", stored, since=record.created_at)]

    # The first rollout creates replicas; later ones replace them (issue 17: a newcomer's first adapter
    # read "RollingUpdate" before anything had ever run).
    first = record.generation == 1
    if not current:
        reason = "NewReplicas" if first else "Pending"
        message = f"generation {record.generation} not yet applied"
        conditions.append(condition("Progressing", "True", reason, message))
    elif rs.progressing or rs.updated < desired:
        reason = "NewReplicas" if first else "RollingUpdate"
        conditions.append(condition("Progressing", "True", reason, f"{rs.updated}/{desired} replicas updated"))
    else:
        conditions.append(condition("Progressing", "False", "Complete", "all replicas run the current spec"))

    first_issue = rs.issues[0] if rs.issues else None
    if desired == 0 and current:
        conditions.append(condition("Ready", "True", "ScaledToZero", "replicaCount is 0"))
    elif current and rs.ready >= desired and rs.updated >= desired and first_issue is None:
        conditions.append(condition("Ready", "True", "AllReplicasReady", f"{rs.ready}/{desired} replicas ready"))
    elif first_issue is not None:
        conditions.append(condition("Ready", "False", first_issue.reason, first_issue.message))
    else:
        conditions.append(condition("Ready", "False", "ReplicasNotReady", f"{rs.ready}/{desired} replicas ready"))

    if first_issue is not None:
        message = "; ".join(f"{i.reason}: {i.message}" for i in rs.issues)
        conditions.append(condition("Degraded", "True", first_issue.reason, message))
    else:
        conditions.append(condition("Degraded", "False", "AsExpected", "no replica problems observed"))

    # Derived from the conditions, so it never contradicts them (ready counts alone said "Healthy" while
    # Ready was False for an issue or an unapplied generation).
    ready_condition = next(c for c in conditions if c.type == "Ready")
    if ready_condition.status == "True":
        replica_status = "Healthy"
    elif first_issue is None and (not current or rs.progressing):
        replica_status = f"Progressing: {rs.ready}/{desired} ready"
    else:
        replica_status = f"Degraded: {rs.ready}/{desired} ready"
    return AdapterStatus(
        name=record.name,
        image=rs.image or record.image,
        generation=record.generation,
        observed_generation=rs.observed_generation,
        desired_replicas=desired,
        ready_replicas=rs.ready,
        updated_replicas=rs.updated,
        available_replicas=rs.available,
        replica_status=replica_status,
        conditions=conditions,
        instances=list(rs.instances),
    )
