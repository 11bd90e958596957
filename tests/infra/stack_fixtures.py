"""Run the Pulumi program against ``pulumi.runtime.set_mocks`` (no CLI, no provider plugins).

The mocks play the part of the Pulumi engine and the providers: they record every resource the
program registers and answer with the outputs Azure would compute (ids, client ids, FQDNs,
connection strings). Values the engine would hold as secrets are remembered, so tests can check
that each one only ever travels wrapped as a Pulumi secret.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "mcp-gateway"
SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
TENANT = "99999999-8888-7777-6666-555555555555"
DEPLOYER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
ENTRA_CLIENT_ID = "12345678-90ab-cdef-1234-567890abcdef"
SECRET_SIG = rpc._special_secret_sig  # how the engine marks a secret value on the wire
SIG_KEY = rpc._special_sig_key

# What a user sets with `pulumi config set` beyond the committed stack files (docs/deploy-azure.md).
USER_CONFIG: dict[str, dict[str, Any]] = {
    "local": {},
    "dev": {"entraClientId": ENTRA_CLIENT_ID},
    "prod": {
        "entraClientId": ENTRA_CLIENT_ID,
        "hostName": "mcp.example.com",
        # Required with private endpoints: the API server is not left open to the internet.
        "aksAuthorizedIpRanges": ["203.0.113.0/24"],
        "tlsKeyVaultSecretId": "https://mcpgw-kv.vault.azure.net/secrets/gateway-tls",
        "tlsKeyVaultId": (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/shared/providers/Microsoft.KeyVault/vaults/mcpgw-kv"
        ),
    },
}
USER_SECRETS: dict[str, dict[str, str]] = {
    "local": {},
    "dev": {
        "tlsCertificate": base64.b64encode(b"PFX-BYTES-FOR-TESTS-" + b"x" * 32).decode(),
        "tlsCertificatePassword": "pfx-password-for-tests",
    },
    "prod": {},
}


def _uuid(seed: str) -> str:
    return str(uuid.UUID(hashlib.sha256(seed.encode()).hexdigest()[:32]))


@dataclass
class Registration:
    """One resource the program registered: type, logical name, inputs as the engine got them."""

    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str
    outputs: dict[str, Any]
    urn: str = ""
    parent: str = ""
    dependencies: tuple[str, ...] = ()
    """URNs the engine was told this resource waits for: explicit ``depends_on`` plus every resource
    whose output flowed into its inputs (what orders creation in a real ``pulumi up``)."""
    ignore_changes: tuple[str, ...] = ()

    @property
    def plain(self) -> dict[str, Any]:
        """The inputs with secret wrappers removed."""
        plain: dict[str, Any] = unwrap(self.inputs)
        return plain


def unwrap(value: Any) -> Any:
    """Remove the engine's secret wrappers from a value."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def plaintext_strings(value: Any) -> Iterator[str]:
    """Every string in ``value`` that is NOT inside a secret wrapper."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return
        for v in value.values():
            yield from plaintext_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from plaintext_strings(v)
    elif isinstance(value, str):
        yield value


class RecordingMonitor(MockMonitor):
    """The mock engine, also keeping what ``Mocks.new_resource`` is not told: the URN, the parent,
    the dependencies and ``ignore_changes`` of each registration (RegisterResourceRequest fields)."""

    def __init__(self, mocks: AzureMocks) -> None:
        super().__init__(mocks)
        self.azure_mocks = mocks

    def RegisterResource(self, request: Any) -> Any:
        # Registrations run on several threads: key what new_resource will be told by (type, name).
        self.azure_mocks.pending[(request.type, request.name)] = {
            "urn": self.make_urn(request.parent, request.type, request.name),
            "parent": request.parent,
            "dependencies": tuple(request.dependencies),
            "ignore_changes": tuple(request.ignoreChanges),
        }
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]  # pulumi leaves MockMonitor unannotated


class AzureMocks(pulumi.runtime.Mocks):
    """Engine + provider stand-in answering like Azure and Kubernetes would."""

    def __init__(self) -> None:
        self.registrations: list[Registration] = []
        self.secret_values: set[str] = set()
        self.calls: list[str] = []
        self.pending: dict[tuple[str, str], dict[str, Any]] = {}

    def _secret(self, value: str) -> str:
        self.secret_values.add(value)
        return value

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        out = unwrap(dict(inputs))
        typ = args.typ
        name = args.name
        if typ.startswith("azure-native:"):
            explicit = next(
                (
                    unwrap(inputs[k])
                    for k in (
                        "resourceGroupName" if typ.endswith(":ResourceGroup") else "",
                        "resourceName",
                        "registryName",
                        "accountName" if typ.endswith(":DatabaseAccount") else "",
                        "clusterName" if typ.endswith(":RedisEnterprise") else "",
                        "databaseName" if typ.endswith(":SqlResourceSqlDatabase") or typ.endswith(":Database") else "",
                        "containerName",
                        "applicationGatewayName",
                        "privateZoneName",
                    )
                    if k and k in inputs
                ),
                name,
            )
            out["name"] = explicit
            kind = typ.split(":")[-1]
            rid = (
                f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{explicit}"
                if kind == "ResourceGroup"
                else f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/{typ}/{explicit}"
            )
            out["id"] = rid
            identity = out.get("identity")
            if isinstance(identity, dict) and isinstance(identity.get("userAssignedIdentities"), list):
                # Azure answers a list of identity ids with a map id → {principalId, clientId}.
                identity["userAssignedIdentities"] = {
                    i: {"principalId": _uuid(i + "/p"), "clientId": _uuid(i + "/c")}
                    for i in identity["userAssignedIdentities"]
                }
            self._azure_outputs(kind, explicit, out)
        elif typ.startswith("random:"):
            rid = f"{name}-id"
            seed = hashlib.sha256(name.encode()).digest()
            if typ.endswith("RandomBytes"):
                out["base64"] = self._secret(base64.b64encode(seed).decode())
                out["hex"] = self._secret(seed.hex())
            elif typ.endswith("RandomPassword"):
                out["result"] = self._secret(base64.b32encode(seed).decode()[:32].lower())
            elif typ.endswith("RandomUuid"):
                out["result"] = _uuid(name)
            else:
                out["result"] = seed.hex()[:6]
        else:
            rid = f"{name}-id"
        self.registrations.append(
            Registration(typ, name, inputs, args.provider or "", out, **self.pending.pop((typ, name), {}))
        )
        return rid, out

    def _azure_outputs(self, kind: str, name: str, out: dict[str, Any]) -> None:
        if kind == "ManagedCluster":
            out["identity"] = {"type": "SystemAssigned", "principalId": _uuid(name + "/cluster")}
            out["identityProfile"] = {
                "kubeletidentity": {"objectId": _uuid(name + "/kubelet"), "clientId": _uuid(name + "/kc")}
            }
            out["oidcIssuerProfile"] = {"enabled": True, "issuerURL": f"https://oidc.example/{name}/"}
            out["fqdn"] = f"{name}.hcp.westus3.azmk8s.io"
        elif kind == "UserAssignedIdentity":
            out["clientId"] = _uuid(name + "/client")
            out["principalId"] = _uuid(name + "/principal")
            out["tenantId"] = TENANT
        elif kind == "Registry":
            out["loginServer"] = f"{name}.azurecr.io"
        elif kind == "DatabaseAccount":
            out["documentEndpoint"] = f"https://{name}.documents.azure.com:443/"
        elif kind == "RedisEnterprise":
            out["hostName"] = f"{name}.westus3.redis.azure.net"
        elif kind == "PublicIPAddress":
            label = out.get("dnsSettings", {}).get("domainNameLabel", name)
            out["ipAddress"] = "20.0.0.1"
            out["dnsSettings"] = {"domainNameLabel": label, "fqdn": f"{label}.westus3.cloudapp.azure.com"}
        elif kind == "Component":
            key = _uuid(name + "/ikey")
            out["connectionString"] = self._secret(
                f"InstrumentationKey={key};IngestionEndpoint=https://westus3-1.in.applicationinsights.azure.com/"
            )

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """(result, check failures: none) of a provider function the program calls."""
        self.calls.append(args.token)
        return self._call_result(args), []

    def _call_result(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == "azuread:index/getApplication:getApplication":
            object_id = _uuid(f"app-{args.args.get('clientId')}")
            return {"id": f"/applications/{object_id}", "objectId": object_id, "clientId": args.args.get("clientId")}
        if args.token == "azure-native:authorization:getClientConfig":
            return {"clientId": DEPLOYER, "objectId": DEPLOYER, "subscriptionId": SUBSCRIPTION, "tenantId": TENANT}
        if args.token == "azure-native:containerservice:listManagedClusterUserCredentials":
            kubeconfig = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "aks", "cluster": {"server": "https://aks.example:443"}}],
                "users": [
                    {
                        "name": "clusterUser",
                        "user": {
                            "exec": {
                                "apiVersion": "client.authentication.k8s.io/v1beta1",
                                "command": "kubelogin",
                                "args": [
                                    "get-token",
                                    "--login",
                                    "devicecode",
                                    "--server-id",
                                    "6dae42f8-4368-4678-94ff-3960e28e3630",
                                    "--tenant-id",
                                    TENANT,
                                ],
                            }
                        },
                    }
                ],
                "contexts": [{"name": "aks", "context": {"cluster": "aks", "user": "clusterUser"}}],
                "current-context": "aks",
            }
            encoded = base64.b64encode(yaml.safe_dump(kubeconfig).encode()).decode()
            return {"kubeconfigs": [{"name": "clusterUser", "value": encoded}]}
        raise AssertionError(f"the program made an unexpected call: {args.token}")


@dataclass
class StackRun:
    """What one `pulumi up` of a stack would register, as seen by the mocks."""

    stack: str
    registrations: list[Registration]
    outputs: dict[str, Any]
    secret_values: set[str]
    config: dict[str, str] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Registration]:
        """Registrations of one resource type, e.g. ``kubernetes:apps/v1:Deployment``."""
        return [r for r in self.registrations if r.typ == typ]

    def one(self, typ: str, name: str | None = None) -> Registration:
        """The single registration of ``typ`` (and logical ``name``, when given)."""
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registration:
        """The registration with this URN."""
        return next(r for r in self.registrations if r.urn == urn)

    def waits_for(self, registration: Registration) -> set[str]:
        """Every URN ``registration`` is created after: its dependencies, theirs, and so on, plus
        what its parents wait for (a component's ``depends_on`` holds for its children)."""
        seen: set[str] = set()
        todo = list(registration.dependencies)
        parent = registration.parent
        while parent:
            owner = next((r for r in self.registrations if r.urn == parent), None)
            if owner is None:
                break
            todo.extend(owner.dependencies)
            parent = owner.parent
        while todo:
            urn = todo.pop()
            if urn in seen:
                continue
            seen.add(urn)
            found = next((r for r in self.registrations if r.urn == urn), None)
            if found is not None:
                todo.extend(found.dependencies)
                # Waiting for a component means waiting for all of its children.
                todo.extend(r.urn for r in self.registrations if r.parent == urn)
        return seen

    def kubernetes_objects(self) -> list[Registration]:
        """Every Kubernetes object (not the providers)."""
        return [r for r in self.registrations if r.typ.startswith("kubernetes:")]

    def k8s(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        """The manifest of one Kubernetes object, secrets unwrapped."""
        found = [
            r.plain
            for r in self.kubernetes_objects()
            if r.plain["kind"] == kind
            and r.plain["metadata"]["name"] == name
            and (namespace is None or r.plain["metadata"].get("namespace") == namespace)
        ]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]


def stack_config(stack: str, overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, str], list[str]]:
    """The config map of ``stacks/Pulumi.<stack>.yaml`` plus what the user sets, as the engine passes it."""
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    values: dict[str, Any] = dict(doc.get("config") or {})
    values.update({f"{PROJECT}:{k}": v for k, v in USER_CONFIG.get(stack, {}).items()})
    secrets = {f"{PROJECT}:{k}": v for k, v in USER_SECRETS.get(stack, {}).items()}
    values.update(secrets)
    for key, value in (overrides or {}).items():
        if value is None:
            values.pop(f"{PROJECT}:{key}", None)
        else:
            values[f"{PROJECT}:{key}"] = value

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list | dict):
            return json.dumps(value)
        return str(value)

    return {k: text(v) for k, v in values.items()}, list(secrets)


def run_stack(stack: str, overrides: Mapping[str, Any] | None = None, *, stack_name: str | None = None) -> StackRun:
    """Run the program (``infra/__main__.py``'s wiring) for ``stack`` against the mocks.

    ``stack_name`` runs the configuration of ``stacks/Pulumi.<stack>.yaml`` under another stack name.

    A fresh event loop per run: Pulumi's runtime binds futures to the loop current at creation,
    and pytest-asyncio tests elsewhere in the session leave theirs closed.
    """
    config, secret_keys = stack_config(stack, overrides)
    mocks = AzureMocks()
    mocks.secret_values.update(v for k, v in config.items() if k in secret_keys)
    outputs: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi.runtime.set_mocks(
            mocks, project=PROJECT, stack=stack_name or stack, preview=False, monitor=RecordingMonitor(mocks)
        )
        pulumi.runtime.set_all_config(config, secret_keys)

        @pulumi.runtime.test  # type: ignore[untyped-decorator]  # pulumi leaves its test decorator unannotated
        def program() -> pulumi.Output[Any]:
            from infra.__main__ import wire
            from infra.config import load_config

            exported = wire(load_config())
            return pulumi.Output.all(**{k: pulumi.Output.from_input(v) for k, v in exported.items()}).apply(
                outputs.update
            )

        program()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return StackRun(stack, mocks.registrations, outputs, mocks.secret_values, config)


def load_stack_config(stack: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """Only read and check the configuration of ``stack`` (no resources)."""
    config, secret_keys = stack_config(stack, overrides)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi.runtime.set_mocks(AzureMocks(), project=PROJECT, stack=stack, preview=False)
        pulumi.runtime.set_all_config(config, secret_keys)
        from infra.config import load_config

        loaded: dict[str, Any] = {}

        @pulumi.runtime.test  # type: ignore[untyped-decorator]  # pulumi leaves its test decorator unannotated
        def read() -> None:
            loaded["config"] = load_config()

        read()
        return loaded["config"]
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@functools.cache
def stack_run(stack: str) -> StackRun:
    """The run of a committed stack plus the documented user config, built once per test session."""
    return run_stack(stack)


def settings_env(run: StackRun) -> dict[str, str]:
    """The gateway's environment: its ConfigMap and Secret, as the pods get them via envFrom."""
    gateway_ns = run.outputs["gatewayNamespace"]
    config_map = run.k8s("ConfigMap", "mcp-gateway", gateway_ns)
    secret = run.k8s("Secret", "mcp-gateway", gateway_ns)
    return {**config_map["data"], **secret["stringData"]}
