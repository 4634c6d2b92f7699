"""Versioned model directories: save, load, find the newest complete one.

A model directory ``<train.model_dir>/<version>/`` holds:

* ``config.json`` — the transformers encoder config (``AutoConfig``-loadable);
* ``model.safetensors`` — every weight of the multi-task model (encoder, MLM head, heads);
* ``model_spec.json`` — the architecture (:class:`~ulv_spark.train.spec.ModelSpec`, flat);
* ``meta.json`` — :class:`~ulv_spark.train.spec.ModelMeta` (what scoring needs to feed the model);
* ``vocabulary.json`` — vocabulary size, fingerprint, sequence length, special tokens;
* ``feature_stats.json`` — tabular feature order, mean, std and the transform before them;
* ``metrics.json`` — validation metrics of the run; ``conf.yaml`` — the resolved conf used;
* ``trees.pkl`` — the tree companion stacked with the heads (train.tree_blend; absent without);
* ``_COMPLETE`` — written last, so a half-written directory is never taken as the latest.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Optional

from ulv_spark.names import CLS_ID, MASK_ID, PAD_ID, UNK_ID
from ulv_spark.train.spec import ModelMeta, ModelSpec
from ulv_spark.train.trees import load_trees, save_trees

COMPLETE_MARKER = "_COMPLETE"
WEIGHTS_FILE = "model.safetensors"


def new_version(now: Optional[dt.datetime] = None) -> str:
    """``YYYYMMDDTHHMMSSffffff-<8 hex>``: sorts by UTC creation time, unique per call."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")


def save_model(model, meta: ModelMeta, out_root: str, metrics: dict, conf: dict) -> str:
    """Write a new versioned model directory under ``out_root``; returns its path.

    The directory is named ``meta.version``; if that already exists (or is empty) a fresh
    version is made, so an existing model is never overwritten.
    """
    import safetensors.torch
    import yaml

    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    version = meta.version or new_version()
    if (root / version).exists():
        version = new_version()
    meta = dataclasses.replace(meta, version=version)
    target = root / version
    target.mkdir(parents=True)
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    module.mlm.config.save_pretrained(str(target))
    safetensors.torch.save_model(module, str(target / WEIGHTS_FILE))
    _write_json(target / "model_spec.json", module.spec.to_dict())
    _write_json(target / "meta.json", meta.to_dict())
    _write_json(target / "vocabulary.json", {
        "vocab_size": meta.vocab_size, "fingerprint": meta.vocab_fingerprint, "seq_len": meta.seq_len,
        "special_tokens": {"pad": PAD_ID, "mask": MASK_ID, "cls": CLS_ID, "unk": UNK_ID}})
    _write_json(target / "feature_stats.json", {
        "columns": meta.feature_columns, "mean": meta.feature_mean, "std": meta.feature_std,
        "transform": meta.feature_transform})
    _write_json(target / "metrics.json", metrics)
    save_trees(getattr(module, "trees", None), str(target))
    (target / "conf.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(conf, default=str)), sort_keys=False),
                                      encoding="utf-8")
    (target / COMPLETE_MARKER).write_text(dt.datetime.now(dt.timezone.utc).isoformat(), encoding="utf-8")
    return str(target)


def read_meta(model_dir: str) -> ModelMeta:
    """The :class:`ModelMeta` of a model directory, without loading weights."""
    return ModelMeta.from_dict(json.loads((Path(model_dir) / "meta.json").read_text(encoding="utf-8")))


def load_model(model_dir: str, device: str = "cpu"):
    """(model in eval mode on ``device``, ModelMeta) from a complete model directory.

    Raises:
        FileNotFoundError: the directory is missing or incomplete (no ``_COMPLETE`` marker).
    """
    import safetensors.torch
    from transformers import AutoConfig

    from ulv_spark.train.model import build_model

    path = Path(model_dir)
    if not (path / COMPLETE_MARKER).is_file():
        raise FileNotFoundError(f"{model_dir} is not a complete model directory (no {COMPLETE_MARKER})")
    spec = ModelSpec.from_dict(json.loads((path / "model_spec.json").read_text(encoding="utf-8")))
    encoder_config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    model = build_model(spec, encoder_config=encoder_config)
    missing, unexpected = safetensors.torch.load_model(model, str(path / WEIGHTS_FILE), strict=False)
    if unexpected or [k for k in missing if not _is_tied(model, k)]:
        raise ValueError(f"{model_dir}: weights do not match the architecture "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    model.trees = load_trees(model_dir)   # None without a trees.pkl
    model.to(device).eval()
    return model, read_meta(model_dir)


def _is_tied(model, key: str) -> bool:
    # safetensors stores a tied tensor once (e.g. the MLM decoder shares the word embeddings)
    params = dict(model.named_parameters(remove_duplicate=False))
    tensor = params.get(key)
    return tensor is not None and any(t is tensor for k, t in params.items() if k != key)


def latest_model_dir(model_root: str) -> Optional[str]:
    """The newest complete model directory under ``model_root``, or None when there is none."""
    root = Path(model_root)
    if not root.is_dir():
        return None
    complete = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / COMPLETE_MARKER).is_file())
    return str(root / complete[-1]) if complete else None

