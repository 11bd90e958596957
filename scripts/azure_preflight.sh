#!/usr/bin/env bash
# Before the first `pulumi up` of an Azure stack: register the resource providers the program uses
# and check the tools it runs. azure-native never registers providers itself, so on a fresh
# subscription the first resource of an unregistered namespace fails with
# MissingSubscriptionRegistration (decided 2026-11-30, issue 14: a script, not a Pulumi resource —
# the SDK has no resource for subscription provider registration).
#
#   scripts/azure_preflight.sh            # register what is missing (waits until registered)
#   scripts/azure_preflight.sh --check    # only report; exit 1 if anything is missing (CI)
#
# Needs the Azure CLI, logged in to the subscription you deploy to (`az account show`). Registering
# needs the permission */register/action (Contributor or Owner on the subscription).
set -euo pipefail

PROVIDERS=(
  Microsoft.ContainerService
  Microsoft.ContainerRegistry
  Microsoft.Compute
  Microsoft.Network
  Microsoft.Storage
  Microsoft.DocumentDB
  Microsoft.Cache
  Microsoft.Insights
  Microsoft.OperationalInsights
  Microsoft.ManagedIdentity
  Microsoft.KeyVault
)

CHECK_ONLY=false
[[ "${1:-}" == "--check" ]] && CHECK_ONLY=true

command -v az >/dev/null || { echo "preflight: the Azure CLI (az) is not installed" >&2; exit 1; }
subscription="$(az account show --query id -o tsv)" || {
  echo "preflight: not logged in; run az login (or az login --service-principal / --federated-token)" >&2
  exit 1
}
echo "subscription $subscription"

missing=()
for provider in "${PROVIDERS[@]}"; do
  state="$(az provider show --namespace "$provider" --query registrationState -o tsv)"
  if [[ "$state" == "Registered" ]]; then
    echo "  $provider: registered"
  else
    echo "  $provider: $state"
    missing+=("$provider")
  fi
done

for tool in pulumi kubelogin kubectl docker openssl; do
  command -v "$tool" >/dev/null || echo "  warning: $tool is not on PATH (docs/deploy-azure.md, prerequisites)"
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "preflight: every resource provider is registered"
  exit 0
fi
if $CHECK_ONLY; then
  echo "preflight: not registered: ${missing[*]}; run scripts/azure_preflight.sh without --check" >&2
  exit 1
fi
for provider in "${missing[@]}"; do
  echo "registering $provider (a few minutes)..."
  az provider register --namespace "$provider" --wait
done
echo "preflight: registered ${missing[*]}"
