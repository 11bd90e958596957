"""Conformance fixture server: the tools, resources and prompts the official MCP conformance
suite (``@modelcontextprotocol/conformance``) exercises, built on the ``mcp`` SDK 2.x.

It passes every scored scenario of ``--requirements 2025-11-25`` (session era: ``initialize`` +
``Mcp-Session-Id``, server-to-client requests mid-call) and ``--requirements 2026-07-28``
(stateless per-request ``_meta``, ``InputRequiredResult`` round trips, ``subscriptions/listen``),
served from one Streamable HTTP endpoint at ``/mcp``. The gateway's tests run the suite against
it directly and through ``/adapters/<name>/mcp`` and compare the checks.

Settings (command line wins over the environment):

* ``--host`` / ``HOST`` (default ``127.0.0.1``), ``--port`` / ``PORT`` (default 3001);
* ``MCP_DNS_REBINDING_PROTECTION`` (default ``1``): check ``Host``/``Origin`` against the loopback
  names and ``HOST``. Set ``0`` behind the gateway, which rewrites ``Host`` and does the check itself;
* ``MCP_ALLOWED_HOSTS``: extra comma-separated ``Host`` values accepted when the check is on;
* ``MCP_REQUEST_STATE_KEYS``: comma-separated secrets (at least 32 bytes each; the first seals,
  all unseal) protecting the ``requestState`` of input-required round trips. Replicas behind one
  adapter must share them, because a retry may land on another replica. Unset: a per-process key;
* ``MCP_SUBSCRIPTION_REDIS_URL``: fan ``subscriptions/listen`` events (tools/prompts list changed)
  out across replicas over Redis pub/sub (channel ``MCP_SUBSCRIPTION_CHANNEL``). Unset: in-process,
  so a listen stream only hears changes made on its own replica;
* ``MCP_REPLICA_ID``: reported by the ``whoami`` tool (default ``hostname:port``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import io
import json
import logging
import os
import socket
import struct
import warnings
import wave
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Audio, Context, Elicit, Image, MCPServer, RequestStateSecurity, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    SubscriptionBus,
    ToolsListChanged,
)
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field, JsonValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

SERVER_NAME = "mcp-gateway-conformance-fixture"
log = logging.getLogger("conformance_fixture")

# Logging, sampling and roots are deprecated in the 2026 spec (SEP-2577) but the 2025-11-25
# scenarios still exercise them; the SDK's deprecation warnings would only be noise here.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class FixtureSettings:
    """How the fixture serves: address, Host/Origin checking and the request-state keys."""

    host: str = "127.0.0.1"
    port: int = 3001
    dns_rebinding_protection: bool = True
    extra_allowed_hosts: tuple[str, ...] = ()
    request_state_keys: tuple[str, ...] = ()
    replica_id: str = ""
    subscription_redis_url: str = ""
    subscription_channel: str = "mcp-conformance-fixture:events"
    # Milliseconds a client waits before reconnecting a closed SSE stream (SEP-1699 polling).
    sse_retry_ms: int = 100

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FixtureSettings:
        """Read the settings from environment variables (see the module docstring)."""
        env = dict(os.environ if environ is None else environ)
        port = int(env.get("PORT", "3001"))
        return cls(
            host=env.get("HOST", "127.0.0.1"),
            port=port,
            dns_rebinding_protection=env.get("MCP_DNS_REBINDING_PROTECTION", "1").strip().lower()
            not in {"0", "false", "no", "off"},
            extra_allowed_hosts=_split(env.get("MCP_ALLOWED_HOSTS", "")),
            request_state_keys=_split(env.get("MCP_REQUEST_STATE_KEYS", "")),
            replica_id=env.get("MCP_REPLICA_ID") or f"{socket.gethostname()}:{port}",
            subscription_redis_url=env.get("MCP_SUBSCRIPTION_REDIS_URL", ""),
            subscription_channel=env.get("MCP_SUBSCRIPTION_CHANNEL") or cls.subscription_channel,
        )


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def transport_security(settings: FixtureSettings) -> TransportSecuritySettings:
    """DNS-rebinding protection: loopback names and the bind host, on any port."""
    if not settings.dns_rebinding_protection:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = {"127.0.0.1", "localhost", "[::1]"}
    if settings.host not in {"0.0.0.0", "::", ""}:
        names.add(f"[{settings.host}]" if ":" in settings.host else settings.host)
    hosts = [f"{name}:*" for name in sorted(names)] + sorted(names) + list(settings.extra_allowed_hosts)
    origins = [f"{scheme}://{name}:*" for name in sorted(names) for scheme in ("http", "https")]
    origins += [f"{scheme}://{name}" for name in sorted(names) for scheme in ("http", "https")]
    return TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins)


# --------------------------------------------------------------------------------------------
# Media fixtures, generated rather than embedded: a 1x1 PNG and a two-sample WAV.


def _png_1x1() -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1, 8-bit RGBA
    pixels = zlib.compress(b"\x00" + bytes((0x2A, 0x7F, 0xD4, 0xFF)))  # filter byte + one pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _wav_silence() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00\x00\x00")
    return buffer.getvalue()


PNG_BYTES = _png_1x1()
WAV_BYTES = _wav_silence()


# --------------------------------------------------------------------------------------------
# Event store: lets a client resume an SSE stream with Last-Event-ID (SEP-1699 polling).


class BoundedEventStore(EventStore):
    """Keeps the last ``capacity`` events of every stream in memory, for replay after a reconnect.

    Event ids are ``<stream>/<sequence>`` so a resume finds its stream without a scan.
    """

    def __init__(self, capacity: int = 256, max_streams: int = 1024) -> None:
        self._capacity = capacity
        self._max_streams = max_streams
        self._streams: collections.OrderedDict[str, collections.deque[tuple[int, JSONRPCMessage | None]]] = (
            collections.OrderedDict()
        )
        self._sequence = 0

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        """Record one event (``None`` is a priming event) and return its id."""
        self._sequence += 1
        events = self._streams.get(stream_id)
        if events is None:
            events = self._streams[stream_id] = collections.deque(maxlen=self._capacity)
            while len(self._streams) > self._max_streams:
                self._streams.popitem(last=False)
        events.append((self._sequence, message))
        return f"{stream_id}/{self._sequence}"

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        """Send every stored event of the stream after ``last_event_id``; None when it is unknown."""
        stream_id, _, sequence_text = last_event_id.rpartition("/")
        events = self._streams.get(stream_id)
        if events is None or not sequence_text.isdigit():
            return None
        after = int(sequence_text)
        for sequence, message in list(events):
            if sequence > after and message is not None:
                await send_callback(EventMessage(message, f"{stream_id}/{sequence}"))
        return stream_id


# --------------------------------------------------------------------------------------------
# Cross-replica subscriptions/listen fan-out


def _event_to_json(event: ServerEvent) -> str:
    if isinstance(event, ResourceUpdated):
        return json.dumps({"kind": "resource-updated", "uri": event.uri})
    return json.dumps({"kind": type(event).__name__})


def _event_from_json(payload: str | bytes) -> ServerEvent | None:
    data = json.loads(payload)
    kind = data.get("kind")
    if kind == "resource-updated":
        return ResourceUpdated(uri=str(data.get("uri", "")))
    simple: dict[str, ServerEvent] = {
        "ToolsListChanged": ToolsListChanged(),
        "PromptsListChanged": PromptsListChanged(),
        "ResourcesListChanged": ResourcesListChanged(),
    }
    return simple.get(str(kind))


class RedisSubscriptionBus:
    """A ``SubscriptionBus`` over Redis pub/sub: a change on any replica reaches every listen stream.

    ``publish`` only sends to Redis; every replica (the publisher too) delivers what comes back on
    the channel to its local listeners, so each event is delivered exactly once per stream.
    """

    def __init__(self, url: str, channel: str) -> None:
        import redis.asyncio  # only needed when configured

        self._redis = redis.asyncio.Redis.from_url(url)
        self._channel = channel
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}

    async def publish(self, event: ServerEvent) -> None:
        """Send ``event`` to every replica on the channel."""
        await self._redis.publish(self._channel, _event_to_json(event))

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register a local listener; returns its idempotent unsubscribe."""
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Relay the channel to local listeners while the server runs."""
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self._channel)
        relay = asyncio.create_task(self._relay(pubsub))
        try:
            yield
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await self._redis.aclose()

    def _deliver(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # one bad listener must not starve the others
                log.exception("subscription listener raised")

    async def _relay(self, pubsub: Any) -> None:
        while True:
            try:
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    event = _event_from_json(message["data"])
                    if event is not None:
                        self._deliver(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: keep trying, listen streams stay open
                log.warning("subscription relay lost Redis (%s); retrying in 1s", exc)
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await pubsub.subscribe(self._channel)


# --------------------------------------------------------------------------------------------
# Elicitation schemas (2025 era: the server sends elicitation/create mid-call)


class FreeTextAnswer(BaseModel):
    response: str = Field(description="The user's answer")


class ProfileWithDefaults(BaseModel):
    """Every primitive type with a default value (SEP-1034)."""

    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(
        default="active",
        description="User status",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    verified: bool = Field(default=True, description="Verification status")


def _titled(options: Sequence[tuple[str, str]]) -> list[JsonValue]:
    return [{"const": value, "title": title} for value, title in options]


class EnumVariants(BaseModel):
    """The five enum shapes of SEP-1330."""

    untitledSingle: str = Field(
        description="Single choice, plain enum",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    titledSingle: str = Field(
        description="Single choice with titles (oneOf)",
        json_schema_extra={
            "oneOf": _titled([("low", "Low Priority"), ("medium", "Medium Priority"), ("high", "High Priority")])
        },
    )
    untitledMulti: list[str] = Field(
        description="Multiple choice, plain enum items",
        json_schema_extra={"items": {"type": "string", "enum": ["read", "write", "execute"]}},
    )
    titledMulti: list[str] = Field(
        description="Multiple choice with titles (anyOf items)",
        json_schema_extra={
            "items": {"anyOf": _titled([("feature", "New Feature"), ("bug", "Bug Fix"), ("docs", "Documentation")])}
        },
    )
    legacyEnum: str = Field(
        description="Single choice with enumNames (deprecated form)",
        json_schema_extra={
            "enum": ["small", "medium", "large"],
            "enumNames": ["Small Size", "Medium Size", "Large Size"],
        },
    )


class StreamingAnswer(BaseModel):
    answer: str = Field(description="Anything")


def ask_anything() -> Elicit[StreamingAnswer]:
    """Resolver for ``test_streaming_elicitation`` (module level: annotations resolve by name)."""
    return Elicit("Say anything", StreamingAnswer)


# --------------------------------------------------------------------------------------------
# Input-required (2026 era: SEP-2322 round trips) helpers


def _object_schema(**properties: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in properties.items()},
        "required": list(properties),
    }


def _ask(message: str, **properties: str) -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=_object_schema(**properties)))


def _sample(text: str, max_tokens: int) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=text))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


def _accepted_field(answer: object, name: str) -> Any:
    """The named field of an accepted elicitation answer, or None."""
    if isinstance(answer, ElicitResult) and answer.action == "accept" and answer.content:
        return answer.content.get(name)
    return None


def _answers(ctx: Context) -> dict[str, Any]:
    return dict(ctx.input_responses or {})


# --------------------------------------------------------------------------------------------
# The server


def _describe_outcome(label: str, action: str, data: BaseModel | None) -> str:
    content = data.model_dump_json() if data is not None else "{}"
    return f"{label}: action={action}, content={content}"


async def _emit_three_logs(ctx: Context) -> None:
    for step, text in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
        if step:
            await asyncio.sleep(0.05)
        await ctx.info(text)


def build_server(settings: FixtureSettings, subscriptions: SubscriptionBus | None = None) -> MCPServer:
    """The fixture ``MCPServer`` with every tool, resource, prompt and handler the suite calls."""
    keys = list(settings.request_state_keys)
    server = MCPServer(
        SERVER_NAME,
        version="1.0.0",
        instructions="Fixture server for the MCP conformance suite.",
        log_level="WARNING",
        tools=[_json_schema_2020_12_tool()],
        request_state_security=RequestStateSecurity(keys=keys) if keys else None,
        subscriptions=subscriptions,
        cache_hints={
            "tools/list": CacheHint(ttl_ms=5_000, scope="public"),
            "prompts/list": CacheHint(ttl_ms=5_000, scope="public"),
            "resources/list": CacheHint(ttl_ms=5_000, scope="public"),
            "resources/templates/list": CacheHint(ttl_ms=5_000, scope="public"),
            "resources/read": CacheHint(ttl_ms=0, scope="private"),
        },
    )
    _register_content_tools(server)
    _register_interactive_tools(server)
    _register_input_required_tools(server)
    _register_diagnostic_tools(server, settings)
    _register_resources(server)
    _register_prompts(server)
    _register_protocol_handlers(server)
    return server


def _register_content_tools(server: MCPServer) -> None:
    """One tool per content type a ``CallToolResult`` can carry, plus an error."""

    @server.tool(description="Returns one text block.")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @server.tool(description="Returns one PNG image block.")
    def test_image_content() -> Image:
        return Image(data=PNG_BYTES, format="png")

    @server.tool(description="Returns one WAV audio block.")
    def test_audio_content() -> Audio:
        return Audio(data=WAV_BYTES, format="wav")

    @server.tool(description="Returns one embedded text resource.")
    def test_embedded_resource() -> EmbeddedResource:
        contents = TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return EmbeddedResource(type="resource", resource=contents)

    @server.tool(description="Returns text, an image and an embedded resource together.")
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        payload = json.dumps({"test": "data", "value": 123})
        return [
            TextContent(type="text", text="Multiple content types test:"),
            Image(data=PNG_BYTES, format="png").to_image_content(),
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri="test://mixed-content-resource", mime_type="application/json", text=payload
                ),
            ),
        ]

    @server.tool(description="Always fails; the failure comes back as a result with isError.")
    def test_error_handling() -> str:
        raise ToolError("This tool intentionally returns an error for testing")


def _register_interactive_tools(server: MCPServer) -> None:
    """Tools that talk back to the client while they run: logs, progress, sampling, elicitation."""

    @server.tool(description="Sends three info log notifications about 50 ms apart.")
    async def test_tool_with_logging(ctx: Context) -> str:
        await _emit_three_logs(ctx)
        return "Tool with logging executed successfully"

    @server.tool(description="Logs three messages; on the 2026 wire only when the request asked for a log level.")
    async def test_logging_tool(ctx: Context) -> str:
        await _emit_three_logs(ctx)
        return "Logging tool done"

    @server.tool(description="Reports progress 0, 50 and 100 of 100.")
    async def test_tool_with_progress(ctx: Context) -> str:
        for done in (0, 50, 100):
            await ctx.report_progress(progress=done, total=100, message=f"{done} of 100")
            if done < 100:
                await asyncio.sleep(0.05)
        meta = ctx.request_context.meta if ctx.request_context else None
        return str((meta or {}).get("progress_token", "no progress token"))

    @server.tool(description="Asks the client's model to answer the prompt (sampling/createMessage).")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        try:
            reply = await ctx.session.create_message(
                messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
                max_tokens=100,
                # Tie the request to this call's stream: the standalone GET stream may not be open.
                related_request_id=ctx.request_id,
            )
        except Exception as exc:  # the client may lack the capability; report it as text
            return f"Sampling failed: {exc}"
        text = reply.content.text if reply.content.type == "text" else f"<{reply.content.type}>"
        return f"LLM response: {text}"

    @server.tool(description="Asks the user the given question (elicitation/create).")
    async def test_elicitation(message: str, ctx: Context) -> str:
        try:
            outcome = await ctx.elicit(message=message, schema=FreeTextAnswer)
        except Exception as exc:
            return f"Elicitation failed: {exc}"
        return _describe_outcome("User response", outcome.action, getattr(outcome, "data", None))

    @server.tool(description="Elicits a form whose fields all carry defaults (SEP-1034).")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        try:
            outcome = await ctx.elicit(message="Please provide user information", schema=ProfileWithDefaults)
        except Exception as exc:
            return f"Elicitation failed: {exc}"
        return _describe_outcome("Elicitation result", outcome.action, getattr(outcome, "data", None))

    @server.tool(description="Elicits a form with every enum variant (SEP-1330).")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        try:
            outcome = await ctx.elicit(message="Please pick values for each enum style", schema=EnumVariants)
        except Exception as exc:
            return f"Elicitation failed: {exc}"
        return _describe_outcome("Elicitation completed", outcome.action, getattr(outcome, "data", None))

    @server.tool(description="Needs one elicited answer; the SDK picks mid-call request or input-required by era.")
    async def test_streaming_elicitation(answer: Annotated[StreamingAnswer, Resolve(ask_anything)]) -> str:
        return f"Got: {answer.answer}"

    @server.tool(description="Closes its SSE stream mid-call; the client resumes with Last-Event-ID.")
    async def test_reconnection(ctx: Context) -> str:
        await ctx.info("Before disconnect")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        await ctx.info("After reconnect")
        return "Reconnection test completed"


def _register_input_required_tools(server: MCPServer) -> None:
    """SEP-2322 tools: return ``InputRequiredResult`` and finish when the client retries with answers."""

    @server.tool(description="Asks for a name, then greets.")
    async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
        answers = _answers(ctx)
        if "user_name" in answers:
            return f"Hello, {_accepted_field(answers['user_name'], 'name') or 'stranger'}!"
        return InputRequiredResult(input_requests={"user_name": _ask("What is your name?", name="string")})

    @server.tool(description="Asks the client's model a question, then reports its answer.")
    async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
        answer = _answers(ctx).get("capital_question")
        if isinstance(answer, CreateMessageResult):
            text = answer.content.text if answer.content.type == "text" else f"<{answer.content.type}>"
            return f"Model said: {text}"
        return InputRequiredResult(
            input_requests={"capital_question": _sample("What is the capital of France?", max_tokens=100)}
        )

    @server.tool(description="Asks for the client's roots, then counts them.")
    async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
        answer = _answers(ctx).get("client_roots")
        if isinstance(answer, ListRootsResult):
            return f"Client exposed {len(answer.roots)} root(s): " + ", ".join(str(r.uri) for r in answer.roots)
        return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})

    @server.tool(description="Round-trips an opaque requestState and checks it on the retry.")
    async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
        if "confirm" in _answers(ctx) and ctx.request_state == "awaiting-confirmation":
            return "state-ok: confirmation received with the expected requestState"
        return InputRequiredResult(
            input_requests={"confirm": _ask("Please confirm", ok="boolean")},
            request_state="awaiting-confirmation",
        )

    @server.tool(description="Asks for an elicitation, a sampling and the roots in one round.")
    async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
        wanted = {"user_name", "greeting", "client_roots"}
        if wanted <= _answers(ctx).keys():
            return "Received all three inputs."
        return InputRequiredResult(
            input_requests={
                "user_name": _ask("What is your name?", name="string"),
                "greeting": _sample("Generate a greeting", max_tokens=50),
                "client_roots": ListRootsRequest(),
            },
            request_state="three-inputs",
        )

    @server.tool(description="Three rounds: a name, then a colour, then the answer; the state evolves.")
    async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
        state: dict[str, Any] = json.loads(ctx.request_state) if ctx.request_state else {}
        answers = _answers(ctx)
        if state.get("round") == 2 and "step2" in answers:
            return f"{state.get('name')} likes {_accepted_field(answers['step2'], 'color')}."
        if state.get("round") == 1 and "step1" in answers:
            return InputRequiredResult(
                input_requests={"step2": _ask("Step 2: What is your favorite color?", color="string")},
                request_state=json.dumps({"round": 2, "name": _accepted_field(answers["step1"], "name")}),
            )
        # First call, or a retry that does not match the state: start over.
        return InputRequiredResult(
            input_requests={"step1": _ask("Step 1: What is your name?", name="string")},
            request_state=json.dumps({"round": 1}),
        )

    @server.tool(description="Issues a requestState; the SDK rejects a modified one before this runs.")
    async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
        if ctx.request_state is not None:
            return f"state-ok: {ctx.request_state}"
        return InputRequiredResult(
            input_requests={"confirm": _ask("Please confirm", ok="boolean")}, request_state="round-1"
        )

    @server.tool(description="Asks only for inputs whose capability the client declared.")
    async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult:
        caps = ctx.client_capabilities
        requests: dict[str, InputRequest] = {}
        if caps is None or caps.sampling is not None:
            requests["sample"] = _sample("Say hello", max_tokens=50)
        if caps is None or caps.elicitation is not None:
            requests["ask"] = _ask("What is your name?", name="string")
        if caps is None or caps.roots is not None:
            requests["roots"] = ListRootsRequest()
        return InputRequiredResult(input_requests=requests, request_state="capability-gated")


def _register_diagnostic_tools(server: MCPServer, settings: FixtureSettings) -> None:
    """Tools the 2026 stateless and header scenarios probe, and ``whoami`` for routing tests."""

    @server.tool(description="Fails with MissingRequiredClientCapability unless the client declared sampling.")
    async def test_missing_capability(ctx: Context) -> str:
        caps = ctx.client_capabilities
        if caps is None or caps.sampling is None:
            raise MCPError(
                code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="test_missing_capability needs the client capability 'sampling'",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return "sampling declared"

    def dynamic_entry() -> str:
        return "dynamic"

    @server.tool(description="Adds and removes a tool, then announces tools/list_changed.")
    async def test_trigger_tool_change(ctx: Context) -> str:
        server.add_tool(dynamic_entry, name="test_dynamic_tool")
        server.remove_tool("test_dynamic_tool")
        await ctx.notify_tools_changed()
        return "tools changed"

    @server.tool(description="Adds and removes a prompt, then announces prompts/list_changed.")
    async def test_trigger_prompt_change(ctx: Context) -> str:
        server.prompt(name="test_dynamic_prompt", description="dynamic")(dynamic_entry)
        server.remove_prompt("test_dynamic_prompt")
        await ctx.notify_prompts_changed()
        return "prompts changed"

    @server.tool(description="Echoes its region argument, which clients mirror into Mcp-Param-Region.")
    def test_x_mcp_header(
        region: Annotated[
            str, Field(description="Sent as Mcp-Param-Region", json_schema_extra={"x-mcp-header": "Region"})
        ] = "<none>",
    ) -> str:
        return f"region={region}"

    @server.tool(description="Names the replica that answered (MCP_REPLICA_ID).")
    def whoami() -> str:
        return settings.replica_id


def _json_schema_2020_12_tool() -> Tool:
    """A tool whose inputSchema uses 2020-12 keywords ($defs, $ref, if/then/else, allOf)."""

    def json_schema_2020_12_tool() -> str:
        return "json_schema_2020_12_tool"

    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
            }
        },
        "properties": {
            "name": {"type": "string"},
            "address": {"$ref": "#/$defs/address"},
            "contactMethod": {"type": "string", "enum": ["phone", "email"]},
            "phone": {"type": "string"},
            "email": {"type": "string"},
        },
        "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
        "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
        "then": {"required": ["phone"]},
        "else": {"required": ["email"]},
        "additionalProperties": False,
    }
    tool = Tool.from_function(json_schema_2020_12_tool, description="Lists a JSON Schema 2020-12 inputSchema.")
    return tool.model_copy(update={"parameters": schema})


def _register_resources(server: MCPServer) -> None:
    @server.resource("test://static-text", mime_type="text/plain", description="Fixed text.")
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png", description="A 1x1 PNG.")
    def static_binary() -> bytes:
        return PNG_BYTES

    @server.resource("test://template/{id}/data", mime_type="application/json", description="JSON for any id.")
    def templated(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":"))

    @server.resource("test://watched-resource", mime_type="text/plain", description="A resource to subscribe to.")
    def watched() -> str:
        return "Watched resource content"


def _register_prompts(server: MCPServer) -> None:
    @server.prompt(description="A prompt without arguments.")
    def test_simple_prompt() -> list[Message]:
        return [UserMessage("This is a simple prompt for testing.")]

    @server.prompt(description="A prompt with two required arguments.")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[Message]:
        return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt(description="A prompt embedding the resource named by resourceUri.")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:
        contents = TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(EmbeddedResource(type="resource", resource=contents)),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt(description="A prompt with an image.")
    def test_prompt_with_image() -> list[Message]:
        return [
            UserMessage(Image(data=PNG_BYTES, format="png").to_image_content()),
            UserMessage("Please analyze the image above."),
        ]

    @server.prompt(description="Needs elicited context before it can render (SEP-2322 on prompts/get).")
    async def test_input_required_result_prompt(ctx: Context) -> list[Message] | InputRequiredResult:
        answers = _answers(ctx)
        if "user_context" in answers:
            context = _accepted_field(answers["user_context"], "context") or "(none)"
            return [UserMessage(f"Use the following context: {context}")]
        return InputRequiredResult(
            input_requests={"user_context": _ask("What context should the prompt use?", context="string")}
        )


COMPLETION_WORDS = ("paris", "park", "party", "pascal", "test", "testing", "tested")


def _register_protocol_handlers(server: MCPServer) -> None:
    """Completion, logging level and resource subscriptions."""
    subscriptions: set[str] = set()

    @server.completion()  # type: ignore[untyped-decorator, no-untyped-call, unused-ignore]
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        values = [word for word in COMPLETION_WORDS if word.startswith(argument.value.lower())]
        return Completion(values=values, total=len(values), has_more=False)

    async def set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        log.info("client log level set to %s", params.level)
        return EmptyResult()

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        subscriptions.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscriptions.discard(str(params.uri))
        return EmptyResult()

    # MCPServer (2.3) has no public hook for these 2025-era methods; the low-level server does.
    # Registering them also advertises the logging and resources.subscribe capabilities.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


# --------------------------------------------------------------------------------------------
# HTTP app and entry point


def build_app(settings: FixtureSettings) -> Starlette:
    """Streamable HTTP at ``/mcp`` (both protocol eras) and ``/healthz``."""
    bus = (
        RedisSubscriptionBus(settings.subscription_redis_url, settings.subscription_channel)
        if settings.subscription_redis_url
        else None
    )
    server = build_server(settings, bus)
    streamable = server.streamable_http_app(
        streamable_http_path="/mcp",
        event_store=BoundedEventStore(),
        retry_interval=settings.sse_retry_ms,
        transport_security=transport_security(settings),
        host=settings.host,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if bus is not None:
                await stack.enter_async_context(bus.running())
            await stack.enter_async_context(server.session_manager.run())
            yield

    async def healthz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/healthz", healthz), *streamable.routes], lifespan=lifespan)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the fixture on HOST:PORT until interrupted."""
    defaults = FixtureSettings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    args = parser.parse_args(argv)
    settings = FixtureSettings(
        host=args.host,
        port=args.port,
        dns_rebinding_protection=defaults.dns_rebinding_protection,
        extra_allowed_hosts=defaults.extra_allowed_hosts,
        request_state_keys=defaults.request_state_keys,
        replica_id=os.environ.get("MCP_REPLICA_ID") or f"{socket.gethostname()}:{args.port}",
        subscription_redis_url=defaults.subscription_redis_url,
        subscription_channel=defaults.subscription_channel,
    )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # h11, not httptools: httptools keeps trailing whitespace in header values, and RFC 9110 §5.5
    # wants it trimmed before Mcp-Name is compared with the body (SEP-2243 header validation).
    uvicorn.run(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        http="h11",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
