"""The edge protocol (gateway/edge.py) in process: the timing rules a raw socket cannot pin cheaply.

Each test serves one connection through ``edge_protocol(limits)`` with an in-memory transport
and a small ASGI app, with timeouts of a fraction of a second.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.edge import EdgeLimits, EdgeProtocol, edge_protocol
from gateway.settings import Settings, SettingsError, load_settings

FAST = EdgeLimits(header_timeout=0.2, body_timeout=0.2)


class Wire:
    """An in-memory transport: what the protocol wrote, whether it closed or paused reading."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.eof = False
        self.reading = True
        self.protocol: EdgeProtocol | None = None

    def write(self, data: bytes) -> None:
        assert not self.eof, "written after write_eof"
        self.out += data

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            assert self.protocol is not None
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def statuses(self) -> list[bytes]:
        return [line.split()[1] for line in bytes(self.out).split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def connect(app: Any, limits: EdgeLimits = FAST, state: ServerState | None = None) -> tuple[EdgeProtocol, Wire]:
    config = Config(app, lifespan="off", log_level="warning", access_log=False)
    config.load()
    protocol = edge_protocol(limits)(config=config, server_state=state or ServerState(), app_state={})
    wire = Wire()
    wire.protocol = protocol
    protocol.connection_made(wire)  # type: ignore[arg-type]  # a recording fake, not an asyncio.Transport
    return protocol, wire


async def until(condition: Any) -> None:
    """Wait (at most 3 s) until ``condition()`` is true."""
    async with asyncio.timeout(3.0):
        while not condition():
            await asyncio.sleep(0.01)


async def read_all(receive: Any) -> bytes:
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client gone")
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def answer(send: Any, body: bytes = b"{}") -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def post(length: int, extra: bytes = b"") -> bytes:
    return b"POST /mcp HTTP/1.1\r\nHost: x\r\n" + extra + b"Content-Length: %d\r\n\r\n" % length


async def test_reading_paused_by_the_gateway_does_not_count_toward_the_body_timeout() -> None:
    async def slow_reader(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.6)  # three body timeouts before it reads anything
        await answer(send, b"%d" % len(await read_all(receive)))

    protocol, wire = connect(slow_reader)
    protocol.data_received(post(200_000) + b"a" * 100_000)
    assert not wire.reading  # uvicorn paused: more than 64 KiB waits for the application
    await until(lambda: wire.reading)
    protocol.data_received(b"a" * 100_000)
    await until(lambda: wire.statuses())
    assert wire.statuses() == [b"200"] and wire.out.endswith(b"200000")


async def test_expect_100_continue_body_clock_waits_until_the_gateway_asks() -> None:
    async def late_reader(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.6)
        await answer(send, await read_all(receive))

    protocol, wire = connect(late_reader)
    protocol.data_received(post(5, b"Expect: 100-continue\r\n"))
    await until(lambda: b"100 Continue" in wire.out)
    protocol.data_received(b"hello")
    await until(lambda: len(wire.statuses()) == 2)
    assert wire.statuses() == [b"100", b"200"] and wire.out.endswith(b"hello") and not wire.closed


async def test_body_stalling_after_its_answer_only_closes_the_connection() -> None:
    async def no_reader(scope: Any, receive: Any, send: Any) -> None:
        await answer(send)

    protocol, wire = connect(no_reader)
    protocol.data_received(post(10) + b"abc")
    await until(lambda: wire.closed)
    assert wire.statuses() == [b"200"]  # no second answer to the same request


async def test_slow_head_pipelined_behind_a_stream_is_refused_only_after_the_stream_ends() -> None:
    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(3):
            await asyncio.sleep(0.2)
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    protocol, wire = connect(stream)
    protocol.data_received(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHo")
    await until(lambda: wire.closed)
    out = bytes(wire.out)
    assert wire.statuses() == [b"200", b"408"]
    assert out.index(b"data: 2\n\n\r\n0\r\n\r\n") < out.index(b"HTTP/1.1 408"), "the refusal cut into the stream"


async def test_connection_beyond_the_cap_is_refused_before_anything_is_read() -> None:
    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await answer(send)

    state = ServerState()
    limits = EdgeLimits(max_connections=2)
    kept = [connect(ok, limits, state) for _ in range(2)]
    _, wire = connect(ok, limits, state)
    assert wire.statuses() == [b"503"] and b"retry-after: 1\r\n" in wire.out and wire.eof
    assert b'"limit": "MCPGW_MAX_CONNECTIONS"' in wire.out
    assert len(state.connections) == 2
    kept[0][1].close()
    await asyncio.sleep(0)
    protocol, wire = connect(ok, limits, state)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await until(lambda: wire.statuses())
    assert wire.statuses() == [b"200"]


def test_automatic_connection_cap_follows_the_open_file_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = EdgeLimits.from_settings(Settings())
    assert limits.max_connections == max(64, (soft - 256) // 2)
    assert EdgeLimits.from_settings(Settings(max_connections=5)).max_connections == 5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MCPGW_MAX_HEADER_BYTES", "100"),
        ("MCPGW_MAX_HEADER_FIELDS", "0"),
        ("MCPGW_HEADER_TIMEOUT", "0"),
        ("MCPGW_BODY_TIMEOUT", "-1"),
        ("MCPGW_MAX_CONNECTIONS", "-1"),
    ],
)
def test_edge_settings_out_of_range_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})
