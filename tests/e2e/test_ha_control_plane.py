"""Issue 13, "Checked by": three gateway processes on one Kubernetes API emulator and one Cosmos
stand-in, taking REST writes from all sides, with the reconciler leader killed mid-run.

The issue asks for 60 s of writes, and that is the default (``MCPGW_TEST_HA_SECONDS`` changes
it). No kubelet runs here: the check is the control plane, what the gateways write to the API,
recorded by the emulator in ``apply_log`` with the incarnation and generation annotations of
every write.
"""

from __future__ import annotations

import datetime
import functools
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.cosmos import shared_cosmos_emulator
from tests.fixtures.gateway import GatewayProcess, wait_for
from tests.fixtures.kubernetes import AppliedWrite, ClusterThread, write_kubeconfig

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("MCPGW_TEST_HA_SECONDS", "60"))
NAMES = [f"ha{i:02d}" for i in range(20)]
LEASE = {"duration": 3.0, "renew": 2.0, "retry": 0.5}
LEASE_NAME = "mcp-gateway-reconciler"


def when(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def k8s_api(tmp_path: Path) -> Iterator[ClusterThread]:
    """The API emulator alone (no kubelet: nothing runs the pods)."""
    with ClusterThread(tmp_path, kubelet=False) as cluster:
        yield cluster


def start_three(k8s: ClusterThread, tmp_path: Path) -> list[GatewayProcess]:
    cosmos = shared_cosmos_emulator()
    store_env = cosmos.env(cosmos.settings())
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", k8s.url)
    env = {
        **store_env,
        "MCPGW_RUNTIME": "kubernetes",
        "MCPGW_KUBECONFIG": str(kubeconfig),
        "MCPGW_KUBE_REGISTRY": "registry.test",
        "MCPGW_KUBE_LEASE_DURATION": str(LEASE["duration"]),
        "MCPGW_KUBE_LEASE_RENEW_DEADLINE": str(LEASE["renew"]),
        "MCPGW_KUBE_LEASE_RETRY_PERIOD": str(LEASE["retry"]),
        "MCPGW_RECONCILE_INTERVAL": "5",
    }
    gateways = []
    for i in range(3):
        gateways.append(GatewayProcess(tmp_path / f"gw{i}", env).start(timeout=60))
    return gateways


def lease_holder_pid(k8s: ClusterThread) -> int | None:
    assert k8s.cluster is not None
    lease = k8s.call(k8s.cluster.get_object, "leases", LEASE_NAME)
    holder = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
    return int(holder.rsplit("-", 2)[1]) if holder else None


def renewal_gap(k8s: ClusterThread) -> float:
    """The longest time between two successive writes of the Lease by the same holder (its renewTime)."""
    cluster = k8s.cluster  # a local: the lambda sees it narrowed
    assert cluster is not None
    history = k8s.call(lambda: [e for _, r, e in cluster.history if r[2] == "leases"])
    gap, last = 0.0, ("", 0.0)
    for event in history:
        spec = event["object"]["spec"]
        holder, at = spec.get("holderIdentity") or "", when(spec["renewTime"])
        if holder and holder == last[0]:
            gap = max(gap, at - last[1])
        last = (holder, at)
    return gap


def managed_sets(k8s: ClusterThread) -> dict[str, dict[str, Any]]:
    assert k8s.cluster is not None
    return {
        name: obj
        for name, obj in k8s.call(k8s.cluster.objects_of, "statefulsets").items()
        if obj["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "mcp-gateway"
    }


class Workload:
    """Random creates, updates and deletes of NAMES through random live gateways, from three threads."""

    def __init__(self, gateways: list[GatewayProcess]) -> None:
        self.gateways = gateways
        self.dead: set[int] = set()
        self.deletes: dict[str, list[float]] = {name: [] for name in NAMES}  # when each DELETE was sent
        self.statuses: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        clients = {gw.pid: gw.client() for gw in self.gateways}
        try:
            while not self.stop.is_set():
                live = [gw for gw in self.gateways if gw.pid not in self.dead]
                gw = rng.choice(live)
                try:
                    self.one(rng, clients[gw.pid])
                except httpx.TransportError:
                    self.count("transport-error")  # the gateway was just killed
        finally:
            for client in clients.values():
                client.close()

    def count(self, key: str) -> None:
        with self.lock:
            self.statuses[key] += 1

    def one(self, rng: random.Random, api: httpx.Client) -> None:
        name = rng.choice(NAMES)
        current = api.get(f"/adapters/{name}")
        if current.status_code == 404:
            body = {"name": name, "imageName": "mcp-example", "imageVersion": "1.0.0", "replicaCount": 1}
            self.count(f"create {api.post('/adapters', json=body).status_code}")
        elif rng.random() < 0.25:
            with self.lock:
                self.deletes[name].append(time.time())
            self.count(f"delete {api.delete(f'/adapters/{name}').status_code}")
        else:
            body = {
                "name": name,
                "imageName": "mcp-example",
                "imageVersion": rng.choice(["1.0.0", "1.0.1", "1.1.0"]),
                "replicaCount": rng.randint(1, 3),
                "environmentVariables": {"V": str(rng.randrange(10**6))},
            }
            headers = {"If-Match": current.headers.get("etag", "*")}
            self.count(f"update {api.put(f'/adapters/{name}', json=body, headers=headers).status_code}")


def test_three_gateways_converge_without_rollback_or_lost_adapters_while_the_leader_is_killed(
    k8s_api: ClusterThread, tmp_path: Path
) -> None:
    k8s = k8s_api
    cluster = k8s.cluster  # a local: the lambdas below see it narrowed
    assert cluster is not None
    gateways = start_three(k8s, tmp_path)
    try:
        wait_for(lambda: lease_holder_pid(k8s) in {gw.pid for gw in gateways}, timeout=10, what="a leader")

        # A write taken by a follower reaches the leader (and the cluster) within 2 s.
        leader_pid = lease_holder_pid(k8s)
        followers = [gw for gw in gateways if gw.pid != leader_pid]
        delays, removals = [], []

        def applied(name: str) -> bool:
            return name in managed_sets(k8s)

        def removed(name: str) -> bool:
            return name not in managed_sets(k8s)

        for i, gw in enumerate(followers * 2):
            with gw.client() as api:
                body = {"name": f"probe{i}", "imageName": "mcp-example", "imageVersion": "1.0.0", "replicaCount": 1}
                assert api.post("/adapters", json=body).status_code == 201
                written = time.monotonic()
                wait_for(functools.partial(applied, f"probe{i}"), timeout=5, interval=0.02, what="the apply")
                delays.append(time.monotonic() - written)
                assert api.delete(f"/adapters/probe{i}").status_code == 204
                deleted = time.monotonic()
                wait_for(functools.partial(removed, f"probe{i}"), timeout=5, interval=0.02, what="removal")
                removals.append(time.monotonic() - deleted)
        print(f"follower write -> StatefulSet applied by the leader: {[round(d, 2) for d in delays]} s")
        print(f"follower DELETE -> StatefulSet removed by the leader: {[round(d, 2) for d in removals]} s")
        assert max(delays) < 2.0, delays
        assert max(removals) < 2.0, removals
        probe_log = len(k8s.call(lambda: list(cluster.apply_log)))

        workload = Workload(gateways)
        threads = [threading.Thread(target=workload.run, args=(seed,)) for seed in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(SECONDS / 2)

        leader_pid = lease_holder_pid(k8s)
        (leader,) = [gw for gw in gateways if gw.pid == leader_pid]
        workload.dead.add(leader.pid)
        leader.stop(signal.SIGKILL)
        killed = time.monotonic()
        survivors = {gw.pid for gw in gateways if gw.pid != leader.pid}
        wait_for(lambda: lease_holder_pid(k8s) in survivors, timeout=LEASE["duration"] + 4, interval=0.05)
        takeover = time.monotonic() - killed
        print(f"leader killed -> another gateway holds the Lease after {takeover:.2f} s")
        assert takeover <= LEASE["duration"] + 2.0, takeover

        time.sleep(SECONDS / 2)
        workload.stop.set()
        for thread in threads:
            thread.join(30)
        print(f"requests: {dict(sorted(workload.statuses.items()))}")
        assert not [k for k in workload.statuses if k.split()[-1].startswith("5")], workload.statuses

        # The end state: every stored adapter in the cluster at its latest generation, nothing else.
        alive = next(gw for gw in gateways if gw.pid in survivors)
        with alive.client() as api:
            stored = {r["name"]: r for r in api.get("/adapters", params={"limit": 100}).json()["items"]}
        assert stored, "the workload left no adapter stored"

        def differences() -> list[str]:
            sets = managed_sets(k8s)
            found = [f"missing {n}" for n in sorted(stored.keys() - sets.keys())]
            found += [f"extra {n}" for n in sorted(sets.keys() - stored.keys())]
            for name in sorted(stored.keys() & sets.keys()):
                rec, notes = stored[name], sets[name]["metadata"]["annotations"]
                if int(notes["mcp-gateway/generation"]) != rec["generation"]:
                    found.append(f"{name} at generation {notes['mcp-gateway/generation']}, stored {rec['generation']}")
                if when(notes["mcp-gateway/created-at"]) != when(rec["createdAt"]):
                    found.append(f"{name} of another incarnation ({notes['mcp-gateway/created-at']})")
            return found

        # The leader polls the store every second; a loaded 2-core CI machine needs more than a few.
        try:
            wait_for(lambda: not differences(), timeout=45, interval=0.5, what="the cluster to match the store")
        except AssertionError:
            raise AssertionError(f"the cluster does not match the store: {differences()}") from None

        log: list[AppliedWrite] = [
            w
            for w in k8s.call(lambda: list(cluster.apply_log))[probe_log:]
            if w.name in workload.deletes  # the workload's adapters, not the probes
        ]
        # No generation applied after a newer one (per object; a re-created adapter is a newer incarnation).
        latest: dict[tuple[str, str], tuple[float, int]] = {}
        for w in log:
            if w.verb == "delete":
                continue
            version = (when(w.incarnation), w.generation)
            key = (w.kind, w.name)
            assert version >= latest.get(key, (0.0, 0)), f"{w} after {latest[key]}"
            latest[key] = version
        # Nothing stored was removed: every delete follows a REST DELETE sent after that incarnation was born.
        for w in log:
            if w.verb == "delete":
                born = when(w.incarnation)
                assert any(born <= sent <= w.at for sent in workload.deletes[w.name]), f"{w} removed while stored"
        print(f"apply log: {Counter(w.verb for w in log)}")
        print(f"longest gap between two renewals of the Lease by one holder: {renewal_gap(k8s):.2f} s")
    finally:
        for gw in gateways:
            gw.stop()
