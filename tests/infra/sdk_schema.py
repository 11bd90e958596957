"""Check a resource's inputs, as the engine receives them, against the provider SDK's declared arguments.

Under ``set_mocks`` nothing validates what the program sends: a misspelt or misplaced key (a
property of a sub-resource written one level too high, a plural where Azure wants the singular
field) reaches the mocks unchanged and would only fail in a real ``pulumi up``. The generated
Pulumi SDKs declare every argument: the resource's ``<Type>Args`` class and the nested
``<Type>Args`` input types, each property with its wire (camelCase) name and type
(``pulumi._types.input_type_types``). ``unknown_keys`` walks an input dict through those
declarations, at every nesting level, and names every key the SDK does not declare, every object
or list where the SDK declares something else, and every string outside a declared enum (unless
listed in ``KNOWN_OUTSIDE_ENUMS``).
"""

from __future__ import annotations

import collections.abc
import enum
import importlib
import re
import typing
from typing import Any

from pulumi import _types as pulumi_types
from pulumi.output import Output

# The Pulumi engine adds these to every registration; they are not SDK arguments.
ENGINE_KEYS = frozenset({"__defaults"})
# Azure's enums are extensible (the SDK types them ``str | Enum``), so a string outside the enum is
# not necessarily wrong; but most such strings are typos or a wrong case. These are the values used on
# purpose that the SDK's enum does not list, with where Azure documents them.
KNOWN_OUTSIDE_ENUMS = frozenset(
    {
        # learn.microsoft.com/azure/azure-monitor/containers/kubernetes-monitoring-enable (DCR for AKS)
        ("streams", "Microsoft-ContainerInsights-Group-Default"),
    }
)


def sdk_args_class(token: str) -> type | None:
    """The ``<Type>Args`` input class of a resource token, or None for component resources.

    ``azure-native:network:NetworkSecurityGroup`` → ``pulumi_azure_native.network.NetworkSecurityGroupArgs``,
    ``kubernetes:apps/v1:Deployment`` → ``pulumi_kubernetes.apps.v1.DeploymentArgs``,
    ``random:index/randomString:RandomString`` → ``pulumi_random.RandomStringArgs``,
    ``pulumi:providers:kubernetes`` → ``pulumi_kubernetes.ProviderArgs``.
    """
    package, module, name = token.split(":")
    if package == "pulumi" and module == "providers":
        base = importlib.import_module(_python_package(name))
        return typing.cast(type, base.ProviderArgs)
    if package not in ("azure-native", "azuread", "kubernetes", "random"):
        return None  # our own ComponentResources
    base_name = _python_package(package)
    if package in ("random", "azuread") or module == "index" or module.startswith("index/"):
        python_module = base_name
    elif package == "kubernetes":
        group, _, version = module.partition("/")
        group = group.split(".")[0] if group.endswith(".k8s.io") else group
        group = {"rbac": "rbac"}.get(group, group)
        python_module = f"{base_name}.{group}.{version}"
    else:
        python_module = f"{base_name}.{module}"
    mod = importlib.import_module(python_module)
    resource = getattr(mod, name)
    home = importlib.import_module(resource.__module__)
    # Where a nested input type already has the name <Type>Args (network's NetworkSecurityGroupArgs,
    # kubernetes' SecretArgs ...), the SDK calls the resource's own arguments <Type>InitArgs.
    args = getattr(home, f"{name}InitArgs", None) or getattr(home, f"{name}Args")
    return typing.cast(type, args)


def _python_package(package: str) -> str:
    return {
        "azure-native": "pulumi_azure_native",
        "azuread": "pulumi_azuread",
        "kubernetes": "pulumi_kubernetes",
        "random": "pulumi_random",
    }[package]


def declared_properties(cls: type) -> dict[str, Any]:
    """Wire name → declared type of every property of an SDK input class."""
    return pulumi_types.input_type_types(cls)


def unknown_keys(value: Any, cls: type, path: str = "") -> list[str]:
    """Paths of every key in ``value`` that ``cls`` (an SDK input class) does not declare, recursively."""
    if not isinstance(value, dict):
        return [f"{path or '<root>'}: expected an object of {cls.__name__}, got {type(value).__name__}"]
    declared = declared_properties(cls)
    problems: list[str] = []
    for key, item in value.items():
        if key in ENGINE_KEYS:
            continue
        where = f"{path}.{key}" if path else key
        if key not in declared:
            problems.append(f"{where}: not an argument of {cls.__name__} (declared: {', '.join(sorted(declared))})")
            continue
        problems.extend(_check(item, declared[key], where))
    return problems


def _check(value: Any, typ: Any, path: str) -> list[str]:
    """Problems of ``value`` against the declared type ``typ`` (only object keys are checked)."""
    if value is None:
        return []
    candidates = _alternatives(typ)
    if isinstance(value, dict):
        objects = [c for c in candidates if isinstance(c, type) and pulumi_types.is_input_type(c)]
        maps = [c for c in candidates if typing.get_origin(c) in (dict, collections.abc.Mapping)]
        if maps and not objects:
            value_type = typing.get_args(maps[0])[1] if typing.get_args(maps[0]) else Any
            return [p for k, v in value.items() for p in _check(v, value_type, f"{path}.{k}")]
        if objects:
            # A union of object types (rare): the value must fit at least one of them.
            results = [unknown_keys(value, c, path) for c in objects]
            return min(results, key=len)
        if any(c is Any or c is dict or c is object for c in candidates):
            return []
        return [f"{path}: an object where the SDK declares {typ}"]
    if isinstance(value, list):
        sequences = [c for c in candidates if typing.get_origin(c) in (list, collections.abc.Sequence, typing.Sequence)]
        if not sequences:
            if any(c is Any or c is list or c is object for c in candidates):
                return []
            return [f"{path}: a list where the SDK declares {typ}"]
        element = typing.get_args(sequences[0])[0] if typing.get_args(sequences[0]) else Any
        return [p for i, v in enumerate(value) for p in _check(v, element, f"{path}[{i}]")]
    enums = [c for c in candidates if isinstance(c, type) and issubclass(c, enum.Enum)]
    if isinstance(value, str) and enums:
        allowed = {member.value for e in enums for member in e}
        field = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
        if value not in allowed and (field, value) not in KNOWN_OUTSIDE_ENUMS:
            return [f"{path}: {value!r} is not one of {sorted(allowed)}"]
    return []


def _alternatives(typ: Any) -> list[Any]:
    """The concrete types a declared annotation admits: Input/Optional/Awaitable/Output peeled off."""
    origin = typing.get_origin(typ)
    if origin is typing.Union or str(origin) == "types.UnionType":
        out: list[Any] = []
        for arg in typing.get_args(typ):
            out.extend(_alternatives(arg))
        return out
    if typ is type(None):
        return []
    if origin in (collections.abc.Awaitable, Output) or typ is Output:
        args = typing.get_args(typ)
        return _alternatives(args[0]) if args else []
    if origin is typing.Literal:
        return [str]
    return [typ]
