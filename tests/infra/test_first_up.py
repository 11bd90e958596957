"""What a first real ``pulumi up`` needs, read as an Azure platform engineer would (issue 14), and the
production shape of the gateway's rollout (issue 13).

Each test pins one defect class: arguments the provider SDK does not declare, names Azure refuses,
NSG rule shape, what the first ``up`` waits on, role assignments created after what needs them,
the kubeconfig login, the WAF and idle timeouts against the gateway's own limits, adapter isolation,
and the drain/rollout settings. They run over the committed stacks (tests/infra/stack_fixtures.py).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import tomllib
from typing import Any

import pytest
import yaml

from gateway.settings import Settings, load_settings
from infra import aks as aks_module
from infra.cidr import within
from infra.config import ConfigError, check_stack_name
from infra.gateway_k8s import IMDS, egress_blocks
from tests.infra.sdk_schema import sdk_args_class, unknown_keys
from tests.infra.stack_fixtures import (
    ROOT,
    TENANT,
    Registration,
    StackRun,
    load_stack_config,
    run_stack,
    settings_env,
    stack_run,
)

AZURE_STACKS = ["dev", "prod"]
ALL_STACKS = ["local", "dev", "prod"]
SSE_KEEPALIVE_SECONDS = 15
"""The gateway's keep-alive interval on idle proxied SSE streams (issue 14)."""


def azure(run: StackRun, kind: str) -> list[Registration]:
    return [r for r in run.registrations if r.typ.startswith("azure-native:") and r.typ.endswith(f":{kind}")]


def one(run: StackRun, kind: str, name: str | None = None) -> Registration:
    found = [r for r in azure(run, kind) if name is None or r.name == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[r.name for r in found]}"
    return found[0]


def role_assignments(run: StackRun, role: str) -> list[Registration]:
    return [r for r in azure(run, "RoleAssignment") if r.plain["roleDefinitionId"].endswith(role)]


# --- every argument is one the provider SDK declares ------------------------------------------


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_resource_input_is_an_argument_the_sdk_declares_at_every_level(stack: str) -> None:
    run = stack_run(stack)
    checked = 0
    problems = []
    for registration in run.registrations:
        cls = sdk_args_class(registration.typ)
        if cls is None:
            assert registration.typ.startswith("mcp-gateway:"), registration.typ
            continue
        checked += 1
        problems += [f"{registration.typ} {registration.name}: {p}" for p in unknown_keys(registration.plain, cls)]
    assert checked >= 20
    assert not problems, "\n".join(problems)


def test_the_sdk_check_finds_a_misplaced_key_deep_in_a_resource() -> None:
    """The check has teeth: a key one level too high, a misspelt nested key, a plural for a singular."""
    run = stack_run("dev")
    agw = one(run, "ApplicationGateway")
    cls = sdk_args_class(agw.typ)
    assert cls is not None
    inputs = agw.plain
    inputs["backendHttpSettingsCollection"][0]["connectionDraining"]["drainTimeoutInSecs"] = 60
    inputs["requestTimeout"] = 60
    problems = unknown_keys(inputs, cls)
    assert any("connectionDraining.drainTimeoutInSecs" in p for p in problems)
    assert any(p.startswith("requestTimeout:") for p in problems)
    deployment = next(r for r in run.kubernetes_objects() if r.plain["kind"] == "Deployment")
    manifest = deployment.plain
    manifest["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    dep_cls = sdk_args_class(deployment.typ)
    assert dep_cls is not None
    assert any("imagePullPolicyy" in p for p in unknown_keys(manifest, dep_cls))
    # ...and a value outside an Azure enum (here: the wrong case).
    nsg = one(run, "NetworkSecurityGroup", "network-appgateway-nsg")
    rules = nsg.plain
    rules["securityRules"][0]["direction"] = "inbound"
    nsg_cls = sdk_args_class(nsg.typ)
    assert nsg_cls is not None
    assert any("securityRules[0].direction: 'inbound' is not one of" in p for p in unknown_keys(rules, nsg_cls))


# --- Azure naming rules ------------------------------------------------------------------------

# (resource kind, input path, rule, what Azure says) — learn.microsoft.com/azure/azure-resource-manager/
# management/resource-name-rules, as of 2026-11.
NAMING_RULES: list[tuple[str, str, str, str]] = [
    ("ResourceGroup", "resourceGroupName", r"^[-\w.()]{0,89}[-\w()]$", "1-90, not ending in a period"),
    ("Registry", "registryName", r"^[a-z0-9]{5,50}$", "ACR: 5-50 alphanumerics (lowercase: the login server)"),
    ("DatabaseAccount", "accountName", r"^(?!.*--)[a-z0-9][a-z0-9-]{1,42}[a-z0-9]$", "Cosmos: 3-44 lowercase, -"),
    ("RedisEnterprise", "clusterName", r"^(?!.*--)[a-zA-Z][a-zA-Z0-9-]{0,58}[a-zA-Z0-9]$", "Redis: 1-60"),
    ("ManagedCluster", "resourceName", r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,61}[a-zA-Z0-9]$", "AKS: 1-63"),
    ("ManagedCluster", "dnsPrefix", r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,52}[a-zA-Z0-9]$", "AKS DNS prefix: 1-54"),
    ("ManagedCluster", "agentPoolProfiles.name", r"^[a-z][a-z0-9]{0,11}$", "Linux node pool: 1-12 lowercase"),
    ("AgentPool", "agentPoolName", r"^[a-z][a-z0-9]{0,11}$", "Linux node pool: 1-12 lowercase"),
    ("ApplicationGateway", "applicationGatewayName", r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,78}[a-zA-Z0-9_]$", "1-80"),
    ("PublicIPAddress", "dnsSettings.domainNameLabel", r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$", "DNS label: 3-63"),
    ("DataCollectionRule", "dataCollectionRuleName", r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}[a-zA-Z0-9_]$", "1-64"),
    ("FederatedIdentityCredential", "federatedIdentityCredentialResourceName", r"^[a-zA-Z0-9][\w-]{2,119}$", "3-120"),
    ("PrivateZone", "privateZoneName", r"^[a-z0-9][a-z0-9.-]{0,252}[a-z0-9]$", "a DNS zone"),
]
KEY_VAULT_NAME = r"^(?!.*--)[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$"


def values_at(value: Any, path: str) -> list[Any]:
    head, _, rest = path.partition(".")
    if isinstance(value, list):
        return [v for item in value for v in values_at(item, path)]
    if not isinstance(value, dict) or head not in value:
        return []
    return values_at(value[head], rest) if rest else [value[head]]


def assert_azure_names_valid(run: StackRun) -> int:
    checked = 0
    for kind, path, rule, what in NAMING_RULES:
        for registration in azure(run, kind):
            for name in values_at(registration.plain, path):
                assert re.match(rule, str(name)), f"{kind} {path}={name!r} breaks the Azure rule: {what}"
                checked += 1
    return checked


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_azure_names_follow_each_resource_types_rules(stack: str) -> None:
    run = stack_run(stack)
    assert assert_azure_names_valid(run) >= 10
    if "mcp-gateway:tlsKeyVaultId" in run.config:
        vault = run.config["mcp-gateway:tlsKeyVaultId"].rsplit("/", 1)[-1]
        assert re.match(KEY_VAULT_NAME, vault), f"Key Vault name {vault!r}: 3-24 letters, digits, single hyphens"


def test_the_longest_stack_name_and_prefix_allowed_still_give_valid_azure_names() -> None:
    run = run_stack("prod", {"namePrefix": "abcdefgh"}, stack_name="staging-westeu01")
    assert assert_azure_names_valid(run) >= 10


@pytest.mark.parametrize("name", ["Prod", "my_stack", "dev-", "-dev", "a--b", "staging-westeurope", "dev.eu", ""])
def test_stack_names_that_would_break_global_azure_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="globally unique"):
        check_stack_name(name)


@pytest.mark.parametrize("name", ["dev", "prod", "staging-eu", "a", "qa2"])
def test_ordinary_stack_names_are_accepted(name: str) -> None:
    check_stack_name(name)


DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_kubernetes_names_and_labels_follow_the_api_servers_rules(stack: str) -> None:
    for obj in stack_run(stack).kubernetes_objects():
        meta = obj.plain["metadata"]
        rule = {"Namespace": DNS1123_LABEL, "Service": DNS1035_LABEL}.get(obj.plain["kind"], DNS1123_SUBDOMAIN)
        assert re.match(rule, meta["name"]), f"{obj.plain['kind']} name {meta['name']!r}"
        if "namespace" in meta:
            assert re.match(DNS1123_LABEL, meta["namespace"])
        for key, value in (meta.get("labels") or {}).items():
            assert re.match(LABEL_VALUE, value), f"{obj.plain['kind']} {meta['name']} label {key}={value!r}"


# --- 1. NSG rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_nsg_rules_put_any_port_only_in_the_singular_field(stack: str) -> None:
    rules = [
        rule for nsg in azure(stack_run(stack), "NetworkSecurityGroup") for rule in nsg.plain.get("securityRules", [])
    ]
    assert rules
    for rule in rules:
        single, many = rule.get("destinationPortRange"), rule.get("destinationPortRanges")
        assert (single is None) != (many is None), f"{rule['name']}: exactly one of the port range fields"
        assert "*" not in (many or []), f"{rule['name']}: '*' only in destinationPortRange"
        assert rule.get("sourcePortRanges") is None or "*" not in rule["sourcePortRanges"]
    by_name = {rule["name"]: rule for rule in rules}
    assert by_name["allow-azure-load-balancer"]["destinationPortRange"] == "*"
    assert by_name["allow-gateway-manager"]["destinationPortRange"] == "65200-65535"


# --- 2. the first `up` waits on nothing that needs the pushed images ----------------------------


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_first_up_waits_on_no_gateway_workload_or_service(stack: str) -> None:
    run = stack_run(stack)
    gateway_objects = [
        obj.plain
        for obj in run.kubernetes_objects()
        if obj.plain["kind"] in ("Deployment", "StatefulSet", "Service", "PersistentVolumeClaim")
        and obj.plain["metadata"]["name"].startswith("mcp-gateway")
    ]
    assert {o["kind"] for o in gateway_objects} >= {"Deployment", "Service"}
    for obj in gateway_objects:
        annotations = obj["metadata"].get("annotations") or {}
        assert annotations.get("pulumi.com/skipAwait") == "true", f"{obj['kind']} {obj['metadata']['name']}"


def test_once_images_are_published_up_waits_for_the_rollout_again() -> None:
    run = run_stack("dev", {"gatewayAwaitReady": True})
    for kind in ("Deployment", "Service"):
        annotations = run.k8s(kind, "mcp-gateway", "mcp-gateway")["metadata"].get("annotations") or {}
        assert "pulumi.com/skipAwait" not in annotations, kind


# --- 7. role assignments exist before what needs them -------------------------------------------


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_role_assignments_are_created_before_the_resources_that_need_them(stack: str) -> None:
    run = stack_run(stack)
    cluster = one(run, "ManagedCluster")
    network_grant = one(run, "RoleAssignment", "aks-subnet-network-contributor")
    deployer = one(run, "RoleAssignment", "aks-deployer-cluster-admin")
    # The cluster's own identity may manage the subnet before the cluster makes its load balancer.
    assert network_grant.urn in run.waits_for(cluster)
    # The deployer's grant is on the resource group, made before the cluster: it has propagated by
    # the time the Kubernetes provider makes its first call, and that provider waits for it.
    assert deployer.plain["scope"] == one(run, "ResourceGroup").outputs["id"]
    assert deployer.urn in run.waits_for(cluster)
    provider = run.one("pulumi:providers:kubernetes", "aks")
    assert deployer.urn in run.waits_for(provider)
    # The gateway pods start only after their data-plane grants exist.
    deployment = next(o for o in run.kubernetes_objects() if o.plain["kind"] == "Deployment")
    waits = run.waits_for(deployment)
    assert one(run, "SqlResourceSqlRoleAssignment").urn in waits
    assert one(run, "AccessPolicyAssignment").urn in waits
    if stack == "prod":
        key_vault_grant = one(run, "RoleAssignment", "appgateway-keyvault-secrets-user")
        assert key_vault_grant.urn in run.waits_for(one(run, "ApplicationGateway"))


def test_control_plane_identity_is_user_assigned_and_holds_network_contributor() -> None:
    run = stack_run("dev")
    identity = one(run, "UserAssignedIdentity", "aks-control-plane")
    cluster = one(run, "ManagedCluster").plain
    assert cluster["identity"]["type"] == "UserAssigned"
    assert cluster["identity"]["userAssignedIdentities"] == [identity.outputs["id"]]
    grant = one(run, "RoleAssignment", "aks-subnet-network-contributor").plain
    assert grant["principalId"] == identity.outputs["principalId"]
    assert grant["roleDefinitionId"].endswith("4d97b98b-1d4f-4787-a291-c67834d212e7")
    assert grant["scope"].endswith("/subnets/aks")


@functools.cache
def ci_run() -> StackRun:
    """dev as a CI pipeline deploys it: as a service principal, kubelogin in spn mode."""
    return run_stack("dev", {"kubeLogin": "spn", "deployerPrincipalType": "ServicePrincipal"})


@pytest.mark.parametrize("principal_type", ["User", "ServicePrincipal", "Group"])
def test_deployer_principal_type_follows_config(principal_type: str) -> None:
    runs = {"User": stack_run("dev"), "ServicePrincipal": ci_run()}
    run = runs.get(principal_type) or run_stack("dev", {"deployerPrincipalType": principal_type})
    assert one(run, "RoleAssignment", "aks-deployer-cluster-admin").plain["principalType"] == principal_type


def test_an_unknown_deployer_principal_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="ServicePrincipal"):
        load_stack_config("dev", {"deployerPrincipalType": "Robot"})


# --- 8. kubeconfig without an `az login` assumption ---------------------------------------------


def aks_kubeconfig(*args: str) -> str:
    import base64

    doc = {
        "users": [
            {
                "name": "clusterUser",
                "user": {"exec": {"command": "kubelogin", "args": list(args)}},
            }
        ]
    }
    return base64.b64encode(yaml.safe_dump(doc).encode()).decode()


DEVICE_CODE_ARGS = (
    "get-token",
    "--login",
    "devicecode",
    "--environment",
    "AzurePublicCloud",
    "--server-id",
    "6dae42f8-4368-4678-94ff-3960e28e3630",
    "--client-id",
    "80faf920-1908-4b52-b5ef-a8e7bedfc67a",
    "--tenant-id",
    TENANT,
)


@pytest.mark.parametrize("mode", ["azurecli", "spn", "workloadidentity", "msi", "azd"])
def test_kubeconfig_uses_the_configured_non_interactive_login(mode: str) -> None:
    doc = yaml.safe_load(aks_module.kubeconfig_for(aks_kubeconfig(*DEVICE_CODE_ARGS), mode))
    exec_ = doc["users"][0]["user"]["exec"]
    args = exec_["args"]
    assert args[:3] == ["get-token", "--login", mode]
    assert args[args.index("--server-id") + 1] == "6dae42f8-4368-4678-94ff-3960e28e3630"
    # The device-code client id would override the service principal's.
    assert "--client-id" not in args and "devicecode" not in args
    assert exec_["interactiveMode"] == "Never"
    if mode in ("spn", "workloadidentity"):
        assert args[args.index("--tenant-id") + 1] == TENANT


def test_ci_stack_signs_in_to_kubernetes_as_a_service_principal() -> None:
    run = ci_run()
    kubeconfig = yaml.safe_load(run.one("pulumi:providers:kubernetes", "aks").plain["kubeconfig"])
    assert kubeconfig["users"][0]["user"]["exec"]["args"][:3] == ["get-token", "--login", "spn"]
    with pytest.raises(ConfigError, match="kubeLogin"):
        load_stack_config("dev", {"kubeLogin": "devicecode"})


# --- 4. resource providers ----------------------------------------------------------------------


def test_preflight_registers_every_resource_provider_the_program_uses() -> None:
    from tests.infra.preflight import REGISTERED_BY_PREFLIGHT

    namespaces = set()
    for stack in AZURE_STACKS:
        for registration in azure(stack_run(stack), ""):
            module = registration.typ.split(":")[1]
            namespaces.add(module)
    # azure-native module → resource provider namespace.
    module_to_provider = {
        "resources": None,
        "authorization": None,
        "network": "Microsoft.Network",
        "privatedns": "Microsoft.Network",
        "containerservice": "Microsoft.ContainerService",
        "containerregistry": "Microsoft.ContainerRegistry",
        "cosmosdb": "Microsoft.DocumentDB",
        "redisenterprise": "Microsoft.Cache",
        "managedidentity": "Microsoft.ManagedIdentity",
        "operationalinsights": "Microsoft.OperationalInsights",
        "applicationinsights": "Microsoft.Insights",
        "monitor": "Microsoft.Insights",
    }
    assert namespaces <= set(module_to_provider), namespaces - set(module_to_provider)
    needed = {module_to_provider[m] for m in namespaces} - {None}
    assert needed <= REGISTERED_BY_PREFLIGHT, needed - REGISTERED_BY_PREFLIGHT


# --- 5. Container Insights ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_container_insights_has_a_data_collection_rule_associated_with_the_cluster(stack: str) -> None:
    run = stack_run(stack)
    rule = one(run, "DataCollectionRule")
    stream = "Microsoft-ContainerInsights-Group-Default"
    (extension,) = rule.plain["dataSources"]["extensions"]
    assert extension["extensionName"] == "ContainerInsights" and extension["streams"] == [stream]
    (workspace,) = rule.plain["destinations"]["logAnalytics"]
    assert workspace["workspaceResourceId"] == one(run, "Workspace").outputs["id"]
    assert rule.plain["dataFlows"] == [{"streams": [stream], "destinations": [workspace["name"]]}]
    association = one(run, "DataCollectionRuleAssociation").plain
    assert association["resourceUri"] == one(run, "ManagedCluster").outputs["id"]
    assert association["dataCollectionRuleId"] == rule.outputs["id"]
    addon = one(run, "ManagedCluster").plain["addonProfiles"]["omsagent"]
    assert addon["enabled"] is True and addon["config"]["useAADAuth"] == "true"


# --- 6. idle timeouts on the SSE path -----------------------------------------------------------


def keepalive_interval() -> float:
    """The gateway's SSE keep-alive interval: its setting once it exists, else the agreed 15 s."""
    for name in Settings.__dataclass_fields__:
        if "keepalive" in name.replace("_", "") and ("sse" in name or "stream" in name):
            value = getattr(Settings(), name)
            if isinstance(value, int | float) and value > 0:
                return float(value)
    return SSE_KEEPALIVE_SECONDS


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_every_idle_timeout_on_the_sse_path_is_far_above_the_keepalive(stack: str) -> None:
    run = stack_run(stack)
    keepalive = keepalive_interval()
    assert keepalive <= SSE_KEEPALIVE_SECONDS
    annotations = run.k8s("Service", "mcp-gateway", "mcp-gateway")["metadata"]["annotations"]
    lb_minutes = int(annotations["service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout"])
    assert 4 <= lb_minutes <= 30
    public_ip_minutes = one(run, "PublicIPAddress").plain["idleTimeoutInMinutes"]
    assert 4 <= public_ip_minutes <= 30
    backend = one(run, "ApplicationGateway").plain["backendHttpSettingsCollection"][0]["requestTimeout"]
    for what, seconds in (
        ("load balancer", lb_minutes * 60),
        ("public IP", public_ip_minutes * 60),
        ("App Gateway", backend),
    ):
        assert seconds >= 4 * keepalive, f"{what} idle timeout {seconds} s vs keep-alive {keepalive} s"


def test_a_backend_timeout_close_to_the_keepalive_is_refused() -> None:
    with pytest.raises(ConfigError, match="keep-alive"):
        load_stack_config("dev", {"backendRequestTimeoutSeconds": 30})


# --- 9. WAF body limit vs the gateway's ---------------------------------------------------------


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_the_waf_never_refuses_a_body_the_gateway_accepts(stack: str) -> None:
    run = stack_run(stack) if stack == "prod" else run_stack("dev", {"appGatewayWaf": True})
    waf = one(run, "WebApplicationFirewallPolicy").plain["policySettings"]
    gateway_limit = load_settings(settings_env(run)).max_body_bytes
    assert gateway_limit == Settings().max_body_bytes
    enforced = waf.get("requestBodyEnforcement", True)
    if enforced:
        assert waf["maxRequestBodySizeInKb"] * 1024 >= gateway_limit
    else:
        assert waf["requestBodyCheck"] is True, "the WAF still inspects what it does not size-limit"
    assert waf["requestBodyInspectLimitInKB"] <= 2000 and waf["maxRequestBodySizeInKb"] <= 2000


def test_a_smaller_gateway_limit_turns_waf_enforcement_back_on() -> None:
    run = run_stack("dev", {"appGatewayWaf": True, "gatewayEnv": {"MCPGW_MAX_BODY_BYTES": str(1024 * 1024)}})
    waf = one(run, "WebApplicationFirewallPolicy").plain["policySettings"]
    assert waf["requestBodyEnforcement"] is True and waf["maxRequestBodySizeInKb"] == 1024


# --- 10. adapter isolation ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_adapter_pods_reach_dns_and_the_internet_but_not_imds_the_cluster_or_each_other(stack: str) -> None:
    run = stack_run(stack)
    policy = run.k8s("NetworkPolicy", "adapters-egress", "adapter")["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "mcp-gateway"}}
    assert policy["policyTypes"] == ["Egress"]
    dns, internet = policy["egress"]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert "ports" not in internet
    # Only ipBlocks: no pod or namespace peer (other adapters, the gateway, the API server's pods).
    assert all(set(peer) == {"ipBlock"} for peer in internet["to"])
    imds = ipaddress.ip_address(IMDS.split("/")[0])
    for peer in internet["to"]:
        block = peer["ipBlock"]
        cidr = ipaddress.ip_network(block["cidr"])
        excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
        if imds in cidr:
            assert any(imds in e for e in excepted), "instance metadata must be excepted"
        for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"):
            net = ipaddress.ip_network(private)
            if within(net, cidr):
                assert net in excepted, f"{private} (cluster, VNet, other adapters) must be excepted"
        if stack != "local":
            for name in ("aksPodCidr", "aksServiceCidr", "vnetAddressSpace"):
                inner = ipaddress.ip_network(load_stack_config(stack).raw[name])
                assert any(within(inner, e) for e in excepted), name


def test_the_adapter_egress_allow_list_is_configurable_and_never_opens_imds() -> None:
    assert egress_blocks(["10.20.0.0/16"]) == [{"ip_block": {"cidr": "10.20.0.0/16"}}]
    (block,) = egress_blocks(["20.0.0.0/8"])
    assert block == {"ip_block": {"cidr": "20.0.0.0/8"}}
    with pytest.raises(ValueError, match="never reach"):
        egress_blocks([IMDS])
    run = run_stack("local", {"adapterEgressCidrs": ["52.0.0.0/8", "10.20.0.0/16"]})
    peers = run.k8s("NetworkPolicy", "adapters-egress", "adapter")["spec"]["egress"][1]["to"]
    assert [p["ipBlock"]["cidr"] for p in peers] == ["52.0.0.0/8", "10.20.0.0/16"]
    with pytest.raises(ConfigError, match="adapterEgressCidrs"):
        load_stack_config("local", {"adapterEgressCidrs": ["not-a-cidr"]})


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_adapters_get_their_own_tainted_user_node_pool(stack: str) -> None:
    run = stack_run(stack)
    pool = one(run, "AgentPool")
    spec = pool.plain
    assert spec["mode"] == "User" and spec["enableAutoScaling"] is True
    assert spec["resourceName"] == one(run, "ManagedCluster").outputs["name"]
    assert spec["nodeTaints"] == [aks_module.ADAPTER_TAINT] == ["mcp-gateway/adapter=true:NoSchedule"]
    assert spec["nodeLabels"] == {"mcp-gateway/pool": "adapter"}
    # The gateway tells its runtime to put adapter pods there: they tolerate the taint and select the pool.
    settings = load_settings(settings_env(run))
    assert settings.kube_adapter_node_selector == "mcp-gateway/pool=adapter"
    assert settings.kube_adapter_tolerations == aks_module.ADAPTER_TAINT
    # The autoscaler owns the node count after creation: no drift on every `up`.
    assert pool.ignore_changes == ("count",)
    system = one(run, "ManagedCluster")
    assert system.ignore_changes == ("agentPoolProfiles[0].count",)


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_the_kubelet_identity_holds_only_acrpull_on_the_registry(stack: str) -> None:
    run = stack_run(stack)
    kubelet = one(run, "ManagedCluster").outputs["identityProfile"]["kubeletidentity"]["objectId"]
    grants = [r.plain for r in azure(run, "RoleAssignment") if r.plain["principalId"] == kubelet]
    assert [(g["roleDefinitionId"].rsplit("/", 1)[-1], g["scope"]) for g in grants] == [
        ("7f951dda-4ed3-4680-a7ca-43fe172d538d", one(run, "Registry").outputs["id"])
    ]


# --- 11. prod locked down, names, tier, image ---------------------------------------------------


def test_prod_keeps_redis_private_and_the_api_server_restricted() -> None:
    run = stack_run("prod")
    assert one(run, "RedisEnterprise").plain["publicNetworkAccess"] == "Disabled"
    endpoint = one(run, "PrivateEndpoint", "redis-private-endpoint").plain
    assert endpoint["privateLinkServiceConnections"][0]["groupIds"] == ["redisEnterprise"]
    assert (
        endpoint["privateLinkServiceConnections"][0]["privateLinkServiceId"]
        == one(run, "RedisEnterprise").outputs["id"]
    )
    assert one(run, "PrivateZone", "redis-private-dns").plain["privateZoneName"] == "privatelink.redis.azure.net"
    ranges = one(run, "ManagedCluster").plain["apiServerAccessProfile"]["authorizedIPRanges"]
    assert ranges and "0.0.0.0/0" not in ranges
    with pytest.raises(ConfigError, match="aksAuthorizedIpRanges"):
        load_stack_config("prod", {"aksAuthorizedIpRanges": None})


@pytest.mark.parametrize("tier", ["Free", "Standard", "Premium"])
def test_premium_tier_comes_with_the_long_term_support_plan(tier: str) -> None:
    # dev runs Free, prod Standard (stacks/*.yaml).
    run = {"Free": stack_run("dev"), "Standard": stack_run("prod")}.get(tier) or run_stack("dev", {"aksTier": tier})
    cluster = one(run, "ManagedCluster").plain
    assert cluster["sku"]["tier"] == tier
    assert cluster.get("supportPlan") == ("AKSLongTermSupport" if tier == "Premium" else None)


def test_an_unknown_aks_tier_is_refused() -> None:
    with pytest.raises(ConfigError, match="aksTier"):
        load_stack_config("dev", {"aksTier": "Gold"})


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_gateway_image_is_pulled_on_every_start_unless_pinned_by_digest(stack: str) -> None:
    container = stack_run(stack).k8s("Deployment", "mcp-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "Always"
    digest = "registry.example/mcp-gateway@sha256:" + "a" * 64
    pinned = run_stack("local", {"gatewayImage": digest}).k8s("Deployment", "mcp-gateway")
    (container,) = pinned["spec"]["template"]["spec"]["containers"]
    assert container["image"] == digest and container["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize("override", [{"gatewayImageTag": "latest"}, {"gatewayImage": "example/mcp-gateway"}])
def test_a_moving_gateway_image_tag_is_refused(override: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="moving tag"):
        load_stack_config("dev", override)


def test_pyyaml_is_an_explicit_dependency_of_the_infra_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    infra = project["project"]["optional-dependencies"]["infra"]
    assert any(re.match(r"^pyyaml\b", dep, re.IGNORECASE) for dep in infra), infra


# --- issue 13: zero-downtime rollouts and Redis that keeps sessions ------------------------------


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_grace_period_covers_the_gateways_drain(stack: str) -> None:
    run = stack_run(stack)
    pod = run.k8s("Deployment", "mcp-gateway")["spec"]["template"]["spec"]
    settings = load_settings(settings_env(run))
    assert (settings.drain_delay, settings.drain_timeout) == (Settings().drain_delay, Settings().drain_timeout)
    assert pod["terminationGracePeriodSeconds"] >= math.ceil(settings.drain_delay + settings.drain_timeout) + 5
    # No preStop: the gateway delays its own shutdown by drain_delay; a hook would add to it.
    assert "lifecycle" not in pod["containers"][0]


def test_grace_period_follows_drain_settings_set_for_the_stack() -> None:
    run = run_stack("dev", {"gatewayEnv": {"MCPGW_DRAIN_DELAY": "8", "MCPGW_DRAIN_TIMEOUT": "50"}})
    settings = load_settings(settings_env(run))
    assert (settings.drain_delay, settings.drain_timeout) == (8.0, 50.0)
    grace = run.k8s("Deployment", "mcp-gateway")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= 8 + 50 + 5


def test_drain_settings_that_are_not_numbers_are_refused() -> None:
    with pytest.raises(ConfigError, match="MCPGW_DRAIN_TIMEOUT must be a non-negative number"):
        load_stack_config("dev", {"gatewayEnv": {"MCPGW_DRAIN_TIMEOUT": "20s"}})


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_gateway_rolls_out_without_losing_capacity_across_nodes_and_zones(stack: str) -> None:
    run = stack_run(stack)
    deployment = run.k8s("Deployment", "mcp-gateway", "mcp-gateway")
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    spread = {c["topologyKey"]: c for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spread.values():
        assert constraint["maxSkew"] == 1
        assert constraint["labelSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    pdb = run.k8s("PodDisruptionBudget", "mcp-gateway", "mcp-gateway")["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    hpa = run.k8s("HorizontalPodAutoscaler", "mcp-gateway", "mcp-gateway")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mcp-gateway"}
    config = load_stack_config(stack)
    assert hpa["minReplicas"] == config.gateway.replicas >= 2
    assert hpa["maxReplicas"] == config.azure.gateway_max_replicas >= hpa["minReplicas"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in deployment["spec"], "the autoscaler owns spec.replicas"


def test_local_stack_has_no_autoscaler_for_its_single_sqlite_gateway() -> None:
    kinds = {o.plain["kind"] for o in stack_run("local").kubernetes_objects()}
    assert "HorizontalPodAutoscaler" not in kinds
    assert stack_run("local").k8s("Deployment", "mcp-gateway")["spec"]["replicas"] == 1


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_redis_never_evicts_session_records(stack: str) -> None:
    assert one(stack_run(stack), "Database").plain["evictionPolicy"] == "NoEviction"


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_the_gateway_may_hold_its_reconciler_lease(stack: str) -> None:
    role = stack_run(stack).k8s("Role", "mcp-gateway-runtime", "adapter")
    leases = [r for r in role["rules"] if r["apiGroups"] == ["coordination.k8s.io"]]
    assert leases == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]


# --- 12. the walkthrough ------------------------------------------------------------------------

DEPLOY_AZURE = (ROOT / "docs" / "deploy-azure.md").read_text()


def shell_lines(doc: str) -> list[str]:
    """Every command line inside the doc's ```bash blocks, continuation lines joined."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", doc, re.DOTALL):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def test_deploy_azure_walks_through_every_step_a_first_deployment_needs() -> None:
    for needed in (
        "scripts/azure_preflight.sh",  # resource providers
        "PULUMI_CONFIG_PASSPHRASE",
        "scripts/make_dev_cert.sh",  # dev certificate with SAN
        "az keyvault certificate import",  # prod certificate
        "ssl-cert update",  # the Key Vault grant propagation remedy
        "dns record-set cname",  # DNS for hostName
        "--cacert",  # verification against the self-signed certificate
        "deployerPrincipalType ServicePrincipal",  # CI
        "ARM_USE_OIDC",
        "pulumi destroy -s dev",  # tear-down
    ):
        assert needed in DEPLOY_AZURE, needed


def test_deploy_azure_never_relies_on_the_currently_selected_stack() -> None:
    commands = shell_lines(DEPLOY_AZURE)
    assert not [c for c in commands if c.startswith("pulumi stack select")]
    stack_bound = [c for c in commands if re.match(r"pulumi (up|preview|destroy|config|stack output)\b", c)]
    assert stack_bound
    for command in stack_bound:
        assert re.search(r"-s (dev|prod)\b", command), command
    for command in shell_lines(DEPLOY_AZURE):
        for inner in re.findall(r"\$\((pulumi [^)]*)\)", command):
            assert re.search(r"-s (dev|prod)\b", inner), inner


def test_deploy_azure_sets_only_known_config_keys() -> None:
    from infra.config import KEYS

    known = {key.name for key in KEYS}
    used = set(re.findall(r"pulumi config (?:set|get)(?: --secret| --path)? '?([A-Za-z]+)", DEPLOY_AZURE))
    assert used and used <= known, used - known


# --- issue 18: named upstream secrets -------------------------------------------------------


def test_the_gateway_reads_only_the_named_upstream_secrets() -> None:
    run = run_stack("local", {"upstreamSecretNames": ["weather-key", "graph.api-key"]})
    role = run.k8s("Role", "mcp-gateway-upstream-secrets", "mcp-gateway")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["weather-key", "graph.api-key"],
            "verbs": ["get"],
        }
    ]
    binding = run.k8s("RoleBinding", "mcp-gateway-upstream-secrets", "mcp-gateway")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mcp-gateway", "namespace": "mcp-gateway"}]
    with pytest.raises(ConfigError, match="upstreamSecretNames"):
        load_stack_config("local", {"upstreamSecretNames": ["Not_A_Name"]})


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_no_role_lets_the_gateway_list_or_watch_secrets(stack: str) -> None:
    run = stack_run(stack)
    for reg in run.kubernetes_objects():
        if reg.plain["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in reg.plain.get("rules", []):
            if "secrets" in rule.get("resources", []):
                assert rule["verbs"] == ["get"] and rule.get("resourceNames"), rule
