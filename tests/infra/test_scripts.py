"""The deployment helper scripts: the dev certificate (issue 14 item 3) and the Azure preflight that
registers resource providers (item 4). openssl runs for real; ``az`` is a recording stand-in."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra.preflight import REGISTERED_BY_PREFLIGHT
from tests.infra.stack_fixtures import ROOT

CERT_SCRIPT = ROOT / "scripts" / "make_dev_cert.sh"
PREFLIGHT = ROOT / "scripts" / "azure_preflight.sh"
HOST = "mcpgw-dev-test.westus3.cloudapp.azure.com"


def openssl(*args: str) -> str:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=True)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def dev_cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):  # CI images have openssl: its absence is a broken install, not a skip
            pytest.fail("openssl is not installed")
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("cert")
    env = {**os.environ, "OUT_DIR": str(out), "PFX_PASSWORD": "test-password"}
    subprocess.run(
        [str(CERT_SCRIPT), HOST, "mcp.example.com"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return out


def test_dev_certificate_names_the_app_gateway_host_in_its_subject_alt_name(dev_cert: Path) -> None:
    san = openssl("x509", "-in", str(dev_cert / "gateway.crt"), "-noout", "-ext", "subjectAltName")
    assert f"DNS:{HOST}" in san and "DNS:mcp.example.com" in san
    assert "TLS Web Server Authentication" in openssl(
        "x509", "-in", str(dev_cert / "gateway.crt"), "-noout", "-ext", "extendedKeyUsage"
    )
    # Trusted as its own anchor, it verifies for the host (what curl --cacert and NODE_EXTRA_CA_CERTS do).
    crt = str(dev_cert / "gateway.crt")
    assert ": OK" in openssl("verify", "-CAfile", crt, "-verify_hostname", HOST, crt)


def test_dev_certificate_pfx_uses_the_legacy_encryption_app_gateway_accepts(dev_cert: Path) -> None:
    info = openssl("pkcs12", "-info", "-in", str(dev_cert / "gateway.pfx"), "-noout", "-passin", "pass:test-password")
    assert "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC" in info
    assert "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC" in info
    assert "MAC: sha1" in info
    assert "AES" not in info and "PBES2" not in info
    assert (dev_cert / "pfx-password").read_text() == "test-password"
    assert (dev_cert / "gateway.key").stat().st_mode & 0o077 == 0


def test_dev_certificate_script_explains_its_usage_without_arguments() -> None:
    result = subprocess.run([str(CERT_SCRIPT)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2 and "host name" in result.stderr


FAKE_AZ = """#!/usr/bin/env bash
echo "$*" >> "$AZ_LOG"
case "$1 $2" in
  "account show") echo 11111111-2222-3333-4444-555555555555 ;;
  "provider show")
    if [[ " $UNREGISTERED " == *" $4 "* ]]; then echo NotRegistered; else echo Registered; fi ;;
  "provider register") ;;
  *) echo "unexpected az $*" >&2; exit 3 ;;
esac
"""


def run_preflight(tmp_path: Path, *args: str, unregistered: str = "") -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    az = bin_dir / "az"
    az.write_text(FAKE_AZ)
    az.chmod(0o755)
    log = tmp_path / "az.log"
    log.write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "AZ_LOG": str(log), "UNREGISTERED": unregistered}
    result = subprocess.run(
        ["bash", str(PREFLIGHT), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return result, log.read_text()


def test_preflight_registers_only_the_missing_providers(tmp_path: Path) -> None:
    result, calls = run_preflight(tmp_path, unregistered="Microsoft.Cache Microsoft.DocumentDB")
    assert result.returncode == 0, result.stderr
    registered = [line for line in calls.splitlines() if line.startswith("provider register")]
    assert registered == [
        "provider register --namespace Microsoft.DocumentDB --wait",
        "provider register --namespace Microsoft.Cache --wait",
    ]
    shown = {line.split()[3] for line in calls.splitlines() if line.startswith("provider show")}
    assert shown == REGISTERED_BY_PREFLIGHT


def test_preflight_check_mode_fails_naming_what_is_missing(tmp_path: Path) -> None:
    result, calls = run_preflight(tmp_path, "--check", unregistered="Microsoft.ContainerService")
    assert result.returncode == 1
    assert "Microsoft.ContainerService" in result.stderr
    assert "provider register" not in calls
    ok, _ = run_preflight(tmp_path, "--check")
    assert ok.returncode == 0 and "every resource provider is registered" in ok.stdout
