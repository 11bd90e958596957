# ruff: noqa: B018  (a vulture whitelist is attribute accesses that do nothing by design)
"""Names vulture reports as unused in gateway/ and scripts/ that something outside our code uses.

Read by ``tests/unit/test_dead_code.py`` (never imported by the gateway). Each entry is a name another
program calls or reads: a framework hook, a field on the wire, a protocol method, an attribute a
library reads. Dead code does not belong here: remove it instead (issue 20). Vulture matches by
name, so one entry covers every definition of that name.
"""

from vulture.whitelist_utils import Whitelist  # type: ignore[import-untyped]  # vulture ships no types

_ = Whitelist()

# Litestar: route handlers are registered by decorator, controllers read these class attributes,
# and the OpenAPI post-processing sets schema attributes Litestar serializes.
_.tags
_.create_adapter
_.list_adapters
_.get_adapter
_.update_adapter
_.delete_adapter
_.adapter_logs
_.list_servers
_.get_server
_.update_server
_.delete_server
_.server_status
_.additional_properties
_.max_properties
_.max_length
_.max_items

# uvicorn: the server object's shutdown switches and the httptools protocol's counters and hooks.
_.timeout_graceful_shutdown
_.should_exit
_.total_requests
_.send_400_response

# httptools parser callbacks (called by name by the C parser) and asyncio.Protocol flow control.
_.on_url
_.on_header
_.pause_writing
_.resume_writing

# msgspec Structs: fields that exist for the wire (encoded to clients, or decoded and then checked).
_.next_cursor
_.last_transition_time
_.desired_replicas
_.ready_replicas
_.updated_replicas
_.available_replicas
_.present_members
_.missing_members
_.prompt
_.jsonrpc

# Context manager protocol: __aexit__'s traceback argument.
_.tb

# azure-identity / redis-py credential protocols, called by the SDKs (gateway/sessions/_entra.py).
_.is_expired
_.try_get
_.get_expires_at_ms
_.get_received_at_ms
_.get_credentials
_.get_credentials_async
_.on_next
_.on_error
_.is_streaming

# Attributes a library reads: redis-py, the Cosmos SDK's ConnectionPolicy, sqlite3, logging.
_.auto_close_connection_pool
_.RequestTimeout
_.isolation_level
_.logMultiprocessing
_.logProcesses
_.logThreads

# Read with getattr(metrics, f"{prefix}_latency") by gateway/telemetry/instrumented.py.
_.session_store_latency
_.session_store_errors
_.store_latency
_.runtime_latency

# gRPC servicer method of the OTLP collector stand-in in scripts/bench_telemetry.py.
_.Export
