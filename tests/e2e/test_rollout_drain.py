"""Issue 13, "Checked by": an adapter rollout under load drains the replaced replicas.

Generation change (an env var) on an adapter with 3 replicas while 30 pinned 2025-era sessions (the
real ``mcp`` SDK client) keep calling: no session gets 404, or moves, before its replica's drain
timeout; new sessions and stateless calls land on the new replicas only; status shows the old
replicas as ``Draining``; once the old sessions end, the old replicas stop well before the timeout.
Embedded gateway (local runtime, memory sessions), one real process.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_for, wait_ready
from tests.fixtures.mcp_results import first_text

pytestmark = pytest.mark.slow

SESSIONS = 30
DRAIN = 40.0  # MCPGW_REPLICA_DRAIN_TIMEOUT: the test ends every session well before it
RUN_AFTER_ROLLOUT = 8.0  # seconds the old sessions keep calling once the new replicas serve


async def text(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result
    return first_text(result)


def draining(api: httpx.Client) -> list[dict[str, Any]]:
    return [i for i in api.get("/adapters/ro/status").json()["instances"] if i["state"] == "Draining"]


def test_rollout_drains_replaced_replicas_for_their_pinned_sessions(tmp_path: Path) -> None:
    env = {"MCPGW_REPLICA_DRAIN_TIMEOUT": str(DRAIN)}
    with start_gateway(tmp_path / "data", env) as gw, gw.client() as api:
        body = example_adapter("ro", replicas=3, environmentVariables={"GEN": "1"})
        assert api.post("/adapters", json=body).status_code == 201
        wait_ready(api, "ro", 3)
        outcome = anyio.run(roll_under_load, gw, api)
        print(outcome)
        assert outcome["session failures"] == 0, outcome
        assert outcome["session calls"] >= SESSIONS * 10, outcome
        assert outcome["homes"] == 3, outcome  # the 30 sessions were spread over the 3 old replicas
        assert outcome["new sessions on generation 2"] == 10, outcome
        assert outcome["stateless calls on generation 2"] == 20, outcome
        assert outcome["draining in status"] == 3, outcome
        # The old sessions ended: the old replicas stop well before the drain timeout.
        assert outcome["drained after the last session ended (s)"] < DRAIN / 2, outcome
        # The gateway's log lines are written by a background handler: wait for the third.
        wait_for(
            lambda: gw.log_text().count("drained: its last session ended") == 3,
            timeout=10,
            what="three 'drained: its last session ended' lines",
        )


async def roll_under_load(gw: GatewayProcess, api: httpx.Client) -> Counter[str]:
    url = f"{gw.url}/adapters/ro/mcp"
    outcome: Counter[str] = Counter()
    stop = anyio.Event()
    opened = 0
    homes: set[str] = set()

    async def session(ready: anyio.Event) -> None:
        nonlocal opened
        async with Client(url, mode="legacy") as client:
            home, generation = await text(client, "whoami"), await text(client, "get_env", name="GEN")
            assert generation == "1"
            homes.add(home)
            opened += 1
            if opened == SESSIONS:
                ready.set()
            while not stop.is_set():
                try:
                    answer = (await text(client, "whoami"), await text(client, "get_env", name="GEN"))
                except Exception as exc:
                    outcome["session failures"] += 1
                    print(f"pinned session on {home} failed: {exc!r}")
                    return
                if answer != (home, "1"):
                    outcome["session failures"] += 1
                    print(f"pinned session on {home} moved: {answer}")
                    return
                outcome["session calls"] += 1
                await anyio.sleep(0.3)

    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        for _ in range(SESSIONS):
            tg.start_soon(session, ready)
        with anyio.fail_after(60):
            await ready.wait()
        outcome["homes"] = len(homes)

        changed_body = {**example_adapter("ro", replicas=3), "environmentVariables": {"GEN": "2"}}
        changed = await anyio.to_thread.run_sync(lambda: api.put("/adapters/ro", json=changed_body))
        assert changed.status_code == 200, changed.text
        # Rolled: each new replica took its slot once ready, and the old one it replaced drains.
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: len(draining(api)) == 3, timeout=60, what="3 draining replicas")
        )
        outcome["draining in status"] = len(draining(api))

        # New sessions and stateless calls: the new replicas only.
        for _ in range(10):
            async with Client(url, mode="legacy") as fresh:
                outcome[f"new sessions on generation {await text(fresh, 'get_env', name='GEN')}"] += 1
        async with Client(url) as stateless:
            for _ in range(20):
                outcome[f"stateless calls on generation {await text(stateless, 'get_env', name='GEN')}"] += 1

        await anyio.sleep(RUN_AFTER_ROLLOUT)
        stop.set()  # every old session ends (the SDK client sends DELETE on exit)
    ended = time.monotonic()
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: not draining(api), timeout=DRAIN, what="drained"))
    outcome["drained after the last session ended (s)"] = round(time.monotonic() - ended)
    return outcome
