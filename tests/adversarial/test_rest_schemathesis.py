"""The REST API answers what its OpenAPI document says: schemathesis, every check, finds nothing.

A gateway of its own (dev auth, embedded, ``MCPGW_MAX_REPLICAS=3`` so no generated adapter can ask
for many replicas; generated image names are not in the catalog, so they are 422 and no replica process starts)
is tested with ``schemathesis run --checks all`` over every phase (examples, coverage, fuzzing,
stateful), derandomized so the same requests go out on every run. Checks include response
conformance (status, media type, headers, body schema) and that schema-valid requests are accepted
and schema-invalid ones refused. 20-25 s of schemathesis (580 requests) on the 2-core machine at
load average 10, plus the gateway start; bounded at 2 minutes.

One expectation is configured, not default: a schema-valid PUT with an ``If-Match`` that is not the
adapter's current ETag is 412 (the precondition is state, which no schema can express). A schema-valid
body that cannot be carried out (a virtual-server member naming an adapter the caller may not read, two
members with one adapter or one prefix, a server.json missing a required variable) is 422.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayProcess, start_gateway

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429"]

[parameters]
"query.follow" = false
"""
MAX_EXAMPLES = 20
BUDGET_SECONDS = 120


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir = tmp_path_factory.mktemp("schemathesis") / "data"
    with start_gateway(data_dir, {"MCPGW_MAX_REPLICAS": "3", "MCPGW_LOG_LEVEL": "warning"}) as gateway:
        yield gateway


def test_schemathesis_finds_no_failure(gw: GatewayProcess, tmp_path: Path) -> None:
    assert SCHEMATHESIS.exists(), "install the test extra: pip install -e '.[test]'"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{gw.url}/openapi/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--header",
        "X-Dev-User-Id: schemathesis",
    ]
    try:
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=BUDGET_SECONDS, check=False)
    except subprocess.TimeoutExpired as exc:
        # On POSIX a timeout's output is bytes even with text=True (subprocess.run only waits, reads nothing).
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"schemathesis ran longer than {BUDGET_SECONDS}s:\n{output}")
    assert run.returncode == 0, f"schemathesis found failures:\n{run.stdout[-12000:]}\n{run.stderr[-2000:]}"
    assert "No issues found" in run.stdout or " passed" in run.stdout, run.stdout[-4000:]
