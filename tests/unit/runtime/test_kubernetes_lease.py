"""One reconciler leader (issue 13): the Lease election, its fence, and applies that never go backwards.

Runtimes here talk to the kmock-based emulator (``tests/fixtures/kubernetes.py``), which stores
Leases like any object. Lease timings are short (3 s / 2 s / 0.25 s) so takeovers are quick.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from gateway.app import kubernetes_runtime_config
from gateway.control.reconciler import Reconciler
from gateway.models import AdapterRecord
from gateway.runtime._kube_manifests import node_selector, statefulset_manifest, tolerations
from gateway.runtime.base import NotLeading, StaleGeneration
from gateway.runtime.kubernetes import KubernetesRuntime
from gateway.sessions.memory import MemorySessionStore
from gateway.store.view import AdapterView
from tests.fixtures.kubernetes import ClusterEmulator, kube_settings, record, wait_for

LEASES = "/apis/coordination.k8s.io/v1/namespaces/adapter/leases"
SHORT = {"kube_lease_duration": 3.0, "kube_lease_renew_deadline": 2.0, "kube_lease_retry_period": 0.25}


@pytest.fixture
async def two(kubeconfig: Path) -> AsyncIterator[tuple[KubernetesRuntime, KubernetesRuntime]]:
    """Two runtimes (two gateways) on one cluster and one Lease; the first started leads."""
    first = KubernetesRuntime(kubernetes_runtime_config(kube_settings(kubeconfig, **SHORT)))
    second = KubernetesRuntime(kubernetes_runtime_config(kube_settings(kubeconfig, **SHORT)))
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()


def born(minute: int) -> datetime.datetime:
    return datetime.datetime(2026, 11, 30, 12, minute, tzinfo=datetime.UTC)


async def test_one_runtime_leads_and_the_other_only_follows(
    two: tuple[KubernetesRuntime, KubernetesRuntime], cluster: ClusterEmulator
) -> None:
    leader, follower = two
    assert leader.leadership.leading and not follower.leadership.leading
    lease = cluster.get_object("leases", "mcp-gateway-reconciler")
    assert lease is not None and lease["spec"]["holderIdentity"] == leader.identity
    assert lease["spec"]["leaseDurationSeconds"] == 3

    with pytest.raises(NotLeading, match="does not hold the reconciler Lease"):
        await follower.apply(record("ex"))
    await leader.apply(record("ex"))
    await follower.remove("ex")  # a follower's REST delete leaves the objects to the leader
    assert cluster.get_object("statefulsets", "ex") is not None
    assert await follower.deployed() == {"ex": 1}  # followers still read


async def test_a_released_lease_is_taken_within_a_retry_period(
    two: tuple[KubernetesRuntime, KubernetesRuntime], cluster: ClusterEmulator
) -> None:
    leader, follower = two
    await leader.close()  # a stopping gateway hands the Lease back
    took = await wait_for(lambda: follower.leadership.leading, limit=2.0, what="the follower to lead")
    assert took < 1.0, took
    lease = cluster.get_object("leases", "mcp-gateway-reconciler")
    assert lease is not None and lease["spec"]["holderIdentity"] == follower.identity
    assert lease["spec"]["leaseTransitions"] == 1
    await follower.apply(record("ex"))


async def test_a_vanished_leader_is_replaced_after_the_lease_duration(
    two: tuple[KubernetesRuntime, KubernetesRuntime], cluster: ClusterEmulator
) -> None:
    leader, follower = two
    elector = leader.leadership.elector
    assert elector is not None and elector._task is not None
    elector._task.cancel()  # the leader stops renewing without releasing (a killed process)
    took = await wait_for(lambda: follower.leadership.leading, limit=3.0 + 2.0, what="a takeover")
    assert 1.5 < took < 3.0 + 1.0, took  # not before the lease ran out on the follower's clock
    assert not leader.leadership.leading  # and the old leader's fence closed before that


async def test_a_leader_that_cannot_renew_stops_acting_before_the_renew_deadline_ends(
    two: tuple[KubernetesRuntime, KubernetesRuntime], cluster: ClusterEmulator
) -> None:
    leader, _ = two
    etcd_down = kmock.KubernetesError(status=500, reason="InternalError", message="etcd")
    cluster[kmock.method.PUT, f"{LEASES}/mcp-gateway-reconciler"] << etcd_down
    took = await wait_for(lambda: not leader.leadership.leading, limit=3.0, what="the fence to close")
    assert took <= 2.0 + 0.1, took
    with pytest.raises(NotLeading):
        await leader.apply(record("ex"))
    assert cluster.get_object("statefulsets", "ex") is None


async def test_apply_never_replaces_a_newer_generation(
    two: tuple[KubernetesRuntime, KubernetesRuntime], cluster: ClusterEmulator
) -> None:
    leader, _ = two
    await leader.apply(record("ex", generation=3, created_at=born(1), replica_count=3))
    with pytest.raises(StaleGeneration):
        await leader.apply(record("ex", generation=2, created_at=born(1), replica_count=1))
    sts = cluster.get_object("statefulsets", "ex")
    assert sts is not None and sts["spec"]["replicas"] == 3
    assert leader.stale_refused == 1
    # A deleted and re-created adapter starts at generation 1 again: a newer incarnation wins.
    await leader.apply(record("ex", generation=1, created_at=born(2), replica_count=1))
    sts = cluster.get_object("statefulsets", "ex")
    assert sts is not None and sts["spec"]["replicas"] == 1
    writes = [(w.verb, w.generation) for w in cluster.apply_log if w.kind == "statefulsets"]
    assert writes == [("create", 3), ("replace", 1)]


class _StaleListStore:
    """A store whose list misses a record that a point read finds (another gateway's fresh write)."""

    def __init__(self, records: dict[str, AdapterRecord], hidden: set[str]) -> None:
        self.records, self.hidden = records, hidden

    async def list(self, *, limit: int, after: str | None = None) -> list[AdapterRecord]:
        names = sorted(n for n in self.records if n not in self.hidden and (after is None or n > after))
        return [self.records[n] for n in names[:limit]]

    async def get(self, name: str) -> AdapterRecord | None:
        return self.records.get(name)


async def test_the_leader_removes_nothing_a_point_read_still_finds(
    two: tuple[KubernetesRuntime, KubernetesRuntime], cluster: ClusterEmulator
) -> None:
    leader, _ = two
    kept, gone = record("kept", created_at=born(1)), record("gone", created_at=born(1))
    await leader.apply(kept)
    await leader.apply(gone)
    store = _StaleListStore({"kept": kept}, hidden={"kept"})
    reconciler = Reconciler(
        store,  # type: ignore[arg-type]  # a fake with only the list and get the reconciler reads
        leader,
        AdapterView(),
        MemorySessionStore(),
        interval=10,
        leadership=leader.leadership,
    )
    await reconciler.run_once()
    assert cluster.get_object("statefulsets", "kept") is not None  # the list missed it; the point read did not
    assert cluster.get_object("statefulsets", "gone") is None
    await reconciler.close()


async def test_a_follower_reconciler_reads_the_store_and_changes_nothing(
    two: tuple[KubernetesRuntime, KubernetesRuntime], cluster: ClusterEmulator
) -> None:
    _, follower = two
    store = _StaleListStore({"new": record("new", created_at=born(1))}, hidden=set())
    view = AdapterView()
    reconciler = Reconciler(
        store,  # type: ignore[arg-type]  # a fake with only the list and get the reconciler reads
        follower,
        view,
        MemorySessionStore(),
        interval=10,
        leadership=follower.leadership,
    )
    await reconciler.run_once()
    assert view.get("new") is not None  # routing knows the adapter
    assert cluster.get_object("statefulsets", "new") is None  # only the leader applies
    assert not reconciler.leading
    await reconciler.close()


def test_adapter_pods_can_be_placed_on_a_tainted_node_pool(tmp_path: Path) -> None:
    settings = kube_settings(
        tmp_path / "kubeconfig",
        kube_adapter_node_selector="pool=adapters",
        kube_adapter_tolerations="pool=adapters:NoSchedule,dedicated:NoExecute",
    )
    spec: dict[str, Any] = statefulset_manifest(record("ex"), kubernetes_runtime_config(settings))["spec"]["template"][
        "spec"
    ]
    assert spec["nodeSelector"] == {"pool": "adapters"}
    assert spec["tolerations"] == [
        {"key": "pool", "operator": "Equal", "value": "adapters", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"},
    ]
    assert (
        "nodeSelector"
        not in statefulset_manifest(record("ex"), kubernetes_runtime_config(kube_settings(tmp_path)))["spec"][
            "template"
        ]["spec"]
    )
    with pytest.raises(ValueError, match="kube_adapter_tolerations"):
        tolerations("pool=adapters:Sometimes")
    with pytest.raises(ValueError, match="kube_adapter_node_selector"):
        node_selector("pool")
    with pytest.raises(ValueError):
        KubernetesRuntime(kubernetes_runtime_config(kube_settings(tmp_path, kube_adapter_tolerations="=x")))


async def test_leadership_shows_in_the_log(
    two: tuple[KubernetesRuntime, KubernetesRuntime], caplog: pytest.LogCaptureFixture
) -> None:
    leader, follower = two
    caplog.set_level("INFO", logger="gateway.leader")
    await leader.close()
    await wait_for(lambda: follower.leadership.leading, limit=2.0, what="the follower to lead")
    assert any("stopped leading" in r.message and leader.identity in r.message for r in caplog.records)
    assert any("now leads" in r.message and follower.identity in r.message for r in caplog.records)
    assert follower.leadership.transitions == 1
    await asyncio.sleep(0)
