"""MSAL sign-in shared by ``mcp-gateway login`` and ``scripts/get_token.py``: token cache and acquisition.

Tokens are cached on disk (mode 0600, folder 0700) in MSAL's serialized format, so a later run
gets a cached or silently refreshed token without a new sign-in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import msal

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"


def default_cache_path() -> Path:
    """$XDG_CACHE_HOME/mcp-gateway/msal-token-cache.json (default ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mcp-gateway" / "msal-token-cache.json"


def load_cache(path: Path | None) -> msal.SerializableTokenCache:
    """The token cache, with the file's contents when it exists."""
    import msal  # imported when used: 0.3 s, which commands that need no sign-in should not pay

    cache = msal.SerializableTokenCache()
    if path is not None and path.exists():
        cache.deserialize(path.read_text())
    return cache


def save_cache(cache: msal.SerializableTokenCache, path: Path | None) -> None:
    """Write the cache if it changed, readable by the owner only."""
    if path is None or not cache.has_state_changed:
        return
    write_private(path, cache.serialize())


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (the folder too)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def public_client(
    client_id: str, tenant_id: str, authority: str, cache: msal.SerializableTokenCache, http_client: Any = None
) -> msal.PublicClientApplication:
    """The MSAL public client for ``<authority>/<tenant_id>`` with ``cache``."""
    import msal

    options: dict[str, Any] = {"token_cache": cache}
    if http_client is not None:
        options["http_client"] = http_client
    return msal.PublicClientApplication(client_id, authority=f"{authority.rstrip('/')}/{tenant_id}", **options)


def acquire_token(
    app: msal.PublicClientApplication,
    scopes: list[str],
    *,
    device_code: bool,
    account: str | None,
    err: TextIO,
    interactive: bool = True,
) -> dict[str, Any]:
    """A cached or refreshed token if there is one, else a new sign-in (none when ``interactive`` is false)."""
    accounts = app.get_accounts(username=account) if account else app.get_accounts()
    if accounts:
        result = app.acquire_token_silent(scopes, account=accounts[0])
        if result and "access_token" in result:
            return dict(result)
    if not interactive:
        return {"error": "login_required", "error_description": "no cached sign-in; run `mcp-gateway login`"}
    if device_code:
        flow = app.initiate_device_flow(scopes=scopes)
        if "user_code" not in flow:
            return dict(flow)
        print(flow["message"], file=err, flush=True)
        return dict(app.acquire_token_by_device_flow(flow))
    print("Opening a browser to sign in (use --device-code on a machine without one) ...", file=err, flush=True)
    return dict(app.acquire_token_interactive(scopes, login_hint=account, prompt="select_account"))
