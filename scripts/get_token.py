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

if __package__ in (None, ""):  # run as a file from a checkout: the gateway package is next to scripts/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.client._msal import (
    DEFAULT_AUTHORITY,
    acquire_token,
    default_cache_path,
    load_cache,
    public_client,
    save_cache,
)


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
    app = public_client(args.client_id, args.tenant_id, args.authority, cache, http_client)
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
