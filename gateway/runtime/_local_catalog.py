"""The local image catalog: ``imageName:imageVersion`` → the command line a replica runs.

The built-in catalog (``images.toml`` next to this module) knows ``mcp-example:1.0.0``; a user
catalog (setting ``image_catalog``) in the same format adds entries or replaces built-in ones.
Placeholders ``{python}``, ``{repo}`` and ``{catalog_dir}`` are expanded when the catalog is
read; ``{port}`` and ``{replica}`` when a process starts.
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BUILTIN_CATALOG = Path(__file__).with_name("images.toml")
REPO_DIR = Path(__file__).resolve().parent.parent.parent
"""The folder holding the ``gateway`` package: the checkout, with ``examples/`` beside it."""

_KEYS = {"command", "env", "ready_path", "cwd", "transport"}


class CatalogError(ValueError):
    """The catalog file is unreadable or an entry is malformed; the message names file and entry."""


@dataclasses.dataclass(frozen=True, slots=True)
class ImageEntry:
    """How to run one image locally."""

    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    ready_path: str | None = None
    cwd: str | None = None
    transport: str = "streamable-http"
    """``stdio``: the command speaks MCP on stdin/stdout and runs behind the stdio bridge."""


def _expand(text: str, values: Mapping[str, str]) -> str:
    # Plain replacement, not str.format: commands may carry JSON or other braces.
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def expand_process(text: str, *, port: int, replica: str) -> str:
    """Expand the per-process placeholders ``{port}`` and ``{replica}``."""
    return _expand(text, {"port": str(port), "replica": replica})


def _entry(path: Path, image: str, raw: Any) -> ImageEntry:
    where = f"image catalog {path}, entry {image!r}"
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: must be a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise CatalogError(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    values = {"python": sys.executable, "repo": str(REPO_DIR), "catalog_dir": str(path.resolve().parent)}
    command = raw.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise CatalogError(f"{where}: 'command' must be a non-empty list of strings")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise CatalogError(f"{where}: 'env' must be a table of strings")
    ready_path = raw.get("ready_path")
    if ready_path is not None and (not isinstance(ready_path, str) or not ready_path.startswith("/")):
        raise CatalogError(f"{where}: 'ready_path' must be a path starting with '/'")
    cwd = raw.get("cwd", "{catalog_dir}")
    if not isinstance(cwd, str):
        raise CatalogError(f"{where}: 'cwd' must be a string")
    transport = raw.get("transport", "streamable-http")
    if transport not in ("streamable-http", "stdio"):
        raise CatalogError(f"{where}: 'transport' must be 'streamable-http' or 'stdio'")
    return ImageEntry(
        command=tuple(_expand(c, values) for c in command),
        env=tuple((k, _expand(v, values)) for k, v in env.items()),
        ready_path=ready_path,
        cwd=_expand(cwd, values),
        transport=transport,
    )


def read_catalog_file(path: Path) -> dict[str, ImageEntry]:
    """Parse one catalog file; raise CatalogError naming the file and the entry at fault."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"image catalog {path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"image catalog {path}: invalid TOML: {exc}") from None
    for image in data:
        if image.count(":") != 1 or not all(image.split(":")):
            raise CatalogError(f"image catalog {path}: key {image!r} must be 'imageName:imageVersion'")
    return {image: _entry(path, image, raw) for image, raw in data.items()}


class ImageCatalog:
    """The built-in catalog overlaid with an optional user catalog, re-read when a file changes."""

    def __init__(self, user_catalog: Path | None) -> None:
        self._paths = [BUILTIN_CATALOG] if user_catalog is None else [BUILTIN_CATALOG, user_catalog]
        self._stamp: tuple[tuple[int, int], ...] | None = None
        self._entries: dict[str, ImageEntry] = {}

    def _current_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self._paths:
            try:
                st = path.stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((-1, -1))
        return tuple(stamps)

    def load(self) -> dict[str, ImageEntry]:
        """Every known image; raise CatalogError when a catalog file is broken."""
        stamp = self._current_stamp()
        if stamp != self._stamp:
            entries: dict[str, ImageEntry] = {}
            for path in self._paths:
                entries.update(read_catalog_file(path))
            self._entries, self._stamp = entries, stamp
        return self._entries

    def lookup(self, image: str) -> ImageEntry | None:
        """The entry for ``imageName:imageVersion``, or None when no catalog knows it."""
        return self.load().get(image)
