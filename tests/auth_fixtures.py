"""A local OpenID provider for tests: discovery, JWKS, device-code and token endpoints over real HTTP.

Keys are RSA keys minted by the tests. The server runs in a thread on a free loopback port, so it
serves in-process async tests, sync MSAL code and gateway processes alike. It counts every hit per
path, which lets tests prove the gateway does not hammer the JWKS endpoint.

Issuers it speaks for:
- Entra style: ``<url>/<tenant>/v2.0`` (discovery at ``<url>/<tenant>/v2.0/.well-known/openid-configuration``),
  i.e. ``MCPGW_ENTRA_AUTHORITY=<url>``;
- generic OIDC: ``<url>/realms/test`` (``MCPGW_OIDC_ISSUER=<url>/realms/test``).

``start_tls`` adds an https listener (MSAL refuses http authorities) on which the same provider speaks
with its https origin; its token endpoint also implements Entra's on-behalf-of grant
(``urn:ietf:params:oauth:grant-type:jwt-bearer`` + ``requested_token_use=on_behalf_of``) and client
credentials for the confidential client ``client_id`` (secret ``client_secret`` or any client
assertion), so MSAL runs unmodified against it with instance discovery off.

Like Entra ID, it serves only ``<issuer>/.well-known/openid-configuration`` (no RFC 8414 document),
and its /authorize signs ``authorize_user`` in without a login page.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import hmac
import html
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from tests.tls_fixtures import TlsFiles, write_tls_files

TENANT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
OIDC_REALM_PATH = "/realms/test"
OIDC_AUDIENCE = "mcp-gateway"
WELL_KNOWN_OPENID = "/.well-known/openid-configuration"
HTML_KEY = "__html__"


def b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE uses it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclasses.dataclass(frozen=True)
class SigningKey:
    """An RSA key pair with a key id."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        """A fresh 2048-bit key."""
        return cls(kid or uuid.uuid4().hex[:16], rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def public_jwk(self) -> dict[str, Any]:
        """The JWKS entry, shaped like Entra's (no ``alg``)."""
        numbers = self.private_key.public_key().public_numbers()

        def b64int(n: int) -> str:
            return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))

        return {"kty": "RSA", "use": "sig", "kid": self.kid, "n": b64int(numbers.n), "e": b64int(numbers.e)}

    def public_pem(self) -> bytes:
        """The public key in PEM, for the HS256-with-public-key attack."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def hs256_token(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """A token HMAC-signed with ``secret`` (pyjwt refuses to do this with a PEM key, attackers don't)."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def unsigned_token(claims: dict[str, Any], kid: str | None = None) -> str:
    """A token with ``alg: none`` and an empty signature."""
    head: dict[str, Any] = {"alg": "none", "typ": "JWT"}
    if kid:
        head["kid"] = kid
    return f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(claims).encode())}."


class OidcServer:
    """The provider. ``keys`` is the published JWKS (assign a new list to rotate)."""

    def __init__(self, tenant_id: str = TENANT_ID, client_id: str = CLIENT_ID) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.keys: list[SigningKey] = [SigningKey.generate("key-1")]
        self.hits: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.device_pending_polls = 0
        self.device_declined = False
        self.token_lifetime = 3600
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._device_polls: collections.Counter[str] = collections.Counter()
        self._device_scopes: dict[str, str] = {}
        self._refresh_tokens: dict[str, dict[str, Any]] = {}
        self._codes: dict[str, dict[str, str]] = {}
        #: The origin the provider names in documents and tokens; default its own URL. MSAL only talks
        #: to https authorities, so its tests set https://login.microsoftonline.com and map it here.
        self.public_base: str | None = None
        #: The user the /authorize endpoint signs in (no login page: the test is the user).
        self.authorize_user = "browser-user"
        # --- confidential client (on-behalf-of, client credentials) ---
        self.client_secret = "gateway-app-secret"
        #: Lifetime of tokens issued by on-behalf-of and client credentials.
        self.obo_lifetime = 3600
        #: oid -> (error, suberror, error code, claims): refuse that user's exchanges like Entra does.
        self.obo_refusals: dict[str, tuple[str, str, int, str | None]] = {}
        #: oids whose refusals quote the presented assertion back (error_description and claims), as a
        #: careless provider or proxy might: the gateway must not pass it on (tests/adversarial).
        self.obo_echo_assertion: set[str] = set()
        #: Successful on-behalf-of exchanges per user oid, and client credentials grants.
        self.obo_exchanges: collections.Counter[str] = collections.Counter()
        self.client_credentials_grants = 0
        #: The client_assertion values presented (federated credentials).
        self.client_assertions: list[str] = []
        self._tls_server: ThreadingHTTPServer | None = None
        self._tls_thread: threading.Thread | None = None
        self._local = threading.local()

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> OidcServer:
        """Listen on a free loopback port."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="oidc-server", daemon=True
        )
        self._thread.start()
        return self

    def start_tls(self, files: TlsFiles) -> OidcServer:
        """Also listen with TLS (certificate for 127.0.0.1 from ``files``) on another free port."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self, tls=True))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files.cert_file, files.key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._tls_server = server
        self._tls_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="oidc-server-tls", daemon=True
        )
        self._tls_thread.start()
        return self

    @property
    def https_url(self) -> str:
        """https://127.0.0.1:<tls port> (after start_tls)."""
        assert self._tls_server is not None, "TLS listener not started"
        return f"https://127.0.0.1:{self._tls_server.server_address[1]}"

    def stop(self) -> None:
        """Stop listening and join the thread."""
        if self._tls_server is not None:
            self._tls_server.shutdown()
            self._tls_server.server_close()
            self._tls_server = None
        if self._tls_thread is not None:
            self._tls_thread.join(timeout=5)
            self._tls_thread = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>."""
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base(self) -> str:
        """The origin used in issuers and endpoint URLs (the https one on the TLS listener, else
        ``public_base`` or ``url``)."""
        return getattr(self._local, "base", None) or self.public_base or self.url

    # --- issuers and tokens ------------------------------------------------------------

    @property
    def entra_issuer(self) -> str:
        """The v2 issuer of the tenant, as the gateway expects with MCPGW_ENTRA_AUTHORITY=url."""
        return f"{self.base}/{self.tenant_id}/v2.0"

    @property
    def entra_v1_issuer(self) -> str:
        """The v1 issuer form (fixed public-cloud host, as Entra issues it)."""
        return f"https://sts.windows.net/{self.tenant_id}/"

    @property
    def oidc_issuer(self) -> str:
        """The generic OIDC issuer."""
        return self.base + OIDC_REALM_PATH

    @property
    def jwks_hits(self) -> int:
        """How often the JWKS was fetched."""
        return self.hits["/jwks"]

    def entra_claims(
        self, oid: str = "user-1", roles: list[str] | None = None, *, lifetime: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Claims of a v2 Entra access token for the gateway app."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.entra_issuer,
            "aud": self.client_id,
            "iat": now,
            "nbf": now,
            "exp": now + (lifetime if lifetime is not None else self.token_lifetime),
            "oid": oid,
            "sub": f"pairwise-{oid}",
            "tid": self.tenant_id,
            "scp": "access",
            "ver": "2.0",
        }
        if roles:
            claims["roles"] = roles
        claims.update(extra)
        return claims

    def oidc_claims(self, sub: str = "user-1", roles: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        """Claims of a generic OIDC access token."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.oidc_issuer,
            "aud": OIDC_AUDIENCE,
            "iat": now,
            "exp": now + self.token_lifetime,
            "sub": sub,
        }
        if roles:
            claims["roles"] = roles
        claims.update(extra)
        return claims

    def mint(
        self,
        claims: dict[str, Any],
        key: SigningKey | None = None,
        *,
        alg: str = "RS256",
        kid: str | None = "",
        headers: dict[str, Any] | None = None,
    ) -> str:
        """Sign ``claims`` with ``key`` (default: the first published key); ``kid=None`` omits the header."""
        key = key or self.keys[0]
        head: dict[str, Any] = dict(headers or {})
        if kid is not None:
            head["kid"] = kid or key.kid
        return jwt.encode(claims, key.private_key, algorithm=alg, headers=head)

    def entra_token(self, oid: str = "user-1", roles: list[str] | None = None, **extra: Any) -> str:
        """A valid Entra-style access token."""
        return self.mint(self.entra_claims(oid, roles, **extra))

    def oidc_token(self, sub: str = "user-1", roles: list[str] | None = None, **extra: Any) -> str:
        """A valid generic OIDC access token."""
        return self.mint(self.oidc_claims(sub, roles, **extra))

    # --- request handling (server thread) ----------------------------------------------

    def _discovery(self, prefix: str) -> dict[str, Any]:
        issuer = self.base + prefix
        return {
            "issuer": issuer,
            "jwks_uri": f"{self.base}/jwks",
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "device_authorization_endpoint": f"{issuer}/devicecode",
            "response_types_supported": ["code"],
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code",
            ],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def _issue(self, prefix: str, client_id: str, scope: str, oid: str, nonce: str | None = None) -> dict[str, Any]:
        issuer = self.base + prefix
        now = int(time.time())
        resource = next((s.rsplit("/", 1)[0] for s in scope.split() if s.startswith("api://")), f"api://{client_id}")
        access = self.mint(
            {
                "iss": issuer,
                "aud": resource.removeprefix("api://"),
                "iat": now,
                "nbf": now,
                "exp": now + self.token_lifetime,
                "oid": oid,
                "sub": oid,
                "tid": self.tenant_id,
                "scp": "access",
                "azp": client_id,
                "uti": uuid.uuid4().hex,
            }
        )
        id_token = self.mint(
            {
                "iss": issuer,
                "aud": client_id,
                "iat": now,
                "exp": now + 3600,
                "sub": oid,
                "oid": oid,
                "tid": self.tenant_id,
                "preferred_username": f"{oid}@example.test",
                **({"nonce": nonce} if nonce else {}),
            }
        )
        refresh = uuid.uuid4().hex
        self._refresh_tokens[refresh] = {"client_id": client_id, "scope": scope, "oid": oid, "prefix": prefix}
        client_info = b64url(json.dumps({"uid": oid, "utid": self.tenant_id}).encode())
        granted = " ".join(s for s in scope.split() if s not in ("openid", "profile", "offline_access"))
        return {
            "token_type": "Bearer",
            "scope": granted,
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": access,
            "refresh_token": refresh,
            "id_token": id_token,
            "client_info": client_info,
        }

    def _authorize(self, prefix: str, query: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Authorization code + PKCE: sign in ``authorize_user`` at once and redirect back."""
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            return 400, {"error": "invalid_request", "error_description": "code flow with S256 PKCE only"}, {}
        code = uuid.uuid4().hex
        self._codes[code] = {**query, "prefix": prefix}
        back = {"code": code, "state": query.get("state", ""), "iss": self.base + prefix}
        if query.get("response_mode") == "form_post":
            # As Entra ID answers MSAL: a page whose script posts the code to the redirect URI.
            fields = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}"/>' for k, v in back.items()
            )
            page = (
                f'<html><body><form method="post" action="{html.escape(query["redirect_uri"])}">{fields}</form>'
                "<script>document.forms[0].submit()</script></body></html>"
            )
            return 200, {HTML_KEY: page}, {}
        return 302, {}, {"Location": f"{query['redirect_uri']}?{urlencode(back)}"}

    def _redeem(self, prefix: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant", "error_description": "unknown code or redirect_uri mismatch"}
        verifier = form.get("code_verifier", "")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != grant["code_challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verifier does not match"}
        return 200, self._issue(
            prefix, grant["client_id"], grant.get("scope", ""), self.authorize_user, grant.get("nonce")
        )

    def _handle(
        self, method: str, path: str, form: dict[str, str], query: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "GET" and path.endswith("/authorize"):
            with self._lock:
                self.hits[path] += 1
                self.requests.append((method, path, query))
            return self._authorize(path.removesuffix("/authorize"), query)
        status, doc = self._handle_json(method, path, form)
        return status, doc, {}

    def _handle_json(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.hits[path] += 1
            self.requests.append((method, path, form))
        if method == "GET" and path == "/jwks":
            return 200, {"keys": [k.public_jwk() for k in list(self.keys)]}
        if method == "GET" and path == "/common/discovery/instance":
            # Entra's instance discovery, which MSAL asks for the host aliases of cached accounts.
            host = urlsplit(self.base).netloc
            return 200, {
                "tenant_discovery_endpoint": f"{self.base}/common/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }
        if method == "GET" and path.endswith(WELL_KNOWN_OPENID):
            return 200, self._discovery(path.removesuffix(WELL_KNOWN_OPENID))
        if method == "POST" and path.endswith("/devicecode"):
            code = uuid.uuid4().hex
            self._device_scopes[code] = form.get("scope", "")
            return 200, {
                "device_code": code,
                "user_code": "ABCD-EFGH",
                "verification_uri": f"{self.base}/device",
                "expires_in": 900,
                "interval": 1,
                "message": f"To sign in, open {self.base}/device and enter the code ABCD-EFGH.",
            }
        if method == "POST" and path.endswith("/token"):
            prefix = path.removesuffix("/token")
            grant = form.get("grant_type", "")
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                code = form.get("device_code", "")
                with self._lock:
                    self._device_polls[code] += 1
                    polls = self._device_polls[code]
                if self.device_declined:
                    return 400, {"error": "authorization_declined", "error_description": "the user declined"}
                if polls <= self.device_pending_polls:
                    return 400, {"error": "authorization_pending", "error_description": "waiting for the user"}
                scope = self._device_scopes.get(code, "")
                return 200, self._issue(prefix, form.get("client_id", ""), scope, "device-user")
            if grant == "authorization_code":
                return self._redeem(prefix, form)
            if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer" and form.get("requested_token_use") == (
                "on_behalf_of"
            ):
                return self._on_behalf_of(prefix, form)
            if grant == "client_credentials":
                refused = self._client_auth(form)
                if refused is not None:
                    return refused
                with self._lock:
                    self.client_credentials_grants += 1
                return 200, self._upstream_token(prefix, form.get("scope", ""), None)
            if grant == "refresh_token":
                grant_info = self._refresh_tokens.pop(form.get("refresh_token", ""), None)
                if grant_info is None:
                    return 400, {"error": "invalid_grant", "error_description": "unknown refresh token"}
                return 200, self._issue(prefix, grant_info["client_id"], form.get("scope", ""), grant_info["oid"])
            return 400, {"error": "unsupported_grant_type", "error_description": grant}
        return 404, {"error": "not_found", "path": path}

    # --- confidential client grants -------------------------------------------------------

    def _client_auth(self, form: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        """None when the form authenticates the gateway's app; else Entra's invalid_client answer."""
        if form.get("client_id") != self.client_id:
            return 400, {"error": "unauthorized_client", "error_description": "AADSTS700016: unknown application"}
        assertion = form.get("client_assertion")
        if assertion and form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            with self._lock:
                self.client_assertions.append(assertion)
            return None
        if form.get("client_secret") == self.client_secret:
            return None
        return 401, {
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.",
            "error_codes": [7000215],
        }

    def _on_behalf_of(self, prefix: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        refused = self._client_auth(form)
        if refused is not None:
            return refused
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                key=self.keys[0].private_key.public_key(),
                algorithms=["RS256"],
                audience=[self.client_id, f"api://{self.client_id}"],
            )
        except jwt.ExpiredSignatureError:
            return 400, {
                "error": "invalid_grant",
                "error_description": "AADSTS500133: Assertion is not within its valid time range.",
                "error_codes": [500133],
            }
        except jwt.PyJWTError as exc:
            return 400, {
                "error": "invalid_grant",
                "error_description": f"AADSTS50013: Assertion failed signature validation. {exc}",
                "error_codes": [50013],
            }
        oid = str(claims.get("oid"))
        refusal = self.obo_refusals.get(oid)
        if refusal is not None:
            error, suberror, code, challenge = refusal
            body: dict[str, Any] = {
                "error": error,
                "error_description": f"AADSTS{code}: refused for the test",
                "error_codes": [code],
            }
            if suberror:
                body["suberror"] = suberror
            if challenge:
                body["claims"] = challenge
            if oid in self.obo_echo_assertion:
                assertion = form.get("assertion", "")
                body["error_description"] += f" (assertion: {assertion}; again: {assertion[:40]}...)"
                body["claims"] = json.dumps({"access_token": {"assertion": {"value": assertion}}})
            return 400, body
        with self._lock:
            self.obo_exchanges[oid] += 1
        return 200, self._upstream_token(prefix, form.get("scope", ""), oid)

    def _upstream_token(self, prefix: str, scope: str, oid: str | None) -> dict[str, Any]:
        """A token for the resource of ``scope``: the user's (on-behalf-of) or the app's own."""
        now = int(time.time())
        granted = [s for s in scope.split() if s not in ("openid", "profile", "offline_access")]
        resource = granted[0].rsplit("/", 1)[0] if granted else "unknown"
        claims: dict[str, Any] = {
            "iss": self.base + prefix.removesuffix("/oauth2/v2.0").removesuffix("/v2.0") + "/v2.0",
            "aud": resource,
            "iat": now,
            "nbf": now,
            "exp": now + self.obo_lifetime,
            "tid": self.tenant_id,
            "azp": self.client_id,
            "uti": uuid.uuid4().hex,
        }
        if oid is not None:
            claims.update(oid=oid, sub=f"obo-{oid}", scp=" ".join(g.rsplit("/", 1)[-1] for g in granted))
        else:
            claims.update(oid=self.client_id, roles=["app"], idtyp="app")
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(granted),
            "expires_in": self.obo_lifetime,
            "ext_expires_in": self.obo_lifetime,
            "access_token": self.mint(claims),
        }
        if oid is not None:
            answer["client_info"] = b64url(json.dumps({"uid": oid, "utid": self.tenant_id}).encode())
        return answer


def _handler_for(server: OidcServer, *, tls: bool = False) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            form = {k: v[0] for k, v in parse_qs(body).items()}
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            server._local.base = server.https_url if tls else None
            status, doc, headers = server._handle(method, parts.path, form, query)
            is_html = HTML_KEY in doc
            payload = (doc[HTML_KEY] if is_html else json.dumps(doc)).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "text/html" if is_html else "application/json")
            # Like Entra's discovery and token endpoints for SPAs: a browser page may read them (the portal test).
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

    return Handler


@pytest.fixture
def oidc_server() -> Iterator[OidcServer]:
    """A running OidcServer, stopped after the test."""
    server = OidcServer().start()
    try:
        yield server
    finally:
        server.stop()


def bound_socket() -> socket.socket:
    """A listening-ready TCP socket on a free loopback port (read the port before building settings)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve_asgi(app: Any, sock: socket.socket) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on ``sock`` in this event loop; yields the base URL."""
    import asyncio

    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def browser_visit(url: str, rewrite: tuple[str, str] | None = None, *, deliver: bool = True) -> str:
    """What a browser does with an authorization URL when the user is already signed in.

    Follows the provider's redirect, or submits its form_post page, to the client's redirect URI
    (``deliver=False`` stops before that, for clients without a listener). Returns the redirect
    URL (with the code in its query for redirects). ``rewrite`` maps a public authority to the
    local provider. No browser runs here; this is the part of one that the flows need.
    """
    if rewrite is not None:
        url = url.replace(*rewrite)
    with httpx.Client(timeout=10) as client:
        r = client.get(url)
        if r.is_redirect:
            location = r.headers["location"]
            if deliver:
                client.get(location)
            return str(location)
        form = re.search(r'<form method="post" action="([^"]+)">(.*?)</form>', r.text)
        assert form is not None, f"unexpected authorization page: {r.status_code} {r.text[:200]}"
        action = html.unescape(form.group(1))
        fields = {k: html.unescape(v) for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(2))}
        if deliver:
            client.post(action, data=fields)
        return action


class MemoryTokenStorage:
    """TokenStorage for the SDK client: a pre-registered public client, as Entra ID needs."""

    def __init__(self, client_info: OAuthClientInformationFull) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = client_info

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a localhost certificate for the module (MSAL and azure-identity want https)."""
    return write_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def idp(tls: TlsFiles) -> Iterator[OidcServer]:
    """The local issuer for the module, on http and https (its token endpoint does on-behalf-of)."""
    server = OidcServer().start().start_tls(tls)
    try:
        yield server
    finally:
        server.stop()


def entra_gateway_env(idp: OidcServer, tls: TlsFiles) -> dict[str, str]:
    """Settings of a gateway that signs users in with the local issuer and exchanges their tokens
    on behalf of them at its https endpoint (the client secret; MSAL trusts the test CA)."""
    return {
        "MCPGW_AUTH": "entra",
        "MCPGW_ENTRA_TENANT_ID": TENANT_ID,
        "MCPGW_ENTRA_CLIENT_ID": CLIENT_ID,
        "MCPGW_ENTRA_AUTHORITY": idp.url,
        "MCPGW_OBO_AUTHORITY": idp.https_url,
        "MCPGW_OBO_CLIENT_SECRET": idp.client_secret,
        "REQUESTS_CA_BUNDLE": str(tls.ca_file),
    }
