"""Distributed training on CPU: TorchDistributor in barrier mode (twice: the same model) and (through
`ulv-spark train`, stopped and resumed) in local mode, both via Petastorm; Arrow vs Petastorm rows,
the pretraining feed; plain torchrun without Spark."""
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import train_data as synthetic
from ulv_spark import lake
from ulv_spark import schemas as S
from ulv_spark.config import EncoderConf, TrainConf
from ulv_spark.train import checkpoints, fit, prepare
from ulv_spark.train import feed as feeds
from ulv_spark.train.artifacts import latest_model_dir, load_model
from ulv_spark.train.model import predict_arrays

pytestmark = pytest.mark.slow

AS_OF = dt.date(2025, 10, 1)
SEQ, VOCAB, ROWS = 8, 40, 600
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def examples(spark):
    df = synthetic.synthetic_training_examples(spark, ROWS, seq_len=SEQ, vocab_size=VOCAB, origins=3, partitions=2)
    return df.cache()


def _cfg(tmp_path, **kw) -> TrainConf:
    base = dict(model_dir=str(tmp_path / "models"), checkpoint_dir=str(tmp_path / "ck"),
                petastorm_cache=str(tmp_path / "petastorm"), parquet_dir=str(tmp_path / "feed"),
                num_processes=2, batch_size=64, epochs=2, pretrain_epochs=1, cpu_threads=1,
                validation_share=0.34, tabular_hidden=16, head_hidden=16,
                encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32))
    return TrainConf(**{**base, **kw})


def _train(spark, examples, cfg, **kw):
    return fit.train_model(spark, examples, train_cfg=cfg, seq_len=SEQ, vocab_size=VOCAB, vocab_fingerprint="fp",
                           horizon_days=90, as_of=AS_OF, conf={"train": {"note": "test"}}, data_version=1, **kw)


def _training_split_statistics(examples, validation_origins, held_users=None):
    """numpy reference for meta.feature_mean / feature_std: signed log1p of the training split, NaN left out."""
    rows = examples.toPandas()
    rows = rows[~rows[S.ORIGIN_DATE].astype(str).isin(validation_origins)]
    if held_users is not None:
        rows = rows[~rows[S.USER_ID].isin(held_users)]
    logged = [np.sign(x) * np.log1p(np.abs(x)) for x in
              (rows[name].astype(float).to_numpy() for name in synthetic.FEATURE_NAMES)]
    return [float(np.nanmean(t)) for t in logged], [float(np.nanstd(t)) for t in logged]


def _assert_usable_model(summary, examples, model_root, vocab=VOCAB, held_users=None):
    assert summary["world_size"] == 2 and summary["device"] == "cpu"
    assert summary["epochs_run"] == 3 and summary["rows_train"] + summary["rows_val"] == ROWS
    assert latest_model_dir(model_root) == summary["model_dir"]
    assert json.loads((Path(summary["model_dir"]) / "metrics.json").read_text()) == summary["metrics"]
    model, meta = load_model(summary["model_dir"])
    mean, std = _training_split_statistics(examples, summary["validation_origins"], held_users)
    np.testing.assert_allclose(meta.feature_mean, mean, rtol=1e-9)
    np.testing.assert_allclose(meta.feature_std, std, rtol=1e-9)
    assert meta.arms == list(synthetic.DEFAULT_ARMS) and meta.feature_columns == list(synthetic.FEATURE_NAMES)
    assert meta.arm_campaigns == {a: "camp_1" for a in synthetic.DEFAULT_ARMS}
    assert (meta.seq_len, meta.vocab_size, meta.horizon_days, meta.trained_as_of) == (SEQ, vocab, 90, "2025-10-01")
    rows = examples.limit(20).toPandas()
    tabular = rows[meta.feature_columns].astype(float).to_numpy()
    out = predict_arrays(model, meta, np.stack(rows["seq_tokens"]), np.stack(rows["seq_mask"]), tabular)
    assert out["expected_value"].shape == (20,) and out["arm_value"].shape == (20, 3)
    assert all(np.isfinite(v).all() for v in out.values())
    return meta


@pytest.fixture(scope="module")
def barrier_run(spark, examples, tmp_path_factory):
    """(conf, summary) of a training in barrier mode on local[2] through Petastorm, the time-based split, the
    encoder frozen after the first fine-tuning epoch (DDP on gloo with frozen parameters; conf defaults otherwise)."""
    cfg = _cfg(tmp_path_factory.mktemp("barrier"), local_mode=False, loader="petastorm", validation_split="origin",
               freeze_encoder_after=1)
    return cfg, _train(spark, examples, cfg)


def test_barrier_mode_on_local2_through_petastorm_writes_a_loadable_model(barrier_run, examples):
    cfg, summary = barrier_run
    assert summary["status"] == "finished" and summary["loader"] == "petastorm"
    assert summary["validation_origins"] == ["2025-07-03"]  # the newest of the three origins
    assert summary["metrics"]["val_rows"] == summary["rows_val"] == ROWS // 3
    _assert_usable_model(summary, examples, cfg.model_dir)
    assert checkpoints.latest_checkpoint(summary["checkpoint_dir"]).endswith("epoch-0003.pt")
    assert not any(Path(cfg.petastorm_cache).iterdir())  # converters deleted their cache


def _history(summary):
    return [{k: v for k, v in h.items() if k != "rows_per_second"} for h in summary["history"]]


def test_a_second_training_with_the_same_data_conf_and_seed_gives_the_same_model(barrier_run, spark, examples,
                                                                                   tmp_path):
    """Issue 20 item 7: TorchDistributor + Petastorm (shuffled row groups, shuffling queue, dropout, masking), twice."""
    first_cfg, first = barrier_run
    second = _train(spark, examples, _cfg(tmp_path, local_mode=False, loader="petastorm", validation_split="origin",
                                          freeze_encoder_after=1))
    assert second["checkpoint_dir"].endswith(Path(first["checkpoint_dir"]).name)  # the same run key
    assert _history(second) == _history(first)  # every train and validation loss, to the last bit
    (a, meta), (b, _) = load_model(first["model_dir"]), load_model(second["model_dir"])
    weights_a, weights_b = a.state_dict(), b.state_dict()
    assert weights_a.keys() == weights_b.keys()
    assert [k for k in weights_a if not torch.equal(weights_a[k], weights_b[k])] == []
    fresh = _fresh_weights(first["model_dir"], first_cfg.seed)
    assert [k for k in fresh if k.startswith("mlm.") and not torch.equal(fresh[k], weights_a[k])]  # the encoder trained
    rows = examples.limit(50).toPandas()
    inputs = (np.stack(rows["seq_tokens"]), np.stack(rows["seq_mask"]), rows[meta.feature_columns].astype(float).to_numpy())
    for key, value in predict_arrays(a, meta, *inputs).items():
        np.testing.assert_array_equal(predict_arrays(b, meta, *inputs)[key], value, err_msg=key)


def test_default_hash_split_learns_every_arm_and_calibrates_under_ddp(spark, examples, tmp_path):
    """The default split (a user-hash share at every origin) through TorchDistributor (local mode, Arrow), the
    encoder frozen after one epoch: every origin in both parts, every arm catalogued, calibration in meta.json."""
    from pyspark.sql import functions as F

    cfg = _cfg(tmp_path, loader="arrow", freeze_encoder_after=1)
    assert cfg.validation_split == "hash"
    summary = _train(spark, examples, cfg)
    assert summary["status"] == "finished" and summary["validation_origins"] == []
    held = examples.filter(F.expr(f"pmod(xxhash64({S.USER_ID}), 10000) < 3400"))
    assert summary["rows_val"] == held.count() and 0.25 < summary["rows_val"] / ROWS < 0.43
    origins = {r[0] for r in examples.select(S.ORIGIN_DATE).distinct().collect()}
    assert {r[0] for r in held.select(S.ORIGIN_DATE).distinct().collect()} == origins
    meta = _assert_usable_model(summary, examples, cfg.model_dir,
                                held_users={r[0] for r in held.select(S.USER_ID).distinct().collect()})
    # train.tree_blend: churn (the default) stacks the churn head with trees; the network's own maps
    # are kept beside the stack (key "network") whenever the trees got a weight
    stacked = {"churn_tree", "network"} if meta.calibration.get("churn_tree") else set()
    assert set(meta.calibration) == {"value_a", "value_b", "churn_c", "churn_d"} | stacked
    assert summary["metrics"]["tree_blend"] == "churn" and summary["metrics"]["tree_blend_weights"]["value"] == 0.0
    assert meta.calibration == summary["metrics"]["calibration"]
    # fitted on every training + validation row's prediction (train.calibration_rows: all)
    assert summary["rows_val"] < summary["metrics"]["calibration_rows"] <= summary["rows_val"] + summary["rows_train"]


def _fresh_weights(model_dir, seed):
    """The weights an untrained model of the same architecture starts from (seeded as train_rank does)."""
    from ulv_spark.train.model import build_model
    from ulv_spark.train.spec import ModelSpec

    spec = ModelSpec.from_dict(json.loads((Path(model_dir) / "model_spec.json").read_text()))
    torch.manual_seed(seed)
    return build_model(spec).state_dict()


def test_barrier_mode_needs_a_task_slot_per_process(spark, examples, tmp_path):
    with pytest.raises(ValueError, match="task slots"):
        _train(spark, examples, _cfg(tmp_path, local_mode=False, num_processes=3))


def _epoch_ids(spec, rank, world, batch_size):
    with feeds.open_batches(spec, rank=rank, world=world, batch_size=batch_size, shuffle=False, workers=1) as batches:
        return [[int(i) for b in batches.epoch() for i in b[feeds.ROW_ID]] for _ in range(2)]


def _shuffled_ids(spec, *, seed, draw_between=False):
    """Rank 0's row ids over six shuffled epochs (Petastorm's shuffling queue on), drawing from torch's RNG or not."""
    ids = []
    with feeds.open_batches(spec, rank=0, world=2, batch_size=50, shuffle=True, seed=seed, shuffle_buffer=100) as batches:
        for _ in range(6):
            for batch in batches.epoch():
                ids += [int(i) for i in batch[feeds.ROW_ID]]
                if draw_between:
                    torch.rand(7)  # where the model's dropout draws
    return ids


def test_arrow_and_petastorm_loaders_give_the_same_rows_per_epoch_in_a_seeded_order(spark, examples, tmp_path):
    # one input partition, so the round-robin spread over 4 files is exactly even (150 rows each)
    source = examples.coalesce(1)
    cfg = _cfg(tmp_path, validation_share=0.0, feed_files=4)
    kw = dict(train_cfg=cfg, seq_len=SEQ, vocab_size=VOCAB, vocab_fingerprint="fp", horizon_days=90, as_of=AS_OF,
              key="rows", world=2)
    # user_features of the run date (one row per user): their sequences join the pretraining feed
    users = examples.filter("origin_date = DATE'2025-07-03'").select("user_id", "as_of_date", "seq_tokens", "seq_mask")
    by_loader = {}
    for loader in ("petastorm", "arrow"):
        extra = users if loader == "arrow" else None  # one pretraining feed is enough to check
        prepared = prepare.prepare(spark, source, loader=loader, extra_sequences=extra, **kw)
        try:
            assert prepared.train.rows == ROWS and prepared.val is None
            by_loader[loader] = [_epoch_ids(prepared.train, rank, 2, 50) for rank in range(2)]
            # shuffled: the order is the seed's, whatever else draws random numbers meanwhile
            torch.manual_seed(1)
            shuffled = _shuffled_ids(prepared.train, seed=5)
            torch.manual_seed(2)
            assert _shuffled_ids(prepared.train, seed=5, draw_between=True) == shuffled, loader
            assert _shuffled_ids(prepared.train, seed=6) != shuffled, loader
            assert set(shuffled) <= set(by_loader[loader][0][0]), loader  # rank 0's own shard only
            if extra is not None:
                assert prepared.pretrain.rows == ROWS + ROWS // 3
                info = json.loads((Path(cfg.parquet_dir) / "rows" / feeds.FEED_META_FILE).read_text())
                assert info["rows"] == {"train": ROWS, "pretrain": ROWS + ROWS // 3}
                assert info["meta"]["arms"] == list(synthetic.DEFAULT_ARMS)
        finally:
            for materialised in prepared.feeds():
                feeds.delete_feed(materialised)
    all_ids = {r[0] for r in source.selectExpr("xxhash64(user_id, origin_date)").collect()}
    for loader, ranks in by_loader.items():
        for epochs in ranks:
            assert all(len(ids) == len(set(ids)) == ROWS // 2 for ids in epochs), loader  # 6 steps x 50 rows
            assert set(epochs[0]) == set(epochs[1]), loader  # every epoch the same rows
        assert not set(ranks[0][0]) & set(ranks[1][0]), loader
        assert set(ranks[0][0]) | set(ranks[1][0]) == all_ids, loader
    petastorm_epoch = set().union(*(r[0] for r in by_loader["petastorm"]))
    arrow_epoch = set().union(*(r[0] for r in by_loader["arrow"]))
    assert petastorm_epoch == arrow_epoch == all_ids


def test_train_command_stopped_after_epoch_1_resumes_and_writes_a_model(spark, examples, lakehouse, write_conf,
                                                                       tmp_path, capsys):
    """`ulv-spark train` end to end: 2 processes in local mode, stopped after epoch 1, resumed through Petastorm."""
    from ulv_spark import cli
    from ulv_spark.config import FeaturesConf
    from ulv_spark.features.sequences import vocab_size, vocabulary_fingerprint

    ref = lake.table_ref(lakehouse, "training_examples")
    examples.write.format("delta").partitionBy("as_of_date").save(ref.path)
    shared = tmp_path / "shared"
    conf = write_conf(f"""
lakehouse: {{root: "{lakehouse.root}", schema: {lakehouse.schema}, shared_dir: "{shared}"}}
features: {{sequence_length: {SEQ}}}
train:
  model_dir: "{shared}/models"
  checkpoint_dir: "{shared}/ck"
  petastorm_cache: "{shared}/petastorm"
  parquet_dir: "{shared}/feed"
  num_processes: 2
  local_mode: true
  loader: petastorm
  batch_size: 64
  epochs: 2
  pretrain_epochs: 1
  reader_workers: 1
  validation_share: 0.0
  tabular_hidden: 16
  head_hidden: 16
  encoder: {{hidden_size: 16, num_layers: 1, num_heads: 2, intermediate_size: 32}}
""")
    train = ["train", "--conf", str(conf), "--as-of", "2025-10-01"]
    # the run that is stopped reads through the Arrow loader; the loader is transport, so the
    # Petastorm run below still resumes its checkpoint
    assert cli.main(train + ["--set", "train.stop_after_epochs=1", "--set", "train.loader=arrow"]) == 1
    assert "stopped after 1 of 3 epochs" in capsys.readouterr().err
    assert latest_model_dir(f"{shared}/models") is None
    [run_dir] = list((shared / "ck").iterdir())
    assert [Path(p).name for p in checkpoints.checkpoint_files(str(run_dir))] == ["epoch-0001.pt"]

    assert cli.main(train) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.rindex('{\n  "command": "train"'):])
    assert summary["resumed_from_epoch"] == 1 and summary["loader"] == "petastorm"
    assert summary["rows_val"] == 0 and summary["rows_pretrain"] == ROWS  # no user_features table: examples only
    features_cfg = FeaturesConf(sequence_length=SEQ)
    meta = _assert_usable_model(summary, examples, f"{shared}/models", vocab=vocab_size(features_cfg))
    assert meta.vocab_fingerprint == vocabulary_fingerprint(features_cfg)
    assert checkpoints.latest_checkpoint(str(run_dir)).endswith("epoch-0003.pt")
    _assert_mlflow_run(shared, summary, conf_epochs=2)
    assert not any((shared / "petastorm").iterdir())

    assert cli.main(["train", "--conf", str(conf), "--as-of", "2025-10-02"]) == 1
    assert "no training_examples rows" in capsys.readouterr().err


def test_torchrun_two_processes_train_from_parquet_without_spark(tmp_path):
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 256, files=4, val_rows=64, seq_len=SEQ,
                                          vocab_size=VOCAB)
    # a pyspark that cannot be imported: the torchrun path must not need Spark at all
    blocker = tmp_path / "no_spark" / "pyspark"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('pyspark is not available on this machine')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK"))}
    # the blocker first; then this checkout (a worktree's ulv_spark, not an installed one)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker.parent), str(REPO)])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "ulv_spark.train.torchrun_main", "--data", root, "--model-root", str(tmp_path / "models"),
           "--checkpoint-dir", str(tmp_path / "ck"), "--set", "train.epochs=1", "--set", "train.pretrain_epochs=1",
           "--set", "train.batch_size=32", "--set", "train.encoder.hidden_size=16", "--set", "train.encoder.num_heads=2",
           "--set", "train.encoder.num_layers=1", "--set", "train.encoder.intermediate_size=32"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["status"] == "finished" and summary["epochs_run"] == 2
    assert (summary["metrics"]["rows_train"], summary["metrics"]["rows_val"]) == (256, 64)
    model, meta = load_model(summary["model_dir"])
    assert meta.vocab_fingerprint == "synthetic"


def test_feed_rows_follow_the_numpy_standardisation_and_label_rules(spark):
    from ulv_spark.train.scaling import standardise

    rows = [("u1", AS_OF, dt.date(2025, 7, 3), 3.0, None, [5, 6, 0], [1, 1, 0], 12.5, 0, "c1", "coupon", 1, 7.0),
            ("u2", AS_OF, dt.date(2025, 7, 3), -2.0, float("nan"), None, None, None, 1, None, None, None, None),
            ("u3", AS_OF, dt.date(2025, 6, 3), 0.0, float("inf"), [7, 0, 0], [1, 0, 0], 0.0, 1, "c1", "other", 0, None)]
    df = spark.createDataFrame(rows, "user_id string, as_of_date date, origin_date date, f1 double, f2 double, "
                                     "seq_tokens array<int>, seq_mask array<int>, label_value double, "
                                     "label_churned int, campaign_id string, arm string, label_converted int, "
                                     "label_response_value double")
    mean, std = [0.5, 1.0], [2.0, 0.5]
    out = feeds.prepare_feed_frame(df, feature_columns=["f1", "f2"], mean=mean, std=std,
                                   arms=["control", "coupon"], seq_len=3).toPandas()
    user_of = dict(df.selectExpr("xxhash64(user_id, origin_date)", "user_id").collect())
    out.index = out[feeds.ROW_ID].map(user_of)
    raw = np.array([[3.0, np.nan], [-2.0, np.nan], [0.0, np.inf]])
    np.testing.assert_allclose(np.stack(out.loc[["u1", "u2", "u3"], feeds.FEATURES]), standardise(raw, mean, std),
                               rtol=1e-6)
    assert out.loc["u2", feeds.TOKENS].tolist() == [0, 0, 0] and out.loc["u2", feeds.MASK].tolist() == [0, 0, 0]
    assert out[feeds.ARM_INDEX].to_dict() == {"u1": 1, "u2": -1, "u3": -1}  # an arm outside the model: unexposed
    assert out[feeds.Y_VALUE].to_dict() == {"u1": 12.5, "u2": 0.0, "u3": 0.0}
    assert out[feeds.Y_CONVERTED].to_dict() == {"u1": 1.0, "u2": 0.0, "u3": 0.0}
    assert out[feeds.Y_RESPONSE].to_dict() == {"u1": 7.0, "u2": 0.0, "u3": 0.0}
    assert out[feeds.Y_CHURN].to_dict() == {"u1": 0.0, "u2": 1.0, "u3": 1.0}


def _assert_mlflow_run(shared, summary, *, conf_epochs):
    """The training run in the local tracking store (the default, sqlite under the shared dir): the
    flattened conf as params, per-epoch metrics by stage, and the pyfunc registered as version 1."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{shared}/mlflow.db", registry_uri=f"sqlite:///{shared}/mlflow.db")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == str(conf_epochs)
    assert run.data.params["features.sequence_length"] == str(SEQ)
    assert run.data.tags["model_dir"] == summary["model_dir"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pretrain.train_loss")] == [1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "finetune.train_loss")] == [2, 3]
    assert summary["mlflow_model_uri"] == "models:/ulv_spark/1"
    version = client.get_model_version("ulv_spark", "1")
    assert version.run_id == run.info.run_id
    assert version.tags["model_dir"] == summary["model_dir"]
    assert version.tags["ulv_model_version"] == summary["model_version"]
    assert (shared / "mlruns").is_dir()  # artifacts under the shared dir, not the working directory
