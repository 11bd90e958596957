"""The container images and the script that builds and pushes them.

No Docker daemon, Pulumi CLI or Azure CLI runs here, so the Dockerfiles are checked as text and the
build script runs against recording stand-ins for ``docker``, ``pulumi`` and ``az`` on PATH.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.infra.stack_fixtures import ROOT

SCRIPT = ROOT / "scripts" / "build_images.sh"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = dockerfile.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def assert_numeric_non_root_user(stage: list[tuple[str, str]]) -> None:
    users = [args for word, args in stage if word == "USER"]
    assert users, "the final stage must switch to a non-root user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: Kubernetes runAsNonRoot needs a numeric, non-zero uid"


def test_gateway_image_is_multi_stage_non_root_and_serves_on_all_interfaces() -> None:
    steps = instructions(ROOT / "Dockerfile")
    assert sum(word == "FROM" for word, _ in steps) >= 2
    build = steps[: len(steps) - len(final_stage(steps))]
    assert any(word == "COPY" and "pyproject.toml" in args for word, args in build)
    assert any(word == "RUN" and "pip install ." in args for word, args in build)
    stage = final_stage(steps)
    assert_numeric_non_root_user(stage)
    assert any(word == "COPY" and args.startswith("--from=build") for word, args in stage)
    entrypoint = [args for word, args in stage if word == "ENTRYPOINT"][-1]
    cmd = [args for word, args in stage if word == "CMD"][-1]
    assert json.loads(entrypoint) + json.loads(cmd) == ["mcp-gateway", "serve", "--host", "0.0.0.0"]
    assert ("EXPOSE", "8000") in stage
    # stdio adapter pods copy its static busybox into the server's container (gateway/stdio/pod.py).
    assert any(word == "RUN" and "busybox-static" in args for word, args in stage)


def test_example_image_is_non_root_with_the_sdk_and_uvicorn() -> None:
    steps = instructions(ROOT / "examples" / "mcp-example" / "Dockerfile")
    assert_numeric_non_root_user(final_stage(steps))
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert '"mcp>=2.3,<3"' in runs and "uvicorn" in runs
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "HOST=0.0.0.0" in env and "PORT=8000" in env
    assert ("COPY", "server.py ./") in steps
    assert (ROOT / "examples" / "mcp-example" / "server.py").is_file()


@pytest.fixture
def tools(tmp_path: Path) -> tuple[Path, Path]:
    """Recording stand-ins for docker, pulumi and az; returns (bin dir, log file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    answers = {
        # `pulumi stack output acrLoginServer` of an Azure stack; config keys unset.
        "pulumi": 'if [ "$1 $2" = "stack output" ]; then echo mcpgwdevabc123.azurecr.io; else exit 1; fi',
        "docker": "exit 0",
        "az": "exit 0",
    }
    for name, body in answers.items():
        tool = bin_dir / name
        tool.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> {shlex.quote(str(log))}\n{body}\n')
        tool.chmod(0o755)
    return bin_dir, log


def run_script(stack: str, bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"
    return subprocess.run(
        ["bash", str(SCRIPT), stack],
        env={"PATH": path, "HOME": str(bin_dir.parent), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_build_script_pushes_both_images_to_the_local_registry(tools: tuple[Path, Path]) -> None:
    bin_dir, log = tools
    result = run_script("local", bin_dir)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert "docker build -t localhost:5001/mcp-gateway:0.1.0 -f Dockerfile ." in calls
    assert (
        "docker build -t localhost:5001/mcp-example:1.0.0 -f examples/mcp-example/Dockerfile examples/mcp-example"
        in calls
    )
    assert calls[-2:] == [
        "docker push localhost:5001/mcp-gateway:0.1.0",
        "docker push localhost:5001/mcp-example:1.0.0",
    ]
    assert not [c for c in calls if c.startswith("az ")]


def test_build_script_logs_in_to_the_stacks_acr_and_builds_for_amd64(tools: tuple[Path, Path]) -> None:
    bin_dir, log = tools
    result = run_script("dev", bin_dir, GATEWAY_TAG="0.2.0")
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert "az acr login --name mcpgwdevabc123" in calls
    assert "docker build --platform linux/amd64 -t mcpgwdevabc123.azurecr.io/mcp-gateway:0.2.0 -f Dockerfile ." in calls
    assert "docker push mcpgwdevabc123.azurecr.io/mcp-example:1.0.0" in calls
    assert calls.index("az acr login --name mcpgwdevabc123") < calls.index(
        "docker push mcpgwdevabc123.azurecr.io/mcp-gateway:0.2.0"
    )


def test_build_script_says_what_is_missing(tools: tuple[Path, Path]) -> None:
    bin_dir, _ = tools
    (bin_dir / "az").unlink()
    result = run_script("dev", bin_dir)
    assert result.returncode != 0
    assert "az is not installed" in result.stderr
