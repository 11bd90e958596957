"""What the command line prints for people: aligned tables and ``key: value`` blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Writer(Protocol):
    """Where output goes (sys.stdout, a StringIO ...)."""

    def write(self, text: str, /) -> int:
        """Write ``text``."""
        ...


def cell(value: Any) -> str:
    """One value as table text: lists joined by commas, None as ``-``, dicts as ``k=v``."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(cell(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={cell(v)}" for k, v in value.items())
    return str(value).replace("\n", " ")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: Writer) -> None:
    """An aligned table with upper-case headers; ``(none)`` for no rows."""
    if not rows:
        print("(none)", file=out)
        return
    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), file=out)
    for row in text:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def record(value: dict[str, Any], out: Writer) -> None:
    """A resource as ``key: value`` lines; lists of objects as indented tables."""
    scalars = {k: v for k, v in value.items() if not _is_rows(v)}
    width = max((len(k) for k in scalars), default=0)
    for key, item in scalars.items():
        print(f"{key + ':':<{width + 1}} {cell(item)}", file=out)
    for key, item in value.items():
        if _is_rows(item):
            print(f"\n{key}:", file=out)
            headers = list(dict.fromkeys(k for row in item for k in row))
            table([[row.get(h) for h in headers] for row in item], headers, _Indented(out))


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


class _Indented:
    """A TextIO stand-in that indents every line by two spaces."""

    def __init__(self, out: Writer) -> None:
        self._out = out
        self._start = True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self._start and piece.strip():
                self._out.write("  ")
            self._out.write(piece)
            self._start = piece.endswith("\n")
        return len(text)
