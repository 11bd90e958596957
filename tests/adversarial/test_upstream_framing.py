"""gateway/proxy/upstream.py against a raw asyncio server: every framing case, the pool's rules.

Each test drives ``UpstreamPool`` directly against ``RawServer`` (tests/adversarial/malicious_upstream.py),
which writes exactly the bytes a test asks for. Timeouts are short so a framing bug shows up as a
failure in a second, not as a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.proxy.upstream import (
    UpstreamClosed,
    UpstreamError,
    UpstreamHeadersTooLarge,
    UpstreamPool,
    UpstreamPoolExhausted,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from tests.adversarial.malicious_upstream import CASES, RawServer, Request, ok, reply

JSON = [(b"content-type", b"application/json")]


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    p = UpstreamPool(connect_timeout=1.0, read_timeout=1.0, max_per_host=8, keepalive_seconds=5.0)
    yield p
    await p.close()


async def fetch(
    pool: UpstreamPool,
    url: str,
    *,
    method: str = "POST",
    identity: str = "alice",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request; status, headers and the whole body (raises what the pool raises)."""
    sent = [*(headers or JSON), (b"x-identity", identity.encode())]
    response = await pool.request(method, url + "/mcp", sent, b"{}" if method == "POST" else b"", identity=identity)
    async with response:
        body = b"".join([chunk async for chunk in response.iter_chunks()])
    return response.status, response.raw_headers, body


async def wait_until(check: Callable[[], object], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await asyncio.sleep(0.01)


# --- well-framed answers, and when a connection is reused -------------------------------------


async def test_content_length_answers_reuse_the_connection(pool: UpstreamPool) -> None:
    async with RawServer(reply(ok(b'{"n":1}'))) as server:
        headers = [(b"Content-Type", b"application/json"), (b"Content-Length", b"7")]
        assert await fetch(pool, server.url) == (200, headers, b'{"n":1}')
        assert (await fetch(pool, server.url))[2] == b'{"n":1}'
    assert server.connections == 1


async def test_chunked_body_with_trailers_is_read_and_trailers_are_dropped(pool: UpstreamPool) -> None:
    async with RawServer(reply(CASES["ok-chunked-with-trailers"][0])) as server:
        status, headers, body = await fetch(pool, server.url)
        assert (status, body) == (200, b"hello")
        assert b"X-Trailer" not in dict(headers)
        await fetch(pool, server.url)
    assert server.connections == 1


async def test_head_204_and_304_have_no_body_and_keep_the_connection(pool: UpstreamPool) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",  # HEAD: the length is the GET's
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        ok(),
    ]

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(answers[request.index])

    async with RawServer(answer) as server:
        assert await fetch(pool, server.url, method="HEAD") == (200, [(b"Content-Length", b"1000")], b"")
        assert (await fetch(pool, server.url, method="GET"))[::2] == (204, b"")
        assert (await fetch(pool, server.url, method="GET"))[::2] == (304, b"")
        assert (await fetch(pool, server.url))[::2] == (200, b'{"ok":true}')
    assert server.connections == 1


async def test_a_body_without_length_is_read_until_close_and_not_reused(pool: UpstreamPool) -> None:
    async with RawServer(reply(CASES["ok-read-until-close"][0], close=True)) as server:
        assert (await fetch(pool, server.url))[::2] == (200, b"until close")
        assert (await fetch(pool, server.url))[::2] == (200, b"until close")
    assert server.connections == 2


async def test_interim_103_is_skipped(pool: UpstreamPool) -> None:
    async with RawServer(reply(CASES["ok-interim-103"][0])) as server:
        status, headers, body = await fetch(pool, server.url)
    assert (status, body) == (200, b'{"ok":true}') and b"Link" not in dict(headers)


async def test_idle_connections_expire_and_the_target_is_forgotten() -> None:
    pool = UpstreamPool(connect_timeout=1.0, read_timeout=1.0, max_per_host=8, keepalive_seconds=0.2)
    async with RawServer(reply(ok())) as server:
        for user in ("alice", "bob", "carol"):
            await fetch(pool, server.url, identity=user)
        assert pool.stats() == {"targets": 1, "connections": 3, "idle": 3, "identities": 3}
        await wait_until(lambda: server.eofs == 3)
        assert pool.stats() == {"targets": 0, "connections": 0, "idle": 0, "identities": 0}
    await pool.close()


async def test_targets_of_replicas_that_went_away_are_dropped(pool: UpstreamPool) -> None:
    for _ in range(3):
        async with RawServer(reply(ok())) as server:
            await fetch(pool, server.url)
        # the replica is gone: its server closed the connection
        await wait_until(lambda: pool.stats()["targets"] == 0)


# --- bytes beyond the framed message ------------------------------------------------------------


async def test_late_bytes_while_idle_close_the_connection(pool: UpstreamPool) -> None:
    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(ok())
        if request.conn == 0:
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen")

    async with RawServer(answer) as server:
        await fetch(pool, server.url)
        await wait_until(lambda: pool.stats()["connections"] == 0)
        assert (await fetch(pool, server.url))[2] == b'{"ok":true}'
    assert server.connections == 2


async def test_late_bytes_during_the_next_request_never_reach_another_identity(pool: UpstreamPool) -> None:
    # The first answer on a connection is followed, once the next request arrives on it, by a
    # forged answer carrying the first user's data.
    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        user = request.headers["x-user"]
        if request.index == 0:
            writer.write(ok(b'{"for":"%s"}' % user))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nleak-for-bob")

    async with RawServer(answer) as server:
        first = await fetch(pool, server.url, identity="alice", headers=[(b"x-user", b"alice")])
        assert first[2] == b'{"for":"alice"}'
        second = await fetch(pool, server.url, identity="bob", headers=[(b"x-user", b"bob")])
        assert second[2] == b'{"for":"bob"}'
    assert server.connections == 2, "bob's request went out on alice's connection"


async def test_late_excess_bytes_during_the_next_request_are_a_protocol_error(pool: UpstreamPool) -> None:
    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.index == 0:
            writer.write(ok())
        else:
            writer.write(b"EXTRA" + ok(b'{"second":2}'))

    async with RawServer(answer) as server:
        await fetch(pool, server.url)
        with pytest.raises(UpstreamProtocolError, match="where a response head belongs"):
            await fetch(pool, server.url)


@pytest.mark.parametrize(
    "case", ["two-responses-in-one-read", "excess-body", "stray-crlf-after-chunked", "leading-crlf"]
)
async def test_bytes_beyond_the_framed_message_in_the_same_read_fail_and_close(pool: UpstreamPool, case: str) -> None:
    async with RawServer(reply(CASES[case][0])) as server:
        with pytest.raises(UpstreamProtocolError):
            await fetch(pool, server.url)
        await wait_until(lambda: server.eofs == 1)
    assert pool.stats()["connections"] == 0


async def test_a_second_response_never_overrides_the_first(pool: UpstreamPool) -> None:
    async with RawServer(reply(CASES["two-responses-in-one-read"][0])) as server:
        conn_responses: list[UpstreamResponse] = []
        with pytest.raises(UpstreamProtocolError, match=r"second response|after the end"):
            response = await pool.request("POST", server.url + "/mcp", JSON, b"{}", identity="alice")
            conn_responses.append(response)
            async with response:
                await response.read_chunk()
                await response.read_chunk()
        for response in conn_responses:
            assert response.status == 200 and b"X-Second" not in dict(response.raw_headers)


async def test_stray_crlf_after_a_content_length_body_is_caught(pool: UpstreamPool) -> None:
    async with RawServer(reply(ok(b"ab\r\n") + b"\r\n")) as server:
        with pytest.raises(UpstreamProtocolError, match="after the end"):
            await fetch(pool, server.url)


# --- truncation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("closed-before-head", UpstreamUnreachable),
        ("closed-mid-head", UpstreamUnreachable),
        ("content-length-truncated", UpstreamClosed),
        ("chunked-truncated", UpstreamClosed),
        ("chunked-cut-mid-chunk", UpstreamClosed),
    ],
)
async def test_an_early_close_is_an_error_never_a_clean_end(
    pool: UpstreamPool, case: str, error: type[UpstreamError]
) -> None:
    async with RawServer(reply(CASES[case][0], close=True)) as server:
        with pytest.raises(error):
            await fetch(pool, server.url)


async def test_a_truncated_body_reports_what_was_missing(pool: UpstreamPool) -> None:
    async with RawServer(reply(CASES["content-length-truncated"][0], close=True)) as server:
        response = await pool.request("POST", server.url + "/mcp", JSON, b"{}", identity="alice")
        async with response:
            assert await response.read_chunk() == b"short"
            assert not response.at_eof()
            with pytest.raises(UpstreamClosed, match="5 of 20 bytes"):
                await response.read_chunk()


# --- status lines and heads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["status-000", "status-99", "status-600", "status-199-with-body", "status-101-unasked", "not-http"]
)
async def test_statuses_outside_100_599_and_bad_interims_fail_at_once(pool: UpstreamPool, case: str) -> None:
    async with RawServer(reply(CASES[case][0])) as server:
        started = time.monotonic()
        with pytest.raises(UpstreamProtocolError):
            await fetch(pool, server.url)
        assert time.monotonic() - started < 0.5, "waited for the read timeout"


@pytest.mark.parametrize(
    "case",
    [
        "content-length-and-chunked",
        "two-content-lengths",
        "transfer-coding-gzip-chunked",
        "bad-chunk-size",
        "nul-in-header",
        "space-before-colon",
        "bare-lf",
    ],
)
async def test_malformed_framing_is_a_protocol_error(pool: UpstreamPool, case: str) -> None:
    async with RawServer(reply(CASES[case][0])) as server:
        with pytest.raises(UpstreamProtocolError):
            await fetch(pool, server.url)


@pytest.mark.parametrize("case", ["huge-header", "many-header-fields"])
async def test_response_heads_over_the_limits_fail(pool: UpstreamPool, case: str) -> None:
    async with RawServer(reply(CASES[case][0])) as server:
        with pytest.raises(UpstreamHeadersTooLarge):
            await fetch(pool, server.url)


async def test_an_endless_head_is_cut_off_at_the_limit_not_read_into_memory(pool: UpstreamPool) -> None:
    sent = 0

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        try:
            for _ in range(10_000):  # up to 160 MiB if nobody stops it
                writer.write(b"a" * 16384)
                sent += 16384
                await writer.drain()
        except ConnectionError:
            return

    async with RawServer(answer) as server:
        with pytest.raises(UpstreamHeadersTooLarge, match="65536"):
            await fetch(pool, server.url)
    assert sent < 16 * 1024 * 1024


async def test_oversized_trailers_fail(pool: UpstreamPool) -> None:
    trailers = b"".join(b"T%d: v\r\n" % i for i in range(150))
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n" + trailers + b"\r\n"
    async with RawServer(reply(data)) as server:
        with pytest.raises(UpstreamHeadersTooLarge):
            await fetch(pool, server.url)


async def test_header_bytes_travel_unchanged_and_injection_is_refused(pool: UpstreamPool) -> None:
    async with RawServer(reply(ok())) as server:
        await fetch(pool, server.url, headers=[(b"x-utf8", "café".encode()), (b"x-latin", b"\xe9t\xe9")])
        assert server.requests[0].headers["x-utf8"] == b"caf\xc3\xa9"
        assert server.requests[0].headers["x-latin"] == b"\xe9t\xe9"
        for bad in (b"a\r\nX-Injected: 1", b"a\nb", b"a\rb", b"a\x00b"):
            with pytest.raises(ValueError, match="CR, LF or NUL"):
                await fetch(pool, server.url, headers=[(b"x-bad", bad)])
    assert len(server.requests) == 1


# --- the pool -----------------------------------------------------------------------------------


async def test_connections_are_never_shared_between_identities(pool: UpstreamPool) -> None:
    async with RawServer(reply(ok())) as server:
        for _ in range(3):
            for user in ("alice", "bob"):
                await fetch(pool, server.url, identity=user)
    identities = {
        r.conn: {q.headers["x-identity"] for q in server.requests if q.conn == r.conn} for r in server.requests
    }
    assert server.connections == 2 and all(len(users) == 1 for users in identities.values())


async def test_at_the_cap_idle_connections_of_other_identities_make_room() -> None:
    pool = UpstreamPool(connect_timeout=0.5, read_timeout=1.0, max_per_host=2)
    async with RawServer(reply(ok())) as server:
        await fetch(pool, server.url, identity="alice")
        await fetch(pool, server.url, identity="bob")
        await fetch(pool, server.url, identity="carol")  # closes alice's idle connection
        assert pool.stats() == {"targets": 1, "connections": 2, "idle": 2, "identities": 2}
        await wait_until(lambda: server.eofs == 1)
    await pool.close()


async def test_pool_exhaustion_is_its_own_error_not_an_upstream_timeout() -> None:
    pool = UpstreamPool(connect_timeout=0.3, read_timeout=5.0, max_per_host=1)
    release = asyncio.Event()

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.write(ok())

    async with RawServer(answer) as server:
        busy = asyncio.create_task(fetch(pool, server.url, identity="alice"))
        await wait_until(lambda: len(server.requests) == 1)
        for user in ("alice", "bob"):
            with pytest.raises(UpstreamPoolExhausted) as caught:
                await fetch(pool, server.url, identity=user)
            assert not isinstance(caught.value, TimeoutError)
        release.set()
        assert (await busy)[0] == 200
    await pool.close()


async def test_a_cancelled_waiter_hands_its_wake_up_on() -> None:
    pool = UpstreamPool(connect_timeout=3.0, read_timeout=5.0, max_per_host=1)
    release = asyncio.Event()

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.index == 0 and request.conn == 0:
            await release.wait()
        writer.write(ok())

    async with RawServer(answer) as server:
        response = await asyncio.wait_for(_first_head(pool, server.url, release), 2)
        first = asyncio.create_task(fetch(pool, server.url, identity="alice"))
        second = asyncio.create_task(fetch(pool, server.url, identity="alice"))
        await wait_until(lambda: len(pool._targets[server.url].waiters) == 2)
        # The connection comes free and wakes the first waiter, which is cancelled before it runs.
        async with response:
            assert await response.read_chunk()
        first.cancel()
        started = time.monotonic()
        assert (await second)[0] == 200
        assert time.monotonic() - started < 1.0, "the wake-up was lost: the second waiter waited for the timeout"
        with pytest.raises(asyncio.CancelledError):
            await first
    await pool.close()


async def _first_head(pool: UpstreamPool, url: str, release: asyncio.Event) -> UpstreamResponse:
    task = asyncio.create_task(pool.request("POST", url + "/mcp", JSON, b"{}", identity="alice"))
    await asyncio.sleep(0.05)
    release.set()
    return await task


async def test_a_head_dribbled_byte_by_byte_gets_the_read_timeout_in_total() -> None:
    pool = UpstreamPool(connect_timeout=1.0, read_timeout=0.5, max_per_host=2)

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.02)
        except ConnectionError:
            return

    async with RawServer(answer) as server:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="complete response head"):
            await fetch(pool, server.url)
        assert time.monotonic() - started < 1.0
    await pool.close()
