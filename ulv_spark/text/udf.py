"""Spark wrapper around `TextEncoder.encode`: `mapInPandas` with the encoder loaded once per worker.

Same pattern as `score/udf.py`: the partition function is called once per task with an iterator
of Arrow batches, so the encoder is loaded once per task and kept in the Python worker (which
Spark reuses across tasks, so later tasks skip the load). It runs on the task's GPU when
`embed.use_gpu` is set and CUDA is available (bf16/fp16 autocast), else on the CPU with the
threads Spark gives a task (OMP_NUM_THREADS = spark.task.cpus). Within an Arrow batch the texts
are sorted by length and fed to the model `embed.batch_size` at a time.

Every worker checks that the encoder it finds has the driver's model_id, so a cluster whose
nodes carry different weights fails instead of mixing vectors.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ulv_spark.score.udf import resolve_device
from ulv_spark.text.contracts import EMBEDDING, HAS_TEXT, N_TOKENS, TEXT_HASH, TRUNCATED
from ulv_spark.text.encoder import EncoderInfo, TextEncoder

TEXT = "text"
EMBED_SCHEMA = (f"{TEXT_HASH} STRING, {HAS_TEXT} BOOLEAN, {N_TOKENS} INT, {TRUNCATED} BOOLEAN, "
                f"{EMBEDDING} ARRAY<FLOAT>")

# (encoder_dir, device, model_id) -> TextEncoder; one entry, so a long-lived worker holds one model.
_LOADED: dict = {}


def load_encoder_once(encoder_dir: Optional[str], device: str, info: EncoderInfo) -> TextEncoder:
    """The encoder for `encoder_dir` on `device`, loaded at most once per Python worker."""
    key = (encoder_dir, device, info.model_id)
    if key not in _LOADED:
        from ulv_spark.text.encoder import load_encoder

        _LOADED.clear()
        _LOADED[key] = load_encoder(encoder_dir, device=device, info=info)
    return _LOADED[key]


def embed_frame(pdf: pd.DataFrame, encoder: TextEncoder, *, batch_size: int) -> pd.DataFrame:
    """pandas (text_hash, text) -> pandas (text_hash, has_text, n_tokens, truncated, embedding).

    Grain: one output row per input row, same order. `embedding` holds float32 arrays of length
    `encoder.dim` (zeros where has_text is false).
    """
    out = encoder.encode(pdf[TEXT].tolist(), batch_size=batch_size)
    return pd.DataFrame({TEXT_HASH: pdf[TEXT_HASH].to_numpy(), HAS_TEXT: out.has_text,
                         N_TOKENS: out.n_tokens.astype(np.int32), TRUNCATED: out.truncated,
                         EMBEDDING: list(out.vectors)})


def make_partition_embedder(info: EncoderInfo, encoder_dir: Optional[str], *, use_gpu: bool,
                            batch_size: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The function `mapInPandas` runs per task: load the encoder once, then embed every batch.

    Args:
        info: the driver's `describe_encoder` result (model_id, max_length).
        encoder_dir: embed.encoder_dir as configured (None: each worker finds the packaged default
            in its own Python environment; a directory must be on storage every worker sees).
        use_gpu: embed.use_gpu.
        batch_size: embed.batch_size.
    """
    def embed_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        encoder = load_encoder_once(encoder_dir, resolve_device(use_gpu), info)
        for pdf in batches:
            yield embed_frame(pdf, encoder, batch_size=batch_size)

    return embed_partition


def embed_texts_df(texts: DataFrame, *, info: EncoderInfo, encoder_dir: Optional[str], use_gpu: bool = False,
                   batch_size: int = 64, partitions: int = 0) -> DataFrame:
    """Embeddings of the rows of `texts` (text_hash, text) through a pandas UDF (lazy).

    Grain: one output row per input row. Columns: `EMBED_SCHEMA`.

    Args:
        texts: text_hash and the normalised text.
        partitions: spread the texts over this many tasks first; 0 keeps the input's partitions.
    """
    inputs = texts.select(F.col(TEXT_HASH), F.col(TEXT))
    if partitions > 0:
        inputs = inputs.repartition(partitions)
    fn = make_partition_embedder(info, encoder_dir, use_gpu=use_gpu, batch_size=batch_size)
    return inputs.mapInPandas(fn, schema=EMBED_SCHEMA)
