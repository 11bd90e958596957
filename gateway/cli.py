"""``mcp-gateway``: run the gateway, write its OpenAPI document."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import socket
import sys
import typing
from pathlib import Path
from typing import Any

from gateway.settings import Settings, SettingsError, env_name, flag_name, load_settings, setting_fields

OPENAPI_PATH = Path("openapi/mcp-gateway.openapi.json")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting. The metavar is the unit (issue 17): every float setting is a duration in
    seconds (``--drain-delay N`` read as a count), an int named ``*_bytes`` a size; a boolean's default is
    shown as the ``true``/``false`` the flag takes, and an empty default is not shown at all."""
    hints = typing.get_type_hints(Settings)
    for f in setting_fields():
        default = f.default
        tp = hints[f.name]
        text = str(default).lower() if tp is bool else default
        shown = "" if default is None or default == () or default == "" else f" Default: {text}."
        if f.metadata["secret"]:
            shown = ""
        envs = env_name(f) + (f" or {f.metadata['env']}" if f.metadata["env"] else "")
        metavar = "TEXT"
        if tp is bool:
            metavar = "true|false"
        elif tp is int:
            metavar = "BYTES" if f.name.endswith("_bytes") else "N"
        elif tp is float:
            metavar = "SECONDS"
        elif typing.get_origin(tp) is typing.Literal:
            metavar = "|".join(typing.get_args(tp))
        parser.add_argument(
            flag_name(f),
            dest=f.name,
            metavar=metavar,
            default=None,
            help=f"{f.metadata['help']}{shown} [{envs}]".replace("%", "%%"),
        )


def _configure_logging(settings: Settings) -> None:
    from gateway.telemetry.logs import configure_logging

    configure_logging(settings)


def serve(args: argparse.Namespace) -> int:
    """Run the gateway until SIGINT or SIGTERM."""
    overrides = {f.name: getattr(args, f.name) for f in setting_fields()}
    try:
        settings = load_settings(overrides=overrides)
    except SettingsError as exc:
        print(f"mcp-gateway: invalid setting: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings)

    import uvicorn

    from gateway.app import create_app
    from gateway.edge import EdgeLimits, edge_protocol

    # Bind first (issue 17): a port in use stops start-up with one line, before any adapter is
    # registered or any replica started (uvicorn would bind only after the lifespan has run).
    sock = _listen(settings.host, settings.port)
    if sock is None:
        return 2
    try:
        app = create_app(settings)
    except ValueError as exc:
        print(f"mcp-gateway: cannot start: {exc}", file=sys.stderr)
        return 2
    limits = EdgeLimits.from_settings(settings)
    logging.getLogger("gateway.edge").info("edge limits: %s", limits)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=edge_protocol(limits),  # httptools with head limits, read timeouts and a connection cap
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=75,
        backlog=4096,
        proxy_headers=False,
        server_header=False,
    )
    server = app.server(config)  # a uvicorn.Server that drains on SIGTERM (gateway/drain.py)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def _listen(host: str, port: int) -> socket.socket | None:
    """The gateway's listening socket, or None after printing why it cannot be had (naming --port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(4096)
    except OSError as exc:
        print(
            f"mcp-gateway: cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "stop what uses it or choose another port with --port (MCPGW_PORT)",
            file=sys.stderr,
        )
        return None
    return sock


def openapi_document() -> dict[str, Any]:
    """The control plane's OpenAPI document, generated from the app."""
    from gateway.app import build_components, create_litestar

    settings = dataclasses.replace(Settings(), example_adapter=False)
    app = create_litestar(build_components(settings))
    return app.openapi_schema.to_schema()


def write_openapi(args: argparse.Namespace) -> int:
    """Write openapi/mcp-gateway.openapi.json (or --output)."""
    text = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"wrote {output}")
    return 0


def settings_markdown() -> str:
    """Every setting as a Markdown table: variable, flag, default, meaning."""
    rows = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    for f in setting_fields():
        default = f.default
        shown = "—" if default is None or default == () or default == "" else f"`{default}`"
        if f.metadata["secret"] and default:
            shown = "(secret)"
        envs = f"`{env_name(f)}`" + (f" / `{f.metadata['env']}`" if f.metadata["env"] else "")
        rows.append(f"| {envs} | `{flag_name(f)}` | {shown} | {f.metadata['help']} |")
    return "\n".join(rows) + "\n"


def print_settings(args: argparse.Namespace) -> int:
    """Print the settings table (docs/limits.md embeds it)."""
    print(settings_markdown(), end="")
    return 0


def manage_secrets(args: argparse.Namespace) -> int:
    """``secrets set|list|delete``: the embedded secrets file of upstreamAuth type secret (issue 18).

    The value of ``set`` is read from stdin (never a command-line argument, which other users can see);
    ``list`` prints names only.
    """
    import getpass
    import re

    from gateway.control.validation import SECRET_NAME_PATTERN
    from gateway.credentials.secrets import SECRETS_FILE, FileSecretStore, SecretMissing

    try:
        settings = load_settings(overrides={"data_dir": args.data_dir})
    except SettingsError as exc:
        print(f"mcp-gateway: invalid setting: {exc}", file=sys.stderr)
        return 2
    store = FileSecretStore(settings.data_dir / SECRETS_FILE)
    try:
        if args.action == "list":
            print("\n".join(store.names()))
            return 0
        if not args.name or not re.fullmatch(SECRET_NAME_PATTERN, args.name):
            print(f"mcp-gateway: secret name must match {SECRET_NAME_PATTERN}", file=sys.stderr)
            return 2
        if args.action == "delete":
            return 0 if store.delete(args.name) else 1
        value = getpass.getpass("value: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\r\n")
        if not value or any(c in value for c in "\r\n\x00"):
            print("mcp-gateway: the value must be one non-empty line", file=sys.stderr)
            return 2
        store.set(args.name, value)
    except SecretMissing as exc:
        print(f"mcp-gateway: {exc}", file=sys.stderr)
        return 1
    print(f"stored secret {args.name!r} in {store.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mcp-gateway`` console script."""
    parser = argparse.ArgumentParser(prog="mcp-gateway", description="MCP Gateway: host and route MCP servers.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Every setting is a flag and an environment variable; flags win.",
    )
    _add_setting_flags(serve_parser)
    serve_parser.set_defaults(handler=serve)
    openapi_parser = commands.add_parser("openapi", help="write the OpenAPI document of the control plane")
    openapi_parser.add_argument("--output", default=str(OPENAPI_PATH), help=f"file to write (default {OPENAPI_PATH})")
    openapi_parser.set_defaults(handler=write_openapi)
    settings_parser = commands.add_parser("settings", help="print every setting as a Markdown table")
    settings_parser.set_defaults(handler=print_settings)
    from gateway.client import register as register_client_commands

    register_client_commands(commands)  # adapters, servers, import, tools, call, login
    secrets_parser = commands.add_parser("secrets", help="set, list or delete named secrets (embedded mode)")
    secrets_parser.add_argument("action", choices=("set", "list", "delete"))
    secrets_parser.add_argument("name", nargs="?", help="secret name (set reads the value from stdin)")
    secrets_parser.add_argument("--data-dir", default=None, help="data directory [MCPGW_DATA_DIR]")
    secrets_parser.set_defaults(handler=manage_secrets)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
