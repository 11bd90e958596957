"""Which environment variables an adapter may not set: the one deny-list the control plane and
every runtime share.

Why (2026-11-30, issue 12): every ``environmentVariables`` entry reached the replica process. On
the local runtime a user with no roles set ``PYTHONWARNINGS`` + ``BROWSER`` and had a shell
command run as the gateway's user; ``PYTHONPATH`` made a ``sitecustomize.py`` run;
``LD_PRELOAD`` reached the dynamic loader. An adapter's environment is for configuring the
program the operator's image catalog names, never for changing *how that program is loaded or
interpreted*: variables read by the loader, by language runtimes at start-up, by shells, or that
point a program at code or tools (``BROWSER``, ``EDITOR``, ``GIT_*``) are refused, and so are the
names the runtimes set themselves (``HOST``, ``PORT``, ``MCP_REPLICA_ID``,
``MCP_GATEWAY_RUNTIME_OWNER``) and the gateway's own ``MCPGW_*`` settings.

Matching is by glob (``fnmatch``), case-insensitive: ``ld_preload`` is refused like
``LD_PRELOAD`` (Linux is case-sensitive, but macOS/Windows runtimes and some tools are not, and
refusing a lower-case twin costs nobody anything). A few ``PYTHON*`` variables that only change
output buffering, encodings, hashing or diagnostics are allowed (``ALLOWED_PYTHON``). The setting
``env_deny`` (``MCPGW_ENV_DENY``) adds names or globs; nothing removes built-in ones.

This module imports nothing from the gateway: ``control`` and ``runtime`` both use it without
depending on each other.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

RUNTIME_SET_NAMES = ("HOST", "PORT", "MCP_REPLICA_ID", "MCP_GATEWAY_RUNTIME_OWNER")
"""Set by the runtimes for every replica (local: all four; Kubernetes: MCP_REPLICA_ID)."""

BUILTIN_DENY: tuple[str, ...] = (
    # dynamic loaders (glibc, musl, macOS) and glibc features that load code or data files
    "LD_*",
    "DYLD_*",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "MALLOC_*",
    # language runtimes: search paths, start-up code, options that load agents or modules
    "PYTHON*",
    "NODE_OPTIONS",
    "NODE_PATH",
    "NODE_REPL_EXTERNAL_MODULE",
    "NPM_CONFIG_*",
    "PERL5*",
    "PERLLIB",
    "PERLIO",
    "RUBY*",
    "GEM_*",
    "BUNDLE_*",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "VIRTUAL_ENV",
    "CONDA_*",
    "UV_*",
    "PIP_*",
    # shells and the tools programs start on the user's behalf
    "PATH",
    "HOME",
    "SHELL",
    "ENV",
    "BASH_ENV",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "IFS",
    "CDPATH",
    "BROWSER",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "GIT_*",
    "TMPDIR",
    # the gateway's own settings and the names the runtimes set
    "MCPGW_*",
    *RUNTIME_SET_NAMES,
)
"""Names and globs an adapter may never set (docs/security.md explains each group)."""

ALLOWED_PYTHON = frozenset(
    {
        "PYTHONUNBUFFERED",
        "PYTHONIOENCODING",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUTF8",
        "PYTHONHASHSEED",
        "PYTHONFAULTHANDLER",
    }
)
"""``PYTHON*`` variables that change buffering, encodings, hashing or crash reports only: allowed.

Each was checked against CPython 3.11's ``Python/initconfig.c``: none names a path, a module or
code to run. (``PYTHONWARNINGS`` is not here: a warnings filter names a category class, which is
imported — that is how ``antigravity`` + ``BROWSER`` ran a shell command.)
"""


class EnvPolicy:
    """The deny-list with the operator's extra globs; ``denied`` answers for one name."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.patterns = tuple(dict.fromkeys(p.strip().upper() for p in (*BUILTIN_DENY, *extra) if p.strip()))

    def denied(self, name: str) -> bool:
        """True when an adapter may not set ``name``."""
        upper = name.upper()
        if upper in ALLOWED_PYTHON:
            return False
        return any(fnmatch.fnmatchcase(upper, pattern) for pattern in self.patterns)

    def denied_names(self, env: Mapping[str, str]) -> list[str]:
        """The names in ``env`` an adapter may not set, sorted."""
        return sorted(name for name in env if self.denied(name))

    def allowed(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` without the names an adapter may not set."""
        return {name: value for name, value in env.items() if not self.denied(name)}


DEFAULT_POLICY = EnvPolicy()
"""The built-in deny-list with no extra globs."""
