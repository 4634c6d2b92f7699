"""The product's model as an MLflow pyfunc: pandas in (user_id, sequences, features), predictions out.

The pyfunc wraps exactly what scoring runs (`score.predict.predict_batch` on a model loaded with
`train.artifacts.load_model`), so `mlflow.pyfunc.spark_udf` / `mlflow.pyfunc.load_model` give the
same numbers as `ulv-spark score`. The model directory travels inside the MLflow model as the
artifact ``model_dir``. The class is pickled by reference: where the model is loaded, ulv_spark
must be installed (the same wheel the jobs run).
"""
from __future__ import annotations

import mlflow.pyfunc
import pandas as pd

MODEL_DIR_ARTIFACT = "model_dir"


class UlvPyfunc(mlflow.pyfunc.PythonModel):
    """`predict(context, frame)`: columns of `score.predict.input_columns(meta)` in, `PREDICTION_SCHEMA` out."""

    def load_context(self, context) -> None:
        from ulv_spark.train.artifacts import load_model

        self._model, self._meta = load_model(context.artifacts[MODEL_DIR_ARTIFACT], device="cpu")

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from ulv_spark.score.predict import predict_batch

        return predict_batch(model_input, self._model, self._meta, device="cpu")


def text_dims(model_dir: str) -> int:
    """Per-event text components the saved model fuses (model_spec.json's text_dims; 0 = no text fusion)."""
    import json
    from pathlib import Path

    spec = json.loads((Path(model_dir) / "model_spec.json").read_text(encoding="utf-8"))
    return int(spec.get("text_dims", 0) or 0)


def signature(meta, text_dims: int = 0):
    """Input: user_id, seq_tokens / seq_mask (arrays of long), the feature columns (double), and for a
    model with text fusion seq_text (array of float, seq_len x text_dims; optional); output: the predictions."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    from ulv_spark.names import ARM_OUTPUTS, SCALAR_OUTPUTS
    from ulv_spark.schemas import SEQ_MASK, SEQ_TEXT, SEQ_TOKENS, USER_ID

    text = [ColSpec(Array("float"), SEQ_TEXT, required=False)] if text_dims else []
    inputs = Schema([ColSpec("string", USER_ID), ColSpec(Array("long"), SEQ_TOKENS), ColSpec(Array("long"), SEQ_MASK),
                     *[ColSpec("double", c) for c in meta.feature_columns], *text])
    outputs = Schema([ColSpec("string", USER_ID), *[ColSpec("double", c) for c in SCALAR_OUTPUTS],
                      *[ColSpec(Array("double"), c) for c in ARM_OUTPUTS]])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(meta, text_dims: int = 0) -> pd.DataFrame:
    """Two users: one with no events (all padding) and one with a single event; features at their means
    (and, with text fusion, no product text: zeros)."""
    import numpy as np

    from ulv_spark.names import FIRST_EVENT_ID
    from ulv_spark.schemas import SEQ_MASK, SEQ_TEXT, SEQ_TOKENS, USER_ID

    empty = np.zeros(meta.seq_len, dtype=np.int64)
    one = empty.copy()
    one[0] = FIRST_EVENT_ID
    frame = {USER_ID: ["example_0", "example_1"], SEQ_TOKENS: [empty, one],
             SEQ_MASK: [empty, (one > 0).astype(np.int64)]}
    for column, mean in zip(meta.feature_columns, meta.feature_mean):
        frame[column] = [float(mean), float(mean)]
    if text_dims:
        frame[SEQ_TEXT] = [np.zeros(meta.seq_len * text_dims, dtype=np.float32) for _ in range(2)]
    return pd.DataFrame(frame)
