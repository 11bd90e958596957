"""What `pulumi up` of each stack would declare, and the security properties each resource must carry.

The program runs against ``pulumi.runtime.set_mocks`` (tests/infra/stack_fixtures.py): no Pulumi CLI
or provider plugin exists here, so these tests pin the declared resources, not a live deployment.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from gateway.runtime.kubernetes import RBAC_RULES as KUBERNETES_RBAC_RULES
from gateway.settings import load_settings
from tests.infra.stack_fixtures import (
    DEPLOYER,
    ENTRA_CLIENT_ID,
    TENANT,
    Registration,
    StackRun,
    _uuid,
    plaintext_strings,
    settings_env,
    stack_run,
)

AZURE_STACKS = ["dev", "prod"]
ALL_STACKS = ["local", "dev", "prod"]
# The Role must grant exactly what the Kubernetes runtime calls.
RUNTIME_RULES = {(group, resource): set(verbs) for group, resource, verbs in KUBERNETES_RBAC_RULES}


def azure(run: StackRun, kind: str) -> list[Registration]:
    return [r for r in run.registrations if r.typ.startswith("azure-native:") and r.typ.endswith(f":{kind}")]


def only(run: StackRun, kind: str) -> dict[str, Any]:
    found = azure(run, kind)
    assert len(found) == 1, f"expected one {kind}, found {[r.name for r in found]}"
    return found[0].plain


def named(run: StackRun, kind: str, prefix: str) -> dict[str, Any]:
    """The one ``kind`` whose logical name starts with ``prefix`` (``cosmos-private-endpoint``)."""
    found = [r for r in azure(run, kind) if r.name.startswith(f"{prefix}-")]
    assert len(found) == 1, f"expected one {kind} of {prefix}, found {[r.name for r in found]}"
    return found[0].plain


def output_of(run: StackRun, kind: str) -> dict[str, Any]:
    found = azure(run, kind)
    assert len(found) == 1
    return found[0].outputs


# --- every stack --------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_runtime_role_grants_exactly_the_verbs_the_kubernetes_runtime_uses(stack: str) -> None:
    run = stack_run(stack)
    role = run.k8s("Role", "mcp-gateway-runtime", "adapter")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == RUNTIME_RULES
    binding = run.k8s("RoleBinding", "mcp-gateway-runtime", "adapter")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "mcp-gateway-runtime",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mcp-gateway", "namespace": "mcp-gateway"}]
    # No other grants anywhere: no ClusterRoles, no other Roles.
    kinds = [r.plain["kind"] for r in run.kubernetes_objects()]
    assert kinds.count("Role") == 1 and kinds.count("RoleBinding") == 1
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_gateway_deployment_runs_non_root_with_probes_on_its_own_service_account(stack: str) -> None:
    run = stack_run(stack)
    deployment = run.k8s("Deployment", "mcp-gateway", "mcp-gateway")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mcp-gateway"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(container["resources"]) == {"requests", "limits"}
    assert [next(iter(source)) for source in container["envFrom"]] == ["configMapRef", "secretRef"]
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    pdb = run.k8s("PodDisruptionBudget", "mcp-gateway", "mcp-gateway")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    service = run.k8s("Service", "mcp-gateway", "mcp-gateway")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8000


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_only_gateway_pods_reach_adapter_pods(stack: str) -> None:
    run = stack_run(stack)
    deny = run.k8s("NetworkPolicy", "adapter-default-deny", "adapter")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    allow = run.k8s("NetworkPolicy", "adapters-from-gateway", "adapter")["spec"]
    assert allow["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "mcp-gateway"}}
    (rule,) = allow["ingress"]
    gateway_pods = run.k8s("Deployment", "mcp-gateway", "mcp-gateway")["spec"]["selector"]["matchLabels"]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mcp-gateway"}},
            "podSelector": {"matchLabels": gateway_pods},
        }
    ]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert run.k8s("NetworkPolicy", "gateway-default-deny", "mcp-gateway")["spec"]["podSelector"] == {}


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_secret_travels_only_as_a_pulumi_secret(stack: str) -> None:
    run = stack_run(stack)
    assert run.secret_values, "the stack should hold secrets (at least the session key)"
    for registration in run.registrations:
        for text in plaintext_strings(registration.inputs):
            leaked = [s for s in run.secret_values if s in text]
            assert not leaked, f"{registration.typ} {registration.name} holds a secret in plain text"
    # ...and each secret did reach its destination, wrapped.
    secret = next(
        r
        for r in run.kubernetes_objects()
        if r.plain["kind"] == "Secret" and r.plain["metadata"]["name"] == "mcp-gateway"
    )
    assert "stringData" not in dict(plaintext_strings_keys(secret.inputs))
    key = base64.b64decode(secret.plain["stringData"]["MCPGW_SESSION_KEYS"])
    assert len(key) == 32


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_in_the_cluster_secrets_live_only_in_secret_objects(stack: str) -> None:
    run = stack_run(stack)
    for obj in run.kubernetes_objects():
        if obj.plain["kind"] == "Secret":
            continue
        for text in plaintext_strings(obj.plain):
            assert not [s for s in run.secret_values if s in text], f"{obj.plain['kind']} {obj.name} holds a secret"
    env = settings_env(run)
    expected = {
        "MCPGW_SESSION_KEYS",
        "MCPGW_METRICS_TOKEN",
        "MCPGW_REDIS_URL" if stack == "local" else "APPLICATIONINSIGHTS_CONNECTION_STRING",
    }
    for name in expected:
        assert any(s in env[name] for s in run.secret_values), f"{name} should carry a generated secret"


def plaintext_strings_keys(inputs: dict[str, Any]) -> list[tuple[str, Any]]:
    """Top-level input keys whose value is not secret-wrapped."""
    return [(k, v) for k, v in inputs.items() if list(plaintext_strings({k: v}))]


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_kubernetes_object_goes_through_the_stacks_own_provider(stack: str) -> None:
    run = stack_run(stack)
    expected = "local" if stack == "local" else "aks"
    objects = run.kubernetes_objects()
    assert objects
    for obj in objects:
        assert f"pulumi:providers:kubernetes::{expected}::" in obj.provider, (obj.name, obj.provider)


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_gateway_settings_are_accepted_by_the_gateway_itself(stack: str) -> None:
    settings = load_settings(settings_env(stack_run(stack)))
    assert settings.runtime == "kubernetes" and settings.sessions == "redis"
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert settings.kube_namespace == "adapter"
    assert settings.kube_service_account == "mcp-adapter"
    assert settings.kube_workload_service_account == "mcp-adapter-workload"
    assert len(settings.session_keys) == 1


# --- azure stacks ---------------------------------------------------------------------------


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_azure_stack_declares_every_component(stack: str) -> None:
    run = stack_run(stack)
    kinds = {r.typ.split(":")[-1] for r in run.registrations if r.typ.startswith("azure-native:")}
    assert {
        "ResourceGroup",
        "VirtualNetwork",
        "NetworkSecurityGroup",
        "UserAssignedIdentity",
        "FederatedIdentityCredential",
        "Registry",
        "RoleAssignment",
        "DatabaseAccount",
        "SqlResourceSqlDatabase",
        "SqlResourceSqlContainer",
        "SqlResourceSqlRoleAssignment",
        "RedisEnterprise",
        "Database",
        "AccessPolicyAssignment",
        "ManagedCluster",
        "Workspace",
        "Component",
        "PublicIPAddress",
        "ApplicationGateway",
        "DiagnosticSetting",
    } <= kinds
    components = {r.typ for r in run.registrations if r.typ.startswith("mcp-gateway:")}
    assert components == {
        "mcp-gateway:azure:Network",
        "mcp-gateway:azure:Identities",
        "mcp-gateway:azure:Registry",
        "mcp-gateway:azure:Cosmos",
        "mcp-gateway:azure:ManagedRedis",
        "mcp-gateway:azure:Aks",
        "mcp-gateway:azure:Monitoring",
        "mcp-gateway:azure:AppGateway",
        "mcp-gateway:kubernetes:Gateway",
    }
    assert set(run.outputs) >= {
        "gatewayUrl",
        "acrLoginServer",
        "cosmosEndpoint",
        "gatewayClientId",
        "workloadClientId",
        "redisHost",
    }


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_network_has_aks_app_gateway_and_private_endpoint_subnets_with_nsgs(stack: str) -> None:
    vnet = only(stack_run(stack), "VirtualNetwork")
    subnets = {s["name"]: s for s in vnet["subnets"]}
    assert set(subnets) == {"aks", "appgateway", "private-endpoints"}
    assert all(s["networkSecurityGroup"]["id"] for s in subnets.values())
    nsgs = azure(stack_run(stack), "NetworkSecurityGroup")
    agw_rules = next(n.plain for n in nsgs if "appgateway" in n.name)["securityRules"]
    assert any(r["sourceAddressPrefix"] == "GatewayManager" for r in agw_rules)


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_registry_admin_user_is_off_and_kubelet_may_pull(stack: str) -> None:
    run = stack_run(stack)
    acr = only(run, "Registry")
    assert acr["adminUserEnabled"] is False
    assert acr["anonymousPullEnabled"] is False
    kubelet = output_of(run, "ManagedCluster")["identityProfile"]["kubeletidentity"]["objectId"]
    pulls = [
        r.plain
        for r in azure(run, "RoleAssignment")
        if r.plain["roleDefinitionId"].endswith("7f951dda-4ed3-4680-a7ca-43fe172d538d")
    ]
    assert len(pulls) == 1
    assert pulls[0]["principalId"] == kubelet
    assert pulls[0]["scope"] == output_of(run, "Registry")["id"]


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_cosmos_uses_entra_only_and_grants_the_gateway_data_access(stack: str) -> None:
    run = stack_run(stack)
    account = only(run, "DatabaseAccount")
    assert account["disableLocalAuth"] is True
    assert account["disableKeyBasedMetadataWriteAccess"] is True
    container = only(run, "SqlResourceSqlContainer")
    assert container["containerName"] == "adapters"
    assert container["resource"]["partitionKey"]["paths"] == ["/id"]
    assert only(run, "SqlResourceSqlDatabase")["databaseName"] == "mcpgateway"
    grant = only(run, "SqlResourceSqlRoleAssignment")
    gateway = next(r for r in azure(run, "UserAssignedIdentity") if r.name == "identity-gateway")
    assert grant["principalId"] == gateway.outputs["principalId"]
    assert grant["roleDefinitionId"].endswith("/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002")


def test_prod_cosmos_is_private() -> None:
    run = stack_run("prod")
    assert only(run, "DatabaseAccount")["publicNetworkAccess"] == "Disabled"
    endpoint = named(run, "PrivateEndpoint", "cosmos")
    assert endpoint["privateLinkServiceConnections"][0]["groupIds"] == ["Sql"]
    assert named(run, "PrivateZone", "cosmos")["privateZoneName"] == "privatelink.documents.azure.com"
    assert named(run, "VirtualNetworkLink", "cosmos")["registrationEnabled"] is False
    assert named(run, "PrivateDnsZoneGroup", "cosmos")["privateDnsZoneConfigs"][0]["name"] == "cosmos"
    assert not azure(stack_run("dev"), "PrivateEndpoint")


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_redis_is_tls_only_with_entra_access_for_the_gateway(stack: str) -> None:
    run = stack_run(stack)
    assert only(run, "RedisEnterprise")["minimumTlsVersion"] == "1.2"
    database = only(run, "Database")
    assert database["clientProtocol"] == "Encrypted"
    assert database["accessKeysAuthentication"] == "Disabled"
    access = only(run, "AccessPolicyAssignment")
    gateway = next(r for r in azure(run, "UserAssignedIdentity") if r.name == "identity-gateway")
    assert access["user"] == {"objectId": gateway.outputs["principalId"]}


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_aks_has_oidc_workload_identity_enforced_network_policy_and_azure_rbac(stack: str) -> None:
    run = stack_run(stack)
    aks = only(run, "ManagedCluster")
    assert aks["oidcIssuerProfile"] == {"enabled": True}
    assert aks["securityProfile"]["workloadIdentity"] == {"enabled": True}
    network = aks["networkProfile"]
    assert network["networkPlugin"] == "azure"
    assert network["networkPolicy"] in {"cilium", "calico", "azure"}
    if network["networkPolicy"] == "cilium":
        assert network["networkDataplane"] == "cilium"
    assert aks["aadProfile"]["enableAzureRBAC"] is True and aks["aadProfile"]["managed"] is True
    assert aks["disableLocalAccounts"] is True
    (pool,) = aks["agentPoolProfiles"]
    assert pool["mode"] == "System" and pool["enableAutoScaling"] is True
    assert 1 <= pool["minCount"] <= pool["maxCount"]
    # The deployer gets cluster-admin through Azure RBAC (local accounts are off).
    admins = [
        r.plain
        for r in azure(run, "RoleAssignment")
        if r.plain["roleDefinitionId"].endswith("b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b")
    ]
    assert [a["principalId"] for a in admins] == [DEPLOYER]


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_kubernetes_provider_gets_a_secret_kubeconfig_using_the_azure_cli_login(stack: str) -> None:
    run = stack_run(stack)
    provider = run.one("pulumi:providers:kubernetes", "aks")
    assert "kubeconfig" not in dict(plaintext_strings_keys(provider.inputs))
    kubeconfig = yaml.safe_load(provider.plain["kubeconfig"])
    (user,) = kubeconfig["users"]
    assert user["user"]["exec"]["args"][:3] == ["get-token", "--login", "azurecli"]


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_identities_are_federated_with_the_cluster_issuer_for_each_service_account(stack: str) -> None:
    run = stack_run(stack)
    issuer = output_of(run, "ManagedCluster")["oidcIssuerProfile"]["issuerURL"]
    credentials = {r.plain["subject"]: r.plain for r in azure(run, "FederatedIdentityCredential")}
    assert set(credentials) == {
        "system:serviceaccount:mcp-gateway:mcp-gateway",
        "system:serviceaccount:adapter:mcp-adapter-workload",
    }
    for credential in credentials.values():
        assert credential["issuer"] == issuer
        assert credential["audiences"] == ["api://AzureADTokenExchange"]
    identities = {r.name: r.outputs for r in azure(run, "UserAssignedIdentity")}
    gateway_sa = run.k8s("ServiceAccount", "mcp-gateway", "mcp-gateway")
    workload_sa = run.k8s("ServiceAccount", "mcp-adapter-workload", "adapter")
    plain_sa = run.k8s("ServiceAccount", "mcp-adapter", "adapter")
    client_id = "azure.workload.identity/client-id"
    assert gateway_sa["metadata"]["annotations"][client_id] == identities["identity-gateway"]["clientId"]
    assert workload_sa["metadata"]["annotations"][client_id] == identities["identity-workload"]["clientId"]
    assert "annotations" not in plain_sa["metadata"] and plain_sa["automountServiceAccountToken"] is False
    pod = run.k8s("Deployment", "mcp-gateway", "mcp-gateway")["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_gateway_app_registration_trusts_the_gateway_service_account_and_no_stack_has_a_client_secret(
    stack: str,
) -> None:
    """Issue 18: on-behalf-of without a secret — a federated credential on the app registration."""
    run = stack_run(stack)
    issuer = output_of(run, "ManagedCluster")["oidcIssuerProfile"]["issuerURL"]
    federated = [r for r in run.registrations if r.typ.endswith(":ApplicationFederatedIdentityCredential")]
    assert len(federated) == 1
    credential = federated[0].plain
    assert credential["applicationId"] == f"/applications/{_uuid(f'app-{ENTRA_CLIENT_ID}')}"
    assert credential["issuer"] == issuer
    assert credential["subject"] == "system:serviceaccount:mcp-gateway:mcp-gateway"
    assert credential["audiences"] == ["api://AzureADTokenExchange"]


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_no_stack_creates_or_configures_a_client_secret(stack: str) -> None:
    run = stack_run(stack)
    passwords = [
        r.typ for r in run.registrations if r.typ.endswith((":ApplicationPassword", ":ServicePrincipalPassword"))
    ]
    assert passwords == []
    assert not {"MCPGW_OBO_CLIENT_SECRET", "MCPGW_OBO_CERTIFICATE_PATH"} & set(settings_env(run))


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_monitoring_is_workspace_based_and_its_connection_string_reaches_the_gateway_secret(stack: str) -> None:
    run = stack_run(stack)
    insights = only(run, "Component")
    assert insights["workspaceResourceId"] == output_of(run, "Workspace")["id"]
    assert insights["ingestionMode"] == "LogAnalytics"
    env = settings_env(run)
    assert env["APPLICATIONINSIGHTS_CONNECTION_STRING"] == output_of(run, "Component")["connectionString"]
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" not in run.k8s("ConfigMap", "mcp-gateway")["data"]


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_app_gateway_serves_https_redirects_http_and_keeps_streams_open(stack: str) -> None:
    run = stack_run(stack)
    agw = only(run, "ApplicationGateway")
    listeners = {listener["name"]: listener for listener in agw["httpListeners"]}
    assert listeners["https"]["protocol"] == "Https"
    assert listeners["https"]["sslCertificate"]["id"].endswith("/sslCertificates/gateway-tls")
    assert listeners["http"]["protocol"] == "Http"
    (redirect,) = agw["redirectConfigurations"]
    assert redirect["redirectType"] == "Permanent"
    assert redirect["targetListener"]["id"].endswith("/httpListeners/https")
    assert redirect["includePath"] is True and redirect["includeQueryString"] is True
    rules = {rule["httpListener"]["id"].rsplit("/", 1)[-1]: rule for rule in agw["requestRoutingRules"]}
    assert rules["http"]["redirectConfiguration"]["id"].endswith("/redirectConfigurations/http-to-https")
    assert rules["https"]["backendAddressPool"]["id"].endswith("/backendAddressPools/gateway")
    (settings,) = agw["backendHttpSettingsCollection"]
    assert settings["requestTimeout"] == 3600
    assert settings["port"] == 8000
    (probe,) = agw["probes"]
    assert probe["path"] == "/readyz"
    assert agw["globalConfiguration"]["enableResponseBuffering"] is False
    assert agw["sslPolicy"]["policyName"] == "AppGwSslPolicy20220101S"
    # The backend is the gateway's internal load balancer.
    (pool,) = agw["backendAddressPools"]
    service = run.k8s("Service", "mcp-gateway", "mcp-gateway")
    annotations = service["metadata"]["annotations"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert annotations["service.beta.kubernetes.io/azure-load-balancer-internal"] == "true"
    assert pool["backendAddresses"] == [
        {"ipAddress": annotations["service.beta.kubernetes.io/azure-load-balancer-ipv4"]}
    ]


def test_backend_timeout_defaults_to_3600_and_follows_config() -> None:
    from tests.infra.stack_fixtures import run_stack

    # stacks/Pulumi.dev.yaml leaves the timeout at its default.
    assert "mcp-gateway:backendRequestTimeoutSeconds" not in stack_run("dev").config
    assert only(stack_run("dev"), "ApplicationGateway")["backendHttpSettingsCollection"][0]["requestTimeout"] == 3600
    run = run_stack("dev", {"backendRequestTimeoutSeconds": 900, "appGatewayWaf": True})
    agw = only(run, "ApplicationGateway")
    assert agw["backendHttpSettingsCollection"][0]["requestTimeout"] == 900
    assert agw["sku"]["name"] == "WAF_v2"
    # The WAF inspects bodies, so it needs request buffering; responses still stream.
    assert agw["globalConfiguration"] == {"enableRequestBuffering": True, "enableResponseBuffering": False}


def test_dev_certificate_comes_from_config_as_a_secret() -> None:
    run = stack_run("dev")
    registration = azure(run, "ApplicationGateway")[0]
    (certificate,) = registration.plain["sslCertificates"]
    assert certificate["data"] == run.config["mcp-gateway:tlsCertificate"]
    assert not [c for c in plaintext_strings(registration.inputs["sslCertificates"]) if c == certificate["data"]]
    assert not azure(run, "WebApplicationFirewallPolicy")


def test_prod_certificate_comes_from_key_vault_and_a_waf_policy_guards_the_gateway() -> None:
    run = stack_run("prod")
    agw = only(run, "ApplicationGateway")
    (certificate,) = agw["sslCertificates"]
    assert certificate["keyVaultSecretId"].startswith("https://mcpgw-kv.vault.azure.net/secrets/")
    assert "data" not in certificate
    identity_id = agw["identity"]["userAssignedIdentities"][0]
    agw_identity = next(r for r in azure(run, "UserAssignedIdentity") if r.name == "appgateway-identity")
    assert identity_id == agw_identity.outputs["id"]
    reads = [
        r.plain
        for r in azure(run, "RoleAssignment")
        if r.plain["roleDefinitionId"].endswith("4633458b-17de-408a-b874-0445c86b69e6")
    ]
    assert [(g["principalId"], g["scope"]) for g in reads] == [
        (agw_identity.outputs["principalId"], run.config["mcp-gateway:tlsKeyVaultId"])
    ]
    assert agw["sku"] == {"name": "WAF_v2", "tier": "WAF_v2"}
    waf = only(run, "WebApplicationFirewallPolicy")
    assert agw["firewallPolicy"]["id"] == output_of(run, "WebApplicationFirewallPolicy")["id"]
    assert waf["managedRules"]["managedRuleSets"][0]["ruleSetType"] == "Microsoft_DefaultRuleSet"
    assert {listener.get("hostName") for listener in agw["httpListeners"]} == {"mcp.example.com"}


@pytest.mark.parametrize("stack", AZURE_STACKS)
def test_azure_gateway_settings_follow_the_contract(stack: str) -> None:
    run = stack_run(stack)
    env = settings_env(run)
    identities = {r.name: r.outputs for r in azure(run, "UserAssignedIdentity")}
    login_server = output_of(run, "Registry")["loginServer"]
    assert env["MCPGW_STORE"] == "cosmos"
    assert env["MCPGW_SESSIONS"] == "redis"
    assert env["MCPGW_RUNTIME"] == "kubernetes"
    assert env["MCPGW_AUTH"] == "entra"
    assert env["MCPGW_HOST"] == "0.0.0.0"
    assert env["MCPGW_PUBLIC_URL"] == run.outputs["gatewayUrl"]
    assert env["MCPGW_PUBLIC_URL"].startswith("https://")
    assert env["MCPGW_COSMOS_ENDPOINT"] == output_of(run, "DatabaseAccount")["documentEndpoint"]
    assert env["MCPGW_REDIS_URL"] == f"rediss://{output_of(run, 'RedisEnterprise')['hostName']}:10000/0"
    assert env["MCPGW_REDIS_ENTRA"] == "true"
    assert env["MCPGW_ENTRA_TENANT_ID"] == TENANT
    assert env["MCPGW_ENTRA_CLIENT_ID"] == ENTRA_CLIENT_ID
    assert env["AZURE_CLIENT_ID"] == identities["identity-gateway"]["clientId"]
    assert env["MCPGW_KUBE_NAMESPACE"] == "adapter"
    assert env["MCPGW_KUBE_REGISTRY"] == login_server
    gateway_container = run.k8s("Deployment", "mcp-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert env["MCPGW_KUBE_STDIO_BRIDGE_IMAGE"] == gateway_container["image"]  # stdio pods' bridge
    assert env["MCPGW_KUBE_WORKLOAD_SERVICE_ACCOUNT"] == "mcp-adapter-workload"
    assert env["MCPGW_KUBE_SERVICE_ACCOUNT"] == "mcp-adapter"
    image = run.k8s("Deployment", "mcp-gateway")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{login_server}/mcp-gateway:0.1.0"
    # The autoscaler owns the replica count, never below two.
    assert "replicas" not in run.k8s("Deployment", "mcp-gateway")["spec"]
    assert run.k8s("HorizontalPodAutoscaler", "mcp-gateway")["spec"]["minReplicas"] >= 2
    settings = load_settings(env)
    assert settings.store == "cosmos" and settings.auth == "entra" and settings.redis_entra


# --- local stack ----------------------------------------------------------------------------


def test_local_stack_runs_one_gateway_on_sqlite_with_in_cluster_redis_and_no_azure() -> None:
    run = stack_run("local")
    assert not [r for r in run.registrations if r.typ.startswith("azure-native:")]
    env = settings_env(run)
    assert env["MCPGW_STORE"] == "sqlite"
    assert env["MCPGW_AUTH"] == "dev" and env["MCPGW_AUTH_DEV_ALLOW_REMOTE"] == "true"
    assert env["MCPGW_KUBE_REGISTRY"] == "localhost:5001"
    assert env["MCPGW_REDIS_URL"].startswith("redis://:") and env["MCPGW_REDIS_URL"].endswith(
        "@redis.mcp-gateway.svc:6379/0"
    )
    assert "MCPGW_REDIS_URL" not in run.k8s("ConfigMap", "mcp-gateway")["data"]
    deployment = run.k8s("Deployment", "mcp-gateway", "mcp-gateway")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]
    assert "azure.workload.identity/use" not in pod["metadata"]["labels"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "mcp-gateway-data"
    assert run.k8s("PersistentVolumeClaim", "mcp-gateway-data", "mcp-gateway")["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]
    redis = run.k8s("Deployment", "redis", "mcp-gateway")
    assert redis["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert run.k8s("Service", "redis", "mcp-gateway")["spec"]["ports"][0]["port"] == 6379
    policy = run.k8s("NetworkPolicy", "redis-from-gateway", "mcp-gateway")["spec"]
    assert policy["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}
    ]
    assert run.k8s("Service", "mcp-gateway", "mcp-gateway")["spec"]["type"] == "ClusterIP"
    assert "annotations" not in run.k8s("ServiceAccount", "mcp-gateway", "mcp-gateway")["metadata"]


def test_docs_show_exactly_the_role_the_runtime_needs() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md").read_text()
    block = doc[doc.index("kind: Role\n") : doc.index("---", doc.index("kind: Role\n"))]
    role = yaml.safe_load("kind: Role\n" + block.split("kind: Role\n", 1)[1])
    documented = {(r["apiGroups"][0], r["resources"][0]): set(r["verbs"]) for r in role["rules"]}
    assert documented == RUNTIME_RULES
