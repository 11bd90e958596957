"""Replica choice: least outstanding requests, ties broken round-robin per adapter."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.runtime.base import Endpoint


class Balancer:
    """Counts requests in flight per replica incarnation and picks the least busy."""

    def __init__(self) -> None:
        self._outstanding: dict[str, int] = {}
        self._turns: dict[str, int] = {}

    def pick(self, adapter: str, endpoints: Sequence[Endpoint]) -> Endpoint:
        """The endpoint of ``adapter`` with the fewest requests in flight (``endpoints`` is not empty).

        Each adapter has its own round-robin turn, so traffic to one adapter cannot steer which
        replica of another gets the ties.
        """
        turn = self._turns.get(adapter, -1) + 1
        self._turns[adapter] = turn
        count = len(endpoints)
        best = endpoints[turn % count]
        best_load = self._outstanding.get(best.uid, 0)
        if best_load == 0:
            return best
        for offset in range(1, count):
            candidate = endpoints[(turn + offset) % count]
            load = self._outstanding.get(candidate.uid, 0)
            if load < best_load:
                best, best_load = candidate, load
                if load == 0:
                    break
        return best

    def begin(self, endpoint: Endpoint) -> None:
        """A request to ``endpoint`` started."""
        self._outstanding[endpoint.uid] = self._outstanding.get(endpoint.uid, 0) + 1

    def end(self, endpoint: Endpoint) -> None:
        """A request to ``endpoint`` finished."""
        left = self._outstanding.get(endpoint.uid, 1) - 1
        if left <= 0:
            self._outstanding.pop(endpoint.uid, None)
        else:
            self._outstanding[endpoint.uid] = left

    def outstanding(self, endpoint: Endpoint) -> int:
        """Requests in flight to ``endpoint``."""
        return self._outstanding.get(endpoint.uid, 0)
