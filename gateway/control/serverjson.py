"""An MCP Registry ``server.json`` → the adapter fields it stands for (issue 17).

Format: https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json (read
2026-11; ../shared/research/stdio-registry-obo-lease.md §1). Decisions:

* **Which package.** The first entry of ``packages`` whose ``registryType`` the runtime runs:
  ``npm`` and ``pypi`` on the local runtime (``npx``/``uvx``), ``oci`` on Kubernetes (the
  identifier ``registry/ns/repo:tag`` becomes ``imageName``/``imageVersion``). ``remotes`` are
  not hosted (they already run somewhere). Nothing fitting → 422 naming ``serverJson.packages``.
* **Transport.** ``stdio`` → ``stdio``; ``streamable-http`` → ``streamable-http`` when its URL's
  path is ``/mcp`` (the path the gateway forwards to); ``sse`` only servers are refused.
* **Arguments.** ``packageArguments`` in order: a positional one gives its ``value`` (else its
  ``default``); a named one gives ``name`` then that value. A required argument with neither
  needs the caller's own ``args`` (which then replace the computed ones): 422 naming it otherwise.
  ``runtimeArguments`` (flags for ``npx``/``docker``) are not used: the runtime builds its own.
* **Environment.** Each variable the document marks ``isRequired`` must get a value: one posted in
  ``environmentVariables``, the document's ``value``, or its ``default`` (a default counts: the
  publisher said it works). Missing ones → 422 naming each. Optional ones with a ``value`` or
  ``default`` are set too, except the names the runtime sets itself (``PORT``, ``HOST``): the
  runtime's own port wins.
* **Versions** must be exact: a missing or ``latest`` npm/PyPI version is refused.
* **Errors** are 422 (Unprocessable) naming the field: the body is schema-valid (``serverJson`` is any
  object), its content cannot be hosted. A 400 would break the REST contract that schema-valid bodies
  are never "malformed" (tests/adversarial/test_rest_schemathesis.py).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import msgspec

from gateway.envpolicy import RUNTIME_SET_NAMES
from gateway.errors import Unprocessable
from gateway.models import AdapterInput, PackageRef

LOCAL_REGISTRIES = ("npm", "pypi")
KUBERNETES_REGISTRIES = ("oci",)
_VAR = re.compile(r"\{([A-Za-z0-9_.-]+)\}")
_EXACT = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,127}$")
MAX_DOCUMENT_PACKAGES = 50


def _field(i: int, rest: str = "") -> str:
    return f"serverJson.packages[{i}]{rest}"


def _value(item: dict[str, Any]) -> str | None:
    value = item.get("value", item.get("default"))
    if value is None:
        return None
    text = str(value).lower() if isinstance(value, bool) else str(value)
    variables = item.get("variables") if isinstance(item.get("variables"), dict) else {}

    def sub(m: re.Match[str]) -> str:
        var = variables.get(m.group(1)) if variables else None
        if isinstance(var, dict) and var.get("value", var.get("default")) is not None:
            return str(var.get("value", var.get("default")))
        return m.group(0)

    return _VAR.sub(sub, text)


def resolve(data: AdapterInput, *, registries: tuple[str, ...]) -> tuple[AdapterInput, str]:
    """The input with ``serverJson`` replaced by the package, transport, args and env it chose; and its name."""
    doc = data.server_json
    assert doc is not None
    if data.image_name or data.image_version or data.package is not None:
        raise Unprocessable("give either serverJson or imageName/imageVersion or package, not both", field="serverJson")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise Unprocessable("serverJson.name is required (the server's reverse-DNS name)", field="serverJson.name")
    packages = doc.get("packages")
    if not isinstance(packages, list) or not packages or len(packages) > MAX_DOCUMENT_PACKAGES:
        raise Unprocessable(
            "serverJson.packages must list the packages to run (remotes are not hosted by the gateway)",
            field="serverJson.packages",
        )
    offered = [p.get("registryType") if isinstance(p, dict) else None for p in packages]
    index = next((i for i, kind in enumerate(offered) if kind in registries), None)
    if index is None:
        raise Unprocessable(
            f"serverJson.packages offers {', '.join(map(str, offered))}; this gateway's runtime runs "
            f"{' or '.join(registries)} packages",
            field="serverJson.packages",
        )
    pkg: dict[str, Any] = packages[index]
    kind = str(pkg["registryType"])
    identifier = pkg.get("identifier")
    if not isinstance(identifier, str) or not identifier:
        raise Unprocessable("the package needs an identifier", field=_field(index, ".identifier"))

    raw_transport = pkg.get("transport")
    transport_doc: dict[str, Any] = raw_transport if isinstance(raw_transport, dict) else {}
    transport = transport_doc.get("type")
    if transport not in ("stdio", "streamable-http"):
        raise Unprocessable(
            f"transport {transport!r} is not hosted by the gateway (stdio or streamable-http)",
            field=_field(index, ".transport.type"),
        )

    env = dict(data.environment_variables)
    missing: list[str] = []
    for var in pkg.get("environmentVariables") or []:
        if not isinstance(var, dict) or not isinstance(var.get("name"), str):
            continue
        var_name = var["name"]
        if var_name in env:
            continue
        value = _value(var)
        if value is not None:
            if var_name.upper() not in RUNTIME_SET_NAMES:
                env[var_name] = value
        elif var.get("isRequired"):
            missing.append(var_name)
    if missing:
        raise Unprocessable(
            f"serverJson requires environment variable{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            "set them in environmentVariables",
            field=f"environmentVariables.{missing[0]}",
        )

    if transport == "streamable-http":
        url = str(transport_doc.get("url") or "")
        path = urlsplit(_VAR.sub("0", url)).path if url else "/mcp"
        if path.rstrip("/") != "/mcp":
            raise Unprocessable(
                f"the package serves MCP at {path!r}; the gateway forwards to /mcp",
                field=_field(index, ".transport.url"),
            )

    args = data.args
    if args is None:
        args = []
        for j, arg in enumerate(pkg.get("packageArguments") or []):
            if not isinstance(arg, dict):
                continue
            value = _value(arg)
            if value is None:
                if arg.get("isRequired"):
                    hint = arg.get("valueHint") or arg.get("name") or f"argument {j}"
                    raise Unprocessable(
                        f"the package needs argument {hint!r} ({arg.get('description', 'no description')}); "
                        "pass the server's arguments in args",
                        field=_field(index, f".packageArguments[{j}]"),
                    )
                continue
            if arg.get("type") == "named" and isinstance(arg.get("name"), str):
                args.append(arg["name"])
            args.append(value)

    changes: dict[str, Any] = {
        "server_json": None,
        "transport": data.transport or transport,
        "environment_variables": env,
        "args": args or None,
    }
    if kind == "oci":
        image, _, tag = identifier.rpartition(":")
        if not image or "/" in tag or "@" in identifier:
            raise Unprocessable(
                f"the OCI identifier {identifier!r} needs a tag (registry/ns/repo:tag)",
                field=_field(index, ".identifier"),
            )
        changes.update(image_name=image, image_version=tag)
    else:
        version = pkg.get("version")
        if not isinstance(version, str) or not _EXACT.fullmatch(version):
            raise Unprocessable(f"the package needs an exact version; got {version!r}", field=_field(index, ".version"))
        changes["package"] = PackageRef(registry=kind, name=identifier, version=version)  # type: ignore[arg-type]
    return msgspec.structs.replace(data, **changes), name
