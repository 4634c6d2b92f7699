"""Pure pandas batch -> pandas batch inference around the trained model (no Spark here).

`predict_batch` is what the Spark wrapper (`score/udf.py`) runs on every Arrow batch; it can be
called directly on a pandas frame, which is how it is tested and benchmarked. The model itself
comes from the training team (`train/artifacts.load_model`, `train/model.predict_arrays`).

Input batch grain: one row per user, columns `user_id`, `seq_tokens`, `seq_mask` (sequences of
ints of the model's `seq_len`) and every column of `meta.feature_columns` (numbers; NaN/None
allowed), plus `seq_text` (per-event product text, null allowed) for a model with text fusion
(`model.spec.text_dims` > 0). Output grain: one row per input row, same order, columns
`PREDICTION_SCHEMA`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ulv_spark.names import ARM_CONVERSION, ARM_OUTPUTS, ARM_VALUE, ARM_VALUE_LONG, SCALAR_OUTPUTS
from ulv_spark.schemas import SEQ_MASK, SEQ_TEXT, SEQ_TOKENS, USER_ID

# Columns the model adds per user (the staging table `score_predictions` holds them).
PREDICTION_SCHEMA = (f"{USER_ID} STRING, " + ", ".join(f"{c} DOUBLE" for c in SCALAR_OUTPUTS)
                     + ", " + ", ".join(f"{c} ARRAY<DOUBLE>" for c in ARM_OUTPUTS))
EMBEDDING = "embedding"  # the encoder's pooled vector per user (segments.contracts.EMBEDDING)
# ... and with the embedding (score.write_embeddings): the same pass adds it
PREDICTION_SCHEMA_WITH_EMBEDDING = PREDICTION_SCHEMA + f", {EMBEDDING} ARRAY<FLOAT>"
_NUMERIC_PREFIXES = ("tinyint", "smallint", "int", "bigint", "float", "double", "decimal", "boolean")


def input_columns(meta) -> list[str]:
    """Columns of user_features that `predict_batch` reads, in the order it expects them."""
    return [USER_ID, SEQ_TOKENS, SEQ_MASK, *meta.feature_columns]


def text_dims(model) -> int:
    """Per-event text components the model fuses (its spec's text_dims; 0 = no text fusion)."""
    return int(getattr(getattr(model, "spec", None), "text_dims", 0) or 0)


def _stack_sequences(values: pd.Series, seq_len: int, name: str, dtype=np.int64) -> np.ndarray:
    """(B, seq_len) array from a column of sequences; a null sequence becomes all zeros (PAD)."""
    out = np.zeros((len(values), seq_len), dtype=dtype)
    for i, seq in enumerate(values):
        if seq is None or (isinstance(seq, float) and np.isnan(seq)):
            continue
        arr = np.asarray(seq, dtype=dtype)
        if arr.shape != (seq_len,):
            raise ValueError(f"{name} of row {i} has length {arr.shape[0] if arr.ndim else 0}, "
                             f"the model expects seq_len={seq_len}")
        out[i] = arr
    return out


def text_array(pdf: pd.DataFrame, meta, dims: int) -> np.ndarray:
    """(B, seq_len * dims) float32 per-event text from `seq_text`; null (or no column) = zeros (no text).

    Raises:
        ValueError: a seq_text of the wrong length.
    """
    if SEQ_TEXT not in pdf.columns:
        return np.zeros((len(pdf), meta.seq_len * dims), dtype=np.float32)
    return _stack_sequences(pdf[SEQ_TEXT], meta.seq_len * dims, SEQ_TEXT, dtype=np.float32)


def batch_to_arrays(pdf: pd.DataFrame, meta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's inputs for one batch: tokens (B, L) int64, mask (B, L) int64, tabular (B, F) float64.

    Tabular values stay raw (the model standardises with the mean/std stored in `meta`); nulls
    become NaN, which the model is documented to accept.

    Raises:
        ValueError: a column is missing or a sequence has the wrong length.
    """
    missing = [c for c in input_columns(meta) if c not in pdf.columns]
    if missing:
        raise ValueError(f"batch lacks column(s) {missing} the model needs")
    tokens = _stack_sequences(pdf[SEQ_TOKENS], meta.seq_len, SEQ_TOKENS)
    mask = _stack_sequences(pdf[SEQ_MASK], meta.seq_len, SEQ_MASK)
    tabular = np.empty((len(pdf), len(meta.feature_columns)), dtype=np.float64)
    for j, col in enumerate(meta.feature_columns):
        # to_numeric turns None/pd.NA into NaN for object columns (e.g. nullable booleans)
        tabular[:, j] = pd.to_numeric(pdf[col], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    return tokens, mask, tabular


def outputs_to_frame(user_ids: Sequence, outputs: Mapping[str, np.ndarray], n_arms: int) -> pd.DataFrame:
    """The prediction frame (columns of `PREDICTION_SCHEMA`) from `predict_arrays`' outputs.

    With no arms, the arm columns hold empty lists, so the schema never depends on the model;
    arm_value_long is empty too for a model without the long-term head.
    """
    n = len(user_ids)
    frame = {USER_ID: np.asarray(user_ids, dtype=object)}
    for col in SCALAR_OUTPUTS:
        values = np.asarray(outputs[col], dtype=np.float64).reshape(-1)
        if values.shape[0] != n:
            raise ValueError(f"model output {col} has {values.shape[0]} rows for a batch of {n}")
        frame[col] = values
    key_for = {ARM_CONVERSION: "arm_conversion", ARM_VALUE: "arm_value", ARM_VALUE_LONG: "arm_value_long"}
    for col in ARM_OUTPUTS:
        raw = outputs.get(key_for[col])
        absent = raw is None or n_arms == 0 or np.asarray(raw).size == 0
        values = np.zeros((n, 0)) if absent else np.asarray(raw, dtype=np.float64).reshape(n, n_arms)
        frame[col] = list(values)
    return pd.DataFrame(frame)


@contextmanager
def capture_pooled(model):
    """Collect the pooled encoder vector of every forward pass of `model` run inside the block.

    The trunk's input is ``cat([encode(tokens, mask), tabular_mlp(x)])``, so a forward pre-hook on
    ``model.trunk`` sees ``MultiTaskModel.encode``'s output as its first ``hidden_size`` columns:
    the embedding comes from the scoring pass itself, with no second encoder pass. (At inference
    no sequence dropout applies; tests check it equals ``model.encode``.) Yields the list the
    (B, hidden) float32 arrays are appended to, one per forward pass in order.
    """
    width = int(model.mlm.config.hidden_size)
    captured: list[np.ndarray] = []

    def hook(_module, args):
        captured.append(args[0][:, :width].detach().float().cpu().numpy())

    handle = model.trunk.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def predict_batch(pdf: pd.DataFrame, model, meta, device: str = "cpu", embeddings: bool = False) -> pd.DataFrame:
    """Score one batch of users: pandas frame of features in, pandas frame of predictions out.

    Grain: one output row per input row, in the same order.

    Args:
        pdf: user_id, seq_tokens, seq_mask and every column of meta.feature_columns; seq_text for
            a model with text fusion (a missing column or a null = no text).
        model: the module returned by `train.artifacts.load_model`.
        meta: its `ModelMeta`.
        device: torch device string ("cpu", "cuda", "cuda:1").
        embeddings: also return `embedding` (the pooled encoder vector, float32 lists), from the
            same forward pass.

    Returns:
        Columns user_id, expected_value, p_purchase, value_p10, value_p90, churn_probability,
        arm_conversion, arm_value, arm_value_long (lists of len(meta.arms), control first;
        arm_value_long empty without the long-term head)[, embedding].
    """
    from ulv_spark.train.model import predict_arrays

    if len(pdf) == 0:
        out = outputs_to_frame([], {c: np.zeros(0) for c in SCALAR_OUTPUTS}, 0)
        if embeddings:
            out[EMBEDDING] = pd.Series([], dtype=object)
        return out
    tokens, mask, tabular = batch_to_arrays(pdf, meta)
    dims = text_dims(model)
    text = text_array(pdf, meta, dims) if dims else None
    if not embeddings:
        outputs = predict_arrays(model, meta, tokens, mask, tabular, device=device, text=text)
        return outputs_to_frame(pdf[USER_ID].tolist(), outputs, len(meta.arms))
    with capture_pooled(model) as pooled:
        outputs = predict_arrays(model, meta, tokens, mask, tabular, device=device, text=text)
    out = outputs_to_frame(pdf[USER_ID].tolist(), outputs, len(meta.arms))
    vectors = np.concatenate(pooled) if pooled else np.zeros((len(pdf), 0), dtype=np.float32)
    if vectors.shape[0] != len(pdf):
        raise ValueError(f"captured {vectors.shape[0]} embeddings for a batch of {len(pdf)}")
    out[EMBEDDING] = list(vectors.astype(np.float32))
    return out


def compatibility_problems(meta, *, columns: Mapping[str, str], seq_lengths: tuple[Optional[int], Optional[int]],
                           vocab_fingerprint: Optional[str], text_dims: int = 0) -> list[str]:
    """Why the model cannot score this feature table (empty list: it can).

    Args:
        meta: the model's `ModelMeta`.
        columns: column name -> Spark simpleString type of the user_features table.
        seq_lengths: (min, max) length of seq_tokens over the rows to score (None: no rows).
        vocab_fingerprint: fingerprint of the token vocabulary the features were built with.
        text_dims: per-event text components the model fuses (ModelSpec.text_dims; 0 = none).
    """
    problems = []
    for seq_col in (SEQ_TOKENS, SEQ_MASK):
        if seq_col not in columns:
            problems.append(f"user_features has no {seq_col} column")
    missing = [c for c in meta.feature_columns if c not in columns]
    if missing:
        problems.append(f"feature column(s) the model was trained on are missing from user_features: {missing}")
    not_numeric = [c for c in meta.feature_columns
                   if c in columns and not columns[c].lower().startswith(_NUMERIC_PREFIXES)]
    if not_numeric:
        problems.append(f"feature column(s) are not numeric in user_features: "
                        f"{ {c: columns[c] for c in not_numeric} }")
    no_campaign = [a for a in list(meta.arms)[1:] if a not in meta.arm_campaigns]
    if no_campaign:
        problems.append(f"model arm(s) {no_campaign} have no campaign in its arm_campaigns")
    low, high = seq_lengths
    if low is not None and (low != meta.seq_len or high != meta.seq_len):
        problems.append(f"sequence length differs: model seq_len={meta.seq_len}, "
                        f"user_features seq_tokens length {low}..{high}")
    if vocab_fingerprint != meta.vocab_fingerprint:
        problems.append(f"token vocabulary differs: model vocab_fingerprint={meta.vocab_fingerprint!r}, "
                        f"features vocabulary_fingerprint={vocab_fingerprint!r}")
    if text_dims > 0 and SEQ_TEXT not in columns:
        problems.append(f"the model fuses per-event product text (text_dims={text_dims}) but user_features has no "
                        f"{SEQ_TEXT} column (features.text: false?)")
    return problems
