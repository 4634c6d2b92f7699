"""Path rebasing: relative paths become absolute, and paths under ``lakehouse/`` follow ``lakehouse.root``.

Resolved once at load time against the working directory, so every executor sees the same
absolute path. Moving the lakehouse (``--set lakehouse.root=/data/lh``) moves the shared dir,
the model, checkpoint, cache and report dirs, the generated raw files and the sources under
the default ``lakehouse/`` with it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from ulv_spark.config.sections import Config, SourcesConf

# Keys whose values are filesystem paths and get resolved to absolute paths at load time.
PATH_KEYS = {
    ("lakehouse", "root"), ("lakehouse", "shared_dir"), ("generate", "output_dir"),
    ("train", "model_dir"), ("train", "checkpoint_dir"), ("train", "petastorm_cache"), ("train", "parquet_dir"),
    ("evaluate", "report_dir"), ("evaluate", "model_dir"), ("embed", "encoder_dir"), ("embed", "finetune_dir"),
    ("segments", "model_dir"),
}


def _abs(path: Optional[str]) -> Optional[str]:
    if path is None or "://" in path or path.startswith("dbfs:") or path.startswith("/Volumes"):
        return path
    return str(Path(path).expanduser().resolve())


def _rebase(path: Optional[str], root: Optional[str], shared: Optional[str]) -> Optional[str]:
    """Paths written under the default ``lakehouse/`` follow ``lakehouse.root`` / ``shared_dir``.

    So moving the lakehouse (``--set lakehouse.root=/data/lh``) moves the shared dir, the
    model, checkpoint, cache and report dirs and the generated raw files with it.
    """
    if path is None or Path(path).is_absolute() or "://" in path:
        return path
    parts = Path(path).parts
    if parts[:2] == ("lakehouse", "_shared") and shared is not None:
        return str(Path(shared, *parts[2:]))
    if parts[:1] == ("lakehouse",) and root is not None and "://" not in root:
        return str(Path(root, *parts[1:]))
    return path


def resolve_paths(cfg: Config) -> Config:
    """`cfg` with every path key (PATH_KEYS and the source paths) absolute and rebased."""
    root = _abs(cfg.lakehouse.root)
    shared = _abs(_rebase(cfg.lakehouse.shared_dir, root, None))
    sections = {}
    for section, key in PATH_KEYS:
        value = getattr(getattr(cfg, section), key)
        if (section, key) == ("lakehouse", "root"):
            resolved = root
        elif (section, key) == ("lakehouse", "shared_dir"):
            resolved = shared
        else:
            resolved = _abs(_rebase(value, root, shared))
        sections.setdefault(section, {})[key] = resolved
    replaced = {s: dataclasses.replace(getattr(cfg, s), **vals) for s, vals in sections.items()}
    sources = {}
    for name in (f.name for f in dataclasses.fields(SourcesConf)):
        src = getattr(cfg.sources, name)
        if src is not None and src.path and src.format not in ("table",):
            sources[name] = dataclasses.replace(src, path=_abs(_rebase(src.path, root, shared)))
    replaced["sources"] = dataclasses.replace(cfg.sources, **sources)
    return dataclasses.replace(cfg, **replaced)
