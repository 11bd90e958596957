#!/usr/bin/env python3
"""Get an Entra ID access token for MCP Gateway, for curl, the MCP Inspector and scripts.

    python scripts/get_token.py --tenant-id <tid> --client-id <appId>            # browser sign-in
    python scripts/get_token.py --tenant-id <tid> --client-id <appId> --device-code   # headless
    curl -H "$(python scripts/get_token.py ... --header)" https://mcp.example.com/adapters

``--client-id`` is the app registration that signs the user in: the gateway's own registration
(with "Allow public client flows" on and the redirect URI ``http://localhost``) or a separate
public client app that the gateway pre-authorizes. ``--scope`` defaults to
``api://<client-id>/.default``; use ``--scope api://<gateway-app-id>/access`` with a separate client.
Defaults come from MCPGW_ENTRA_TENANT_ID, MCPGW_ENTRA_CLIENT_ID and MCPGW_ENTRA_AUTHORITY.

Tokens are cached on disk (``--cache-file``; mode 0600), so later runs print a cached or silently
refreshed token without a new sign-in. The token goes to stdout, every message to stderr.
Exit status: 0 token printed, 1 sign-in failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import msal

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"


def default_cache_path() -> Path:
    """$XDG_CACHE_HOME/mcp-gateway/msal-token-cache.json (default ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mcp-gateway" / "msal-token-cache.json"


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    env = os.environ
    p = argparse.ArgumentParser(
        prog="get_token.py",
        description="Get an Entra ID access token for MCP Gateway (MSAL; browser or device code sign-in).",
    )
    p.add_argument(
        "--tenant-id", default=env.get("MCPGW_ENTRA_TENANT_ID"), help="Directory (tenant) id [MCPGW_ENTRA_TENANT_ID]"
    )
    p.add_argument(
        "--client-id",
        default=env.get("MCPGW_ENTRA_CLIENT_ID"),
        help="Application (client) id that signs the user in [MCPGW_ENTRA_CLIENT_ID]",
    )
    p.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        help="Scope to request; repeatable (default: api://<client-id>/.default)",
    )
    p.add_argument(
        "--authority",
        default=env.get("MCPGW_ENTRA_AUTHORITY", DEFAULT_AUTHORITY),
        help=f"Authority host (sovereign clouds) [MCPGW_ENTRA_AUTHORITY, default {DEFAULT_AUTHORITY}]",
    )
    p.add_argument("--device-code", action="store_true", help="Sign in on another device with a code (headless)")
    p.add_argument("--account", help="Username to pick among cached accounts and to pre-fill the sign-in")
    p.add_argument("--header", action="store_true", help="Print 'Authorization: Bearer <token>' instead of the token")
    p.add_argument("--cache-file", type=Path, default=default_cache_path(), help="Token cache file (%(default)s)")
    p.add_argument("--no-cache", action="store_true", help="Neither read nor write the token cache")
    return p


def load_cache(path: Path | None) -> msal.SerializableTokenCache:
    """The token cache, with the file's contents when it exists."""
    cache = msal.SerializableTokenCache()
    if path is not None and path.exists():
        cache.deserialize(path.read_text())
    return cache


def save_cache(cache: msal.SerializableTokenCache, path: Path | None) -> None:
    """Write the cache if it changed, readable by the owner only."""
    if path is None or not cache.has_state_changed:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(cache.serialize())


def acquire_token(
    app: msal.PublicClientApplication,
    scopes: list[str],
    *,
    device_code: bool,
    account: str | None,
    err: TextIO,
) -> dict[str, Any]:
    """A cached or refreshed token if there is one, else a new sign-in."""
    accounts = app.get_accounts(username=account) if account else app.get_accounts()
    if accounts:
        result = app.acquire_token_silent(scopes, account=accounts[0])
        if result and "access_token" in result:
            return dict(result)
    if device_code:
        flow = app.initiate_device_flow(scopes=scopes)
        if "user_code" not in flow:
            return dict(flow)
        print(flow["message"], file=err, flush=True)
        return dict(app.acquire_token_by_device_flow(flow))
    print("Opening a browser to sign in (use --device-code on a machine without one) ...", file=err, flush=True)
    return dict(app.acquire_token_interactive(scopes, login_hint=account, prompt="select_account"))


def main(
    argv: list[str] | None = None,
    *,
    http_client: Any = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the command. ``http_client`` is handed to MSAL (tests point it at a local provider)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.tenant_id or not args.client_id:
        parser.print_usage(err)
        print("error: --tenant-id and --client-id are required (or MCPGW_ENTRA_TENANT_ID/_CLIENT_ID)", file=err)
        return 2
    scopes = args.scopes or [f"api://{args.client_id}/.default"]
    cache_path = None if args.no_cache else args.cache_file
    cache = load_cache(cache_path)
    options: dict[str, Any] = {"token_cache": cache}
    if http_client is not None:
        options["http_client"] = http_client
    app = msal.PublicClientApplication(
        args.client_id, authority=f"{args.authority.rstrip('/')}/{args.tenant_id}", **options
    )
    try:
        result = acquire_token(app, scopes, device_code=args.device_code, account=args.account, err=err)
    finally:
        save_cache(cache, cache_path)
    token = result.get("access_token")
    if not token:
        error = result.get("error", "no_token")
        print(f"sign-in failed: {error}: {result.get('error_description', '')}".rstrip(": "), file=err)
        return 1
    print(f"Authorization: Bearer {token}" if args.header else token, file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
