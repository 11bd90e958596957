"""The gateway settles the garbage collector once started (gateway.app.settle_garbage_collector)."""

from __future__ import annotations

import gc
import weakref

from gateway.app import GC_YOUNG_THRESHOLD, settle_garbage_collector


class Node:
    """An object that can sit in a reference cycle."""

    other: Node | None = None


def test_start_up_heap_is_frozen_and_later_cycles_are_still_collected() -> None:
    threshold = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 1000, "the start-up heap was not frozen"
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        a, b = Node(), Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        del a, b
        gc.collect()
        assert ref() is None, "a reference cycle made after start-up was not collected"
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
