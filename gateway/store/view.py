"""An in-memory view of adapter records.

The data plane authorizes and routes every request from this view, never from the store, so a
store round-trip never sits on the hot path and a store outage does not stop known adapters
from serving. The reconciler refreshes it on every pass; the control plane updates it on writes.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.models import AdapterRecord
from gateway.store.base import AdapterStore

PAGE = 200


class AdapterView:
    """Adapter records by name, as last read or written by this gateway."""

    def __init__(self) -> None:
        self._records: dict[str, AdapterRecord] = {}
        self.loaded = False

    def get(self, name: str) -> AdapterRecord | None:
        """The record, or None when unknown."""
        return self._records.get(name)

    def put(self, record: AdapterRecord) -> None:
        """Remember a record just written."""
        self._records[record.name] = record

    def remove(self, name: str) -> None:
        """Forget a record just deleted."""
        self._records.pop(name, None)

    def replace_all(self, records: Iterable[AdapterRecord]) -> None:
        """Swap in a complete fresh listing."""
        self._records = {r.name: r for r in records}
        self.loaded = True

    def names(self) -> list[str]:
        """Known adapter names."""
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)


async def read_all(store: AdapterStore) -> list[AdapterRecord]:
    """Every record in the store, page by page."""
    out: list[AdapterRecord] = []
    after: str | None = None
    while True:
        page = await store.list(limit=PAGE, after=after)
        out.extend(page)
        if len(page) < PAGE:
            return out
        after = page[-1].name
