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
    hints = typing.get_type_hints(Settings)
    for f in setting_fields():
        default = f.default
        shown = "" if default is None or default == () or default == "" else f" Default: {default}."
        if f.metadata["secret"]:
            shown = ""
        envs = env_name(f) + (f" or {f.metadata['env']}" if f.metadata["env"] else "")
        metavar = "TEXT"
        tp = hints[f.name]
        if tp is bool:
            metavar = "true|false"
        elif tp is int:
            metavar = "N"
        elif tp is float:
            metavar = "SECONDS" if "timeout" in f.name or "interval" in f.name or "ttl" in f.name else "N"
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
    server = uvicorn.Server(config)
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


def import_server_json(args: argparse.Namespace) -> int:
    """POST an MCP Registry server.json to a gateway: ``mcp-gateway import server.json [--url ...]`` (issue 17).

    The gateway picks the package that fits its runtime and answers with the adapter it stored (or a
    problem naming the field at fault, e.g. a required environment variable); this prints either.
    """
    import re

    import httpx

    try:
        doc = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"mcp-gateway import: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    name = args.name or re.sub(r"[^a-z0-9-]+", "-", str(doc.get("name", "")).rsplit("/", 1)[-1].lower()).strip("-")
    body: dict[str, Any] = {"name": name[:52].rstrip("-"), "serverJson": doc, "replicaCount": args.replicas}
    env = dict(item.split("=", 1) for item in args.env)
    if env:
        body["environmentVariables"] = env
    if args.arg:
        body["args"] = args.arg
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {"X-Dev-User-Id": args.user}
    try:
        response = httpx.post(args.url.rstrip("/") + "/adapters", json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        print(f"mcp-gateway import: cannot reach the gateway at {args.url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=2) if response.content else response.status_code)
    return 0 if response.status_code == 201 else 1


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
    import_parser = commands.add_parser(
        "import", help="register an adapter from an MCP Registry server.json (POST /adapters with serverJson)"
    )
    import_parser.add_argument("file", help="the server.json document")
    import_parser.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway (default %(default)s)")
    import_parser.add_argument("--name", default="", help="adapter name (default: from the document's name)")
    import_parser.add_argument("--replicas", type=int, default=1, help="replicaCount (default 1)")
    import_parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="an env var")
    import_parser.add_argument("--arg", action="append", default=[], help="a server argument (replaces the document's)")
    import_parser.add_argument("--token", default="", help="bearer token (else dev auth as --user)")
    import_parser.add_argument("--user", default="dev", help="dev-auth user id (default dev)")
    import_parser.set_defaults(handler=import_server_json)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
