#!/usr/bin/env bash
# Install MCP Gateway into .venv (first run only) and start it with embedded defaults:
# SQLite, in-memory sessions, replicas as local processes, dev auth, on http://127.0.0.1:8000,
# with the example adapter mcp-example registered. Extra arguments go to `mcp-gateway serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -e .
  touch "$stamp"
fi
exec .venv/bin/mcp-gateway serve "$@"
