#!/usr/bin/env bash
# Install everything the test suite needs (Debian packages, the Python test/dev/infra extras,
# the Node tools: conformance suite, MCP Inspector, Cosmos DB stand-in) and run the whole suite:
# lint, format check, type check, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)  # the local replica sandbox (docs/security.md)
[ -x /bin/busybox ] || need_apt+=(busybox-static)  # the Kubernetes stdio pod's spawner (tests/e2e/test_kubernetes_stdio_e2e.py)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # the portal's browser tests (Playwright drives the system browser)
if ((${#need_apt[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-test-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".[test,dev,infra]"
  touch "$stamp"
fi

bash scripts/install_node_tools.sh
# An mcp 1.x client for the virtual server tests (tests/fixtures/mcp1_client.py): the last 1.x release, in its own venv.
if ! .tools/mcp1-venv/bin/python -c "import mcp" 2>/dev/null; then
  python3 -m venv .tools/mcp1-venv
  .tools/mcp1-venv/bin/pip install --quiet --disable-pip-version-check "mcp==1.30.0"
fi

echo "== ruff check"; .venv/bin/ruff check .
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== mypy (strict on gateway/, scripts/, infra/ and tests/)"; .venv/bin/mypy
echo "== pytest"
# Pulumi programs run in their own process: their event loop must not meet pytest-asyncio's.
.venv/bin/python -m pytest tests/infra -q "$@"
# Test files run in parallel on PYTEST_WORKERS processes (pytest-xdist): most of the suite waits on
# the processes it starts, not on a CPU, so 3 workers fit 2 cores (the suite needs ~500 CPU-seconds).
# --dist loadfile keeps a file (and its module-scoped gateways) on one worker; tests/conftest.py puts
# the longest file first and --no-loadscope-reorder keeps that order. PYTEST_WORKERS=0: one process.
.venv/bin/python -m pytest tests --ignore=tests/infra -q --durations=15 \
  -n "${PYTEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder "$@"
