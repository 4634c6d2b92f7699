"""The conf reference (every key, its default and meaning) generated from ulv_spark/config/sections.py.

    python -m tools.confdoc     # prints the markdown table used in README.md

The meaning of a key is the comment on its line in sections.py (or the comment block just
above it), so the README and the code cannot drift apart: a test compares them.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from ulv_spark import config

_FIELD = re.compile(r"^\s{4}(\w+):\s*[^=]+?(?:=\s*(.*?))?\s*(?:#\s*(.*))?$")


def _comments(cls) -> dict[str, str]:
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("# ").strip())
            continue
        m = _FIELD.match(line)
        if m and not stripped.startswith(("def ", "return", "@")):
            text = (m.group(3) or "").strip() or " ".join(pending)
            out.setdefault(m.group(1), text)
        pending = []
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "(required)"


def _fmt(value) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if dataclasses.is_dataclass(value):
        return "(section)"
    return f"`{value}`"


def rows(cls=config.Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every leaf key, depth first, in declaration order."""
    out = []
    comments = _comments(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source_file":
            continue
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        target = inner[0] if dataclasses.is_dataclass(inner[0]) else (tp if dataclasses.is_dataclass(tp) else None)
        sources = {s.name for s in dataclasses.fields(config.SourcesConf)}
        if target is not None and not (cls is config.SourcesConf and f.name in sources):
            out.extend(rows(target, f"{prefix}{f.name}."))
            continue
        if target is not None:  # sources.<table>: one line, the per-source keys follow once
            out.append((f"{prefix}{f.name}", "`null`", comments.get(f.name) or f"the {f.name} source (keys below)"))
            continue
        out.append((f"{prefix}{f.name}", _fmt(_default(f)), comments.get(f.name, "")))
    if cls is config.Config:
        out.extend(rows(config.SourceConf, "sources.<table>."))
    return out


def markdown() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in rows():
        cells = [f"`{key}`", default, meaning]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
