#!/usr/bin/env bash
# Build the gateway image and the example MCP server image, and push both to a stack's registry.
#
#   scripts/build_images.sh [stack]          # stack: local (default), dev, prod, ...
#
# Azure stacks push to the stack's ACR (output `acrLoginServer`, after a first `pulumi up`), logging
# in with `az acr login`. The local stack pushes to its `localRegistry` (default localhost:5001).
# Run it from anywhere inside the repository, on your machine (it needs docker, and for Azure
# stacks the pulumi and az CLIs).
#
# Environment:
#   REGISTRY          push here instead of the stack's registry
#   GATEWAY_TAG       gateway image tag (default: the stack's gatewayImageTag, else 0.1.0)
#   EXAMPLE_TAG       example image tag (default: 1.0.0, the imageVersion the docs use)
#   PLATFORM          docker --platform (default: linux/amd64 for Azure stacks — AKS nodes are amd64;
#                     the local machine's platform for `local`)
set -euo pipefail

STACK="${1:-local}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() { echo "build_images: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed (needed for stack '$STACK')"; }

config_get() {  # config_get KEY DEFAULT — a stack config value, or DEFAULT when unset or no pulumi
  local value=""
  if command -v pulumi >/dev/null 2>&1; then
    value="$(pulumi config get "$1" --stack "$STACK" 2>/dev/null || true)"
  fi
  echo "${value:-$2}"
}

need docker
PLATFORM_ARGS=()
if [[ "$STACK" == "local" ]]; then
  registry="${REGISTRY:-$(config_get localRegistry localhost:5001)}"
  [[ -n "${PLATFORM:-}" ]] && PLATFORM_ARGS=(--platform "$PLATFORM")
else
  if [[ -z "${REGISTRY:-}" ]]; then
    need pulumi
    registry="$(pulumi stack output acrLoginServer --stack "$STACK" 2>/dev/null)" \
      || die "no acrLoginServer output on stack '$STACK': run 'pulumi up -s $STACK' first"
  else
    registry="$REGISTRY"
  fi
  need az
  # ACR has no admin user: log in with your Entra ID identity (needs AcrPush on the registry).
  az acr login --name "${registry%%.*}"
  PLATFORM_ARGS=(--platform "${PLATFORM:-linux/amd64}")
fi

gateway_tag="${GATEWAY_TAG:-$(config_get gatewayImageTag 0.1.0)}"
example_tag="${EXAMPLE_TAG:-1.0.0}"
gateway_image="$registry/mcp-gateway:$gateway_tag"
example_image="$registry/mcp-example:$example_tag"

echo "building $gateway_image"
docker build ${PLATFORM_ARGS[@]+"${PLATFORM_ARGS[@]}"} -t "$gateway_image" -f Dockerfile .
echo "building $example_image"
docker build ${PLATFORM_ARGS[@]+"${PLATFORM_ARGS[@]}"} -t "$example_image" -f examples/mcp-example/Dockerfile examples/mcp-example

docker push "$gateway_image"
docker push "$example_image"
echo "pushed $gateway_image and $example_image"
