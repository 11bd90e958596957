"""CosmosAdapterStore against a real Cosmos-protocol server: TLS, retries, outages, credentials.

The behaviour every store shares is pinned by tests/integration/test_store_contract.py (run for Cosmos too);
this file covers what only the Cosmos store does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from gateway.app import build_shared_credential
from gateway.azure_credentials import build_azure_credential
from gateway.errors import StoreUnavailable
from gateway.models import AdapterRecord
from gateway.settings import Settings
from gateway.store.cosmos import CosmosAdapterStore, CosmosClientFactory
from tests.fixtures.cosmos import (
    EMULATOR_KEY,
    CosmosEmulator,
    cosmos_emulator_running,
    cosmos_store,
    shared_cosmos_emulator,
    write_tls_files,
)

FAST = 1.5  # cosmos_timeout for tests that wait for the budget to run out


def record(name: str) -> AdapterRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return AdapterRecord(
        name=name, image_name="mcp-example", image_version="1.0.0", created_at=now, last_updated_at=now
    )


def assert_names_cosmos_without_secrets(exc: StoreUnavailable) -> None:
    assert exc.status == 503
    assert exc.dependency == "Cosmos DB"
    assert str(exc).startswith("Cosmos DB: ")
    assert EMULATOR_KEY not in str(exc)
    assert "Retry-After" in exc.headers


@pytest.fixture
def emulator() -> CosmosEmulator:
    return shared_cosmos_emulator()


@pytest.fixture
def own_emulator(tmp_path: Path) -> Iterator[CosmosEmulator]:
    """A server of this test's own, for tests that pause it."""
    with cosmos_emulator_running(tmp_path) as em:
        yield em


async def started(settings: Settings) -> CosmosAdapterStore:
    store = cosmos_store(settings)
    await store.start()
    return store


@pytest.fixture
async def store(emulator: CosmosEmulator) -> AsyncIterator[CosmosAdapterStore]:
    s = await started(emulator.settings())
    try:
        yield s
    finally:
        await s.close()


# --- storage shape -----------------------------------------------------------------------------


async def test_item_id_is_the_name_and_etag_is_the_items_etag(store: CosmosAdapterStore) -> None:
    created = await store.create(record("alpha"))
    container = await store._connected()
    item = await container.read_item("alpha", partition_key="alpha")
    assert item["id"] == "alpha"
    assert item["_etag"] == created.etag
    assert "name" not in item and "etag" not in item
    assert item["image_name"] == "mcp-example"


async def test_list_reads_more_than_one_page_of_the_sdk(store: CosmosAdapterStore) -> None:
    names = [f"a{i:03d}" for i in range(30)]
    for name in reversed(names):
        await store.create(record(name))
    got = await store.list(limit=25, after="a002")
    assert [r.name for r in got] == names[3:28]


# --- TLS -----------------------------------------------------------------------------------------


async def test_a_certificate_from_another_ca_is_refused(emulator: CosmosEmulator, tmp_path: Path) -> None:
    other = write_tls_files(tmp_path / "other")
    store = cosmos_store(emulator.settings(cosmos_ca_file=other.ca_file, cosmos_timeout=FAST))
    try:
        with pytest.raises(StoreUnavailable) as info:
            await store.start()
        assert_names_cosmos_without_secrets(info.value)
        assert "cannot connect" in info.value.detail
    finally:
        await store.close()


async def test_verification_can_be_switched_off(emulator: CosmosEmulator, tmp_path: Path) -> None:
    other = write_tls_files(tmp_path / "other")
    store = await started(emulator.settings(cosmos_ca_file=other.ca_file, cosmos_verify_tls=False))
    try:
        await store.ping()
    finally:
        await store.close()


# --- retries -------------------------------------------------------------------------------------


async def test_throttled_write_is_retried_after_the_servers_retry_after(
    store: CosmosAdapterStore, emulator: CosmosEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.inject_faults(429, count=2, retry_after_ms=300)
    caplog.set_level(logging.WARNING, logger="gateway.store.cosmos")
    began = time.monotonic()
    created = await store.create(record("alpha"))
    elapsed = time.monotonic() - began
    assert created.etag
    assert 0.6 <= elapsed < 3.0
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2
    assert all("HTTP 429" in m and "in 0.30s" in m for m in retries)


async def test_unavailable_read_is_retried_with_backoff(store: CosmosAdapterStore, emulator: CosmosEmulator) -> None:
    await store.create(record("alpha"))
    emulator.inject_faults(503, count=3)
    got = await store.get("alpha")
    assert got is not None and got.name == "alpha"


async def test_request_timeout_is_retried_for_reads_only(store: CosmosAdapterStore, emulator: CosmosEmulator) -> None:
    created = await store.create(record("alpha"))
    emulator.inject_faults(408, count=1)
    assert await store.get("alpha") is not None
    emulator.inject_faults(408, count=1)
    with pytest.raises(StoreUnavailable) as info:
        await store.replace(record("alpha"), etag=created.etag)
    assert_names_cosmos_without_secrets(info.value)
    got = await store.get("alpha")
    assert got is not None and got.etag == created.etag


async def test_throttling_longer_than_the_budget_is_store_unavailable(emulator: CosmosEmulator) -> None:
    store = await started(emulator.settings(cosmos_timeout=FAST))
    try:
        emulator.inject_faults(429, count=100, retry_after_ms=400)
        began = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            await store.list(limit=10)
        assert time.monotonic() - began < FAST + 0.5
        assert_names_cosmos_without_secrets(info.value)
        assert "HTTP 429" in info.value.detail
    finally:
        emulator.clear_faults()
        await store.close()


async def test_access_denied_names_the_role_to_grant(store: CosmosAdapterStore, emulator: CosmosEmulator) -> None:
    emulator.inject_faults(403, count=1)
    with pytest.raises(StoreUnavailable) as info:
        await store.get("alpha")
    assert_names_cosmos_without_secrets(info.value)
    assert "Cosmos DB Built-in Data Contributor" in info.value.detail


async def test_missing_container_is_reported_unless_creation_is_asked(emulator: CosmosEmulator) -> None:
    store = cosmos_store(emulator.settings(cosmos_create_if_missing=False))
    try:
        with pytest.raises(StoreUnavailable) as info:
            await store.start()
        assert_names_cosmos_without_secrets(info.value)
        assert "MCPGW_COSMOS_CREATE_IF_MISSING" in info.value.detail
    finally:
        await store.close()


async def test_existing_container_is_used_without_creating(emulator: CosmosEmulator) -> None:
    settings = emulator.settings()
    creator = await started(settings)
    await creator.create(record("alpha"))
    await creator.close()
    reader = await started(emulator.settings(cosmos_database=settings.cosmos_database, cosmos_create_if_missing=False))
    try:
        got = await reader.get("alpha")
        assert got is not None and got.name == "alpha"
    finally:
        await reader.close()


# --- outages -------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_nothing_listening_is_store_unavailable_within_the_budget(emulator: CosmosEmulator) -> None:
    port = _closed_port()
    store = cosmos_store(emulator.settings(cosmos_endpoint=f"https://127.0.0.1:{port}/", cosmos_timeout=FAST))
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            await store.start()
        assert time.monotonic() - began < FAST + 1.0
        assert_names_cosmos_without_secrets(info.value)
        assert f"127.0.0.1:{port}" in info.value.detail
    finally:
        await store.close()


async def test_paused_server_is_store_unavailable_and_recovers_without_restart(
    own_emulator: CosmosEmulator,
) -> None:
    store = await started(own_emulator.settings(cosmos_timeout=FAST))
    try:
        created = await store.create(record("alpha"))
        own_emulator.pause()
        try:
            for call in (store.ping(), store.get("alpha"), store.list(limit=5), store.create(record("beta"))):
                began = time.monotonic()
                with pytest.raises(StoreUnavailable) as info:
                    await call
                assert time.monotonic() - began < FAST + 1.0
                assert_names_cosmos_without_secrets(info.value)
                assert "no answer" in info.value.detail
        finally:
            own_emulator.resume()
        await store.ping()
        got = await store.get("alpha")
        assert got is not None and got.etag == created.etag
        # The create cut off by the pause may or may not have landed; either way the store works.
        beta = await store.get("beta")
        if beta is None:
            await store.create(record("beta"))
        assert [r.name for r in await store.list(limit=5)] == ["alpha", "beta"]
    finally:
        await store.close()


async def test_start_during_an_outage_connects_on_a_later_call(own_emulator: CosmosEmulator) -> None:
    store = cosmos_store(own_emulator.settings(cosmos_timeout=FAST))
    try:
        own_emulator.pause()
        try:
            with pytest.raises(StoreUnavailable):
                await store.start()
            with pytest.raises(StoreUnavailable):
                await store.get("alpha")
        finally:
            own_emulator.resume()
        assert await store.get("alpha") is None
        await store.create(record("alpha"))
        await store.ping()
    finally:
        await store.close()


# --- credentials ---------------------------------------------------------------------------------


async def test_credential_choice_follows_settings(emulator: CosmosEmulator) -> None:
    with_key = cosmos_store(emulator.settings())
    assert isinstance(with_key._new_client, CosmosClientFactory) and with_key._new_client.credential == EMULATOR_KEY
    assert build_shared_credential(emulator.settings()) is None  # the key is all Cosmos needs
    managed = build_shared_credential(emulator.settings(cosmos_key=None, azure_client_id="0000-client"))
    default = build_shared_credential(emulator.settings(cosmos_key=None))
    try:
        assert isinstance(managed, ManagedIdentityCredential)
        assert isinstance(default, DefaultAzureCredential)
        injected = cosmos_store(emulator.settings(cosmos_key=None), default)._new_client
        assert isinstance(injected, CosmosClientFactory) and injected.credential is default
    finally:
        for credential in (managed, default):
            assert credential is not None
            await credential.close()


class _IdentityEndpoint:
    """A local managed-identity token endpoint (the App Service protocol azure-identity speaks)."""

    TOKEN = "test-access-token-must-not-leak"
    HEADER = "identity-header-secret"

    def __init__(self, *, fail: bool = False) -> None:
        self.requests: list[dict[str, list[str]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests.append(parse_qs(urlsplit(self.path).query))
                if fail or self.headers.get("X-IDENTITY-HEADER") != endpoint.HEADER:
                    self.send_response(400)
                    self.end_headers()
                    return
                body = json.dumps(
                    {
                        "access_token": endpoint.TOKEN,
                        "expires_on": str(int(time.time()) + 3600),
                        "resource": parse_qs(urlsplit(self.path).query)["resource"][0],
                        "token_type": "Bearer",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/msi/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _IdentityEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


async def test_managed_identity_token_is_fetched_for_the_account(
    emulator: CosmosEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _IdentityEndpoint() as identity:
        monkeypatch.setenv("IDENTITY_ENDPOINT", identity.url)
        monkeypatch.setenv("IDENTITY_HEADER", identity.HEADER)
        settings = emulator.settings(cosmos_key=None, azure_client_id="11111111-client")
        credential = build_shared_credential(settings)  # the one Azure credential gateway/app.py injects
        assert credential is not None
        store = cosmos_store(settings, credential)
        try:
            await store.start()
            await store.create(record("alpha"))
            assert await store.get("alpha") is not None
        finally:
            await store.close()
            await credential.close()
    assert identity.requests, "the store never asked for a token"
    query = identity.requests[0]
    assert query["client_id"] == ["11111111-client"]
    assert query["resource"] == ["https://127.0.0.1"]  # the account host: the Cosmos token audience


async def test_a_failing_identity_is_store_unavailable_without_the_token(
    emulator: CosmosEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with _IdentityEndpoint(fail=True) as identity:
        monkeypatch.setenv("IDENTITY_ENDPOINT", identity.url)
        monkeypatch.setenv("IDENTITY_HEADER", identity.HEADER)
        credential = build_azure_credential("11111111-client")  # what gateway/app.py injects
        store = cosmos_store(emulator.settings(cosmos_key=None), credential)
        try:
            with pytest.raises(StoreUnavailable) as info:
                await store.start()
        finally:
            await store.close()
            await credential.close()
    assert_names_cosmos_without_secrets(info.value)
    assert "Entra ID token" in info.value.detail
    assert identity.HEADER not in info.value.detail
    assert identity.HEADER not in caplog.text


async def test_concurrent_first_calls_connect_once(emulator: CosmosEmulator) -> None:
    store = cosmos_store(emulator.settings())
    try:
        results = await asyncio.gather(*(store.get(f"n{i}") for i in range(8)))
        assert results == [None] * 8
    finally:
        await store.close()
