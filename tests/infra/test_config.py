"""Stack configuration: every key documented with its default, and clear errors for bad values."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from infra.config import KEYS, AzureConfig, ConfigError, GatewayConfig, LocalConfig, StackConfig, readme_table
from tests.infra.stack_fixtures import ROOT, load_stack_config

README = (ROOT / "infra" / "README.md").read_text()


def test_readme_tables_are_generated_from_the_key_declarations() -> None:
    """infra/README.md's three key tables are exactly what infra/config.py's declarations print."""
    for scope in ("all", "azure", "local"):
        assert readme_table(scope) in README, (
            f"infra/README.md: the {scope!r} key table is stale; regenerate it with "
            f".venv/bin/python -c 'from infra.config import readme_table; print(readme_table(\"{scope}\"))'"
        )


def test_each_key_is_declared_once_and_every_config_field_is_a_key() -> None:
    """One declaration per key (issue 20): no key name twice, and no field of the typed view that
    the loader would have to fill by hand."""
    names = [key.name for key in KEYS]
    assert len(names) == len(set(names))
    for cls in (GatewayConfig, AzureConfig, LocalConfig):
        assert all("key" in f.metadata for f in dataclasses.fields(cls)), cls.__name__
    assert {f.name for f in dataclasses.fields(StackConfig) if "key" not in f.metadata} == {
        "stack",
        "gateway",
        "azure",
        "local",
        "raw",
    }


@pytest.mark.parametrize(
    ("stack", "override", "named"),
    [
        ("dev", {"vnetAddressSpace": "10.10.0.0/33"}, "vnetAddressSpace"),
        ("dev", {"aksPodCidr": "pods"}, "aksPodCidr"),
        ("dev", {"gatewayPrivateIp": "10.10.3.999"}, "gatewayPrivateIp"),
        ("dev", {"aksDnsServiceIp": "dns"}, "aksDnsServiceIp"),
        ("dev", {"acrSku": "Gold"}, "acrSku"),
        ("dev", {"redisSku": "Basic_C0"}, "redisSku"),
        ("dev", {"aksTier": "Paid"}, "aksTier"),
        ("dev", {"appGatewayWafMode": "Block"}, "appGatewayWafMode"),
        ("local", {"localStorage": "hostPath"}, "localStorage"),
        ("local", {"logLevel": "trace"}, "logLevel"),
        ("local", {"gatewayMemoryLimit": "lots"}, "gatewayMemoryLimit"),
        ("local", {"namePrefix": "MCP"}, "namePrefix"),
    ],
)
def test_an_invalid_value_names_its_key(stack: str, override: dict[str, str], named: str) -> None:
    """Addresses, SKUs, tiers and other enumerations are refused with the key at fault first."""
    with pytest.raises(ConfigError, match=rf"^{named}: "):
        load_stack_config(stack, override)


def test_stack_files_use_only_known_keys() -> None:
    known = {key.name for key in KEYS}
    for stack in ("local", "dev", "prod"):
        doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
        used = {k.split(":", 1)[1] for k in doc["config"] if k.startswith("mcp-gateway:")}
        assert used <= known, (stack, used - known)
        assert all(k.startswith("mcp-gateway:") for k in doc["config"]), stack


def test_pulumi_project_points_at_the_infra_package_and_the_stacks_folder() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "mcp-gateway"
    assert project["runtime"]["name"] == "python"
    assert project["main"] == "infra/"
    assert project["stackConfigDir"] == "stacks"
    assert (ROOT / "infra" / "__main__.py").is_file()


def test_stacks_load_with_their_platform_defaults() -> None:
    local = load_stack_config("local")
    assert local.platform == "local" and local.gateway.replicas == 1 and local.azure is None
    dev = load_stack_config("dev")
    assert dev.platform == "azure" and dev.gateway.replicas >= 2
    assert dev.azure is not None and dev.azure.backend_request_timeout_seconds == 3600
    assert dev.azure.resource_group_name == "mcpgw-dev"


def test_azure_stack_without_entra_client_id_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError, match=r"pulumi config set entraClientId .* -s dev"):
        load_stack_config("dev", {"entraClientId": None})


def test_local_stack_refuses_more_than_one_gateway_on_sqlite() -> None:
    with pytest.raises(ConfigError, match="SQLite"):
        load_stack_config("local", {"gatewayReplicas": 2})


def test_azure_stack_refuses_a_single_gateway_replica() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        load_stack_config("dev", {"gatewayReplicas": 1})


def test_https_listener_needs_exactly_one_certificate_source() -> None:
    with pytest.raises(ConfigError, match="exactly one certificate source"):
        load_stack_config("dev", {"tlsCertificate": None, "tlsCertificatePassword": None})
    with pytest.raises(ConfigError, match="exactly one certificate source"):
        load_stack_config("prod", {"tlsCertificate": "cGZ4"})


def test_network_policy_engine_must_enforce_policies() -> None:
    with pytest.raises(ConfigError, match="NetworkPolicies must be enforced"):
        load_stack_config("dev", {"aksNetworkPolicy": "none"})


def test_overlapping_or_misplaced_addresses_are_refused() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        load_stack_config("dev", {"appGatewaySubnetPrefix": "10.10.0.0/24"})
    with pytest.raises(ConfigError, match="gatewayPrivateIp"):
        load_stack_config("dev", {"gatewayPrivateIp": "10.10.4.10"})
    # Another IP version is not inside the VNet either (ipaddress's subnet_of raised TypeError for it).
    with pytest.raises(ConfigError, match=r"^aksSubnetPrefix: fd00::/64 is not inside vnetAddressSpace"):
        load_stack_config("dev", {"aksSubnetPrefix": "fd00::/64"})


def test_secret_settings_cannot_be_set_through_plain_gateway_env() -> None:
    with pytest.raises(ConfigError, match="MCPGW_SESSION_KEYS is a secret setting"):
        load_stack_config("local", {"gatewayEnv": {"MCPGW_SESSION_KEYS": "abc"}})
    extra = load_stack_config("local", {"gatewayEnv": {"MCPGW_SESSION_TTL": "600"}})
    assert extra.gateway.extra_env == {"MCPGW_SESSION_TTL": "600"}


ENTRY_POINT_PROBE = """
import asyncio, os, runpy, sys
import pulumi

# As Pulumi's Python host runs `main: infra/`: the folder as a script, the repository root NOT importable.
root = os.path.dirname(os.getcwd())
sys.path = [p for p in sys.path if os.path.abspath(p or os.getcwd()) not in (root, os.getcwd())]

class Mocks(pulumi.runtime.Mocks):
    types = []
    def new_resource(self, args):
        self.types.append(args.typ)
        return args.name + "-id", {**args.inputs, "result": "generated", "base64": "Z2VuZXJhdGVk"}
    def call(self, args):
        return {}

mocks = Mocks()
asyncio.set_event_loop(asyncio.new_event_loop())
pulumi.runtime.set_mocks(mocks, project="mcp-gateway", stack="local", preview=False)
pulumi.runtime.set_all_config({"mcp-gateway:platform": "local"})

@pulumi.runtime.test
def program():
    runpy.run_path(".", run_name="__main__")

program()
print(sorted(set(mocks.types)))
"""


def test_pulumi_can_run_the_infra_folder_as_its_program() -> None:
    result = subprocess.run(
        [sys.executable, "-c", ENTRY_POINT_PROBE],
        cwd=ROOT / "infra",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kubernetes:apps/v1:Deployment" in result.stdout
    assert "mcp-gateway:kubernetes:Gateway" in result.stdout
