"""score/predict.py and the per-task scorer of score/udf.py, without Spark, on a real tiny model."""
import numpy as np
import pandas as pd
import pytest
import torch

from ulv_spark.score import predict, udf
from ulv_spark.config import EncoderConf
from ulv_spark.train.artifacts import save_model
from ulv_spark.train.model import build_model, predict_arrays
from ulv_spark.train.spec import ModelMeta, ModelSpec

SEQ_LEN, VOCAB = 6, 40
FEATURES = ["recency_days", "frequency", "monetary_value"]
ARMS = ["control", "coupon", "ship"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny multi-task model saved with the training team's save_model; (model_dir, meta)."""
    torch.manual_seed(3)
    spec = ModelSpec(vocab_size=VOCAB, seq_len=SEQ_LEN, n_features=len(FEATURES), n_arms=len(ARMS),
                     encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.0),
                     tabular_hidden=8, head_hidden=8)
    model = build_model(spec)
    meta = ModelMeta(version="v-test", feature_columns=FEATURES, feature_mean=[2.0, 0.5, 3.0],
                     feature_std=[1.0, 0.7, 1.5], seq_len=SEQ_LEN, vocab_size=VOCAB, vocab_fingerprint="fp1",
                     arms=ARMS, arm_campaigns={"control": "c1", "coupon": "c1", "ship": "c1"},
                     horizon_days=90, trained_as_of="2025-09-01")
    model_dir = save_model(model, meta, str(tmp_path_factory.mktemp("models")), metrics={}, conf={})
    udf._LOADED.clear()
    return model_dir, udf.load_model_once(model_dir, "cpu")


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, VOCAB, size=(n, SEQ_LEN))
    lengths = rng.integers(0, SEQ_LEN + 1, size=n)
    mask = (np.arange(SEQ_LEN)[None, :] < lengths[:, None]).astype(np.int32)
    tokens = np.where(mask == 1, tokens, 0).astype(np.int32)
    # columns deliberately not in model order, plus a column the model does not use
    return pd.DataFrame({
        "monetary_value": rng.gamma(2.0, 30.0, n), "user_id": [f"u{i}" for i in range(n)],
        "seq_tokens": list(tokens), "frequency": rng.integers(0, 9, n).astype(float),
        "seq_mask": list(mask), "recency_days": rng.integers(0, 400, n).astype(float), "junk": 1.0})


def test_batch_to_arrays_follows_model_column_order_and_keeps_nulls(tiny_model):
    _, (_, meta) = tiny_model
    pdf = pd.DataFrame({"user_id": ["a", "b"], "seq_tokens": [[5, 6, 0, 0, 0, 0], None],
                        "seq_mask": [[1, 1, 0, 0, 0, 0], None], "monetary_value": [10.5, None],
                        "frequency": pd.Series([True, None], dtype=object), "recency_days": [3, 7]})
    tokens, mask, tabular = predict.batch_to_arrays(pdf, meta)
    np.testing.assert_array_equal(tokens, [[5, 6, 0, 0, 0, 0], [0] * 6])
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0, 0, 0], [0] * 6])
    np.testing.assert_array_equal(tabular, [[3.0, 1.0, 10.5], [7.0, np.nan, np.nan]])
    assert tabular.dtype == np.float64


def test_batch_to_arrays_rejects_wrong_sequence_length_and_missing_columns(tiny_model):
    _, (_, meta) = tiny_model
    pdf = _batch(2)
    pdf.at[1, "seq_tokens"] = np.arange(SEQ_LEN + 1)
    with pytest.raises(ValueError, match=f"seq_tokens of row 1 has length {SEQ_LEN + 1}.*seq_len={SEQ_LEN}"):
        predict.batch_to_arrays(pdf, meta)
    with pytest.raises(ValueError, match=r"\['frequency'\]"):
        predict.batch_to_arrays(_batch(2).drop(columns=["frequency"]), meta)


def test_predict_batch_equals_the_bare_forward_pass_in_row_order(tiny_model):
    _, (model, meta) = tiny_model
    pdf = _batch(37, seed=1)
    out = predict.predict_batch(pdf, model, meta)
    tabular = pdf[FEATURES].to_numpy(dtype=np.float64)
    ref = predict_arrays(model, meta, np.stack(pdf["seq_tokens"]), np.stack(pdf["seq_mask"]), tabular)
    assert list(out.columns) == ["user_id", *predict.SCALAR_OUTPUTS, *predict.ARM_OUTPUTS]
    assert out["user_id"].tolist() == pdf["user_id"].tolist()
    for col in predict.SCALAR_OUTPUTS:
        np.testing.assert_allclose(out[col].to_numpy(), ref[col], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.stack(out["arm_conversion"]), ref["arm_conversion"], atol=1e-12)
    np.testing.assert_allclose(np.stack(out["arm_value"]), ref["arm_value"], atol=1e-12)
    assert np.stack(out["arm_value"]).shape == (37, len(ARMS))
    # the outputs are probabilities / spends where they must be
    assert ((out["p_purchase"] > 0) & (out["p_purchase"] < 1)).all()
    assert (out["value_p10"] <= out["value_p90"]).all() and (out["expected_value"] >= 0).all()


def test_partition_scorer_loads_once_and_batches_do_not_change_results(tiny_model, monkeypatch):
    model_dir, (model, meta) = tiny_model
    from ulv_spark.train import artifacts

    loads = []
    real_load = artifacts.load_model
    monkeypatch.setattr(artifacts, "load_model", lambda d, device="cpu": loads.append(d) or real_load(d, device))
    udf._LOADED.clear()
    pdf = _batch(50, seed=2)
    batches = [pdf.iloc[i:i + 16].reset_index(drop=True) for i in range(0, 50, 16)]
    scored = pd.concat(list(udf.make_partition_scorer(model_dir, use_gpu=False)(iter(batches))), ignore_index=True)
    whole = predict.predict_batch(pdf, model, meta)
    assert loads == [model_dir]
    assert scored["user_id"].tolist() == whole["user_id"].tolist()
    for col in predict.SCALAR_OUTPUTS:
        np.testing.assert_allclose(scored[col], whole[col], rtol=1e-6, atol=1e-9)
    # a second task in the same Python worker reuses the loaded model
    list(udf.make_partition_scorer(model_dir, use_gpu=False)(iter(batches[:1])))
    assert loads == [model_dir]


def test_predict_batch_of_no_rows_has_the_output_columns(tiny_model):
    _, (model, meta) = tiny_model
    out = predict.predict_batch(_batch(3).iloc[0:0], model, meta)
    assert len(out) == 0 and list(out.columns) == ["user_id", *predict.SCALAR_OUTPUTS, *predict.ARM_OUTPUTS]


def test_resolve_device_stays_on_cpu_unless_asked_and_available():
    assert udf.resolve_device(False) == "cpu"
    assert udf.resolve_device(True) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_compatibility_problems_name_each_mismatch(tiny_model):
    _, (_, meta) = tiny_model
    good = {"user_id": "string", "seq_tokens": "array<int>", "seq_mask": "array<int>",
            "recency_days": "int", "frequency": "bigint", "monetary_value": "double", "extra": "double"}
    assert predict.compatibility_problems(meta, columns=good, seq_lengths=(SEQ_LEN, SEQ_LEN),
                                          vocab_fingerprint="fp1") == []
    bad_cols = {k: v for k, v in good.items() if k != "frequency"} | {"monetary_value": "string"}
    problems = predict.compatibility_problems(meta, columns=bad_cols, seq_lengths=(SEQ_LEN, SEQ_LEN + 2),
                                              vocab_fingerprint="fp2")
    assert len(problems) == 4
    assert "missing from user_features: ['frequency']" in problems[0]
    assert "not numeric" in problems[1] and "monetary_value" in problems[1]
    assert f"model seq_len={SEQ_LEN}, user_features seq_tokens length {SEQ_LEN}..{SEQ_LEN + 2}" in problems[2]
    assert "vocab_fingerprint='fp1'" in problems[3] and "'fp2'" in problems[3]
    no_seq = {k: v for k, v in good.items() if k != "seq_mask"}
    assert predict.compatibility_problems(meta, columns=no_seq, seq_lengths=(None, None), vocab_fingerprint="fp1") \
        == ["user_features has no seq_mask column"]
    # a model with text fusion needs seq_text (a model without does not)
    assert predict.compatibility_problems(meta, columns=good, seq_lengths=(SEQ_LEN, SEQ_LEN), vocab_fingerprint="fp1",
                                          text_dims=2) == ["the model fuses per-event product text (text_dims=2) but "
                                                           "user_features has no seq_text column (features.text: false?)"]
    assert predict.compatibility_problems(meta, columns={**good, "seq_text": "array<float>"},
                                          seq_lengths=(SEQ_LEN, SEQ_LEN), vocab_fingerprint="fp1", text_dims=2) == []


def test_embeddings_come_from_the_same_pass_and_equal_model_encode(tiny_model, monkeypatch):
    _, (model, meta) = tiny_model
    from ulv_spark.train import model as model_module

    # more rows than one predict chunk, so the vectors of several forward passes are stitched in order
    monkeypatch.setattr(model_module, "PREDICT_CHUNK", 16)
    pdf = _batch(37, seed=4)
    plain = predict.predict_batch(pdf, model, meta)
    calls = []
    real_encode = model.encode
    monkeypatch.setattr(model, "encode", lambda t, m: calls.append(len(t)) or real_encode(t, m))
    out = predict.predict_batch(pdf, model, meta, embeddings=True)
    assert calls == [16, 16, 5]  # one encoder pass per chunk: the embedding costs no second pass
    assert list(out.columns) == [*plain.columns, "embedding"]
    for col in predict.SCALAR_OUTPUTS:
        np.testing.assert_array_equal(out[col].to_numpy(), plain[col].to_numpy())  # outputs unchanged
    got = np.stack(out["embedding"])
    assert got.dtype == np.float32 and got.shape == (37, 16)
    with torch.no_grad():
        model.eval()
        want = real_encode(torch.as_tensor(np.stack(pdf["seq_tokens"]), dtype=torch.long),
                           torch.as_tensor(np.stack(pdf["seq_mask"]), dtype=torch.long)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert len(model.trunk._forward_pre_hooks) == 0  # the hook is removed again
    empty = predict.predict_batch(pdf.iloc[0:0], model, meta, embeddings=True)
    assert len(empty) == 0 and list(empty.columns) == list(out.columns)


def test_a_fused_model_is_fed_seq_text_by_predict_batch_and_the_pandas_udf(spark, tmp_path):
    dims = 2
    torch.manual_seed(5)
    spec = ModelSpec(vocab_size=VOCAB, seq_len=SEQ_LEN, n_features=len(FEATURES), n_arms=0,
                     encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.0),
                     tabular_hidden=8, head_hidden=8, text_dims=dims)
    meta = ModelMeta(version="v-text", feature_columns=FEATURES, feature_mean=[2.0, 0.5, 3.0],
                     feature_std=[1.0, 0.7, 1.5], seq_len=SEQ_LEN, vocab_size=VOCAB, vocab_fingerprint="fp1",
                     arms=[], arm_campaigns={}, horizon_days=90, trained_as_of="2025-09-01")
    model_dir = save_model(build_model(spec), meta, str(tmp_path), metrics={}, conf={})
    udf._LOADED.clear()
    model, meta = udf.load_model_once(model_dir, "cpu")
    pdf = _batch(5, seed=6).drop(columns=["junk"])
    pdf["seq_mask"] = [np.ones(SEQ_LEN, dtype=np.int32)] * 5
    rng = np.random.default_rng(2)
    text = rng.normal(size=(5, SEQ_LEN * dims)).astype(np.float32)
    pdf["seq_text"] = [list(map(float, t)) for t in text[:4]] + [None]   # the last user: no product text
    want_text = text.copy()
    want_text[4] = 0.0
    tokens, mask, tabular = predict.batch_to_arrays(pdf, meta)
    want = predict_arrays(model, meta, tokens, mask, tabular, text=want_text)
    without = predict_arrays(model, meta, tokens, mask, tabular)
    got = predict.predict_batch(pdf, model, meta)
    np.testing.assert_array_equal(got["expected_value"].to_numpy(), want["expected_value"])
    assert (got["expected_value"].to_numpy()[:4] != without["expected_value"][:4]).all()   # the text is used
    assert got["expected_value"].to_numpy()[4] == without["expected_value"][4]            # null = no text
    # the Spark pandas UDF passes seq_text through to the same numbers
    frame = spark.createDataFrame(
        [(r.user_id, [int(x) for x in r.seq_tokens], [int(x) for x in r.seq_mask], r.seq_text,
          float(r.recency_days), float(r.frequency), float(r.monetary_value)) for r in pdf.itertuples()],
        "user_id string, seq_tokens array<int>, seq_mask array<int>, seq_text array<float>, recency_days double, "
        "frequency double, monetary_value double")
    scored = {r["user_id"]: r["expected_value"] for r in
              udf.score_users(frame, model_dir=model_dir, feature_columns=list(meta.feature_columns)).collect()}
    np.testing.assert_allclose([scored[u] for u in pdf["user_id"]], want["expected_value"], rtol=1e-5)
    udf._LOADED.clear()
