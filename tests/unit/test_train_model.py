"""Model, artifacts, Arrow loader and the per-rank training loop, without Spark (one process)."""
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from bench import train_data as synthetic
from ulv_spark.config import EncoderConf, TrainConf
from ulv_spark.names import UNK_ID
from ulv_spark.train import checkpoints, launch, loop, prepare, torchrun_main
from ulv_spark.train import feed as feeds
from ulv_spark.train.artifacts import COMPLETE_MARKER, latest_model_dir, load_model, read_meta, save_model
from ulv_spark.train.model import build_masked_lm, build_model, predict_arrays
from ulv_spark.train.scaling import standardise
from ulv_spark.train.spec import ModelMeta, ModelSpec, TrainSpec, model_spec

SEQ, VOCAB = 6, 30
FEATURES = ["recency_days", "frequency", "monetary_value"]
ARMS = ["control", "coupon", "ship"]
TINY_ENCODER = dict(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.0)
DATA = Path(__file__).resolve().parents[1] / "data"


def _meta(arms=ARMS, **kw):
    base = dict(version="", feature_columns=FEATURES, feature_mean=[1.0, 0.5, 3.0], feature_std=[2.0, 0.7, 1.5],
                seq_len=SEQ, vocab_size=VOCAB, vocab_fingerprint="fp", arms=list(arms),
                arm_campaigns={a: "c1" for a in arms}, horizon_days=90, trained_as_of="2025-10-01")
    return ModelMeta(**{**base, **kw})


def _model(n_arms=3, seed=0, propensity=False, **encoder):
    torch.manual_seed(seed)
    return build_model(ModelSpec(vocab_size=VOCAB, seq_len=SEQ, n_features=len(FEATURES), n_arms=n_arms,
                                 encoder=EncoderConf(**{**TINY_ENCODER, **encoder}), tabular_hidden=8, head_hidden=8,
                                 propensity=propensity))


def _inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, SEQ + 1, n)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int32)
    tokens = np.where(mask == 1, rng.integers(4, VOCAB, (n, SEQ)), 0).astype(np.int32)
    tabular = rng.normal(size=(n, len(FEATURES))) * 10
    tabular[0, 1] = np.nan
    return tokens, mask, tabular


# ---------------------------------------------------------------------------------------------
# Model and predictions
# ---------------------------------------------------------------------------------------------
def test_standardise_applies_signed_log1p_then_zscore_nan_to_zero_and_clips():
    raw = np.array([[0.0, math.e - 1, np.nan], [-(math.e - 1), 1e30, 2.0]])
    got = standardise(raw, mean=[0.0, 1.0, 0.0], std=[1.0, 2.0, 1.0])
    expected = np.array([[0.0, 0.0, 0.0], [-1.0, 10.0, math.log(3.0)]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert got.dtype == np.float32


def _raw_heads(model, meta, tokens, mask, tabular) -> dict:
    with torch.no_grad():
        out = model(torch.as_tensor(tokens).long(), torch.as_tensor(mask).long(),
                    torch.as_tensor(standardise(tabular, meta.feature_mean, meta.feature_std)))
    return {k: v.double().numpy() for k, v in out.items()}


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _ziln_reference(logit, mu, raw_sigma) -> dict:
    """Expected value and quantiles of the zero-inflated lognormal, from scipy (independent of losses.py)."""
    p, sigma = _sigmoid(logit), np.log1p(np.exp(raw_sigma)) + 1e-3
    out = {"expected_value": p * stats.lognorm.mean(s=sigma, scale=np.exp(mu))}
    for q, key in ((0.1, "value_p10"), (0.9, "value_p90")):
        inner = np.clip((q - (1 - p)) / p, 1e-12, 1 - 1e-12)
        out[key] = np.where(q > 1 - p, stats.lognorm.ppf(inner, s=sigma, scale=np.exp(mu)), 0.0)
    return out


def test_predict_arrays_returns_every_output_as_the_head_maths_says():
    model, meta = _model().eval(), _meta()
    tokens, mask, tabular = _inputs(7)
    out = predict_arrays(model, meta, tokens, mask, tabular)
    assert set(out) == {"expected_value", "p_purchase", "value_p10", "value_p90", "churn_probability",
                        "arm_conversion", "arm_value", "arm_value_long"}
    assert out["arm_value_long"].shape == (7, 0)   # this model has no long-term head
    for key in ("expected_value", "p_purchase", "value_p10", "value_p90", "churn_probability"):
        assert out[key].shape == (7,), key
    assert out["arm_conversion"].shape == (7, 3) and out["arm_value"].shape == (7, 3)
    raw = _raw_heads(model, meta, tokens, mask, tabular)
    value, arm = raw["value"], raw["arm"]
    expected = {"p_purchase": _sigmoid(value[:, 0]), "churn_probability": _sigmoid(raw["churn"]),
                **_ziln_reference(value[:, 0], value[:, 1], value[:, 2]),
                "arm_conversion": _sigmoid(arm[..., 0]),
                "arm_value": _ziln_reference(arm[..., 1], arm[..., 2], arm[..., 3])["expected_value"]}
    for key, want in expected.items():
        np.testing.assert_allclose(out[key], want, rtol=1e-6, err_msg=key)


def test_predict_arrays_without_arms_gives_empty_arm_outputs():
    out = predict_arrays(_model(n_arms=0).eval(), _meta(arms=[]), *_inputs(4))
    assert out["arm_conversion"].shape == (4, 0) and out["arm_value"].shape == (4, 0)


def test_predict_arrays_rejects_wrong_shapes_and_survives_unknown_tokens():
    model, meta = _model().eval(), _meta()
    tokens, mask, tabular = _inputs(3)
    with pytest.raises(ValueError, match="tabular must have 3 columns"):
        predict_arrays(model, meta, tokens, mask, tabular[:, :2])
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        predict_arrays(model, meta, tokens[:, :4], mask[:, :4], tabular)
    as_unk = tokens.copy()
    as_unk[:, 0] = UNK_ID
    tokens[:, 0] = VOCAB + 100  # a newer vocabulary's id: read as UNK, not an index error
    got, want = predict_arrays(model, meta, tokens, mask, tabular), predict_arrays(model, meta, as_unk, mask, tabular)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_user_without_events_or_features_gets_the_predictions_of_the_cls_token_at_the_feature_means(pooling):
    model, meta = _model(pooling=pooling).eval(), _meta()
    tokens = np.zeros((2, SEQ), dtype=np.int32)
    out = predict_arrays(model, meta, tokens, np.zeros_like(tokens), np.full((2, 3), np.nan))
    assert all(np.isfinite(v).all() for v in out.values())
    # a missing feature counts as the training mean (standardised 0); padding is never attended to
    at_mean = np.expm1(np.abs(meta.feature_mean)) * np.sign(meta.feature_mean)
    other_padding = np.full_like(tokens, 17)
    same = predict_arrays(model, meta, other_padding, np.zeros_like(tokens), np.tile(at_mean, (2, 1)))
    for key, value in out.items():
        np.testing.assert_allclose(same[key], value, rtol=1e-6, err_msg=key)
        np.testing.assert_array_equal(value[0], value[1], err_msg=key)


def test_propensity_head_only_when_assignment_is_not_randomised():
    assert _model().propensity_head is None
    out = predict_arrays(_model(propensity=True).eval(), _meta(), *_inputs(5))
    np.testing.assert_allclose(out["arm_propensity"].sum(axis=1), 1.0)


def test_encoder_from_a_local_checkpoint_dir_is_resized_to_the_vocabulary(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(BertConfig(vocab_size=12, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)).save_pretrained(tmp_path / "enc")
    spec = ModelSpec(vocab_size=VOCAB, seq_len=SEQ, n_features=3, n_arms=0, encoder=EncoderConf(local_dir=str(tmp_path / "enc")))
    mlm = build_masked_lm(spec)
    assert mlm.get_input_embeddings().num_embeddings == VOCAB and mlm.config.hidden_size == 16
    short = dataclasses.replace(spec, seq_len=80)
    with pytest.raises(ValueError, match="positions"):
        build_masked_lm(short)
    with pytest.raises(ValueError, match="local directory"):
        build_masked_lm(dataclasses.replace(spec, encoder=EncoderConf(local_dir="bert-base-uncased")))


# ---------------------------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------------------------
def test_save_load_round_trip_predicts_identically(tmp_path):
    model = _model(seed=4).eval()
    model_dir = save_model(model, _meta(), str(tmp_path), metrics={"val_loss": 1.5}, conf={"train": {"epochs": 2}})
    names = set(os.listdir(model_dir))
    assert {"config.json", "model.safetensors", "meta.json", "vocabulary.json", "feature_stats.json", "metrics.json",
            "conf.yaml", "model_spec.json", COMPLETE_MARKER} <= names
    loaded, meta = load_model(model_dir)
    assert not loaded.training and meta.version == os.path.basename(model_dir)
    assert meta == dataclasses.replace(_meta(), version=meta.version) == read_meta(model_dir)
    a = predict_arrays(model, meta, *_inputs(6))
    b = predict_arrays(loaded, meta, *_inputs(6))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert json.loads(open(os.path.join(model_dir, "metrics.json")).read()) == {"val_loss": 1.5}


def test_a_model_directory_written_before_the_train_split_loads_and_predicts_as_it_did():
    """tests/data/model_dir_before_split was written (and its predictions recorded) by the code of main bc2efaa."""
    recorded = json.loads((DATA / "model_dir_before_split.predictions.json").read_text())
    model, meta = load_model(str(DATA / "model_dir_before_split"))
    assert meta.version == "20250101T000000000000-0ldf0rma" and meta.arms == ["control", "coupon", "ship"]
    assert model.spec == ModelSpec(vocab_size=30, seq_len=6, n_features=3, n_arms=3, tabular_hidden=8, head_hidden=8,
                                   propensity=True, encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2,
                                                                        intermediate_size=32, dropout=0.0, pooling="cls"))
    inputs = recorded["inputs"]
    tabular = np.array([[np.nan if v is None else v for v in row] for row in inputs["tabular"]])
    out = predict_arrays(model, meta, np.array(inputs["tokens"]), np.array(inputs["mask"]), tabular)
    assert set(out) == set(recorded["predictions"]) | {"arm_value_long"}
    assert out["arm_value_long"].shape == (len(tabular), 0)   # written before the long-term head: no such numbers
    for key, want in recorded["predictions"].items():
        # float32 network: another CPU's kernels (AVX2 vs AVX-512) differ in the 8th digit, not more
        np.testing.assert_allclose(out[key], np.array(want), rtol=1e-6, atol=1e-9, err_msg=key)


def test_model_spec_json_keeps_its_flat_format():
    old = json.loads((DATA / "model_dir_before_split" / "model_spec.json").read_text())
    spec = ModelSpec.from_dict(old)
    assert spec.to_dict() == old  # written the same way it was read
    assert ModelSpec.from_dict({**old, "added_by_a_newer_version": 1}) == spec
    local = dataclasses.replace(spec, encoder=dataclasses.replace(spec.encoder, local_dir="/enc"))
    assert local.to_dict()["encoder_local_dir"] == "/enc" and ModelSpec.from_dict(local.to_dict()) == local


def test_model_spec_from_conf_holds_the_encoder_section_with_its_local_dir_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConf(tabular_hidden=12, head_hidden=20, randomised_assignment=False,
                    encoder=EncoderConf(local_dir="enc", hidden_size=8, num_heads=2, pooling="cls"))
    spec = model_spec(cfg, vocab_size=50, seq_len=7, n_features=4, n_arms=2)
    assert spec == ModelSpec(vocab_size=50, seq_len=7, n_features=4, n_arms=2, tabular_hidden=12, head_hidden=20,
                             propensity=True, arm_heads="delta", sequence_dropout=0.3, long_term=True,
                             encoder=dataclasses.replace(cfg.encoder, local_dir=str(tmp_path / "enc")))


def test_latest_model_dir_skips_half_written_versions(tmp_path):
    assert latest_model_dir(str(tmp_path / "missing")) is None
    assert latest_model_dir(str(tmp_path)) is None
    first = save_model(_model(), _meta(version="20250101T000000000000-aaaaaaaa"), str(tmp_path), {}, {})
    (tmp_path / "20990101T000000000000-bbbbbbbb").mkdir()  # newer, but never completed
    assert latest_model_dir(str(tmp_path)) == first
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "20990101T000000000000-bbbbbbbb"))
    second = save_model(_model(), _meta(version="20250101T000000000000-aaaaaaaa"), str(tmp_path), {}, {})
    assert second != first and latest_model_dir(str(tmp_path)) == second  # never overwrites a version


# ---------------------------------------------------------------------------------------------
# Arrow loader and the training loop (one process, no Spark)
# ---------------------------------------------------------------------------------------------
def test_arrow_loader_ranks_split_an_epoch_into_disjoint_shards(tmp_path):
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 256, files=4, seq_len=SEQ, vocab_size=VOCAB)
    spec = feeds.arrow_feed(os.path.join(root, "train"))
    seen = []
    for rank in range(2):
        with feeds.open_batches(spec, rank=rank, world=2, batch_size=32, shuffle=True, seed=3) as batches:
            assert batches.steps_per_epoch == 4
            ids = [int(i) for b in batches.epoch() for i in b["row_id"]]
            assert len(ids) == len(set(ids)) == 128
            seen.append(set(ids))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(256))
    # more ranks than files: rows are dealt out instead, still disjoint and complete
    dealt = []
    for rank in range(5):
        with feeds.open_batches(spec, rank=rank, world=5, batch_size=17, shuffle=True, seed=3) as batches:
            assert batches.steps_per_epoch == 3
            dealt.append({int(i) for b in batches.epoch() for i in b["row_id"]})
    assert sum(len(d) for d in dealt) == 255 and len(set().union(*dealt)) == 255
    with pytest.raises(ValueError, match="no Parquet file"):
        with feeds.open_batches(feeds.FeedSpec("arrow", 0, path=str(tmp_path)), rank=0, world=1, batch_size=8) as b:
            next(b)


def test_step_and_batch_arithmetic():
    assert feeds.steps_per_epoch(1000, 64, 2) == 7 and feeds.steps_per_epoch(10, 64, 2) == 1
    assert feeds.steps_per_epoch(1000, 64, 2, cap=3) == 3
    assert feeds.covering_batch_size(200, 64, 2) == 50
    assert feeds.effective_batch_size(256, 100, 2) == 50 and feeds.effective_batch_size(16, 100, 2) == 16
    assert launch.local_slots("local[2]") == 2 and launch.local_slots("local") == 1
    assert launch.local_slots("spark://h:7077") is None


def test_run_key_ignores_knobs_that_do_not_change_the_result():
    cfg = TrainConf()
    key = prepare.run_key("2025-10-01", 3, cfg, ["a"])
    assert key == prepare.run_key("2025-10-01", 3, dataclasses.replace(cfg, stop_after_epochs=1, resume=False,
                                                                        loader="arrow", cpu_threads=1), ["a"])
    assert key != prepare.run_key("2025-10-01", 4, cfg, ["a"])
    assert key != prepare.run_key("2025-10-01", 3, dataclasses.replace(cfg, learning_rate=0.1), ["a"])


def _train_cfg(tmp_path, **kw):
    base = dict(model_dir=str(tmp_path / "models"), checkpoint_dir=str(tmp_path / "ck"), batch_size=32,
                epochs=2, pretrain_epochs=1, cpu_threads=1, learning_rate=3e-3, tabular_hidden=16, head_hidden=16,
                encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.0))
    return TrainConf(**{**base, **kw})


def _spec(tmp_path, root, **kw):
    cfg = _train_cfg(tmp_path, **kw)
    info = json.loads(open(os.path.join(root, "feed.json")).read())
    meta = ModelMeta.from_dict(info["meta"])
    model = model_spec(cfg, vocab_size=meta.vocab_size, seq_len=meta.seq_len, n_features=len(meta.feature_columns),
                       n_arms=len(meta.arms))
    val = os.path.join(root, "val")
    return TrainSpec(train=cfg, model=model, meta=meta, train_feed=feeds.arrow_feed(os.path.join(root, "train")),
                     val_feed=feeds.arrow_feed(val) if os.path.isdir(val) else None,
                     checkpoint_dir=str(tmp_path / "ck" / "run"), batch_size=cfg.batch_size,
                     label_stats=info["label_stats"])


def test_tiny_data_overfits_losses_fall_in_both_stages(tmp_path):
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 64, files=2, seq_len=SEQ, vocab_size=VOCAB, seed=5)
    # capacity, not the regularised default recipe: constant rate, encoder at full rate, never frozen or dropped
    summary = loop.train_rank(_spec(tmp_path, root, epochs=40, pretrain_epochs=25, learning_rate=5e-3,
                                    lr_schedule="constant", encoder_lr_mult=1.0, freeze_encoder_after=0,
                                    sequence_dropout=0.0))
    history = summary["history"]
    pre = [h["train_loss"] for h in history if h["stage"] == "pretrain"]
    fine = [h["train_loss"] for h in history if h["stage"] == "finetune"]
    assert len(pre) == 25 and len(fine) == 40 and summary["status"] == "finished"
    assert np.mean(pre[-3:]) < np.mean(pre[:3]) - 0.3
    assert np.mean(fine[-3:]) < 0.7 * np.mean(fine[:3])
    model, meta = load_model(summary["model_dir"])
    assert meta.arms == list(synthetic.DEFAULT_ARMS) and meta.feature_columns == list(synthetic.FEATURE_NAMES)


def test_early_stopping_ends_fine_tuning_when_validation_stops_improving(tmp_path):
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 64, files=2, val_rows=32, seq_len=SEQ, vocab_size=VOCAB)
    # a learning rate this small cannot move the validation loss by the improvement threshold
    summary = loop.train_rank(_spec(tmp_path, root, epochs=6, pretrain_epochs=0, learning_rate=1e-12, patience=2))
    assert summary["early_stopped"] and summary["epochs_run"] == 3 and summary["best_epoch"] == 1
    assert summary["metrics"]["val_rows"] == 32


def test_stopped_run_resumes_from_its_checkpoint_via_torchrun_main(tmp_path, capsys):
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 96, files=2, val_rows=32, seq_len=SEQ, vocab_size=VOCAB)
    args = ["--data", root, "--model-root", str(tmp_path / "models"), "--checkpoint-dir", str(tmp_path / "ck"),
            "--set", "train.epochs=2", "--set", "train.pretrain_epochs=1", "--set", "train.batch_size=32",
            "--set", "train.cpu_threads=1", "--set", "train.encoder.hidden_size=16", "--set", "train.encoder.num_heads=2",
            "--set", "train.encoder.num_layers=1", "--set", "train.encoder.intermediate_size=32", "--set", "train.patience=5"]
    assert torchrun_main.main(args + ["--set", "train.stop_after_epochs=2"]) == 3
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "interrupted" and first["epochs_run"] == 2 and "model_dir" not in first
    assert [os.path.basename(p) for p in checkpoints.checkpoint_files(str(tmp_path / "ck"))] == ["epoch-0001.pt", "epoch-0002.pt"]
    assert latest_model_dir(str(tmp_path / "models")) is None

    assert torchrun_main.main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["status"] == "finished" and second["resumed_from_epoch"] == 2 and second["epochs_run"] == 3
    assert second["model_dir"] == latest_model_dir(str(tmp_path / "models"))
    assert os.path.basename(checkpoints.latest_checkpoint(str(tmp_path / "ck"))) == "epoch-0003.pt"
    assert (tmp_path / "ck" / checkpoints.FINISHED_MARKER).is_file()

    # a finished run's checkpoints are not resumed: the next run starts over
    assert torchrun_main.main(args) == 0
    third = json.loads(capsys.readouterr().out)
    assert third["resumed_from_epoch"] is None and third["epochs_run"] == 3


def test_two_trainings_with_the_same_data_conf_and_seed_give_the_same_weights(tmp_path):
    """Issue 20 item 7 on one process (the TorchDistributor + Petastorm version is in test_train_distributed)."""
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 96, files=2, val_rows=32, seq_len=SEQ, vocab_size=VOCAB)
    runs = []
    for name in ("a", "b"):
        spec = _spec(tmp_path / name, root, epochs=2, pretrain_epochs=1, randomised_assignment=False,
                     encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.2))
        summary = loop.train_rank(spec)
        runs.append((summary, load_model(summary["model_dir"])[0].state_dict()))
    (first, a), (second, b) = runs
    strip = [[{k: v for k, v in h.items() if k != "rows_per_second"} for h in s["history"]] for s in (first, second)]
    assert strip[0] == strip[1] and len(strip[0]) == 3
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    other = loop.train_rank(dataclasses.replace(spec, train=dataclasses.replace(spec.train, seed=8),
                                                checkpoint_dir=str(tmp_path / "c")))
    assert other["history"][0]["train_loss"] != first["history"][0]["train_loss"]  # the seed does matter


def test_the_loaders_shuffle_with_a_generator_of_their_own():
    """Petastorm's shuffling queue calls torch.randperm on the global generator: feed gives it its own state."""
    def shuffled():
        while True:
            yield torch.randperm(10).tolist()

    torch.manual_seed(0)
    alone = [next(it) for it in [feeds._with_own_torch_rng(shuffled(), seed=3)] for _ in range(3)]
    torch.manual_seed(1)
    it = feeds._with_own_torch_rng(shuffled(), seed=3)
    mixed, outside = [], []
    for _ in range(3):
        mixed.append(next(it))
        outside.append(torch.rand(1).item())
    torch.manual_seed(1)
    assert mixed == alone and outside == [torch.rand(1).item() for _ in range(3)]  # neither moves the other


def test_a_train_spec_holds_the_conf_section_and_pickles(tmp_path):
    import pickle

    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 64, files=2, seq_len=SEQ, vocab_size=VOCAB)
    spec = _spec(tmp_path, root, learning_rate=0.01, loss_weights={"churn": 2.0})
    assert spec.train == _train_cfg(tmp_path, learning_rate=0.01, loss_weights={"churn": 2.0})
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert spec.restarted().train == dataclasses.replace(spec.train, resume=False)


def test_arm_catalogue_puts_the_control_first_and_ties_arms_to_their_latest_campaign():
    d1, d2 = "2025-06-01", "2025-07-01"
    rows = [{"campaign_id": "c1", "arm": "ship", "is_control": False, "origin": d1},
            {"campaign_id": "c1", "arm": "control", "is_control": True, "origin": d1},
            {"campaign_id": "c2", "arm": "ship", "is_control": False, "origin": d2},
            {"campaign_id": "c2", "arm": "coupon", "is_control": False, "origin": d2}]
    assert feeds.arms_from_exposures(rows) == (["control", "coupon", "ship"],
                                               {"control": "c1", "coupon": "c2", "ship": "c2"})
    flagged = [{"campaign_id": "c1", "arm": "holdout", "is_control": True, "origin": d1},
               {"campaign_id": "c1", "arm": "a", "is_control": False, "origin": d1}]
    assert feeds.arms_from_exposures(flagged)[0] == ["holdout", "a"]
    assert feeds.arms_from_exposures([]) == ([], {})
    with pytest.raises(ValueError, match="no control arm"):
        feeds.arms_from_exposures([{"campaign_id": "c1", "arm": "a", "is_control": False, "origin": d1}])


def test_masked_event_logits_are_computed_only_at_picked_positions_and_match_the_full_head():
    model = _model().eval()
    tokens, mask, _ = _inputs(4, seed=2)
    labels = torch.full(tokens.shape, -100, dtype=torch.long)
    labels[0, 0], labels[2, 1] = 7, 9
    with torch.no_grad():
        out = model(torch.as_tensor(tokens).long(), torch.as_tensor(mask).long(), mlm_labels=labels)
        ids, attn = model._with_cls(torch.as_tensor(tokens).long(), torch.as_tensor(mask).long())
        full = model.mlm(input_ids=ids, attention_mask=attn).logits[:, 1:]
    assert out["mlm_logits"].shape == (2, VOCAB) and out["mlm_labels"].tolist() == [7, 9]
    torch.testing.assert_close(out["mlm_logits"], torch.stack([full[0, 0], full[2, 1]]))


def test_pretraining_reads_its_own_sequence_feed_when_given(tmp_path):
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 64, files=2, seq_len=SEQ, vocab_size=VOCAB)
    more = synthetic.write_synthetic_feed(str(tmp_path / "more"), 192, files=2, seq_len=SEQ, vocab_size=VOCAB, seed=9)
    spec = dataclasses.replace(_spec(tmp_path, root, epochs=1, pretrain_epochs=1),
                               pretrain_feed=feeds.arrow_feed(os.path.join(more, "train")))
    history = loop.train_rank(spec)["history"]
    assert [(h["stage"], h["rows"]) for h in history] == [("pretrain", 192), ("finetune", 64)]


def test_gpu_requested_on_a_cpu_machine_falls_back_to_cpu_with_a_warning(caplog):
    import logging

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: nothing to fall back from")
    log = logging.getLogger("ulv_spark.test_gpu")
    with caplog.at_level(logging.WARNING, logger="ulv_spark.test_gpu"):
        device, on_gpu = loop.select_device(True, 0, log)
        use_gpu = launch.resolve_gpu(None, TrainConf(use_gpu=True, local_mode=True), log)
    assert (str(device), on_gpu, use_gpu) == ("cpu", False, False)
    assert "no GPU" in caplog.text



# ---------------------------------------------------------------------------------------------
# Per-event text fusion (train.text_fusion)
# ---------------------------------------------------------------------------------------------
TEXT_DIMS = 3


def _text_model(seed=0, text_dims=TEXT_DIMS, n_arms=3):
    torch.manual_seed(seed)
    return build_model(ModelSpec(vocab_size=VOCAB, seq_len=SEQ, n_features=len(FEATURES), n_arms=n_arms,
                                 encoder=EncoderConf(**TINY_ENCODER), tabular_hidden=8, head_hidden=8,
                                 text_dims=text_dims)).eval()


def _text(n, seed=1):
    return np.random.default_rng(seed).normal(size=(n, SEQ * TEXT_DIMS)).astype(np.float32)


def test_text_fusion_changes_the_outputs_with_the_vectors_and_is_inert_when_zero_or_on_padding():
    model, meta = _text_model(), _meta()
    tokens, mask, tabular = _inputs(8)
    mask[1:, 0], tokens[1:, 0] = 1, 5          # every row but the first has an event at position 0
    none = predict_arrays(model, meta, tokens, mask, tabular)
    zeros = predict_arrays(model, meta, tokens, mask, tabular, text=np.zeros((8, SEQ * TEXT_DIMS)))
    text = _text(8)
    fused = predict_arrays(model, meta, tokens, mask, tabular, text=text)
    other = predict_arrays(model, meta, tokens, mask, tabular, text=_text(8, seed=2))
    for key in none:
        np.testing.assert_array_equal(none[key], zeros[key], err_msg=key)   # zeros add exactly nothing
    events = mask.sum(axis=1) > 0
    assert events[1:].all()
    # different vectors on events: different predictions for every user with an event
    assert (np.abs(fused["expected_value"] - none["expected_value"])[events] > 0).all()
    assert (np.abs(fused["churn_probability"] - other["churn_probability"])[events] > 0).all()
    # vectors on padding positions count for nothing (the mask), so a user without events is unchanged
    padded = text.reshape(8, SEQ, TEXT_DIMS) * (mask[:, :, None] == 0)
    on_padding = predict_arrays(model, meta, tokens, mask, tabular, text=padded.reshape(8, -1))
    for key in none:
        np.testing.assert_allclose(on_padding[key], none[key], rtol=1e-6, atol=1e-9, err_msg=key)
    with pytest.raises(ValueError, match="text must be"):
        predict_arrays(model, meta, tokens, mask, tabular, text=np.zeros((8, SEQ)))
    # the projection is part of the encoder: its optimiser group, frozen with it
    assert {id(p) for p in model.text_proj.parameters()} <= {id(p) for p in model.encoder_parameters()}
    model.freeze_encoder()
    assert not any(p.requires_grad for p in model.text_proj.parameters())


def test_text_fusion_switch_and_old_specs():
    on, off = TrainConf(), TrainConf(text_fusion=False)
    assert on.text_fusion is True
    shape = dict(vocab_size=VOCAB, seq_len=SEQ, n_features=3, n_arms=0)
    assert model_spec(on, **shape, text_dims=8).text_dims == 8
    assert model_spec(off, **shape, text_dims=8).text_dims == 0        # the ablation
    # no text in the examples (CDNOW): the switch makes no difference at all
    assert model_spec(on, **shape) == model_spec(off, **shape) == model_spec(on, **shape, text_dims=0)
    spec = model_spec(on, **shape, text_dims=8)
    assert spec.to_dict()["text_dims"] == 8 and ModelSpec.from_dict(spec.to_dict()) == spec
    plain = model_spec(on, **shape)
    assert "text_dims" not in plain.to_dict()                           # written as before the fusion
    assert ModelSpec.from_dict(plain.to_dict()).text_dims == 0


def test_without_text_the_switch_gives_identical_predictions_and_a_saved_fused_model_round_trips(tmp_path):
    # CDNOW-like input (no seq_text): models built with the switch on and off are the same model
    tokens, mask, tabular = _inputs(6)
    shape = dict(vocab_size=VOCAB, seq_len=SEQ, n_features=len(FEATURES), n_arms=0)
    preds = []
    for cfg in (TrainConf(text_fusion=True, tabular_hidden=8, head_hidden=8, encoder=EncoderConf(**TINY_ENCODER)),
                TrainConf(text_fusion=False, tabular_hidden=8, head_hidden=8, encoder=EncoderConf(**TINY_ENCODER))):
        torch.manual_seed(3)
        model = build_model(model_spec(cfg, **shape)).eval()
        assert model.text_proj is None
        preds.append(predict_arrays(model, _meta(arms=[]), tokens, mask, tabular, text=_text(6)))
    for key in preds[0]:
        np.testing.assert_array_equal(preds[0][key], preds[1][key], err_msg=key)
    # a fused model saves its text_dims and predicts the same after loading
    model = _text_model(seed=4)
    model_dir = save_model(model, _meta(), str(tmp_path), metrics={}, conf={})
    loaded, meta = load_model(model_dir)
    assert loaded.spec.text_dims == TEXT_DIMS
    a = predict_arrays(model, meta, tokens, mask, tabular, text=_text(6))
    b = predict_arrays(loaded, meta, tokens, mask, tabular, text=_text(6))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_training_reads_the_text_feed_column_and_saves_a_fused_model(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 64, files=2, val_rows=32, seq_len=SEQ,
                                          vocab_size=VOCAB, seed=5)
    for split in ("train", "val"):   # a text column that tells the churn label on every event
        for path in feeds.parquet_files(os.path.join(root, split)):
            table = pq.read_table(path)
            churn = table.column("y_churn").to_numpy()
            mask = np.stack(table.column("mask").to_numpy(zero_copy_only=False)).astype(np.float32)
            text = (mask[:, :, None] * (2.0 * churn[:, None, None] - 1.0) * np.ones(TEXT_DIMS)).astype(np.float32)
            flat = pa.FixedSizeListArray.from_arrays(pa.array(text.reshape(-1)), SEQ * TEXT_DIMS)
            pq.write_table(table.append_column("text", flat.cast(pa.list_(pa.float32()))), path)
    spec = _spec(tmp_path, root, epochs=3, pretrain_epochs=1, freeze_encoder_after=0)
    spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, text_dims=TEXT_DIMS))
    summary = loop.train_rank(spec)
    assert summary["status"] == "finished"
    model, meta = load_model(summary["model_dir"])
    assert model.spec.text_dims == TEXT_DIMS and model.text_proj is not None
    tokens, mask, _ = _inputs(8)
    mask[:, 0], tokens[:, 0] = 1, 5
    tabular = np.zeros((8, len(meta.feature_columns)))
    ones = np.ones((8, SEQ * TEXT_DIMS), dtype=np.float32)
    a = predict_arrays(model, meta, tokens, mask, tabular, text=ones)
    b = predict_arrays(model, meta, tokens, mask, tabular, text=-ones)
    assert (a["churn_probability"] != b["churn_probability"]).all()


def test_periodic_tabular_embeddings_are_per_feature_saved_in_the_spec_and_older_specs_build_without(tmp_path):
    from ulv_spark.train.model import PeriodicEmbeddings

    torch.manual_seed(0)
    emb = PeriodicEmbeddings(3, frequencies=4, dim=2)
    x = torch.randn(5, 3)
    out = emb(x)
    assert out.shape == (5, 3 * 2 + 3)
    torch.testing.assert_close(out[:, -3:], x)   # the raw values ride along
    moved = x.clone()
    moved[:, 1] += 1.0                            # feature 1 moves: only its own embedding changes
    changed = (emb(moved) != out).any(0).reshape(-1)
    assert changed[2:4].all() and not changed[:2].any() and not changed[4:6].any()

    shape = dict(vocab_size=VOCAB, seq_len=SEQ, n_features=len(FEATURES), n_arms=0)
    assert TrainConf().tabular_embedding == "none"
    cfg = TrainConf(tabular_embedding="periodic", tabular_hidden=8, head_hidden=8, encoder=EncoderConf(**TINY_ENCODER))
    model = build_model(model_spec(cfg, **shape)).eval()
    assert isinstance(model.tabular[0], PeriodicEmbeddings)
    model_dir = save_model(model, _meta(arms=[]), str(tmp_path), metrics={}, conf={})
    loaded, meta = load_model(model_dir)
    assert loaded.spec.tabular_embedding == "periodic"
    tokens, mask, tabular = _inputs(6)
    a, b = predict_arrays(model, meta, tokens, mask, tabular), predict_arrays(loaded, meta, tokens, mask, tabular)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # a model_spec.json without the key (written before it) means the plain MLP
    spec = model_spec(cfg, **shape).to_dict()
    assert spec["tabular_embedding"] == "periodic"
    del spec["tabular_embedding"]
    assert not isinstance(build_model(ModelSpec.from_dict(spec)).tabular[0], PeriodicEmbeddings)
