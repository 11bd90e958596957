"""Replica choice (gateway/proxy/balancer.py): least outstanding, ties round-robin per adapter."""

from __future__ import annotations

from collections import Counter

from gateway.proxy.balancer import Balancer
from gateway.runtime.base import Endpoint


def endpoints(adapter: str, count: int) -> list[Endpoint]:
    return [Endpoint(f"{adapter}-{i}", f"uid-{adapter}-{i}", f"http://127.0.0.1:{9000 + i}") for i in range(count)]


def test_idle_replicas_take_turns_per_adapter_even_when_adapters_interleave() -> None:
    balancer = Balancer()
    a, b = endpoints("a", 2), endpoints("b", 2)
    picked: dict[str, Counter[str]] = {"a": Counter(), "b": Counter()}
    for _ in range(10):  # one request to each adapter in turn, each finished before the next
        for name, eps in (("a", a), ("b", b)):
            chosen = balancer.pick(name, eps)
            balancer.begin(chosen)
            balancer.end(chosen)
            picked[name][chosen.replica] += 1
    assert picked["a"] == Counter({"a-0": 5, "a-1": 5})
    assert picked["b"] == Counter({"b-0": 5, "b-1": 5})


def test_the_replica_with_fewest_requests_in_flight_wins() -> None:
    balancer = Balancer()
    eps = endpoints("a", 3)
    for endpoint, load in zip(eps, (2, 0, 1), strict=True):
        for _ in range(load):
            balancer.begin(endpoint)
    assert {balancer.pick("a", eps).replica for _ in range(6)} == {"a-1"}
    balancer.begin(eps[1])
    balancer.begin(eps[1])
    assert balancer.pick("a", eps).replica == "a-2"
    assert [balancer.outstanding(e) for e in eps] == [2, 2, 1]
