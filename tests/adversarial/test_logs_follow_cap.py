"""One user cannot hold an unbounded number of log streams (``GET …/logs?follow=true``).

Each followed log is a long-lived response and a file watcher in the gateway; before 2026-11-30 any
reader of an adapter could open as many as it liked. Now one user holds at most
``MCPGW_LOGS_FOLLOW_MAX_PER_USER`` at once on a gateway: one more is 429 problem+json with
Retry-After naming the setting, another user is not affected, and a closed stream frees its slot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_for, wait_ready

CAP = 3


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("follow") / "data"
    with start_gateway(data, {"MCPGW_LOGS_FOLLOW_MAX_PER_USER": str(CAP)}) as gateway:
        with gateway.client() as client:
            assert client.post("/adapters", json=example_adapter()).status_code == 201
            wait_ready(client, "mcp-example", 1)
        yield gateway


def follow(client: httpx.Client) -> contextlib.AbstractContextManager[httpx.Response]:
    return client.stream("GET", "/adapters/mcp-example/logs", params={"follow": "true", "tail": 1})


def test_one_user_holds_at_most_the_cap_and_a_closed_stream_frees_its_slot(gw: GatewayProcess, tmp_path: Path) -> None:
    with contextlib.ExitStack() as held, gw.client(user="greedy", roles="mcp.admin") as greedy:
        for _ in range(CAP):
            stream = held.enter_context(follow(greedy))
            assert stream.status_code == 200
        refused = greedy.get("/adapters/mcp-example/logs", params={"follow": "true"})
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json" and refused.headers["retry-after"]
        assert "logs_follow_max_per_user" in refused.json()["detail"]
        # The cap is per user: another reader still follows.
        with gw.client(user="other", roles="mcp.admin") as other, follow(other) as theirs:
            assert theirs.status_code == 200
        # Plain (not followed) logs are not limited.
        assert greedy.get("/adapters/mcp-example/logs").status_code == 200
    # Every stream closed: the slots come back (the gateway notices the client left).
    with gw.client(user="greedy", roles="mcp.admin") as greedy:

        def follows_again() -> bool:
            with follow(greedy) as stream:
                return stream.status_code == 200

        wait_for(follows_again, timeout=20, what="a freed follow slot")
