"""The one entry point the proxy calls: headers for an adapter's upstream request."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

from gateway.credentials._managed import ManagedIdentityTokens
from gateway.credentials._obo import OboConfig, OboExchanger
from gateway.credentials.errors import CredentialUnavailable, UpstreamCredentialError
from gateway.credentials.secrets import (
    SECRETS_FILE,
    FileSecretStore,
    KubernetesSecretStore,
    SecretMissing,
    SecretStore,
    gateway_namespace,
)
from gateway.models import AdapterRecord, Identity
from gateway.settings import Settings

log = logging.getLogger("gateway.credentials")

Headers = list[tuple[bytes, bytes]]
_AUTHORIZATION = b"authorization"


class UpstreamCredential:
    """The headers for one upstream request, what kind of credential they carry, and whether it was
    ``issued`` for this request (an on-behalf-of exchange, a managed-identity token request, a secret
    read from its file or the Kubernetes API) or reused from the gateway's memory (``cached``).

    ``repr`` shows the kind and the outcome, never the headers: they hold the token or the secret.
    """

    __slots__ = ("headers", "issued", "type")

    def __init__(self, headers: Headers, type: str, issued: bool) -> None:
        self.headers = headers
        self.type = type
        self.issued = issued

    @property
    def outcome(self) -> str:
        """``issued`` or ``cached`` (the audit record's ``credential.outcome``)."""
        return "issued" if self.issued else "cached"

    def __repr__(self) -> str:
        return f"UpstreamCredential(type={self.type!r}, outcome={self.outcome!r})"


class UpstreamCredentials:
    """Turns an adapter's ``upstreamAuth`` into request headers.

    ``outcomes`` counts results by (type, outcome) — ``ok``, ``consent_required``, ``obo_failed``,
    ``unavailable`` — for ``/metrics`` (gateway/telemetry) and for the audit record of the request.
    """

    def __init__(
        self,
        *,
        obo: OboExchanger | None,
        managed: ManagedIdentityTokens,
        secrets: SecretStore,
    ) -> None:
        self._obo = obo
        self._managed = managed
        self._secrets = secrets
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        kube_api_client: Callable[[], Any] | None = None,
        azure_credential: Any = None,
    ) -> UpstreamCredentials:
        """Built by the composition root; nothing is fetched until an adapter needs it.

        ``azure_credential`` is the gateway's one Azure credential (gateway/azure_credentials.py)
        when Cosmos or Redis already use one; otherwise managed-identity tokens build their own.
        """
        obo = None
        if settings.auth == "entra" and settings.entra_tenant_id and settings.entra_client_id:
            authority = (settings.obo_authority or settings.entra_authority).rstrip("/")
            obo = OboExchanger(
                OboConfig(
                    authority=f"{authority}/{settings.entra_tenant_id}",
                    client_id=settings.entra_client_id,
                    client_secret=settings.obo_client_secret,
                    certificate_path=settings.obo_certificate_path,
                    federated_token_file=settings.obo_federated_token_file,
                    timeout=settings.upstream_token_timeout,
                ),
                refresh_margin=settings.upstream_token_refresh_margin,
                max_entries=settings.upstream_token_cache_size,
            )
        managed = ManagedIdentityTokens(
            client_id=settings.azure_client_id,
            refresh_margin=settings.upstream_token_refresh_margin,
            timeout=settings.upstream_token_timeout,
            credential=azure_credential,
        )
        secrets: SecretStore
        if settings.runtime == "kubernetes" and kube_api_client is not None:
            namespace = settings.secrets_namespace or gateway_namespace(settings.kube_namespace)
            secrets = KubernetesSecretStore(kube_api_client, namespace)
        else:
            secrets = FileSecretStore(settings.data_dir / SECRETS_FILE)
        return cls(obo=obo, managed=managed, secrets=secrets)

    async def headers_for(self, adapter: AdapterRecord, identity: Identity, raw_token: str | None) -> Headers:
        """The credential headers for one request to ``adapter`` by ``identity``; [] for type none.

        Raises ConsentRequired / OboFailed (the caller can act) or CredentialUnavailable (502).
        """
        if adapter.upstream_auth.type == "none":
            return []
        return (await self.issue(adapter, identity, raw_token)).headers

    async def issue(self, adapter: AdapterRecord, identity: Identity, raw_token: str | None) -> UpstreamCredential:
        """The credential for one request to ``adapter`` (not of type none) by ``identity``, with its
        outcome for the audit; raises like :meth:`headers_for`. Counted in ``outcomes`` either way."""
        kind = adapter.upstream_auth.type
        try:
            credential = await self._credential(adapter, identity, raw_token)
        except UpstreamCredentialError as exc:
            self.outcomes[(kind, exc.outcome)] += 1
            log.warning("upstream credential for adapter %s (%s): %s: %s", adapter.name, kind, exc.outcome, exc.detail)
            raise
        self.outcomes[(kind, "ok")] += 1
        return credential

    async def _credential(
        self, adapter: AdapterRecord, identity: Identity, raw_token: str | None
    ) -> UpstreamCredential:
        auth = adapter.upstream_auth
        scopes = tuple(auth.scopes or ())
        if auth.type == "entra-obo":
            if self._obo is None:
                raise CredentialUnavailable(
                    f"adapter {adapter.name!r} uses entra-obo but the gateway is not in entra auth mode",
                    adapter=adapter.name,
                    scopes=scopes,
                )
            token, issued = await self._obo.acquire(adapter.name, identity.user_id, raw_token, scopes)
            return UpstreamCredential([(_AUTHORIZATION, b"Bearer " + token.encode("latin-1"))], auth.type, issued)
        if auth.type == "managed-identity":
            token, issued = await self._managed.acquire(adapter.name, scopes)
            return UpstreamCredential([(_AUTHORIZATION, b"Bearer " + token.encode("latin-1"))], auth.type, issued)
        assert auth.secret is not None
        try:
            value, issued = await self._secrets.read(auth.secret)
        except SecretMissing as exc:
            raise CredentialUnavailable(
                f"secret {auth.secret!r} of adapter {adapter.name!r} is unavailable: {exc}", adapter=adapter.name
            ) from None
        if any(c in value for c in "\r\n\x00"):
            raise CredentialUnavailable(
                f"secret {auth.secret!r} of adapter {adapter.name!r} contains a line break or NUL", adapter=adapter.name
            )
        header = (auth.header or "Authorization").lower().encode("latin-1")
        try:
            encoded = ((auth.prefix or "") + value).encode("latin-1")
        except UnicodeEncodeError:
            raise CredentialUnavailable(
                f"secret {auth.secret!r} of adapter {adapter.name!r} is not Latin-1 text", adapter=adapter.name
            ) from None
        return UpstreamCredential([(header, encoded)], auth.type, issued)

    @property
    def obo(self) -> OboExchanger | None:
        """The on-behalf-of exchanger (entra mode only)."""
        return self._obo

    async def close(self) -> None:
        """Release credentials and clients."""
        await self._managed.close()
        await self._secrets.close()


def merge_headers(out: Headers, credential: Headers) -> Headers:
    """``out`` without any header the credential sets, plus the credential's headers."""
    if not credential:
        return out
    names = {name for name, _ in credential}
    return [h for h in out if h[0].lower() not in names] + credential
