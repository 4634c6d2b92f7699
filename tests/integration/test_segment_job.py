"""`segment` end to end on Delta: real score pass -> real Spark MLlib clustering, stable ids, tables, SQL."""
import datetime as dt
import json
import os

import numpy as np
import pytest
import torch

from ulv_spark import lake
from ulv_spark.config import EncoderConf, load_config
from ulv_spark.context import JobContext
from ulv_spark.errors import JobFailed
from ulv_spark.schemas import Col, TableContract
from ulv_spark.score import job as score_job
from ulv_spark.segments import fit as segfit
from ulv_spark.segments import job
from ulv_spark.segments.inputs import segment_inputs
from ulv_spark.train.artifacts import save_model
from ulv_spark.train.model import build_model
from ulv_spark.train.spec import ModelMeta, ModelSpec

pytestmark = pytest.mark.slow

D1, D2 = dt.date(2025, 10, 1), dt.date(2025, 10, 2)
SEQ_LEN, VOCAB, N_USERS = 8, 60, 40
FEATURES = ["days_since_last_order", "orders_total", "tenure_days"]
ARMS = ["control", "coupon_10"]
VERSION = "20250915T000000-seg"
CONTRACT = TableContract(
    name="user_features", comment="test user_features", partition_by=("as_of_date",),
    columns=(Col("user_id", "STRING", False), Col("as_of_date", "DATE", False), Col("days_since_last_order", "INT"),
             Col("orders_total", "BIGINT"), Col("tenure_days", "DOUBLE"), Col("orders_trend_30_90d", "DOUBLE"),
             Col("seq_tokens", "ARRAY<INT>"), Col("seq_mask", "ARRAY<INT>")))


def _rows(as_of, users, seed):
    rng = np.random.default_rng(seed)
    out = []
    for uid in users:
        length = int(rng.integers(0, SEQ_LEN + 1))
        tokens = [int(t) for t in rng.integers(4, VOCAB, length)] + [0] * (SEQ_LEN - length)
        out.append((uid, as_of, int(rng.integers(0, 300)), int(rng.integers(0, 12)), float(rng.integers(10, 900)),
                    float(rng.uniform(0.3, 2.0)), tokens, [1] * length + [0] * (SEQ_LEN - length)))
    return out


@pytest.fixture(scope="module")
def env(spark, tmp_path_factory):
    """Score + segment night D1 (fit), then D2 (assign): 3 users changed, u000 gone, u999 new."""
    root = tmp_path_factory.mktemp("segment_job")
    conf = root / "conf.yaml"
    conf.write_text(
        f"lakehouse:\n  root: {root / 'lh'}\n  schema: segment_it\n  shared_dir: {root / 'lh' / '_shared'}\n"
        f"train:\n  model_dir: {root / 'models'}\nfeatures:\n  sequence_length: {SEQ_LEN}\n"
        f"score:\n  batch_size: 16\n  rank_buckets: 2\nsegments:\n  k_min: 2\n  k_max: 3\n  max_iter: 10\n"
        f"run:\n  horizon_days: 60\n", encoding="utf-8")
    cfg = load_config(conf)
    from ulv_spark.features.sequences import vocabulary_fingerprint

    torch.manual_seed(11)
    spec = ModelSpec(vocab_size=VOCAB, seq_len=SEQ_LEN, n_features=len(FEATURES), n_arms=len(ARMS),
                     encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.0),
                     tabular_hidden=8, head_hidden=8)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    meta = ModelMeta(version=VERSION, feature_columns=FEATURES, feature_mean=[100.0, 5.0, 400.0],
                     feature_std=[80.0, 3.0, 250.0], seq_len=SEQ_LEN, vocab_size=VOCAB,
                     vocab_fingerprint=vocabulary_fingerprint(cfg.features), arms=ARMS,
                     arm_campaigns={"control": "c1", "coupon_10": "c1"}, horizon_days=60, trained_as_of="2025-09-15")
    save_model(model, meta, str(root / "models"), metrics={}, conf={})
    users = [f"u{i:03d}" for i in range(N_USERS)]
    night1 = _rows(D1, users, 1)
    # D2: the same inputs for everyone but three users; u000 is gone, u999 is new
    changed = {"u005", "u006", "u007"}
    fresh = {r[0]: r for r in _rows(D2, users + ["u999"], 2)}
    night2 = [fresh[r[0]] if r[0] in changed else (r[0], D2, *r[2:]) for r in night1 if r[0] != "u000"]
    night2.append(fresh["u999"])
    ref = lake.table_ref(cfg.lakehouse, "user_features")
    lake.ensure_table(spark, ref, CONTRACT)
    spark.createDataFrame(night1 + night2, CONTRACT.ddl()).write.format("delta").mode("append").save(ref.path)

    def ctx(as_of, run_id, **overrides):
        c = load_config(conf, overrides or None)
        return JobContext(cfg=c, as_of=as_of, run_id=run_id, command="segment", _spark=spark)

    out = {"cfg": cfg, "ctx": ctx, "changed": changed}
    score_job.run_score(ctx(D1, "s1"))
    out["grid1"] = _read(spark, cfg, "user_segments", D1).drop(columns=["learned_segment", "learned_segment_name"])
    out["first"] = job.run_segment(ctx(D1, "g1"))
    score_job.run_score(ctx(D2, "s2"))
    out["second"] = job.run_segment(ctx(D2, "g2"))
    return out


def _read(spark, cfg, name, as_of):
    return lake.read_table(spark, lake.table_ref(cfg.lakehouse, name), as_of_date=as_of).toPandas()


def test_first_night_fits_on_mllib_and_fills_the_learned_columns(spark, env):
    cfg, first = env["cfg"], env["first"]
    assert first["fitted"] is True and first["method"] == "kmeans" and 2 <= first["k"] <= 3
    assert first["model_version"] == VERSION and first["users"] == N_USERS
    info = json.load(open(os.path.join(cfg.segments.model_dir, VERSION, "segmenter.json")))
    assert info["k"] == first["k"] and sorted(info["silhouettes"]) == ["2", "3"]
    assert first["silhouette"] == max(v for v in info["silhouettes"].values() if v is not None)
    assert sorted(info["label_to_id"].values()) == list(range(first["k"])) and info["next_id"] == first["k"]
    seg = _read(spark, cfg, "user_segments", D1).sort_values("user_id").reset_index(drop=True)
    # score's grid columns are unchanged; every user has a learned segment and its profile's name
    grid = seg.drop(columns=["learned_segment", "learned_segment_name", "run_id"])
    assert grid.equals(env["grid1"].drop(columns=["run_id"]).sort_values("user_id").reset_index(drop=True))
    assert seg["learned_segment"].notna().all() and seg["learned_segment"].nunique() == first["k"]
    profiles = _read(spark, cfg, "segment_profiles", D1)
    assert len(profiles) == first["k"] and profiles["users"].sum() == N_USERS
    assert abs(profiles["share"].sum() - 1.0) < 1e-12
    names = dict(zip(profiles["learned_segment"], profiles["name"]))
    assert (seg["learned_segment_name"] == seg["learned_segment"].map(names)).all()
    sizes = seg["learned_segment"].value_counts().to_dict()
    assert {int(k): int(v) for k, v in sizes.items()} == dict(zip(profiles["learned_segment"], profiles["users"]))
    value = _read(spark, cfg, "user_value", D1).set_index("user_id")["expected_value"]
    totals = seg.assign(ev=seg["user_id"].map(value)).groupby("learned_segment")["ev"].sum()
    for _, row in profiles.iterrows():
        assert abs(row["total_expected_value"] - totals[row["learned_segment"]]) <= 1e-9 * max(1.0, totals.max())
        assert set(row["mean_uplift_value"]) == {"coupon_10"}
    assert len(_read(spark, cfg, "segment_transitions", D1)) == 0  # the first segmented night


def test_second_night_on_the_same_model_assigns_and_unchanged_users_keep_their_ids(spark, env):
    cfg, second = env["cfg"], env["second"]
    assert second["fitted"] is False and second["k"] == env["first"]["k"]
    one = _read(spark, cfg, "user_segments", D1).set_index("user_id")["learned_segment"]
    two = _read(spark, cfg, "user_segments", D2).set_index("user_id")["learned_segment"]
    same = sorted(set(one.index) & set(two.index) - env["changed"])
    assert len(same) == N_USERS - 4
    assert (one[same] == two[same]).all()
    moves = _read(spark, cfg, "segment_transitions", D2)
    assert set(moves["previous_as_of_date"]) == {D1} and moves["users"].sum() == N_USERS + 1
    gone = moves[moves["to_segment"].isna()]
    new = moves[moves["from_segment"].isna()]
    assert gone["users"].sum() == 1 and gone["from_segment"].tolist() == [one["u000"]]
    assert new["users"].sum() == 1 and new["to_segment"].tolist() == [two["u999"]]
    stayed = moves[(moves["from_segment"] == moves["to_segment"])]["users"].sum()
    assert stayed >= len(same)


def test_rerun_is_identical_and_sql_reads_the_tables(spark, env):
    cfg = env["cfg"]
    before = {t: _read(spark, cfg, t, D2) for t in job.SEGMENT_OUTPUTS}
    again = job.run_segment(env["ctx"](D2, "g3"))
    assert again["fitted"] is False
    for name, old in before.items():
        new = _read(spark, cfg, name, D2)
        keys = [c for c in old.columns if c not in ("run_id", "mean_uplift_value")]
        a = old.drop(columns="run_id").sort_values(keys).reset_index(drop=True)
        b = new.drop(columns="run_id").sort_values(keys).reset_index(drop=True)
        assert a.astype(str).equals(b.astype(str)), name
    schema = cfg.lakehouse.schema
    top = spark.sql(f"SELECT learned_segment_name, count(*) AS users, round(avg(v.expected_value), 2) AS ev "
                    f"FROM {schema}.latest_user_segments s JOIN {schema}.latest_user_value v USING (user_id, as_of_date) "
                    f"GROUP BY learned_segment_name ORDER BY ev DESC").collect()
    assert sum(r["users"] for r in top) == N_USERS
    n, d = spark.sql(f"SELECT count(*), max(size(embedding)) FROM {schema}.latest_user_embeddings").first()
    assert (n, d) == (N_USERS, 16)


def test_a_refit_matches_its_clusters_to_the_previous_segmenter(spark, env):
    """Refit on the same night (as a retrain would): the same clusters come back under the same ids."""
    cfg = env["cfg"]
    preds, version, users = job.read_predictions(env["ctx"](D1, "x"))
    inputs = segment_inputs(preds)
    previous = segfit.read_info(os.path.join(cfg.segments.model_dir, VERSION))
    shuffled = dict(previous.label_to_id)
    # pretend the previous ids were different: the refit must hand out exactly those
    renamed = {str(int(i) + 10): c for i, c in previous.centroids.items()}
    prior = segfit.SegmenterInfo(**{**previous.__dict__, "centroids": renamed, "next_id": previous.next_id + 10,
                                    "model_version": "older"})
    model, info = segfit.fit_segmenter(inputs, users=users, conf=cfg.segments, model_version="newer",
                                       as_of=D1.isoformat(), previous=prior)
    assert info.matched_to == "older" and info.k == previous.k
    assert info.label_to_id == {label: i + 10 for label, i in ((k, int(v)) for k, v in shuffled.items())}
    assert info.next_id == previous.next_id + 10


@pytest.mark.parametrize("method", ["bisecting_kmeans", "gaussian_mixture"])
def test_other_mllib_estimators_are_selectable(spark, env, tmp_path, method):
    ctx = env["ctx"](D1, "x", **{"segments.method": method, "segments.k_min": 2, "segments.k_max": 2,
                                 "segments.model_dir": str(tmp_path / "seg")})
    preds, version, users = job.read_predictions(ctx)
    model, info = segfit.fit_segmenter(segment_inputs(preds), users=users, conf=ctx.cfg.segments,
                                       model_version=version, as_of=D1.isoformat())
    assigned = segfit.assign(model, info, segment_inputs(preds)).toPandas()
    assert info.method == method and len(assigned) == N_USERS
    assert set(assigned["learned_segment"]) <= {0, 1} and assigned["learned_segment"].notna().all()


def test_segment_before_score_fails_with_a_clear_message(spark, tmp_path):
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"lakehouse:\n  root: {tmp_path / 'lh'}\n  schema: segment_none\n", encoding="utf-8")
    ctx = JobContext(cfg=load_config(conf), as_of=D1, run_id="r", command="segment", _spark=spark)
    with pytest.raises(JobFailed, match=r"segment_none.score_predictions does not exist: run `ulv-spark score "
                                        r"--as-of 2025-10-01` first"):
        job.run_segment(ctx)
