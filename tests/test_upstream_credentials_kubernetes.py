"""``upstreamAuth`` type secret in kubernetes mode: the value comes from a Secret, read by name only.

Runs against the API emulator (tests/kubernetes_fixtures.py) through the runtime's real
kubernetes_asyncio client. Least privilege: the only call is ``GET .../secrets/<name>`` — never a
list or a watch, which would need RBAC on every Secret of the namespace.
"""

from __future__ import annotations

import base64

import pytest

from gateway.credentials import CredentialUnavailable, UpstreamCredentials
from gateway.credentials._managed import ManagedIdentityTokens
from gateway.credentials.secrets import KubernetesSecretStore, SecretMissing
from gateway.models import AdapterRecord, Identity, UpstreamAuth
from gateway.runtime.kubernetes import KubernetesRuntime
from tests.kubernetes_fixtures import (  # noqa: F401 - fixtures
    NAMESPACE,
    ClusterEmulator,
    cluster,
    kubeconfig,
    requests_to,
    runtime,
)


def secret(name: str, value: str) -> dict[str, object]:
    data = {"value": base64.b64encode(value.encode()).decode()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "data": data}


async def test_secret_is_read_by_name_with_get_only_and_sent_upstream(
    cluster: ClusterEmulator,  # noqa: F811
    runtime: KubernetesRuntime,  # noqa: F811
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
