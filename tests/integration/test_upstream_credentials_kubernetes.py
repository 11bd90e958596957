"""``upstreamAuth`` type secret in kubernetes mode: the value comes from a Secret, read by name only.

Runs against the API emulator (tests/fixtures/kubernetes.py) through the runtime's real
kubernetes_asyncio client. Least privilege: the only call is ``GET .../secrets/<name>`` — never a
list or a watch, which would need RBAC on every Secret of the namespace.

End to end: a gateway process in kubernetes mode, the emulator enforcing the Role the Pulumi program
renders for ``upstreamSecretNames`` (get on the named Secrets only), and the test kubelet running the
recording upstream as the adapter's pod.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.credentials import CredentialUnavailable, UpstreamCredentials
from gateway.credentials._managed import ManagedIdentityTokens
from gateway.credentials.secrets import KubernetesSecretStore, SecretMissing
from gateway.models import AdapterRecord, Identity, UpstreamAuth
from gateway.runtime.kubernetes import KubernetesRuntime
from tests.fixtures.gateway import example_adapter, start_gateway, wait_for, wait_ready
from tests.fixtures.kubernetes import NAMESPACE, ClusterEmulator, ClusterThread, requests_to, write_kubeconfig
from tests.infra.stack_fixtures import run_stack


def secret(name: str, value: str) -> dict[str, object]:
    data = {"value": base64.b64encode(value.encode()).decode()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "data": data}


async def test_secret_is_read_by_name_with_get_only_and_sent_upstream(
    cluster: ClusterEmulator,
    runtime: KubernetesRuntime,
) -> None:
    cluster.put_object("secrets", secret("weather-key", "kube-value-1"))
    cluster.put_object("secrets", secret("unrelated", "must-not-be-read"))
    store = KubernetesSecretStore(lambda: runtime.api_client, NAMESPACE)
    creds = UpstreamCredentials(obo=None, managed=ManagedIdentityTokens(client_id=None), secrets=store)
    adapter = AdapterRecord(
        name="weather",
        image_name="mcp-example",
        image_version="1.0.0",
        upstream_auth=UpstreamAuth(type="secret", secret="weather-key", prefix="Bearer "),
    )
    # Kept for KUBE_SECRET_TTL: one read ("issued" in the audit), then "cached".
    assert [(await creds.issue(adapter, Identity("u"), None)).outcome for _ in range(3)] == [
        "issued",
        "cached",
        "cached",
    ]
    assert await creds.headers_for(adapter, Identity("u"), None) == [(b"authorization", b"Bearer kube-value-1")]
    reads = [r for r in list(cluster) if "/secrets" in r.url.path]
    assert [(r.method.value, r.url.path) for r in reads] == [
        ("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/weather-key")
    ]
    assert not requests_to(cluster, "GET", "/secrets", watch="true")

    missing = AdapterRecord(
        name="other", image_name="x", image_version="1", upstream_auth=UpstreamAuth(type="secret", secret="absent")
    )
    with pytest.raises(CredentialUnavailable, match=f"Kubernetes Secret {NAMESPACE}/absent does not exist"):
        await creds.headers_for(missing, Identity("u"), None)
    cluster.put_object("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nokey"}, "data": {}})
    with pytest.raises(SecretMissing, match="has no 'value' key"):
        await store.get("nokey")


# --- end to end: a gateway process, the emulator with the gateway's Role, the test kubelet ---------

WEATHER_KEY = "kube-e2e-value-3f9a1c"
OTHER_KEY = "kube-e2e-not-granted-8b2d"
CLIENT_TOKEN = "client-own-token-6e0f27"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.slow
def test_secret_adapter_on_kubernetes_reads_only_its_named_secret_and_the_upstream_gets_it(tmp_path: Path) -> None:
    # The Role the Pulumi program gives the gateway for upstreamSecretNames (infra/gateway_k8s.py),
    # enforced by the emulator for the gateway's requests.
    role = run_stack("local", {"upstreamSecretNames": ["weather-key"]}).k8s(
        "Role", "mcp-gateway-upstream-secrets", "mcp-gateway"
    )
    gateway_ns = role["metadata"]["namespace"]
    audit = tmp_path / "audit.jsonl"
    (tmp_path / "pods").mkdir()
    with ClusterThread(tmp_path / "pods") as k8s:
        cluster = k8s.cluster
        assert cluster is not None
        k8s.call(lambda: setattr(cluster, "secret_rules", {gateway_ns: role["rules"]}))
        k8s.call(cluster.put_object, "secrets", secret("weather-key", WEATHER_KEY), gateway_ns)
        k8s.call(cluster.put_object, "secrets", secret("other-key", OTHER_KEY), gateway_ns)  # exists, not granted
        env = {
            "MCPGW_RUNTIME": "kubernetes",
            "MCPGW_KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", k8s.url)),
            "MCPGW_KUBE_REGISTRY": "registry.test",
            "MCPGW_SECRETS_NAMESPACE": gateway_ns,  # in a pod: the service account's namespace
            "MCPGW_AUDIT": f"file:{audit}",
            "MCPGW_LOG_LEVEL": "debug",
            "MCPGW_ACCESS_LOG": "all",
        }
        with start_gateway(tmp_path / "data", env) as gw:
            with gw.client() as api:
                for name, key in (("kweather", "weather-key"), ("kother", "other-key")):
                    auth = {"type": "secret", "secret": key, "prefix": "Bearer "}
                    body = example_adapter(name, imageName="recorder", imageVersion="1.0", upstreamAuth=auth)
                    assert api.post("/adapters", json=body).status_code == 201
                for name in ("kweather", "kother"):
                    wait_ready(api, name, 1, timeout=60)

            def call(adapter: str, rpc_id: int) -> httpx.Response:
                message = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": "x"}}
                headers = {**ACCEPT, "Authorization": f"Bearer {CLIENT_TOKEN}"}
                return httpx.post(f"{gw.url}/adapters/{adapter}/mcp", json=message, headers=headers, timeout=30)

            answers = [call("kweather", 1), call("kweather", 2)]
            for answer in answers:
                assert answer.status_code == 200, answer.text
                seen = answer.json()["result"]["headers"]
                assert seen["authorization"] == f"Bearer {WEATHER_KEY}"  # the Secret's value, from the pod's upstream
                assert CLIENT_TOKEN not in json.dumps(seen)  # the client's token never goes upstream
            refused = call("kother", 3)
            assert refused.status_code == 502 and refused.json()["error"]["code"] == -32010, refused.text
            assert "may not read it (RBAC" in refused.json()["error"]["message"]

            def secret_requests() -> list[tuple[str, str]]:
                return [(r.method.value, r.url.path) for r in list(cluster) if "/secrets" in r.url.path]

            # get by name only, once per cache period; never a list or a watch; the other one refused by RBAC.
            assert k8s.call(secret_requests) == [
                ("GET", f"/api/v1/namespaces/{gateway_ns}/secrets/weather-key"),
                ("GET", f"/api/v1/namespaces/{gateway_ns}/secrets/other-key"),
            ]
            sts = k8s.call(cluster.get_object, "statefulsets", "kweather")
            assert sts is not None and WEATHER_KEY not in json.dumps(sts)  # the pod never holds the value

            def records() -> list[dict[str, Any]] | None:
                lines = audit.read_text().splitlines() if audit.exists() else []
                found = [r for r in map(json.loads, lines) if r["event"] == "tools/call"]
                return found if len(found) >= 3 else None

            audited = wait_for(records, timeout=15, what="the audit records of the three calls")
            log = gw.log_text()
        assert [(r["adapter"], r["credential"]) for r in audited] == [
            ("kweather", {"type": "secret", "outcome": "issued"}),
            ("kweather", {"type": "secret", "outcome": "cached"}),
            ("kother", {"type": "secret", "outcome": "failed", "code": -32010, "reason": "unavailable"}),
        ]
        for text in (log, audit.read_text(), refused.text):
            assert WEATHER_KEY not in text and OTHER_KEY not in text and CLIENT_TOKEN not in text
