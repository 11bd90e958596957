"""The ``mcp-gateway`` client commands: adapters, servers, import, tools, call, login.

Every command talks to a running gateway at ``--url`` through its public REST API and its data
plane, never around them. People get tables, scripts ``--json``. Exit status: 0 done, 1 the gateway
answered an error (or could not be reached), 2 the command line itself is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from gateway.client._http import DEFAULT_URL, ApiError, Credentials, GatewayApi, dumps
from gateway.client._output import cell, record, table

EXIT_OK, EXIT_API, EXIT_USAGE = 0, 1, 2
ADAPTER_FIELDS = (
    "name",
    "imageName",
    "imageVersion",
    "environmentVariables",
    "replicaCount",
    "description",
    "requiredRoles",
    "useWorkloadIdentity",
)
"""What PUT /adapters/{name} takes (the rest of a GET is read-only)."""
SERVER_FIELDS = ("name", "description", "requiredRoles", "members")
SERVERS_PREFIX = "servers/"


class UsageError(Exception):
    """The command line is wrong (exit status 2)."""


Handler = Callable[[argparse.Namespace, GatewayApi, TextIO], None]


# --- plumbing ------------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    env = os.environ
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("gateway")
    group.add_argument(
        "--url",
        default=env.get("MCPGW_URL") or DEFAULT_URL,
        help=f"the gateway [MCPGW_URL, default {DEFAULT_URL}]",
    )
    group.add_argument(
        "--token", default=env.get("MCPGW_TOKEN"), help="bearer token [MCPGW_TOKEN; default: the `login` token]"
    )
    group.add_argument("--user", help="dev mode: act as this user (X-Dev-User-Id)")
    group.add_argument("--roles", help="dev mode: comma-separated roles (X-Dev-Roles)")
    group.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    return common


def _credentials(args: argparse.Namespace) -> Credentials:
    if args.token or args.user or args.roles is not None:
        return Credentials(token=args.token, user=args.user, roles=args.roles)
    from gateway.client._login import cached_token

    return Credentials(token=cached_token(sys.stderr))


def _runner(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        out = sys.stdout
        try:
            api = GatewayApi(args.url, _credentials(args))
        except ApiError as exc:
            return _fail(args, exc)
        try:
            handler(args, api, out)
            return EXIT_OK
        except ApiError as exc:
            return _fail(args, exc)
        except UsageError as exc:
            print(f"mcp-gateway: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            return 130
        finally:
            api.close()

    return run


def _fail(args: argparse.Namespace, exc: ApiError) -> int:
    if args.json:
        print(json.dumps({"error": exc.as_json()}), file=sys.stderr)
    else:
        print(f"error: {exc.describe()}", file=sys.stderr)
    return EXIT_API


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r} is not KEY=VALUE")
        result[key] = value
    return result


def _read_json(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return json.loads(text)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None


# --- adapters ------------------------------------------------------------------------------------


def _adapter_body(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    body = {k: base[k] for k in ADAPTER_FIELDS if k in base}
    if args.file:
        loaded = _read_json(args.file)
        if not isinstance(loaded, dict):
            raise UsageError(f"{args.file} must hold a JSON object")
        body.update(loaded)
    body["name"] = args.name
    if args.image:
        image, _, version = args.image.partition(":")
        body["imageName"] = image
        if version:
            body["imageVersion"] = version
    if args.image_version:
        body["imageVersion"] = args.image_version
    if args.replicas is not None:
        body["replicaCount"] = args.replicas
    if args.description is not None:
        body["description"] = args.description
    if args.role is not None:
        body["requiredRoles"] = [r for r in args.role if r]
    if args.workload_identity is not None:
        body["useWorkloadIdentity"] = args.workload_identity
    env = dict(body.get("environmentVariables") or {})
    env.update(_pairs(args.env, "--env"))
    for key in getattr(args, "unset_env", None) or []:
        env.pop(key, None)
    if env or "environmentVariables" in body:
        body["environmentVariables"] = env
    return body


def adapters_list(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """GET /adapters, every page."""
    items = list(api.pages("/adapters", "items"))
    if args.json:
        print(dumps(items), file=out)
        return
    rows = [[a["name"], _image(a), a["replicaCount"], a["createdBy"], a["lastUpdatedAt"]] for a in items]
    table(rows, ["name", "image", "replicas", "created by", "updated"], out)


def _image(adapter: dict[str, Any]) -> str:
    """What the adapter runs, as status names it: ``name:version``, or ``npm:pkg@version`` / ``pypi:pkg==version``
    for a package (issue 17: package and server.json adapters were listed as ``:``)."""
    package = adapter.get("package")
    if isinstance(package, dict):
        sep = "@" if package.get("registry") == "npm" else "=="
        return f"{package.get('registry')}:{package.get('name')}{sep}{package.get('version')}"
    return f"{adapter['imageName']}:{adapter['imageVersion']}"


def _get(args: argparse.Namespace, api: GatewayApi, out: TextIO, kind: str) -> None:
    """GET /{kind}s/{name}."""
    _show(args, api.json("GET", f"/{kind}s/{args.name}"), out)


def _update(
    args: argparse.Namespace,
    api: GatewayApi,
    out: TextIO,
    kind: str,
    build: Callable[[argparse.Namespace, dict[str, Any]], dict[str, Any]],
) -> None:
    """PUT /{kind}s/{name}: the current definition with the flags' changes, guarded by its ETag."""
    path = f"/{kind}s/{args.name}"
    response = api.request("GET", path)
    body = build(args, response.json())
    etag = response.headers.get("ETag")
    updated = api.json("PUT", path, body=body, headers={"If-Match": etag} if etag else None)
    _show(args, updated, out, f"updated {kind} {args.name}")


def _delete(args: argparse.Namespace, api: GatewayApi, out: TextIO, kind: str) -> None:
    """DELETE /{kind}s/{name}."""
    api.request("DELETE", f"/{kind}s/{args.name}")
    _done(args, out, {"deleted": args.name}, f"deleted {kind} {args.name}")


def adapters_get(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """GET /adapters/{name}."""
    _get(args, api, out, "adapter")


def adapters_create(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """POST /adapters from flags and/or --file."""
    body = _adapter_body(args, {})
    if "imageName" not in body or "imageVersion" not in body:
        raise UsageError("give --image NAME:VERSION (or imageName and imageVersion in --file)")
    _show(args, api.json("POST", "/adapters", body=body), out, f"created adapter {args.name}")


def adapters_update(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """PUT /adapters/{name}: the current spec with the flags' changes, guarded by its ETag."""
    _update(args, api, out, "adapter", _adapter_body)


def adapters_delete(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """DELETE /adapters/{name}."""
    _delete(args, api, out, "adapter")


def adapters_status(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """GET /adapters/{name}/status: counts, conditions, replicas."""
    status = api.json("GET", f"/adapters/{args.name}/status")
    if args.json:
        print(dumps(status), file=out)
        return
    print(
        f"{status['name']}  {status['image']}  ready {status['readyReplicas']}/{status['desiredReplicas']}"
        f"  updated {status['updatedReplicas']}  generation {status['observedGeneration']}/{status['generation']}",
        file=out,
    )
    print("\nconditions:", file=out)
    rows = [[c["type"], c["status"], c["reason"], c["message"], c["lastTransitionTime"]] for c in status["conditions"]]
    table(rows, ["type", "status", "reason", "message", "since"], out)
    print("\nreplicas:", file=out)
    rows = [[i["name"], i["ready"], i["state"], i["restarts"], i["message"]] for i in status["instances"]]
    table(rows, ["name", "ready", "state", "restarts", "message"], out)


def adapters_logs(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """GET /adapters/{name}/logs, or with --follow its SSE stream until the replica goes or Ctrl-C."""
    path = f"/adapters/{args.name}/logs"
    if not args.follow:
        text = api.request("GET", path, instance=args.instance, tail=args.tail).text
        if args.json:
            print(dumps(text.splitlines()), file=out)
        else:
            out.write(text)
        return
    for event, data in api.stream_events(path, instance=args.instance, tail=args.tail, follow="true"):
        if event == "end":
            return
        print(json.dumps({"line": data}) if args.json else data, file=out, flush=True)


# --- servers -------------------------------------------------------------------------------------


def _member(text: str) -> dict[str, Any]:
    """``ADAPTER[:PREFIX]`` as a member (the gateway checks the names; only an empty adapter is a usage error)."""
    adapter, _, prefix = text.partition(":")
    if not adapter:
        raise UsageError(f"--member {text!r} names no adapter (ADAPTER[:PREFIX])")
    member: dict[str, Any] = {"adapter": adapter}
    if prefix:
        member["prefix"] = prefix
    return member


def _member_text(member: dict[str, Any]) -> str:
    """A member as the ``--member`` flag spells it (``calc:calc_``), plus its tool filters when it has any."""
    text = f"{member.get('adapter')}:{member['prefix']}" if member.get("prefix") else str(member.get("adapter"))
    if member.get("tools") is not None:
        text += f" tools={'|'.join(member['tools'])}"
    if member.get("exclude"):
        text += f" exclude={'|'.join(member['exclude'])}"
    return text


def _server_body(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    body = {k: base[k] for k in SERVER_FIELDS if k in base}
    if args.file:
        loaded = _read_json(args.file)
        if not isinstance(loaded, dict):
            raise UsageError(f"{args.file} must hold a JSON object")
        body.update(loaded)
    body["name"] = args.name
    if args.description is not None:
        body["description"] = args.description
    if args.role is not None:
        body["requiredRoles"] = [r for r in args.role if r]
    if args.member is not None:
        body["members"] = [_member(m) for m in args.member]
    return body


def servers_list(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """GET /servers, every page."""
    items = list(api.pages("/servers", "items"))
    if args.json:
        print(dumps(items), file=out)
        return
    rows = [
        [s["name"], [_member_text(m) for m in s.get("members") or []], s.get("requiredRoles"), s.get("description")]
        for s in items
    ]
    table(rows, ["name", "members", "roles", "description"], out)


def servers_get(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """GET /servers/{name}."""
    _get(args, api, out, "server")


def servers_create(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """POST /servers from flags and/or --file."""
    body = _server_body(args, {})
    if "members" not in body:
        raise UsageError("give at least one --member ADAPTER[:PREFIX] (or members in --file)")
    _show(args, api.json("POST", "/servers", body=body), out, f"created server {args.name}")


def servers_update(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """PUT /servers/{name}: the current definition with the flags' changes, guarded by its ETag."""
    _update(args, api, out, "server", _server_body)


def servers_delete(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """DELETE /servers/{name}."""
    _delete(args, api, out, "server")


def servers_status(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """GET /servers/{name}/status: each member present or missing, readable by you, its ready replicas."""
    status = api.json("GET", f"/servers/{args.name}/status")
    if args.json:
        print(dumps(status), file=out)
        return
    members = status["members"]
    print(
        f"{status['name']}  members {status['presentMembers']}/{len(members)} present,"
        f" {status['missingMembers']} missing",
        file=out,
    )
    rows = [
        [
            m["adapter"],
            m["prefix"],
            "present" if m["present"] else "missing",
            m["readable"],
            m["readyReplicas"],
            m["message"],
        ]
        for m in members
    ]
    table(rows, ["member", "prefix", "state", "readable", "ready", "message"], out)


# --- import, tools, call -------------------------------------------------------------------------


def import_server_json(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """POST /adapters with ``{"serverJson": <file>}`` (and the overrides given as flags)."""
    server_json = _read_json(args.file)
    if not isinstance(server_json, dict):
        raise UsageError(f"{args.file} must hold a JSON object (a server.json)")
    # The adapter is named after the document ("io.github.x/time" → "time") unless --name says otherwise.
    derived = re.sub(r"[^a-z0-9-]+", "-", str(server_json.get("name", "")).rsplit("/", 1)[-1].lower()).strip("-")
    body: dict[str, Any] = {"serverJson": server_json, "name": args.name or derived[:52].rstrip("-")}
    if args.replicas is not None:
        body["replicaCount"] = args.replicas
    if args.env:
        pairs = [item.partition("=") for item in args.env]
        if any(not sep or not key for key, sep, _ in pairs):
            raise UsageError("--env takes NAME=VALUE")
        body["environmentVariables"] = {key: value for key, _, value in pairs}
    if args.arg:
        body["args"] = list(args.arg)
    created = api.json("POST", "/adapters", body=body)
    _show(args, created, out, f"created adapter {created.get('name') if isinstance(created, dict) else ''}")


def _target(args: argparse.Namespace, api: GatewayApi) -> str:
    """The data-plane URL of ``args.target``; the REST read first, for a problem+json 404 or 403."""
    name = args.target
    kind = "servers" if args.server or name.startswith(SERVERS_PREFIX) else "adapters"
    name = name.removeprefix(SERVERS_PREFIX)
    if not name:
        raise UsageError(f"{args.target!r} names no adapter or server")
    api.request("GET", f"/{kind}/{name}")
    return f"{api.url}/{kind}/{name}/mcp"


def _single(exc: BaseException) -> BaseException:
    """The one error inside task-group wrappers (anyio wraps what a client's task raised)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _mcp_failure(exc: BaseException, url: str) -> ApiError:
    return ApiError(0, f"MCP request to {url} failed", f"{type(exc).__name__}: {exc}")


def tools(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """The tools an adapter or virtual server lists for the caller (through the data plane)."""
    from gateway.client import _mcp

    url = _target(args, api)
    try:
        listed = _mcp.list_tools(url, api.credentials.headers())
    except Exception as exc:
        raise _mcp_failure(_single(exc), url) from None
    if args.json:
        print(dumps([t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listed]), file=out)
        return
    rows = []
    for t in listed:
        schema = t.input_schema or {}
        required = set(schema.get("required") or [])
        params = [
            f"{k}{'' if k in required else '?'}:{cell(v.get('type'))}" for k, v in schema.get("properties", {}).items()
        ]
        rows.append([t.name, " ".join(params), (t.description or "").splitlines()[0] if t.description else ""])
    table(rows, ["tool", "arguments", "description"], out)


def call(args: argparse.Namespace, api: GatewayApi, out: TextIO) -> None:
    """Call a tool with ``key=value`` arguments; print its result (exit 1 when the tool reports an error)."""
    from gateway.client import _mcp

    url = _target(args, api)
    try:
        result = _mcp.call_tool(url, api.credentials.headers(), args.tool, args.arguments)
    except _mcp.ArgumentError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:
        cause = _single(exc)
        if isinstance(cause, _mcp.ArgumentError):
            raise UsageError(str(cause)) from None
        raise _mcp_failure(cause, url) from None
    if args.json:
        print(dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True)), file=out)
    else:
        for item in result.content:
            text = getattr(item, "text", None)
            print(text if text is not None else dumps(item.model_dump(mode="json", exclude_none=True)), file=out)
    if result.is_error:
        raise ApiError(0, f"tool {args.tool} reported an error", "see its output above")


# --- helpers for output --------------------------------------------------------------------------


def _show(args: argparse.Namespace, value: Any, out: TextIO, message: str | None = None) -> None:
    if args.json:
        print(dumps(value), file=out)
        return
    if message:
        print(message, file=out)
    if isinstance(value, dict):
        record(value, out)
    else:
        print(cell(value), file=out)


def _done(args: argparse.Namespace, out: TextIO, value: dict[str, Any], message: str) -> None:
    print(dumps(value) if args.json else message, file=out)


# --- argparse ------------------------------------------------------------------------------------


def _adapter_flags(parser: argparse.ArgumentParser, *, update: bool) -> None:
    parser.add_argument("name", help="adapter name")
    parser.add_argument("--image", metavar="NAME[:VERSION]", help="image name and version (e.g. mcp-example:1.0.0)")
    parser.add_argument("--image-version", metavar="VERSION", help="image version alone")
    parser.add_argument("--replicas", type=int, metavar="N", help="replica count" + ("" if update else " (default 1)"))
    parser.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment variable; repeatable")
    if update:
        parser.add_argument("--unset-env", action="append", metavar="KEY", help="remove an environment variable")
    parser.add_argument("--description")
    parser.add_argument("--role", action="append", metavar="ROLE", help="required role; repeatable (--role '' clears)")
    parser.add_argument(
        "--workload-identity", action=argparse.BooleanOptionalAction, default=None, help="useWorkloadIdentity"
    )
    parser.add_argument("--file", "-f", metavar="FILE", help="JSON body to start from ('-' for stdin)")


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="virtual server name")
    parser.add_argument(
        "--member", action="append", metavar="ADAPTER[:PREFIX]", help="member adapter; repeatable (replaces all)"
    )
    parser.add_argument("--description")
    parser.add_argument("--role", action="append", metavar="ROLE", help="required role; repeatable (--role '' clears)")
    parser.add_argument("--file", "-f", metavar="FILE", help="JSON body to start from ('-' for stdin)")


def register(commands: Any) -> None:
    """Add the client commands to the ``mcp-gateway`` subparsers ``commands``."""
    common = _common()

    def leaf(group: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(
            name, parents=[common], help=help_text, description=help_text
        )
        parser.set_defaults(handler=_runner(handler))
        return parser

    adapters = commands.add_parser("adapters", help="list, create, inspect and delete adapters").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(adapters, "list", adapters_list, "list the adapters you may read")
    leaf(adapters, "get", adapters_get, "show one adapter").add_argument("name")
    _adapter_flags(leaf(adapters, "create", adapters_create, "create an adapter"), update=False)
    _adapter_flags(
        leaf(adapters, "update", adapters_update, "change an adapter (flags not given keep their value)"), update=True
    )
    leaf(adapters, "delete", adapters_delete, "delete an adapter, its replicas and sessions").add_argument("name")
    leaf(adapters, "status", adapters_status, "replica counts, conditions and replicas").add_argument("name")
    logs = leaf(adapters, "logs", adapters_logs, "a replica's log (--follow: keep printing new lines)")
    logs.add_argument("name")
    logs.add_argument("--instance", type=int, default=0, metavar="N", help="replica index (default 0)")
    logs.add_argument("--tail", type=int, default=100, metavar="N", help="lines to show first (default 100)")
    logs.add_argument("--follow", action="store_true", help="print new lines as the replica writes them")

    servers = commands.add_parser("servers", help="list, create, inspect and delete virtual servers").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(servers, "list", servers_list, "list the virtual servers you may read")
    leaf(servers, "get", servers_get, "show one virtual server").add_argument("name")
    _server_flags(leaf(servers, "create", servers_create, "create a virtual server"))
    _server_flags(leaf(servers, "update", servers_update, "change a virtual server (flags not given keep their value)"))
    leaf(servers, "delete", servers_delete, "delete a virtual server").add_argument("name")
    leaf(servers, "status", servers_status, "members, missing members").add_argument("name")

    imp = leaf(commands, "import", import_server_json, "create an adapter from a server.json (MCP registry format)")
    imp.add_argument("file", metavar="server.json", help="the file ('-' for stdin)")
    imp.add_argument("--name", help="adapter name (default: the last part of the document's name)")
    imp.add_argument("--replicas", type=int, metavar="N")
    imp.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="an environment variable")
    imp.add_argument("--arg", action="append", default=[], help="a server argument (replaces the document's)")

    target_help = "adapter name, or servers/<name> (or --server) for a virtual server"
    tools_parser = leaf(commands, "tools", tools, "list the tools an adapter or virtual server offers you")
    tools_parser.add_argument("target", help=target_help)
    tools_parser.add_argument("--server", action="store_true", help="the target is a virtual server")
    call_parser = leaf(commands, "call", call, "call a tool: values are JSON when they parse, else text")
    call_parser.add_argument("target", help=target_help)
    call_parser.add_argument("tool")
    call_parser.add_argument("arguments", nargs="*", metavar="KEY=VALUE")
    call_parser.add_argument("--server", action="store_true", help="the target is a virtual server")

    from gateway.client._login import register_login

    register_login(commands)
