"""A stdio MCP server behind Streamable HTTP and legacy HTTP+SSE: one child process per client session.

Run as ``python -m gateway.stdio.bridge --port N [options] -- program args...``. A stdio adapter's
replica is this bridge wrapping the server's command, so the gateway's proxy, session pinning,
policies, limits and audit treat it like any HTTP replica. Decisions (2026-11-30, issue 17):

* **One process per client session.** ``initialize`` on ``POST /mcp`` (2025 era) or ``GET /sse``
  (2024-11-05) spawns the program and is forwarded to it; the session id returned names that
  process. A stdio server is one MCP connection with one client's state (its roots, its log level,
  its subscriptions), so sharing it between users would leak that state; a process per session is
  the isolation the rest of the gateway gives sessions. ``--max-sessions`` caps the processes of one
  replica: over it, 503 + ``Retry-After`` (the gateway's balancer then tries the client again later).
* **Lifetime.** A session's process ends with ``DELETE /mcp``, with its SSE connection (legacy era),
  after ``--idle-timeout`` seconds without a request and without an open GET stream, and with the
  bridge. Shutdown follows the spec (basic/lifecycle): close stdin, wait, SIGTERM, SIGKILL, always to
  the child's whole process group (``npx`` → ``npm exec`` → ``sh`` → ``node``; ``uvx`` → ``uv`` →
  ``python``). Each child gets ``PR_SET_PDEATHSIG`` (via ``setpriv``, when installed) so a SIGKILLed bridge takes its
  direct children with it; their own children then read EOF on stdin and exit (measured: all gone in
  2 s), and in the local runtime's sandbox the pid namespace ends every process at once.
* **Stateless 2026-07-28 requests** (no session header, no ``initialize``) go to one shared process
  per replica, started on first use, requests multiplexed by rewriting JSON-RPC ids. Measured with
  ``mcp-server-time`` 2026.10.19 via ``uvx`` (warm cache): a process per request costs 1.3 s per
  call (start + first answer); the shared process answers in a few ms. Again 2026-11-30 with
  ``python -m mcp_server_time`` on the loaded 2-core machine (/tmp/stdio_measure.py in the report):
  a process per request 3.5 s median over 5, the shared process 7 ms median over 19. Stateless requests carry no
  per-client state by definition, and the gateway already spreads them over replicas like any
  stateless HTTP server; server→client messages of the shared process have nowhere to go and are
  dropped.
* **Roots.** By default the bridge removes ``roots`` from the client's ``initialize`` capabilities:
  ``@modelcontextprotocol/server-filesystem`` replaces its configured allowed directories with the
  client's roots when the client declares them, which would let any client widen what the adapter's
  owner configured. ``--allow-roots`` passes them through.
* **Relaying.** One JSON-RPC message per line on the child's stdin/stdout; stderr goes to the
  replica's log. A request's answer is the POST's response (``application/json``); the child's
  notifications and requests to the client go to the session's ``GET /mcp`` stream (buffered up to
  ``OUTBOUND_BUFFER`` messages while none is open). Non-JSON stdout lines are dropped (logged).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import msgspec

from gateway.child_process import launch, signal_group

log = logging.getLogger("gateway.stdio.bridge")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_LINE = 16 * 1024 * 1024
"""Longest stdout line (one JSON-RPC message) read from a child; asyncio's default 64 KiB is too small for
base64 results."""
MAX_BODY = 4 * 1024 * 1024
"""Largest POST body accepted (the gateway's max_body_bytes default)."""
OUTBOUND_BUFFER = 1000
"""Messages kept for a session's GET stream while none is open; the oldest go first."""
STDIN_GRACE = 1.0
"""Seconds a child has to exit after its stdin closes, before SIGTERM."""
TERM_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL of a child's process group."""
RETRY_AFTER = "2"

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class ChildGone(Exception):
    """The stdio server exited (or could not start) before answering."""


class Child:
    """One stdio server process: writes lines to its stdin, routes lines from its stdout.

    Responses to requests sent with ``request()`` resolve their future; everything else (and every
    response when ``route_responses`` is False: the legacy SSE era answers on the stream) goes to
    ``outbound``.
    """

    def __init__(self, argv: Sequence[str], *, route_responses: bool = True) -> None:
        self.argv = list(argv)
        self.route_responses = route_responses
        self.outbound: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.exited = asyncio.Event()
        self.pid: int | None = None
        self.label = ""
        """How logs name this server (its pid, or its session on Kubernetes)."""
        self._process: asyncio.subprocess.Process | None = None
        self._stdin: asyncio.StreamWriter | None = None
        self._stdout: asyncio.StreamReader | None = None
        self._pending: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._write_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """True while a request waits for its answer (such a session is never idle)."""
        return bool(self._pending)

    async def start(self) -> None:
        """Spawn the program in its own process group, dying with the bridge (raise ChildGone when it cannot)."""
        argv = launch(self.argv)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,  # the replica's log
                start_new_session=True,
                limit=MAX_LINE,
            )
        except OSError as exc:
            self.exited.set()
            raise ChildGone(f"cannot start {self.argv[0]!r}: {exc}") from None
        self.pid = self._process.pid
        self._connected(str(self.pid), self._process.stdin, self._process.stdout)

    def _connected(self, label: str, stdin: asyncio.StreamWriter | None, stdout: asyncio.StreamReader | None) -> None:
        """The program runs and these are its stdin and stdout: start routing its output."""
        self.label, self._stdin, self._stdout = label, stdin, stdout
        self._reader = asyncio.create_task(self._read(), name=f"stdio-child-{label}")

    async def _exit_status(self) -> str:
        """`` with code N`` once the program has exited (its stdout reached EOF)."""
        assert self._process is not None
        return f" with code {await self._process.wait()}"

    async def _read(self) -> None:
        assert self._stdout is not None
        stdout = self._stdout
        try:
            while True:
                try:
                    line = await stdout.readline()
                except ValueError:
                    log.warning("stdio server %s wrote a line longer than %d bytes; dropped", self.label, MAX_LINE)
                    continue
                if not line:
                    break
                self._route(line)
        finally:
            how = await self._exit_status()
            log.info("stdio server %s exited%s", self.label, how)
            self.exited.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ChildGone(f"the stdio server exited{how} before answering"))
            self._pending.clear()
            self.outbound.put_nowait(None)

    def _route(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            msg = _decode(line)
        except msgspec.DecodeError:
            log.warning("stdio server %s wrote a non-JSON line to stdout; dropped: %.200r", self.label, line)
            return
        if (
            self.route_responses
            and isinstance(msg, dict)
            and "method" not in msg
            and ("result" in msg or "error" in msg)
        ):
            fut = self._pending.pop(_encode(msg.get("id")), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
                return
        if self.outbound.qsize() >= OUTBOUND_BUFFER:
            with contextlib.suppress(asyncio.QueueEmpty):
                self.outbound.get_nowait()
        self.outbound.put_nowait(_encode(msg))

    async def send(self, msg: Any) -> None:
        """Write one message as one line (re-encoded: compact, no embedded newline)."""
        if self._stdin is None or self.exited.is_set():
            raise ChildGone("the stdio server has exited")
        async with self._write_lock:
            try:
                self._stdin.write(_encode(msg) + b"\n")
                await self._stdin.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise ChildGone(f"the stdio server's stdin is closed: {exc}") from None

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for the response with its id (raise ChildGone when the child exits first)."""
        key = _encode(msg.get("id"))
        if key in self._pending:
            raise ValueError(f"a request with id {msg.get('id')!r} is already in flight on this session")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            await self.send(msg)
            return await fut
        finally:
            self._pending.pop(key, None)

    async def close(self) -> None:
        """Close stdin, wait, SIGTERM the group, wait, SIGKILL the group (basic/lifecycle shutdown)."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(Exception):
                process.stdin.close()
        for sig, grace in ((None, STDIN_GRACE), (signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, 5.0)):
            if sig is not None:
                signal_group(process.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exited.wait(), timeout=grace)
                break
        # Grandchildren that outlived the program are in its group: none survives it.
        signal_group(process.pid, signal.SIGKILL)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


class Session:
    """One client session and its process."""

    def __init__(self, sid: str, child: Child, kind: str) -> None:
        self.id = sid
        self.child = child
        self.kind = kind  # "mcp" (Streamable HTTP) or "sse" (2024-11-05)
        self.last_used = time.monotonic()
        self.streaming = False


def _strip_roots(msg: Any) -> None:
    """Remove ``roots`` from an initialize request's client capabilities (see the module docstring)."""
    if isinstance(msg, dict) and msg.get("method") == "initialize":
        params = msg.get("params")
        caps = params.get("capabilities") if isinstance(params, dict) else None
        if isinstance(caps, dict):
            caps.pop("roots", None)


def _is_request(msg: Any) -> bool:
    return isinstance(msg, dict) and isinstance(msg.get("method"), str) and "id" in msg


class Bridge:
    """The ASGI application: sessions, the shared stateless process, and the HTTP routes."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        max_sessions: int,
        idle_timeout: float,
        allow_roots: bool = False,
        new_child: Callable[[bool], Child] | None = None,
    ) -> None:
        self.command = list(command)
        # How a server process is started: here, or (Kubernetes) in the server's container (gateway/stdio/pod.py).
        self._new_child = new_child or (lambda route_responses: Child(self.command, route_responses=route_responses))
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.allow_roots = allow_roots
        self.sessions: dict[str, Session] = {}
        self._shared: Child | None = None
        self._shared_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._reaper: asyncio.Task[None] | None = None
        self.ready = False
        self.failure = ""

    async def warm_up(self) -> bool:
        """Start the program once and wait for its answer to ``ping`` (installs a package on first use).

        ``/healthz`` answers 503 until this succeeds, so a replica is ready only when its program
        runs: a broken command or package shows as a replica that is not ready (the reason in its
        log), not as a ready replica whose sessions all fail. Measured 2026-11-30: ``ping`` before
        ``initialize`` is answered by mcp-server-time 2026.10.19 and server-filesystem 2026.8.31.
        """
        child = self._new_child(True)
        try:
            await child.start()
            await child.request({"jsonrpc": "2.0", "id": 0, "method": "ping"})
        except ChildGone as exc:
            self.failure = str(exc)
            log.error("the stdio server did not answer ping: %s", self.failure)
            return False
        finally:
            # A throwaway process: the first message fixes a connection's protocol era (mcp 2.3 refuses
            # 2026-07-28 requests on a connection that began with ping), so no client gets this one.
            await child.close()
        self.ready = True
        log.info("stdio server answered ping; ready")
        return True

    # --- sessions ------------------------------------------------------------------------

    async def _open(self, kind: str) -> Session:
        if len(self.sessions) >= self.max_sessions:
            raise _HTTPError(
                503,
                -32002,
                f"this replica runs its maximum of {self.max_sessions} stdio sessions; retry later",
                {"retry-after": RETRY_AFTER},
            )
        child = self._new_child(kind == "mcp")
        sid = secrets.token_urlsafe(24)
        session = Session(sid, child, kind)
        self.sessions[sid] = session  # counted while it starts
        try:
            await child.start()
        except ChildGone as exc:
            self.sessions.pop(sid, None)
            raise _HTTPError(502, -32603, str(exc)) from None
        asyncio.get_running_loop().create_task(self._forget_when_exited(session))
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap())
        return session

    async def _forget_when_exited(self, session: Session) -> None:
        await session.child.exited.wait()
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        await session.child.close()

    async def close_session(self, session: Session) -> None:
        """End a session and its process."""
        self.sessions.pop(session.id, None)
        await session.child.close()

    async def _reap(self) -> None:
        period = max(0.2, min(self.idle_timeout / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                idle = now - session.last_used > self.idle_timeout
                if session.kind == "mcp" and idle and not session.streaming and not session.child.busy:
                    log.info(
                        "stdio session idle for %.0fs; ending its process %s", self.idle_timeout, session.child.label
                    )
                    asyncio.get_running_loop().create_task(self.close_session(session))

    async def close(self) -> None:
        """End every process (the bridge is stopping)."""
        if self._reaper is not None:
            self._reaper.cancel()
        children = [s.child for s in self.sessions.values()]
        if self._shared is not None:
            children.append(self._shared)
        self.sessions.clear()
        await asyncio.gather(*(c.close() for c in children), return_exceptions=True)

    async def _shared_child(self) -> Child:
        async with self._shared_lock:
            if self._shared is None or self._shared.exited.is_set():
                child = self._new_child(True)
                try:
                    await child.start()
                except ChildGone as exc:
                    raise _HTTPError(502, -32603, str(exc)) from None
                self._shared = child
            return self._shared

    # --- HTTP ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        try:
            if path == "/mcp" and method == "POST":
                await self._post_mcp(scope, receive, send)
            elif path == "/mcp" and method == "GET":
                await self._get_mcp(scope, receive, send)
            elif path == "/mcp" and method == "DELETE":
                await self._delete_mcp(scope, send)
            elif path == "/sse" and method == "GET":
                await self._get_sse(scope, receive, send)
            elif path == "/messages" and method == "POST":
                await self._post_messages(scope, receive, send)
            elif path == "/healthz" and method == "GET":
                if not self.ready:
                    raise _HTTPError(503, -32002, self.failure or "the stdio server is starting")
                await _respond(send, 200, b'{"status":"ok"}')
            elif path in ("/mcp", "/sse", "/messages"):
                raise _HTTPError(405, -32000, f"method {method} not allowed on {path}")
            else:
                raise _HTTPError(404, -32000, f"no route {path}")
        except _HTTPError as exc:
            await _respond(send, exc.status, _error_body(exc.code, exc.message, exc.id), exc.headers)

    def _session(self, scope: Scope, kind: str, sid: str | None) -> Session:
        session = self.sessions.get(sid or "")
        if session is None or session.kind != kind or session.child.exited.is_set():
            raise _HTTPError(404, -32001, "session not found (it ended or never existed); initialize again")
        session.last_used = time.monotonic()
        return session

    async def _post_mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        msg = await _read_json(receive)
        sid = _header(scope, b"mcp-session-id")
        if isinstance(msg, list):
            raise _HTTPError(400, -32600, "JSON-RPC batches are not supported by the stdio bridge")
        if not isinstance(msg, dict):
            raise _HTTPError(400, -32600, "the body must be a JSON-RPC message object")
        try:
            await self._post_message(scope, send, msg, sid)
        except _HTTPError as exc:
            if exc.id is None:  # the session is gone, the cap is reached ...: still an answer to this id
                exc.id = msg.get("id")
            raise

    async def _post_message(self, scope: Scope, send: Send, msg: dict[str, Any], sid: str | None) -> None:
        msg_id = msg.get("id")
        if sid is None and msg.get("method") == "initialize":
            if not self.allow_roots:
                _strip_roots(msg)
            session = await self._open("mcp")
            try:
                answer = await session.child.request(msg)
            except ChildGone as exc:
                await self.close_session(session)
                raise _HTTPError(502, -32603, str(exc), id=msg_id) from None
            session.last_used = time.monotonic()  # idle from the answer on, not from the (slow) start
            await _respond(send, 200, _encode(answer), {"mcp-session-id": session.id})
            return
        if sid is None:
            await self._stateless(msg, send)
            return
        session = self._session(scope, "mcp", sid)
        if not self.allow_roots:
            _strip_roots(msg)
        try:
            if not _is_request(msg):
                await session.child.send(msg)
                await _respond(send, 202, b"")
                return
            answer = await session.child.request(msg)
        except ChildGone as exc:
            raise _HTTPError(502, -32603, str(exc), id=msg_id) from None
        except ValueError as exc:
            raise _HTTPError(400, -32600, str(exc), id=msg_id) from None
        session.last_used = time.monotonic()
        await _respond(send, 200, _encode(answer))

    async def _stateless(self, msg: dict[str, Any], send: Send) -> None:
        child = await self._shared_child()
        try:
            if not _is_request(msg):
                await child.send(msg)
                await _respond(send, 202, b"")
                return
            original = msg["id"]
            answer = await child.request({**msg, "id": next(self._ids)})
        except ChildGone as exc:
            raise _HTTPError(502, -32603, str(exc), id=msg.get("id")) from None
        answer["id"] = original
        await _respond(send, 200, _encode(answer))

    async def _get_mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        sid = _header(scope, b"mcp-session-id")
        if sid is None:
            raise _HTTPError(400, -32000, "Bad Request: GET /mcp needs an Mcp-Session-Id header")
        session = self._session(scope, "mcp", sid)
        if session.streaming:
            raise _HTTPError(409, -32000, "this session already has an open GET stream")
        session.streaming = True
        try:
            await _stream(session.child.outbound, receive, send, first=b"")
        finally:
            session.streaming = False
            session.last_used = time.monotonic()

    async def _delete_mcp(self, scope: Scope, send: Send) -> None:
        session = self._session(scope, "mcp", _header(scope, b"mcp-session-id"))
        await self.close_session(session)
        await _respond(send, 200, b"")

    async def _get_sse(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = await self._open("sse")
        first = f"event: endpoint\r\ndata: /messages?session_id={session.id}\r\n\r\n".encode()
        try:
            await _stream(session.child.outbound, receive, send, first=first)
        finally:
            await self.close_session(session)

    async def _post_messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session = self._session(scope, "sse", (query.get("session_id") or [""])[0])
        msg = await _read_json(receive)
        if not self.allow_roots:
            _strip_roots(msg)
        try:
            await session.child.send(msg)
        except ChildGone as exc:
            raise _HTTPError(502, -32603, str(exc)) from None
        await _respond(send, 202, b"Accepted", content_type=b"text/plain")


class _HTTPError(Exception):
    def __init__(
        self, status: int, code: int, message: str, headers: dict[str, str] | None = None, *, id: Any = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.id = status, code, message, headers or {}, id


def _error_body(code: int, message: str, msg_id: Any = None) -> bytes:
    return _encode({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _read_json(receive: Receive) -> Any:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _HTTPError(400, -32700, "the client went away")
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            raise _HTTPError(413, -32600, f"the body is larger than {MAX_BODY} bytes")
        if not message.get("more_body"):
            break
    try:
        return _decode(bytes(body))
    except msgspec.DecodeError:
        raise _HTTPError(400, -32700, "Parse error: the body is not JSON") from None


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    content_type: bytes = b"application/json",
) -> None:
    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if body:
        raw.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _stream(queue: asyncio.Queue[bytes | None], receive: Receive, send: Send, *, first: bytes) -> None:
    """An SSE response of the messages in ``queue`` until the child exits or the client disconnects."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    await send({"type": "http.response.body", "body": first, "more_body": True})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    gone = asyncio.ensure_future(disconnected())
    try:
        while True:
            got = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({got, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                got.cancel()
                return
            item = got.result()
            if item is None:
                break
            await send(
                {
                    "type": "http.response.body",
                    "body": b"event: message\r\ndata: " + item + b"\r\n\r\n",
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b""})
    finally:
        gone.cancel()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``--port N [--max-sessions M] [--idle-timeout S] [--allow-roots] -- program args...``."""
    parser = argparse.ArgumentParser(prog="python -m gateway.stdio.bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-sessions", type=int, default=32, help="processes (sessions) per replica")
    parser.add_argument("--idle-timeout", type=float, default=600.0, help="seconds before an idle session ends")
    parser.add_argument("--allow-roots", action="store_true", help="pass the client's roots capability through")
    parser.add_argument("--cwd", default=None, help="working directory of the stdio server")
    parser.add_argument(
        "--no-warm-up", dest="warm_up", action="store_false", help="ready at once (do not ping the server first)"
    )
    parser.add_argument(
        "--fifo-dir",
        default=None,
        help="Kubernetes: start the server in the pod's server container through the spawner in this "
        "directory (gateway/stdio/pod.py) instead of running the command here",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command and not args.fifo_dir:
        parser.error("name the stdio server's command after --")
    return args


async def serve(args: argparse.Namespace) -> None:
    """Run the bridge until SIGTERM/SIGINT, then end every child."""
    import uvicorn

    new_child: Callable[[bool], Child] | None = None
    spawner = None
    if args.fifo_dir:
        from gateway.stdio.pod import FifoChild, FifoSpawner  # imports this module

        spawner = FifoSpawner(Path(args.fifo_dir))

        def new_child(route_responses: bool) -> Child:
            assert spawner is not None
            return FifoChild(spawner, route_responses=route_responses)

    bridge = Bridge(
        args.command,
        max_sessions=args.max_sessions,
        idle_timeout=args.idle_timeout,
        allow_roots=args.allow_roots,
        new_child=new_child,
    )
    config = uvicorn.Config(
        bridge,
        host=args.host,
        port=args.port,
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    if args.cwd:
        try:
            os.chdir(args.cwd)  # the children inherit it; the bridge has imported what it needs
        except OSError as exc:
            log.warning(
                "cannot enter the server's working directory %s (%s); staying in %s", args.cwd, exc, os.getcwd()
            )
    failed = False

    async def warm_up() -> None:
        nonlocal failed
        if not await bridge.warm_up():
            failed = True
            server.should_exit = True

    if args.warm_up:
        warming = asyncio.create_task(warm_up())
    else:
        bridge.ready = True
    try:
        await server.serve()
    finally:
        if args.warm_up:
            warming.cancel()
        await bridge.close()
        if spawner is not None:
            spawner.close()
    if failed:
        raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m gateway.stdio.bridge``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bridge[" + str(os.getpid()) + "] %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
