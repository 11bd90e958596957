"""``mcp-gateway login``: Entra ID device-code sign-in, remembered for the other commands.

The token cache is scripts/get_token.py's (same file, same format), so either tool's sign-in
serves both. Beside it, ``cli-login.json`` records which tenant, client and scopes ``login`` used,
so that later commands can get a cached or silently refreshed token without any flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.client._msal import DEFAULT_AUTHORITY, default_cache_path


def profile_path() -> Path:
    """Where ``login`` records its tenant, client and scopes (next to the token cache)."""
    return default_cache_path().with_name("cli-login.json")


def cached_token(err: TextIO, *, http_client: Any = None) -> str | None:
    """A cached or silently refreshed token from the last ``login``; None when there was none."""
    try:
        profile = json.loads(profile_path().read_text())
    except (OSError, ValueError):
        return None
    from gateway.client._msal import acquire_token, load_cache, public_client, save_cache  # msal: 0.3 s to import

    cache_path = default_cache_path()
    cache = load_cache(cache_path)
    app = public_client(profile["clientId"], profile["tenantId"], profile["authority"], cache, http_client)
    result = acquire_token(
        app, list(profile["scopes"]), device_code=True, account=profile.get("account"), err=err, interactive=False
    )
    save_cache(cache, cache_path)
    token = result.get("access_token")
    if not token:
        print("mcp-gateway: the sign-in expired; run `mcp-gateway login` again (sending no token)", file=err)
        return None
    return str(token)


def login(args: argparse.Namespace, *, http_client: Any = None, err: TextIO | None = None) -> int:
    """Sign in with a device code (or reuse the cached sign-in) and remember the profile."""
    from gateway.client._msal import acquire_token, load_cache, public_client, save_cache, write_private

    err = err or sys.stderr
    if not args.tenant_id or not args.client_id:
        print("mcp-gateway: login needs --tenant-id and --client-id (or MCPGW_ENTRA_TENANT_ID/_CLIENT_ID)", file=err)
        return 2
    scopes = args.scopes or [f"api://{args.client_id}/.default"]
    cache_path = default_cache_path()
    cache = load_cache(cache_path)
    app = public_client(args.client_id, args.tenant_id, args.authority, cache, http_client)
    try:
        result = acquire_token(app, scopes, device_code=True, account=args.account, err=err)
    finally:
        save_cache(cache, cache_path)
    if not result.get("access_token"):
        error = result.get("error", "no_token")
        print(f"sign-in failed: {error}: {result.get('error_description', '')}".rstrip(": "), file=err)
        return 1
    account = (result.get("id_token_claims") or {}).get("preferred_username") or args.account
    profile = {
        "tenantId": args.tenant_id,
        "clientId": args.client_id,
        "authority": args.authority,
        "scopes": scopes,
        "account": account,
    }
    write_private(profile_path(), json.dumps(profile, indent=2) + "\n")
    print(f"signed in{f' as {account}' if account else ''}; token cached in {cache_path}", file=err)
    return 0


def register_login(commands: Any) -> None:
    """Add ``login`` to the ``mcp-gateway`` subparsers."""
    env = os.environ
    parser: argparse.ArgumentParser = commands.add_parser(
        "login",
        help="sign in to Entra ID with a device code; later commands use the cached token",
        description="Sign in to Entra ID with a device code. Commands without --token then send the cached "
        "(silently refreshed) token. The cache is scripts/get_token.py's.",
    )
    parser.add_argument("--tenant-id", default=env.get("MCPGW_ENTRA_TENANT_ID"), help="[MCPGW_ENTRA_TENANT_ID]")
    parser.add_argument(
        "--client-id", default=env.get("MCPGW_ENTRA_CLIENT_ID"), help="app that signs you in [MCPGW_ENTRA_CLIENT_ID]"
    )
    parser.add_argument(
        "--scope", action="append", dest="scopes", help="repeatable (default: api://<client-id>/.default)"
    )
    parser.add_argument(
        "--authority",
        default=env.get("MCPGW_ENTRA_AUTHORITY", DEFAULT_AUTHORITY),
        help=f"[MCPGW_ENTRA_AUTHORITY, default {DEFAULT_AUTHORITY}]",
    )
    parser.add_argument("--account", help="username to pick among cached accounts")
    parser.set_defaults(handler=login)
