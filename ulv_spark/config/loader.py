"""Read a conf: YAML (with ``extends``), dotted ``--set`` overrides, strict typing into the sections.

Unknown keys, missing required keys and wrong types fail at load time with a
:class:`ConfigError` that names the key and the file. A file may start from another with
``extends: base.yaml`` (resolved next to it, deep-merged, except that a source's ``columns``
replace the base's and a source whose ``format`` changes replaces the base's whole). Command-line overrides use dotted
keys (``--set train.epochs=2``) and are checked exactly like the file. A key that was removed
fails with a message naming its replacement (REMOVED_KEYS).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from ulv_spark.config.paths import resolve_paths
from ulv_spark.config.sections import Config, ConfigError

# Keys that no longer exist -> what to use instead.
REMOVED_KEYS = {
    "gates.max_reject_share": "ingest.max_reject_share (one reject threshold: ingest stops above it and the "
                              "nightly reject_share gate uses it)",
}

def load_config(path: str | os.PathLike | None = None, overrides: Optional[list[str] | dict[str, Any]] = None) -> Config:
    """Load ``path`` (default ``conf/local.yaml``), apply dotted ``overrides``, validate.

    Args:
        path: the YAML file.
        overrides: ``["train.epochs=2", ...]`` or ``{"train.epochs": 2}``.

    Raises:
        ConfigError: missing file, bad YAML, unknown key, missing required key, wrong type.
    """
    path = Path(path or os.environ.get("ULV_SPARK_CONF", "conf/local.yaml"))
    raw = _read_yaml(path, seen=())
    parsed = _parse_overrides(overrides)
    where = str(path) + (" (with --set overrides)" if parsed else "")
    for key, value in parsed.items():
        _set_dotted(raw, key, value, where="--set " + key)
    cfg = _build(Config, raw, prefix="", where=where)
    cfg = resolve_paths(cfg)
    return dataclasses.replace(cfg, source_file=str(path.resolve()))


def _read_yaml(path: Path, seen: tuple) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    base = _read_yaml((path.parent / base_name), seen + (path.resolve(),))
    return _merge_conf(base, data)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _merge_conf(base: dict, top: dict) -> dict:
    """`top` over `base` (extends): a deep merge, except for the sources.

    A source's `columns` replace the base's (a merge would keep the base's mapping of every
    column the new source does not name, e.g. the demo's `amount: order_total`), and a source
    whose `format` differs from the base's replaces it whole (options, timestamp format and
    flags of another reader do not carry over).
    """
    merged = _deep_merge(base, top)
    base_sources, top_sources = base.get("sources"), top.get("sources")
    if not isinstance(base_sources, dict) or not isinstance(top_sources, dict):
        return merged
    for table, source in top_sources.items():
        old = base_sources.get(table)
        if not isinstance(source, dict) or not isinstance(old, dict):
            continue
        if source.get("format", old.get("format")) != old.get("format"):
            merged["sources"][table] = dict(source)
        elif "columns" in source:
            merged["sources"][table]["columns"] = source["columns"]
    return merged


def _parse_overrides(overrides) -> dict[str, Any]:
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, _, text = item.partition("=")
        parsed[key.strip()] = yaml.safe_load(text) if text.strip() else None
    return parsed


def _set_dotted(raw: dict, key: str, value: Any, where: str) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls, raw: Any, prefix: str, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source_file"}
    unknown = sorted(set(raw) - set(fields))
    removed = [prefix + key for key in unknown if prefix + key in REMOVED_KEYS]
    if removed:
        raise ConfigError(f"{where}: '{removed[0]}' was removed: use {REMOVED_KEYS[removed[0]]}")
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{where}: unknown key '{prefix}{unknown[0]}' (known keys here: {known})")
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in raw:
            kwargs[name] = _coerce(hints[name], raw[name], key, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key '{key}'")
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a section's own cross-field checks (__post_init__)
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(tp, value: Any, key: str, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, where)
    if value is None:
        if ".columns." in key and key.startswith("sources."):
            name = key.rsplit(".", 1)[1]
            raise ConfigError(f"{where}: '{key}' must not be empty: a source's columns replace the base file's, "
                              f"so restate them without '{name}' to drop that mapping")
        raise ConfigError(f"{where}: '{key}' must not be empty")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{key}' must be a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}", where) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e9 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
        return str(value)
    if tp is dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"{where}: '{key}' must be a date YYYY-MM-DD, got {value!r}") from None
    raise ConfigError(f"{where}: '{key}' has an unsupported type {tp}")  # pragma: no cover


def to_dict(cfg: Config) -> dict:
    """The resolved config as plain data (logged at job start, saved with each model)."""
    def plain(value):
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value
    return plain(dataclasses.asdict(cfg))
