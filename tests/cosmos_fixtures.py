"""A real Cosmos-protocol server for tests: npm ``@vercel/cosmosdb-server`` as a child process.

The server speaks the Cosmos DB REST protocol the ``azure-cosmos`` SDK uses. It runs over TLS with
a throwaway CA and server certificate generated here, so the gateway talks to it exactly as it
talks to Azure: https, endpoint discovery on, the CA passed through ``cosmos_ca_file``.

Two gaps of the stand-in are closed in the small Node launcher below, never in gateway code:

- reading a missing item crashes the handler (HTTP 500); Azure answers 404, and so does the launcher;
- there is no way to make it throttle or fail; ``POST /_faults`` queues canned error answers
  (e.g. 429 with ``x-ms-retry-after-ms``) that the next requests under ``/dbs/`` receive.

The tool is installed by ``scripts/install_node_tools.sh`` into ``.tools/cosmosdb-server``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential

from gateway.app import build_store
from gateway.settings import Settings
from gateway.store.cosmos import CosmosAdapterStore
from tests.tls_fixtures import TlsFiles
from tests.tls_fixtures import write_tls_files as write_tls_files  # re-exported: test_cosmos_store imports it here

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "@vercel/cosmosdb-server"
VERSION = "1.0.1"
TOOL_DIR = REPO / ".tools" / "cosmosdb-server"
# Any base64 key works with the stand-in; this is the public, well-known emulator key.
EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
START_TIMEOUT = 20.0

_LAUNCHER = r"""
const fs = require("fs");
const [pkg, keyFile, certFile] = process.argv.slice(1);

// Gap 1: a point read of a missing item throws inside the handler (HTTP 500). Azure answers 404.
const readDocument = require(pkg + "/lib/handler/read-document");
const readOriginal = readDocument.default;
readDocument.default = (account, req, res, params) => {
  try {
    return readOriginal(account, req, res, params);
  } catch (err) {
    if (err instanceof TypeError && /Cannot read properties of undefined/.test(err.message)) {
      res.statusCode = 404;
      return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
    }
    throw err;
  }
};

const { createHttpsServer } = require(pkg);
const server = createHttpsServer({ key: fs.readFileSync(keyFile), cert: fs.readFileSync(certFile) });

// Gap 2: fault injection. POST /_faults [{status, retryAfterMs, count}] queues canned answers;
// DELETE /_faults drops the queue.
const faults = [];
const handlers = server.listeners("request");
server.removeAllListeners("request");
server.on("request", (req, res) => {
  if (req.method === "DELETE" && req.url === "/_faults") {
    faults.length = 0;
    res.writeHead(204, { connection: "close" });
    res.end();
    return;
  }
  if (req.method === "POST" && req.url === "/_faults") {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      for (const f of JSON.parse(body)) for (let i = 0; i < (f.count || 1); i++) faults.push(f);
      res.writeHead(204, { connection: "close" });
      res.end();
    });
    return;
  }
  if (faults.length && req.url.startsWith("/dbs/")) {
    const f = faults.shift();
    const headers = { "content-type": "application/json", connection: "close" };
    if (f.retryAfterMs !== undefined) headers["x-ms-retry-after-ms"] = String(f.retryAfterMs);
    req.resume();
    res.writeHead(f.status, headers);
    res.end(JSON.stringify({ code: "Injected", message: "fault injected by the test fixture" }));
    return;
  }
  for (const handler of handlers) handler.call(server, req, res);
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
// Exit with the test process, however it ends: stdin is a pipe from it.
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
"""


class CosmosToolMissing(RuntimeError):
    """The Cosmos stand-in is not installed; the message says how to install it."""


def package_dir() -> Path:
    """Where the pinned ``@vercel/cosmosdb-server`` lives; raises with the install command if absent."""
    override = os.environ.get("MCPGW_TEST_COSMOSDB_SERVER")
    pkg = Path(override) if override else TOOL_DIR / "node_modules" / PACKAGE
    manifest = pkg / "package.json"
    if not manifest.is_file():
        raise CosmosToolMissing(
            f"{PACKAGE}@{VERSION} not found at {pkg}; install it with `scripts/install_node_tools.sh` "
            f"(or `npm install --prefix {TOOL_DIR} {PACKAGE}@{VERSION}`), "
            "or point MCPGW_TEST_COSMOSDB_SERVER at the package folder"
        )
    version = json.loads(manifest.read_text())["version"]
    if version != VERSION:
        raise CosmosToolMissing(
            f"{PACKAGE} at {pkg} is {version}, tests pin {VERSION}; rerun scripts/install_node_tools.sh"
        )
    if shutil.which("node") is None:
        raise CosmosToolMissing("node is not on PATH; the Cosmos stand-in needs Node.js 20+")
    return pkg


@dataclass
class CosmosEmulator:
    """One running stand-in process. Start with :func:`start_cosmos_emulator`."""

    process: subprocess.Popen[bytes]
    port: int
    tls: TlsFiles
    log_file: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def endpoint(self) -> str:
        """The account endpoint, as MCPGW_COSMOS_ENDPOINT."""
        return f"https://127.0.0.1:{self.port}/"

    def settings(self, **overrides: Any) -> Settings:
        """Gateway settings for a fresh database of this server (unique name unless given)."""
        values: dict[str, Any] = {
            "store": "cosmos",
            "cosmos_endpoint": self.endpoint,
            "cosmos_key": EMULATOR_KEY,
            "cosmos_ca_file": self.tls.ca_file,
            "cosmos_database": f"test-{uuid.uuid4().hex[:12]}",
            "cosmos_create_if_missing": True,
            "cosmos_timeout": 5.0,
        }
        values.update(overrides)
        return Settings(**values)

    def env(self, settings: Settings) -> dict[str, str]:
        """The MCPGW_* environment that selects this server, for a gateway process."""
        return {
            "MCPGW_STORE": "cosmos",
            "MCPGW_COSMOS_ENDPOINT": self.endpoint,
            "MCPGW_COSMOS_KEY": EMULATOR_KEY,
            "MCPGW_COSMOS_CA_FILE": str(self.tls.ca_file),
            "MCPGW_COSMOS_DATABASE": settings.cosmos_database,
            "MCPGW_COSMOS_CONTAINER": settings.cosmos_container,
            "MCPGW_COSMOS_CREATE_IF_MISSING": "true",
            "MCPGW_COSMOS_TIMEOUT": str(settings.cosmos_timeout),
        }

    def inject_faults(self, status: int, *, count: int = 1, retry_after_ms: int | None = None) -> None:
        """Make the next ``count`` requests under /dbs/ answer ``status`` (with x-ms-retry-after-ms)."""
        fault: dict[str, Any] = {"status": status, "count": count}
        if retry_after_ms is not None:
            fault["retryAfterMs"] = retry_after_ms
        self._faults("POST", [fault])

    def clear_faults(self) -> None:
        """Drop faults still queued."""
        self._faults("DELETE", None)

    def _faults(self, method: str, body: Any) -> None:
        context = ssl.create_default_context(cafile=str(self.tls.ca_file))
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"https://127.0.0.1:{self.port}/_faults", data=data, method=method)
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            assert response.status == 204

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections are accepted by the kernel but never answered."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw the process (SIGCONT)."""
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the process (idempotent), thawing it first so SIGTERM is handled."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdin:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        if self.process.stdout:
            self.process.stdout.close()


def start_cosmos_emulator(folder: Path) -> CosmosEmulator:
    """Start the stand-in on a free 127.0.0.1 port with fresh TLS files in ``folder``."""
    pkg = package_dir()
    tls = write_tls_files(folder / "tls")
    log_file = folder / "cosmosdb-server.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            ["node", "-e", _LAUNCHER, str(pkg), str(tls.key_file), str(tls.cert_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            process.kill()
            process.wait()
            raise RuntimeError(f"{PACKAGE} did not start within {START_TIMEOUT:g}s: {log_file.read_text()[-2000:]}")
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if ready:
            chunk = os.read(process.stdout.fileno(), 256)
            if not chunk:
                continue
            line += chunk
    port = int(json.loads(line)["port"])
    return CosmosEmulator(process=process, port=port, tls=tls, log_file=log_file)


@contextlib.contextmanager
def cosmos_emulator_running(folder: Path) -> Iterator[CosmosEmulator]:
    """A stand-in of its own for one test (e.g. one that pauses it); stopped on exit."""
    emulator = start_cosmos_emulator(folder)
    try:
        yield emulator
    finally:
        emulator.stop()


_shared: CosmosEmulator | None = None
_shared_lock = threading.Lock()


def shared_cosmos_emulator() -> CosmosEmulator:
    """One stand-in for the whole test run, started on first use and stopped at exit.

    Tests share it safely because each uses a database of its own (:meth:`CosmosEmulator.settings`).
    Tests that pause the server use :func:`cosmos_emulator_running` instead.
    """
    global _shared
    with _shared_lock:
        if _shared is None or _shared.process.poll() is not None:
            folder = Path(tempfile.mkdtemp(prefix="mcpgw-cosmos-"))
            _shared = start_cosmos_emulator(folder)
            atexit.register(_stop_shared, _shared, folder)
        return _shared


def _stop_shared(emulator: CosmosEmulator, folder: Path) -> None:
    emulator.stop()
    shutil.rmtree(folder, ignore_errors=True)


def cosmos_store(settings: Settings, credential: AsyncTokenCredential | None = None) -> CosmosAdapterStore:
    """The store gateway/app.py builds from ``settings``: its config, a client factory, the key or ``credential``."""
    store = build_store(settings, credential)
    assert isinstance(store, CosmosAdapterStore)
    return store


async def new_cosmos_store(**overrides: Any) -> CosmosAdapterStore:
    """A not-yet-started store on a fresh database of the shared stand-in."""
    return cosmos_store(shared_cosmos_emulator().settings(**overrides))
