"""One Azure credential for the whole gateway (2026-11-30).

The Cosmos adapter store and the Redis session store (Entra ID) both need an azure-identity async
credential. Each used to build its own from settings; now the composition root (``gateway/app.py``)
builds one here and injects it into both, and closes it after them. One credential means one
token cache per scope and one place that decides which identity the gateway is:

- ``azure_client_id`` set: ``ManagedIdentityCredential(client_id=...)`` — a user-assigned managed
  identity, AKS workload identity included (it reads ``AZURE_FEDERATED_TOKEN_FILE`` when present);
- otherwise ``DefaultAzureCredential()`` — workload identity from the environment, a managed
  identity, or a developer's ``az login``.

This module sits below ``store/`` and ``sessions/`` (they may import it, it imports neither).
Building a credential does no network I/O; the first token is fetched when a component asks.
"""

from __future__ import annotations

from azure.core.credentials_async import AsyncTokenCredential


def build_azure_credential(client_id: str | None) -> AsyncTokenCredential:
    """The azure-identity async credential for ``client_id`` (``MCPGW_AZURE_CLIENT_ID``), or the default chain."""
    if client_id:
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id)
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


def needs_azure_credential(*, cosmos: bool, cosmos_key: str | None, redis_entra: bool) -> bool:
    """Whether any component will authenticate with Entra ID (so the gateway builds a credential)."""
    return (cosmos and not cosmos_key) or redis_entra
