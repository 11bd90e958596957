"""Differential test: every malicious-upstream case through httpx and through our pool.

Ours must be at least as strict as httpx (h11): where httpx raises, our pool must fail too; where
httpx accepts, ours may accept (then with the same status and body) or be stricter. The cases are
``CASES`` of tests/adversarial/malicious_upstream.py, sent by a raw asyncio server.

Known differences (2026-11-30, httpx 0.28 / h11 0.16), all on the strict side — httpx accepts,
we refuse: bytes after a complete response (excess body, a second response, a stray CRLF; httpx
leaves them in the buffer for the next request on that connection to trip over), Content-Length
together with chunked, a status of 600, a 199 with a body (httpx waits for its read timeout), bare
LF line endings, and heads over 64 KiB or 100 fields (``MCPGW_UPSTREAM_MAX_HEADER_*``).
"""

from __future__ import annotations

import httpx
import pytest

from gateway.proxy.upstream import UpstreamError, UpstreamPool
from tests.adversarial.malicious_upstream import CASES, RawServer, reply

Outcome = tuple[int, bytes] | str
"""(status, body) when the response was accepted, else the name of the error."""


async def through_httpx(url: str) -> Outcome:
    async with httpx.AsyncClient(timeout=1.0) as client:
        try:
            response = await client.post(url + "/mcp", content=b"{}")
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return response.status_code, response.content


async def through_ours(url: str) -> Outcome:
    pool = UpstreamPool(connect_timeout=1.0, read_timeout=1.0, max_per_host=4)
    try:
        response = await pool.request("POST", url + "/mcp", [], b"{}", identity="alice")
        async with response:
            body = b"".join([chunk async for chunk in response.iter_chunks()])
        return response.status, body
    except UpstreamError as exc:
        return type(exc).__name__
    finally:
        await pool.close()


@pytest.mark.parametrize("case", sorted(CASES))
async def test_ours_is_at_least_as_strict_as_httpx(case: str) -> None:
    data, close = CASES[case]
    async with RawServer(reply(data, close=close)) as server:
        theirs = await through_httpx(server.url)
    async with RawServer(reply(data, close=close)) as server:
        ours = await through_ours(server.url)
    if isinstance(theirs, str):
        assert isinstance(ours, str), f"httpx refused ({theirs}) but we accepted {ours!r}"
    elif not isinstance(ours, str):
        assert ours == theirs
    if case.startswith("ok-"):
        assert not isinstance(theirs, str) and ours == theirs, "a well-framed answer must pass both"


def test_the_cases_cover_every_framing_mode() -> None:
    needed = {
        "content-length-truncated",
        "chunked-truncated",
        "two-responses-in-one-read",
        "excess-body",
        "status-000",
        "status-600",
        "status-199-with-body",
        "huge-header",
        "ok-chunked-with-trailers",
        "ok-read-until-close",
    }
    assert needed <= set(CASES)
