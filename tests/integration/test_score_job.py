"""`score` end to end on Delta with a real tiny model: scores, idempotence, SQL, mismatch, failure."""
import datetime as dt
import json

import numpy as np
import pytest
import torch
from pandas.testing import assert_frame_equal

from ulv_spark import lake
from ulv_spark.context import JobContext
from ulv_spark.errors import JobFailed
from ulv_spark.config import EncoderConf, load_config
from ulv_spark.schemas import Col, TableContract
from ulv_spark.score import job
from ulv_spark.train.artifacts import save_model
from ulv_spark.train.model import build_model, predict_arrays
from ulv_spark.train.spec import ModelMeta, ModelSpec

pytestmark = pytest.mark.slow

D, D_OLD = dt.date(2025, 10, 1), dt.date(2025, 9, 1)
SEQ_LEN, VOCAB, N_USERS = 8, 60, 61
FEATURES = ["recency_days", "frequency", "monetary_value", "has_discount"]
ARMS = ["control", "coupon_10", "free_shipping"]
CAMPAIGNS = {"control": "spring", "coupon_10": "spring", "free_shipping": "spring"}
TABLES = ("user_value", "user_churn", "promo_uplift", "user_segments")
FEATURES_CONTRACT = TableContract(
    name="user_features", comment="test user_features", partition_by=("as_of_date",),
    columns=(Col("user_id", "STRING", False), Col("as_of_date", "DATE", False), Col("recency_days", "INT"),
             Col("frequency", "BIGINT"), Col("monetary_value", "DOUBLE"), Col("has_discount", "BOOLEAN"),
             Col("not_a_model_input", "DOUBLE"), Col("seq_tokens", "ARRAY<INT>"), Col("seq_mask", "ARRAY<INT>")))


def _fingerprint(cfg):
    from ulv_spark.features.sequences import vocabulary_fingerprint

    return vocabulary_fingerprint(cfg.features)


def _save(model_root, *, seed=5, seq_len=SEQ_LEN, features=FEATURES, fingerprint, version):
    torch.manual_seed(seed)
    spec = ModelSpec(vocab_size=VOCAB, seq_len=seq_len, n_features=len(features), n_arms=len(ARMS),
                     encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.0),
                     tabular_hidden=8, head_hidden=8)
    model = build_model(spec)
    with torch.no_grad():  # spread the heads so users differ visibly
        for p in model.parameters():
            p.mul_(2.0)
    meta = ModelMeta(version=version, feature_columns=list(features), feature_mean=[2.0, 0.7, 3.5, 0.3][:len(features)]
                     + [0.0] * max(0, len(features) - 4), feature_std=[1.0] * len(features), seq_len=seq_len,
                     vocab_size=VOCAB, vocab_fingerprint=fingerprint, arms=ARMS, arm_campaigns=CAMPAIGNS,
                     horizon_days=60, trained_as_of="2025-09-15")
    return save_model(model, meta, str(model_root), metrics={}, conf={})


def _feature_rows(as_of, n, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(0, SEQ_LEN + 1))
        tokens = [int(t) for t in rng.integers(4, VOCAB, length)] + [0] * (SEQ_LEN - length)
        mask = [1] * length + [0] * (SEQ_LEN - length)
        recency = None if i % 17 == 3 else int(rng.integers(0, 400))
        monetary = None if i % 13 == 5 else float(np.round(rng.gamma(2.0, 40.0), 2))
        rows.append((f"user{i:03d}", as_of, recency, int(rng.integers(0, 12)), monetary, bool(i % 3 == 0),
                     float(i), tokens, mask))
    # two users with identical inputs tie on expected_value: deciles must still be deterministic
    rows.append(("user999", as_of, *rows[0][2:]))
    return rows


def _write_features(spark, lakehouse):
    """user_features with 8 users for D_OLD and N_USERS for D, in one Delta commit."""
    ref = lake.table_ref(lakehouse, "user_features")
    rows = _feature_rows(D_OLD, 7, 1) + _feature_rows(D, N_USERS - 1, 2)
    lake.ensure_table(spark, ref, FEATURES_CONTRACT)
    spark.createDataFrame(rows, FEATURES_CONTRACT.ddl()).write.format("delta").mode("append").save(ref.path)
    return ref


def _make_ctx(spark, conf_path, run_id, **overrides):
    cfg = load_config(conf_path, {f"score.{k}": v for k, v in overrides.items()} or None)
    return JobContext(cfg=cfg, as_of=D, run_id=run_id, command="score", _spark=spark)


@pytest.fixture(scope="module")
def env(spark, tmp_path_factory):
    """A lakehouse with user_features for two dates and a tiny model; the first score run done."""
    root = tmp_path_factory.mktemp("score_job")
    conf = root / "conf.yaml"
    conf.write_text(
        f"lakehouse:\n  root: {root / 'lh'}\n  schema: score_it\n  shared_dir: {root / 'lh' / '_shared'}\n"
        f"train:\n  model_dir: {root / 'models'}\nfeatures:\n  sequence_length: {SEQ_LEN}\n"
        f"score:\n  batch_size: 16\n  rank_buckets: 4\n  margin: 0.5\n  arm_costs: {{coupon_10: 0.2}}\n"
        f"run:\n  horizon_days: 60\n", encoding="utf-8")
    cfg = load_config(conf)
    model_dir = _save(root / "models", fingerprint=_fingerprint(cfg), version="20250915T000000-good")
    features_ref = _write_features(spark, cfg.lakehouse)
    ctx = _make_ctx(spark, conf, "run-1")
    staged = job.stage_predictions(ctx)  # the two halves of job.run, so a test can publish again
    summary = job.publish(ctx, staged)
    return {"conf": conf, "cfg": cfg, "root": root, "model_dir": model_dir, "features": features_ref,
            "staged": staged, "summary": summary}


def _table(spark, cfg, name):
    return lake.read_table(spark, lake.table_ref(cfg.lakehouse, name), as_of_date=D).toPandas()


def test_scores_equal_an_in_process_forward_pass(spark, env):
    from ulv_spark.train.artifacts import load_model

    cfg = env["cfg"]
    model, meta = load_model(env["model_dir"])
    feats = lake.read_table(spark, env["features"], as_of_date=D).toPandas().sort_values("user_id")
    tabular = np.array([[np.nan if v is None else float(v) for v in row]
                        for row in feats[FEATURES].astype(object).itertuples(index=False)])
    ref = predict_arrays(model, meta, np.array(feats["seq_tokens"].tolist()), np.array(feats["seq_mask"].tolist()),
                         tabular)
    value = _table(spark, cfg, "user_value").sort_values("user_id")
    churn = _table(spark, cfg, "user_churn").sort_values("user_id")
    uplift = _table(spark, cfg, "promo_uplift")
    assert env["summary"]["users"] == N_USERS and len(feats) == N_USERS
    assert value["user_id"].tolist() == feats["user_id"].tolist() == churn["user_id"].tolist()
    # within 1e-5: absolute for probabilities; for spend relative above 1, since the float32 network
    # rounds differently with one thread per Spark task and spend is exp() of its outputs
    for col in ("p_purchase",):
        np.testing.assert_allclose(value[col].to_numpy(), ref[col], rtol=0, atol=1e-5)
    for col in ("expected_value", "value_p10", "value_p90"):
        np.testing.assert_allclose(value[col].to_numpy(), ref[col], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(churn["churn_probability"].to_numpy(), ref["churn_probability"], rtol=0, atol=1e-5)
    assert value["expected_value"].std() > 1e-3  # users really differ
    for i, arm in enumerate(ARMS[1:], start=1):
        rows = uplift[uplift["arm"] == arm].sort_values("user_id")
        assert rows["user_id"].tolist() == feats["user_id"].tolist()
        conv = ref["arm_conversion"][:, i] - ref["arm_conversion"][:, 0]
        val = ref["arm_value"][:, i] - ref["arm_value"][:, 0]
        np.testing.assert_allclose(rows["uplift_conversion"], conv, rtol=0, atol=1e-5)
        scale = np.maximum(np.abs(ref["arm_value"][:, i]), np.abs(ref["arm_value"][:, 0]))
        assert (np.abs(rows["uplift_value"].to_numpy() - val) <= 1e-5 * np.maximum(scale, 1.0)).all()
        profit = val * 0.5 - {"coupon_10": 0.2}.get(arm, 0.0)
        assert (np.abs(rows["expected_profit"].to_numpy() - profit) <= 1e-5 * np.maximum(scale, 1.0)).all()
        assert (rows["campaign_id"] == "spring").all()
    assert len(uplift) == N_USERS * 2 and uplift.groupby("user_id")["recommended"].sum().max() <= 1
    best = uplift.loc[uplift.groupby("user_id")["expected_profit"].idxmax()]
    assert (best["recommended"] == (best["expected_profit"] > 0)).all()
    # deciles: ntile sizes over the users, 1 = highest expected value
    assert value["value_decile"].value_counts().sort_index().tolist() == [7] + [6] * 9
    top = value.sort_values(["expected_value", "user_id"], ascending=[False, True])
    assert top["value_decile"].is_monotonic_increasing
    assert set(value["horizon_days"]) == {60} and set(value["model_version"]) == {"20250915T000000-good"}
    assert value["run_id"].nunique() == 1 and churn["run_id"].nunique() == 1


def test_user_embeddings_are_the_encoder_vectors_of_the_same_pass(spark, env):
    from ulv_spark.train.artifacts import load_model

    cfg = env["cfg"]
    model, meta = load_model(env["model_dir"])
    emb = _table(spark, cfg, "user_embeddings").sort_values("user_id")
    feats = lake.read_table(spark, env["features"], as_of_date=D).toPandas().sort_values("user_id")
    assert emb["user_id"].tolist() == feats["user_id"].tolist()
    with torch.no_grad():
        want = model.eval().encode(torch.as_tensor(np.array(feats["seq_tokens"].tolist()), dtype=torch.long),
                                   torch.as_tensor(np.array(feats["seq_mask"].tolist()), dtype=torch.long)).numpy()
    np.testing.assert_allclose(np.stack(emb["embedding"]), want, rtol=0, atol=1e-5)
    assert set(emb["model_version"]) == {"20250915T000000-good"} and set(emb["run_id"]) == {"run-1"}
    assert env["summary"]["tables"]["user_embeddings"]["dimension"] == 16
    schema = cfg.lakehouse.schema
    comment = spark.sql(f"DESCRIBE TABLE EXTENDED {schema}.user_embeddings").where("col_name = 'Comment'").first()
    assert "Dimension 16 (model_version 20250915T000000-good)." in comment["data_type"]
    latest = spark.sql(f"SELECT count(*) AS n, max(size(embedding)) AS d FROM {schema}.latest_user_embeddings").first()
    assert (latest["n"], latest["d"]) == (N_USERS, 16)
    # score alone leaves the learned segment columns empty (`ulv-spark segment` fills them)
    segments = _table(spark, cfg, "user_segments")
    assert segments["learned_segment"].isna().all() and segments["learned_segment_name"].isna().all()


def test_every_user_gets_one_row_and_rerun_is_identical(spark, env):
    cfg = env["cfg"]
    before = {t: _table(spark, cfg, t) for t in TABLES}
    versions = {t: lake.current_version(spark, lake.table_ref(cfg.lakehouse, t)) for t in TABLES}
    summary = job.run_score(_make_ctx(spark, env["conf"], "run-2"))
    for name in TABLES:
        after = _table(spark, cfg, name)
        keys = ["user_id", "arm"] if name == "promo_uplift" else ["user_id"]
        assert after[keys].duplicated().sum() == 0
        assert len(after) == (2 * N_USERS if name == "promo_uplift" else N_USERS) == summary["tables"][name]["rows"]
        assert set(after["run_id"]) == {"run-2"}
        a = before[name].drop(columns="run_id").sort_values(keys).reset_index(drop=True)
        b = after.drop(columns="run_id").sort_values(keys).reset_index(drop=True)
        assert a.equals(b), name
        assert summary["tables"][name]["version"] == versions[name] + 1
    # the other date is untouched and never scored
    old = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "user_value"), as_of_date=D_OLD).count()
    assert old == 0


def test_tables_and_latest_views_answer_plain_sql(spark, env):
    schema = env["cfg"].lakehouse.schema
    for name in TABLES:
        n = spark.sql(f"SELECT count(*) AS n FROM {schema}.{name} WHERE as_of_date = DATE'{D}'").first()["n"]
        latest = spark.sql(f"SELECT count(*) AS n, min(as_of_date) AS d FROM {schema}.latest_{name}").first()
        assert n == latest["n"] == (2 * N_USERS if name == "promo_uplift" else N_USERS)
        assert latest["d"] == D
        comments = {r["col_name"]: r["comment"] for r in spark.sql(f"DESCRIBE TABLE {schema}.{name}").collect()}
        assert comments["model_version"] and comments["run_id"]
        # the table names its producing job, and each night's commit the model version it wrote
        props = {r[0]: r[1] for r in spark.sql(f"SHOW TBLPROPERTIES {schema}.{name}").collect()}
        assert props["ulv.producer"] == "score"
        last = spark.sql(f"DESCRIBE HISTORY {schema}.{name} LIMIT 1").first()
        model_version = spark.sql(f"SELECT DISTINCT model_version FROM {schema}.latest_{name}").first()[0]
        assert json.loads(last["userMetadata"])["model_version"] == model_version
        assert json.loads(last["userMetadata"])["job"] == "score"
    champions = spark.sql(
        f"SELECT s.segment, count(*) AS n, avg(v.expected_value) AS ev FROM {schema}.latest_user_segments s "
        f"JOIN {schema}.latest_user_value v USING (user_id, as_of_date) GROUP BY s.segment").collect()
    assert sum(r["n"] for r in champions) == N_USERS
    tiers = {r["risk_tier"] for r in spark.sql(f"SELECT DISTINCT risk_tier FROM {schema}.latest_user_churn").collect()}
    assert tiers <= {"low", "medium", "high"}


@pytest.mark.parametrize("case, expected", [
    ("vocabulary", "token vocabulary differs"),
    ("seq_len", f"model seq_len={SEQ_LEN + 2}, user_features seq_tokens length {SEQ_LEN}..{SEQ_LEN}"),
    ("feature", "missing from user_features: ['days_since_signup']"),
])
def test_model_feature_mismatch_fails_before_writing(spark, env, case, expected):
    cfg = env["cfg"]
    kwargs = {"vocabulary": {"fingerprint": "0123456789abcdef"},
              "seq_len": {"fingerprint": _fingerprint(cfg), "seq_len": SEQ_LEN + 2},
              "feature": {"fingerprint": _fingerprint(cfg), "features": FEATURES + ["days_since_signup"]}}[case]
    model_dir = _save(env["root"] / "other_models", version=f"bad-{case}", **kwargs)
    names = (*TABLES, "score_predictions")
    versions = {t: lake.current_version(spark, lake.table_ref(cfg.lakehouse, t)) for t in names}
    with pytest.raises(JobFailed, match="Nothing was written") as err:
        job.run_score(_make_ctx(spark, env["conf"], f"run-{case}", model_version=model_dir))
    assert expected in str(err.value) and f"model bad-{case} does not fit" in str(err.value)
    assert {t: lake.current_version(spark, lake.table_ref(cfg.lakehouse, t)) for t in names} == versions


def test_failed_table_write_is_named_and_earlier_versions_stay(spark, env):
    cfg = env["cfg"]
    churn = lake.table_ref(cfg.lakehouse, "user_churn")
    before = {t: _table(spark, cfg, t) for t in TABLES}
    # an append-only user_churn refuses the partition replace: exactly that write fails
    spark.sql(f"ALTER TABLE {churn.name} SET TBLPROPERTIES ('delta.appendOnly' = 'true')")
    try:
        with pytest.raises(JobFailed) as err:
            job.publish(_make_ctx(spark, env["conf"], "run-fail"), env["staged"])
    finally:
        spark.sql(f"ALTER TABLE {churn.name} SET TBLPROPERTIES ('delta.appendOnly' = 'false')")
    message = str(err.value)
    assert f"writing {churn.name} for {D} failed (" in message
    assert "Written by this run: ['user_value']" in message
    assert "not written (previous versions stay readable): ['user_churn', 'promo_uplift', 'user_segments']" in message
    assert set(_table(spark, cfg, "user_value")["run_id"]) == {"run-1"}  # republished from the staged rows
    for name in ("user_churn", "promo_uplift", "user_segments"):  # readers still see the previous run
        after = _table(spark, cfg, name)
        assert_frame_equal(after.sort_values(list(after.columns)).reset_index(drop=True),
                           before[name].sort_values(list(after.columns)).reset_index(drop=True))
