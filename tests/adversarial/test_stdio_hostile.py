"""Hostile inputs for stdio adapters (issue 17): arbitrary server.json documents, a misbehaving stdio server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.control import serverjson
from gateway.errors import Unprocessable
from gateway.models import AdapterInput
from tests.fixtures.gateway import free_port, wait_for

REPO = Path(__file__).resolve().parent.parent.parent

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
package = st.fixed_dictionaries(
    {},
    optional={
        "registryType": st.sampled_from(["npm", "pypi", "oci", "nuget"]) | json_values,
        "identifier": st.text(max_size=20) | json_values,
        "version": st.sampled_from(["1.0.0", "latest", "^1"]) | json_values,
        "transport": st.fixed_dictionaries({}, optional={"type": st.sampled_from(["stdio", "sse"]), "url": json_values})
        | json_values,
        "packageArguments": st.lists(json_values, max_size=3) | json_values,
        "environmentVariables": st.lists(json_values, max_size=3) | json_values,
    },
)
document = st.fixed_dictionaries(
    {}, optional={"name": st.text(max_size=10) | json_values, "packages": st.lists(package, max_size=3) | json_values}
)


@settings(max_examples=300, deadline=None)
@given(document)
def test_any_server_json_is_resolved_or_refused_with_a_field(doc: dict[str, Any]) -> None:
    data = msgspec.convert({"name": "x", "serverJson": doc}, AdapterInput)
    try:
        serverjson.resolve(data, registries=serverjson.LOCAL_REGISTRIES)
    except Unprocessable as exc:
        assert exc.field and exc.detail


def test_a_stdio_server_writing_garbage_to_stdout_does_not_break_the_bridge(tmp_path: Path) -> None:
    server = tmp_path / "noisy.py"
    server.write_text(
        textwrap.dedent(
            """
            import json, sys
            print("starting up, not JSON", flush=True)
            print("x" * 100000, flush=True)
            for line in sys.stdin:
                msg = json.loads(line)
                print("[1, 2", flush=True)
                if "id" in msg and "method" in msg:
                    answer = {"jsonrpc": "2.0", "id": msg["id"], "result": {"echo": msg["method"]}}
                    print(json.dumps(answer), flush=True)
            """
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.stdio.bridge", "--port", str(port), "--", sys.executable, str(server)],
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url + "/healthz").status_code == 200, timeout=30, what="bridge ready")
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
        first = httpx.post(url + "/mcp", json=init, timeout=10)
        assert first.status_code == 200 and first.json()["result"] == {"echo": "initialize"}
        sid = first.headers["mcp-session-id"]
        answer = httpx.post(
            url + "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers={"mcp-session-id": sid}
        )
        assert answer.json() == {"jsonrpc": "2.0", "id": 2, "result": {"echo": "tools/list"}}
    finally:
        proc.terminate()
        proc.wait(timeout=15)
