"""The issue 14 training recipe, piece by piece, with exact values: LR schedule, calibration, hash
split, arm catalogue check, delta arm heads, modality dropout, encoder freeze."""
import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import train_data as synthetic
from ulv_spark import schemas as S
from ulv_spark.config import EncoderConf, TrainConf
from ulv_spark.train import checkpoints, loop, prepare
from ulv_spark.train import feed as feeds
from ulv_spark.train.artifacts import load_model, read_meta
from ulv_spark.evaluate.metrics import decile_mape
from ulv_spark.train.calibration import (PowerCalibration, apply_knots, fit_platt, fit_power_calibration,
                                        fit_value_power, isotonic_knots)
from ulv_spark.train.model import build_model, calibrate, predict_arrays
from ulv_spark.train.spec import ModelMeta, ModelSpec

SEQ, VOCAB = 8, 40


# --------------------------------------------------------------------------------------------
# learning-rate schedule
# --------------------------------------------------------------------------------------------
def test_lr_factor_warms_up_linearly_then_follows_the_cosine_to_the_floor():
    f = lambda step: loop.lr_factor(step, 105, warmup_share=0.05, floor=0.1)  # noqa: E731  warm-up = int(5.25) = 5
    assert [f(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0], abs=1e-15)
    assert f(5) == pytest.approx(1.0, abs=1e-15)                  # progress 0
    assert f(30) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)), abs=1e-15)
    assert f(55) == pytest.approx(0.55, abs=1e-15)                # progress 1/2
    assert f(105) == pytest.approx(0.1, abs=1e-15) and f(500) == pytest.approx(0.1, abs=1e-15)  # capped at the end
    assert loop.lr_factor(0, 10, warmup_share=0.0, floor=0.1) == 1.0       # no warm-up: one step of 1/1
    assert loop.lr_factor(7, 100, schedule="constant") == 1.0 and loop.lr_factor(3, 0) == 1.0


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
def test_value_power_fit_recovers_a_and_b_when_spend_is_exactly_the_power_of_ev():
    ev = np.array([0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 150.0, 300.0, 600.0, 1000.0])
    a, b = -0.7, 1.3
    y = np.exp(a) * ev ** b   # the Poisson score equations are solved exactly at mu = y
    got_a, got_b = fit_value_power(ev, y)
    assert got_a == pytest.approx(a, abs=1e-7) and got_b == pytest.approx(b, abs=1e-7)


def test_value_power_slope_is_bounded_below_and_the_intercept_refitted_for_it():
    ev = np.linspace(1.0, 100.0, 20)
    y = 200.0 / ev                                    # spend falls with EV: the free slope would be negative
    a, b = fit_value_power(ev, y)
    assert b == 0.05
    assert a == pytest.approx(math.log(y.sum() / (ev ** 0.05).sum()), abs=1e-12)  # totals match at b = 0.05
    assert fit_value_power(ev, np.zeros_like(ev)) == (0.0, 1.0)                    # no spend: identity
    assert fit_value_power(ev[:5], y[:5]) == (0.0, 1.0)                            # too few rows: identity


def test_platt_fit_recovers_the_saturated_two_level_answer():
    # 8 rows at logit 0 with 2 churners, 8 at logit 1 with 6: sigmoid(c) = 1/4, sigmoid(c + d) = 3/4
    p = np.array([0.5] * 8 + [1 / (1 + math.exp(-1))] * 8)
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0] + [1, 1, 1, 1, 1, 1, 0, 0])
    c, d = fit_platt(p, y)
    assert c == pytest.approx(-math.log(3), abs=1e-8) and d == pytest.approx(2 * math.log(3), abs=1e-8)
    assert fit_platt(p, np.ones_like(y)) == (0.0, 1.0)   # one class: identity


def test_platt_slope_is_bounded_below_and_the_intercept_matches_the_churn_total():
    p = np.linspace(0.05, 0.95, 30)
    y = (p < 0.4).astype(float)                          # anti-calibrated
    c, d = fit_platt(p, y)
    assert d == 0.05
    z = c + 0.05 * np.log(p / (1 - p))
    assert (1 / (1 + np.exp(-z))).sum() == pytest.approx(y.sum(), abs=1e-9)  # the intercept's score equation


def test_calibration_round_trips_through_a_dict_and_is_identity_without_one():
    cal = fit_power_calibration(np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10]), np.array([2.0, 3, 5, 9, 9, 12, 15, 14, 20, 22]),
                                np.linspace(0.1, 0.9, 10), np.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1]))
    assert PowerCalibration.from_dict(cal.to_dict()) == cal and not cal.is_identity
    assert PowerCalibration.from_dict({}).is_identity and PowerCalibration.from_dict(None).is_identity
    ev = np.array([0.3, 4.0, 50.0])
    np.testing.assert_array_equal(PowerCalibration().value(ev), ev)


def test_isotonic_knots_pool_violators_and_give_exact_bin_means_at_the_knots():
    # 4 bins of 2 rows: outcome means 1, 3, 2, 8 -> the middle pair is pooled to 2.5
    pred = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0])
    y = np.array([0.0, 2.0, 3.0, 3.0, 1.0, 3.0, 8.0, 8.0])
    knots = isotonic_knots(pred, y, forward=math.log, floor=1e-9, bins=4, min_rows=2)
    np.testing.assert_allclose(np.exp(knots), [[1.0, 1.0], [2.5, 2.5], [4.0, 8.0]], rtol=1e-12)
    # linear between the knots (in log space), slope 1 beyond the ends
    z = np.log([0.5, 1.0, 1.75, 4.0, 8.0])
    np.testing.assert_allclose(np.exp(apply_knots(z, knots)), [0.5, 1.0, 1.75, 8.0, 16.0], rtol=1e-12)
    assert isotonic_knots(pred, y, forward=math.log, floor=1e-9, bins=4, min_rows=5) == ()  # one bin only


def test_isotonic_calibration_is_strictly_increasing_and_fixes_a_bent_decile_curve():
    rng = np.random.default_rng(0)
    ev = rng.lognormal(0.0, 1.0, 20_000)
    y = rng.poisson(np.where(ev < 1.0, 0.2 * ev, 3.0 * ev - 2.8)).astype(float)   # bent: no power law fits
    churn, y_churn = np.full(len(ev), 0.5), (rng.random(len(ev)) < 0.5).astype(float)
    power = fit_power_calibration(ev, y, churn, y_churn)
    held_out = rng.random(len(ev)) < 0.3   # the knots come from these rows only
    iso = fit_power_calibration(ev, y, churn, y_churn, knot_rows={"ev": ev[held_out], "y_value": y[held_out]})
    assert iso.value_knots and PowerCalibration.from_dict(iso.to_dict()) == iso
    assert (iso.value_a, iso.value_b, iso.churn_c, iso.churn_d) == (power.value_a, power.value_b, power.churn_c,
                                                                     power.churn_d)
    grid = np.sort(rng.lognormal(0.0, 2.0, 5000))
    assert np.all(np.diff(iso.value(grid)) > 0)   # rankings do not move
    rest = ~held_out
    assert decile_mape(y[rest], iso.value(ev[rest])) < 0.5 * decile_mape(y[rest], power.value(ev[rest]))
    # the level stays the power map's over every fit row (the knots only reshape)
    assert iso.value(ev).sum() == pytest.approx(power.value(ev).sum(), rel=1e-9)
    assert "value_knots" not in power.to_dict()   # power-only models keep the four floats
    np.testing.assert_array_equal(iso.churn(churn), power.churn(churn))   # churn: Platt alone


def test_calibrate_maps_ev_and_churn_and_scales_the_quantiles_by_the_same_ratio():
    cal = PowerCalibration(value_a=0.5, value_b=0.8, churn_c=-0.2, churn_d=1.5)
    preds = {"expected_value": np.array([1.0, 10.0, 100.0]), "value_p10": np.array([0.0, 2.0, 30.0]),
             "value_p90": np.array([3.0, 25.0, 220.0]), "churn_probability": np.array([0.1, 0.5, 0.8]),
             "p_purchase": np.array([0.2, 0.6, 0.9])}
    out = calibrate({k: v.copy() for k, v in preds.items()}, cal)
    ev = np.exp(0.5) * preds["expected_value"] ** 0.8
    np.testing.assert_allclose(out["expected_value"], ev, rtol=1e-13)
    np.testing.assert_allclose(out["value_p10"], preds["value_p10"] * ev / preds["expected_value"], rtol=1e-13)
    np.testing.assert_allclose(out["value_p90"], preds["value_p90"] * ev / preds["expected_value"], rtol=1e-13)
    logit = np.log(preds["churn_probability"] / (1 - preds["churn_probability"]))
    np.testing.assert_allclose(out["churn_probability"], 1 / (1 + np.exp(-(-0.2 + 1.5 * logit))), rtol=1e-12)
    np.testing.assert_array_equal(out["p_purchase"], preds["p_purchase"])


def _tiny(n_arms=3, arm_heads="delta", sequence_dropout=0.0, long_term=False):
    torch.manual_seed(0)
    spec = ModelSpec(vocab_size=VOCAB, seq_len=SEQ, n_features=3, n_arms=n_arms, tabular_hidden=8, head_hidden=8,
                     arm_heads=arm_heads, sequence_dropout=sequence_dropout, long_term=long_term,
                     encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.0))
    return build_model(spec).eval()


def _inputs(n=6, seed=1):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, VOCAB, (n, SEQ))
    mask = (rng.random((n, SEQ)) < 0.8).astype(int)
    return tokens, mask, rng.normal(size=(n, 3)) * 10


def test_predict_arrays_applies_the_stored_calibration():
    model = _tiny()
    meta = ModelMeta(version="v", feature_columns=["a", "b", "c"], feature_mean=[0.0] * 3, feature_std=[1.0] * 3,
                     seq_len=SEQ, vocab_size=VOCAB, vocab_fingerprint="fp", arms=["control", "x", "y"],
                     arm_campaigns={}, horizon_days=90, trained_as_of="2025-01-01")
    cal = PowerCalibration(value_a=-0.3, value_b=1.2, churn_c=0.4, churn_d=0.7)
    raw = predict_arrays(model, meta, *_inputs())
    got = predict_arrays(model, ModelMeta.from_dict({**meta.to_dict(), "calibration": cal.to_dict()}), *_inputs())
    want = calibrate({k: np.array(v, copy=True) for k, v in raw.items()}, cal)
    for key in ("expected_value", "value_p10", "value_p90", "churn_probability"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)
        assert key == "value_p10" or not np.allclose(got[key], raw[key]), key   # p10 is 0 below 90 % purchase
    for key in ("p_purchase", "arm_conversion", "arm_value"):
        np.testing.assert_array_equal(got[key], raw[key])


def test_the_long_term_head_predicts_horizon_spend_per_arm_and_older_models_predict_none():
    from ulv_spark.score.predict import outputs_to_frame

    meta = ModelMeta(version="v", feature_columns=["a", "b", "c"], feature_mean=[0.0] * 3, feature_std=[1.0] * 3,
                     seq_len=SEQ, vocab_size=VOCAB, vocab_fingerprint="fp", arms=["control", "x", "y"],
                     arm_campaigns={}, horizon_days=90, trained_as_of="2025-01-01")
    got = predict_arrays(_tiny(long_term=True), meta, *_inputs())
    assert got["arm_value_long"].shape == (6, 3) and (got["arm_value_long"] > 0).all()
    frame = outputs_to_frame([f"u{i}" for i in range(6)], got, 3)
    np.testing.assert_array_equal(np.stack(frame["arm_value_long"].to_numpy()), got["arm_value_long"])
    # a model written before the head (no long_term key in model_spec.json): no long-term numbers at all
    old = ModelSpec.from_dict({k: v for k, v in _tiny().spec.to_dict().items() if k != "long_term"})
    assert old.long_term is False and "long_term" not in old.to_dict()
    assert ModelSpec.from_dict(_tiny(long_term=True).spec.to_dict()).long_term is True
    none = predict_arrays(build_model(old), meta, *_inputs())
    assert none["arm_value_long"].shape == (6, 0) and none["arm_value"].shape == (6, 3)
    assert outputs_to_frame([f"u{i}" for i in range(6)], none, 3)["arm_value_long"].map(len).tolist() == [0] * 6


# --------------------------------------------------------------------------------------------
# delta arm heads, modality dropout
# --------------------------------------------------------------------------------------------
def _rep_and_out(model, tokens, mask, tabular):
    seen = {}
    handle = model.trunk.register_forward_hook(lambda _m, _i, out: seen.setdefault("rep", out))
    with torch.no_grad():
        out = model(torch.as_tensor(tokens), torch.as_tensor(mask), torch.as_tensor(tabular, dtype=torch.float32))
    handle.remove()
    return seen["rep"], out


def test_delta_arm_heads_control_is_the_base_head_and_biases_start_at_the_base_rates():
    model = _tiny()
    stats = {"p_converted": 0.2, "p_response": 0.1, "response_log_mean": 3.0, "response_log_std": 0.8}
    model.set_output_bias(stats)
    inv_softplus = 0.8 + math.log(-math.expm1(-0.8))
    base = torch.tensor([[math.log(0.2 / 0.8), math.log(0.1 / 0.9), 3.0, inv_softplus]])
    torch.testing.assert_close(model.base_arm.b2.data, base)
    assert torch.equal(model.arm_heads.b2.data, torch.zeros(3, 4))
    tokens, mask, tabular = _inputs()
    rep, out = _rep_and_out(model, tokens, mask, tabular)
    with torch.no_grad():
        base_out, delta = model.base_arm(rep)[:, 0], model.arm_heads(rep)
    assert torch.equal(out["arm"][:, 0], base_out)                        # the control's delta is 0
    torch.testing.assert_close(out["arm"][:, 1:], base_out[:, None] + delta[:, 1:], rtol=0, atol=1e-6)
    with torch.no_grad():                                                  # the control's delta row is never used
        model.arm_heads.w2[0].add_(5.0)
        model.arm_heads.b2[0].add_(5.0)
    assert torch.equal(_rep_and_out(model, tokens, mask, tabular)[1]["arm"], out["arm"])
    tarnet = _tiny(arm_heads="tarnet")
    assert tarnet.base_arm is None and "base_arm.w1" not in tarnet.state_dict()


def test_modality_dropout_zeroes_whole_sequence_vectors_in_training_only():
    model = _tiny(sequence_dropout=0.5)
    tokens, mask, tabular = (torch.as_tensor(a) for a in _inputs(n=64))
    tabular = tabular.float()
    captured = []
    handle = model.trunk.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().clone()))
    model.train()
    with torch.no_grad():
        torch.manual_seed(3)
        model(tokens, mask, tabular)
        model.eval()
        model(tokens, mask, tabular)
    handle.remove()
    hidden = model.mlm.config.hidden_size
    trained, evaluated = captured[0][:, :hidden], captured[1][:, :hidden]
    dropped = (trained == 0).all(dim=1)
    assert 10 < int(dropped.sum()) < 54                             # about half of 64 rows, whole vectors
    torch.testing.assert_close(trained[~dropped], 2.0 * evaluated[~dropped], rtol=1e-5, atol=1e-6)  # inverted scaling
    assert not (evaluated == 0).all(dim=1).any()                    # inference never drops


# --------------------------------------------------------------------------------------------
# hash validation split and the arm catalogue (Spark)
# --------------------------------------------------------------------------------------------
def test_hash_split_holds_out_the_same_users_at_every_origin_with_the_share(spark):
    from pyspark.sql import functions as F

    origins = [dt.date(2025, 5, 1), dt.date(2025, 6, 1), dt.date(2025, 7, 1)]
    users = spark.range(10_000).select(F.concat(F.lit("u"), F.col("id").cast("string")).alias(S.USER_ID))
    examples = users.crossJoin(spark.createDataFrame([(d,) for d in origins], f"{S.ORIGIN_DATE} date"))
    fit, val, held = feeds.split_examples(examples, method="hash", validation_share=0.2, origins=origins)
    assert held == []
    per_origin = {r[0]: r[1] for r in val.groupBy(S.ORIGIN_DATE).agg(F.collect_set(S.USER_ID)).collect()}
    assert set(per_origin) == set(origins)
    sets = [frozenset(per_origin[d]) for d in origins]
    assert sets[0] == sets[1] == sets[2]                                       # the same users at every origin
    assert abs(len(sets[0]) / 10_000 - 0.2) < 0.015                            # binomial sd 0.004
    fit_users = {r[0] for r in fit.select(S.USER_ID).distinct().collect()}
    assert not fit_users & sets[0] and len(fit_users) + len(sets[0]) == 10_000  # no user in both parts
    documented = examples.filter(F.expr(f"pmod(xxhash64({S.USER_ID}), 10000) < 2000"))
    assert documented.select(S.USER_ID).distinct().count() == len(sets[0])
    assert val.exceptAll(documented).count() == 0 and documented.exceptAll(val).count() == 0
    again = feeds.split_examples(examples, method="hash", validation_share=0.2, origins=origins)[1]
    assert again.exceptAll(val).count() == 0                                    # deterministic
    _, by_origin, held = feeds.split_examples(examples, method="origin", validation_share=0.2, origins=origins)
    assert held == ["2025-07-01"] and by_origin.select(S.ORIGIN_DATE).distinct().collect()[0][0] == origins[-1]
    assert feeds.split_examples(examples, method="hash", validation_share=0.0, origins=origins)[1] is None


def test_an_arm_missing_from_the_fit_split_fails_naming_arm_and_campaign():
    with pytest.raises(ValueError, match=r"arm 'coupon' of campaign 'spring' has no row in the fit split "
                                         r"\(train.validation_split=origin\)"):
        feeds.check_arms_learnable(["control", "coupon"], {"control": "spring", "coupon": "spring"}, ["control"],
                                   split="origin")
    feeds.check_arms_learnable(["control", "coupon"], {}, ["coupon", "control"], split="hash")   # all there
    feeds.check_arms_learnable([], {}, [], split="hash")                                         # no campaigns


def test_prepare_catalogues_arms_from_all_rows_and_fails_when_the_origin_split_hides_the_campaign(spark, tmp_path):
    from pyspark.sql import functions as F

    examples = synthetic.synthetic_training_examples(spark, 300, seq_len=SEQ, vocab_size=VOCAB, origins=3)
    newest = examples.agg(F.max(S.ORIGIN_DATE)).first()[0]
    only_newest = examples.withColumn(S.ARM, F.when(F.col(S.ORIGIN_DATE) == newest, F.col(S.ARM)))
    campaign = only_newest.filter(F.col(S.ARM).isNotNull()).select(S.CAMPAIGN_ID).first()[0]
    kw = dict(seq_len=SEQ, vocab_size=VOCAB, vocab_fingerprint="fp", horizon_days=90, as_of="2025-10-01",
              key="k", loader="arrow")
    cfg = TrainConf(parquet_dir=str(tmp_path / "feed"), validation_split="origin", validation_share=0.34)
    arms = ", ".join(f"arm '{a}' of campaign '{campaign}'" for a in synthetic.DEFAULT_ARMS)
    with pytest.raises(ValueError, match=rf"exposures, but {arms} have no row in the fit split \(train.validation_split=origin\)"):
        prepare.prepare(spark, only_newest, train_cfg=cfg, **kw)
    hashed = prepare.prepare(spark, only_newest, train_cfg=TrainConf(parquet_dir=str(tmp_path / "feed")), **kw)
    try:
        assert hashed.meta.arms == list(synthetic.DEFAULT_ARMS) and hashed.validation_origins == []
        assert hashed.val is not None and hashed.val.rows > 0
    finally:
        hashed.delete()


# --------------------------------------------------------------------------------------------
# the encoder freeze, in a real training run
# --------------------------------------------------------------------------------------------
def _spec(tmp_path, root, **kw):
    import json
    import os

    from ulv_spark.train.spec import TrainSpec, model_spec

    base = dict(model_dir=str(tmp_path / "models"), checkpoint_dir=str(tmp_path / "ck"), batch_size=32,
                epochs=2, pretrain_epochs=0, cpu_threads=1, learning_rate=3e-3, tabular_hidden=16, head_hidden=16,
                encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.0))
    cfg = TrainConf(**{**base, **kw})
    info = json.loads(open(os.path.join(root, "feed.json")).read())
    meta = ModelMeta.from_dict(info["meta"])
    model = model_spec(cfg, vocab_size=meta.vocab_size, seq_len=meta.seq_len, n_features=len(meta.feature_columns),
                       n_arms=len(meta.arms))
    val = os.path.join(root, "val")
    return TrainSpec(train=cfg, model=model, meta=meta, train_feed=feeds.arrow_feed(os.path.join(root, "train")),
                     val_feed=feeds.arrow_feed(val) if os.path.isdir(val) else None,
                     checkpoint_dir=str(tmp_path / "ck" / "run"), batch_size=cfg.batch_size,
                     label_stats=info["label_stats"])


def test_the_encoder_stays_bit_identical_after_it_is_frozen_and_the_rest_trains_on(tmp_path):
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 128, files=2, seq_len=SEQ, vocab_size=VOCAB, seed=2)
    kw = dict(epochs=4, freeze_encoder_after=1, sequence_dropout=0.3)
    first = loop.train_rank(_spec(tmp_path, root, stop_after_epochs=1, **kw))   # epoch 1, then resume
    assert first["status"] == "interrupted"
    run = str(tmp_path / "ck" / "run")
    after_one = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(run)).weights
    summary = loop.train_rank(_spec(tmp_path, root, **kw))
    assert summary["status"] == "finished" and summary["resumed_from_epoch"] == 1
    final = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(run)).weights
    encoder = [k for k in final if k.startswith("mlm.")]
    assert encoder and all(torch.equal(final[k], after_one[k]) for k in encoder)
    assert not all(torch.equal(final[k], after_one[k]) for k in final if k.startswith(("trunk.", "tabular.")))
    model, _ = load_model(summary["model_dir"])
    assert all(torch.equal(v, after_one[k]) for k, v in model.state_dict().items() if k in encoder)
    # not frozen: the encoder moves in the later epochs too
    free = loop.train_rank(_spec(tmp_path / "free", root, **{**kw, "freeze_encoder_after": 0}))
    ck = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(str(tmp_path / "free" / "ck" / "run"))).weights
    assert free["status"] == "finished" and not all(torch.equal(ck[k], after_one[k]) for k in encoder)


def test_training_fits_the_calibration_on_training_and_validation_rows_and_stores_it_in_meta(tmp_path):
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 128, files=2, val_rows=64, seq_len=SEQ,
                                          vocab_size=VOCAB, seed=3)
    summary = loop.train_rank(_spec(tmp_path, root, epochs=2))
    meta = read_meta(summary["model_dir"])
    assert set(meta.calibration) == {"value_a", "value_b", "churn_c", "churn_d"}
    assert meta.calibration == summary["metrics"]["calibration"]
    assert meta.calibration["value_b"] >= 0.05 and meta.calibration["churn_d"] >= 0.05
    # fitted on every training + validation row (the default): the calibrated total over them is the observed one
    # (the Poisson fit's score equation)
    assert 64 < summary["metrics"]["calibration_rows"] <= 128 + 64
    assert summary["metrics"]["calibration_expected_value_ratio"] == pytest.approx(1.0, abs=1e-6)
    # the validation rows only: another map from the same weights
    val_only = loop.train_rank(_spec(tmp_path / "val", root, epochs=2, calibration_rows="validation"))
    assert val_only["metrics"]["calibration_rows"] == 64
    assert val_only["metrics"]["calibration_expected_value_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert read_meta(val_only["model_dir"]).calibration != meta.calibration
    off = loop.train_rank(_spec(tmp_path / "off", root, epochs=2, calibration="none"))
    assert read_meta(off["model_dir"]).calibration == {} and "calibration" not in off["metrics"]


def test_isotonic_calibration_adds_value_knots_from_the_validation_rows_to_the_power_maps(tmp_path, monkeypatch):
    from ulv_spark.train import calibration

    monkeypatch.setattr(calibration, "KNOT_MIN_ROWS", 16)   # 64 validation rows -> 4 bins
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 128, files=2, val_rows=64, seq_len=SEQ,
                                          vocab_size=VOCAB, seed=3)
    power = read_meta(loop.train_rank(_spec(tmp_path / "p", root, epochs=2, calibration="power"))["model_dir"])
    iso = read_meta(loop.train_rank(_spec(tmp_path / "i", root, epochs=2, calibration="isotonic"))["model_dir"])
    assert "value_knots" not in power.calibration and 2 <= len(iso.calibration["value_knots"]) <= 4
    assert {k: iso.calibration[k] for k in power.calibration} == power.calibration   # the same weights and maps
    xs, ys = zip(*iso.calibration["value_knots"])
    assert all(np.diff(xs) > 0) and all(np.diff(ys) > 0)


# --------------------------------------------------------------------------------------------
# the tree companion (train.tree_blend)
# --------------------------------------------------------------------------------------------
def test_value_stack_recovers_a_b_g_exactly_and_drops_trees_whose_weight_is_negative():
    from ulv_spark.train.calibration import fit_value_stack

    rng = np.random.default_rng(0)
    ev, tree = np.exp(rng.normal(1.0, 1.0, 50)), np.exp(rng.normal(1.0, 1.0, 50))
    y = np.exp(-0.4) * ev ** 0.6 * tree ** 0.7        # the Poisson score equations hold exactly at mu = y
    a, b, g = fit_value_stack(ev, tree, y)
    assert (a, b, g) == pytest.approx((-0.4, 0.6, 0.7), abs=1e-7)
    cal = PowerCalibration(value_a=a, value_b=b, value_tree=g)
    np.testing.assert_allclose(cal.value(ev, tree), y, rtol=1e-6)
    assert fit_value_stack(ev, tree, ev ** 1.5 / tree ** 0.5) is None     # g = -0.5: the trees add nothing
    assert fit_value_stack(ev[:5], tree[:5], y[:5]) is None                # too few rows
    with pytest.raises(ValueError, match="tree companion"):
        cal.value(ev)                                                      # a stack needs the trees' predictions


def test_churn_stack_recovers_the_generating_logistic_model_and_round_trips_through_meta():
    from ulv_spark.train.calibration import fit_churn_stack

    rng = np.random.default_rng(1)
    n = 200_000
    zn, zt = rng.normal(0, 1.5, n), rng.normal(0, 1.5, n)
    p_net, p_tree = 1 / (1 + np.exp(-zn)), 1 / (1 + np.exp(-zt))
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.8 * zn + 0.5 * zt)))).astype(float)
    c, d, e = fit_churn_stack(p_net, p_tree, y)
    assert (c, d, e) == pytest.approx((0.3, 0.8, 0.5), abs=0.03)           # ~4 standard errors at n = 200k
    assert fit_churn_stack(p_net, p_tree, (rng.random(n) < p_net).astype(float)) is None or \
        fit_churn_stack(p_net, p_tree, (rng.random(n) < p_net).astype(float))[2] < 0.02
    assert fit_churn_stack(p_net, 1 - p_tree, y) is None                   # anti-informative trees: dropped
    cal = PowerCalibration(churn_c=c, churn_d=d, churn_tree=e)
    assert PowerCalibration.from_dict(cal.to_dict()) == cal and cal.uses_trees
    assert "churn_tree" not in PowerCalibration(churn_c=c, churn_d=d).to_dict()   # older metas keep their keys


def test_cross_fitted_trees_predict_every_row_by_the_one_fold_that_never_saw_it():
    from ulv_spark.train.trees import fit_trees

    data = synthetic.synthetic_arrays(900, seq_len=SEQ, vocab_size=VOCAB, seed=6)
    x = np.stack([np.nan_to_num(np.asarray(data[c], dtype=np.float64)) for c in synthetic.FEATURE_NAMES], axis=1)
    trees, oof = fit_trees(x, data["label_churned"], data["label_value"], synthetic.FEATURE_NAMES, kind="both", seed=3)
    assert len(trees.churn) == len(trees.value) == 3
    hits = np.stack([np.isclose(oof["churn"], np.clip(m.predict_proba(x.astype(np.float32))[:, 1], 1e-6, 1 - 1e-6),
                                rtol=0, atol=1e-12) for m in trees.churn])
    owner = hits.argmax(axis=0)
    assert hits.any(axis=0).all() and sorted(np.bincount(owner)) == [300, 300, 300]   # three equal folds
    again = fit_trees(x, data["label_churned"], data["label_value"], synthetic.FEATURE_NAMES, kind="both", seed=3)[1]
    np.testing.assert_array_equal(again["value"], oof["value"])                       # seeded: the same folds
    np.testing.assert_allclose(trees.predict_churn(x[:5]),
                               np.mean([m.predict_proba(x[:5].astype(np.float32))[:, 1] for m in trees.churn], axis=0))
    only_churn, oof_churn = fit_trees(x, data["label_churned"], data["label_value"], synthetic.FEATURE_NAMES, kind="churn")
    assert only_churn.value == [] and oof_churn["value"] is None and only_churn.predict_value(x) is None
    assert fit_trees(x[:100], data["label_churned"][:100], data["label_value"][:100], synthetic.FEATURE_NAMES) is None


def test_training_with_tree_blend_stacks_trees_fitted_on_training_rows_and_scoring_applies_them(tmp_path):
    from ulv_spark.train.model import tree_predictions
    from ulv_spark.train.scaling import standardise
    from ulv_spark.train.trees import TREES_FILE

    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 512, files=2, val_rows=256, seq_len=SEQ,
                                          vocab_size=VOCAB, seed=5)
    summary = loop.train_rank(_spec(tmp_path / "t", root, epochs=1, tree_blend="both"))
    metrics, meta = summary["metrics"], read_meta(summary["model_dir"])
    assert metrics["tree_rows"] == 512 + 256 and metrics["tree_blend"] == "both"   # cross-fitted on every row
    cal = PowerCalibration.from_dict(meta.calibration)
    assert cal.churn_tree > 0 and cal.value_tree > 0                        # the trees earn weight on held-out rows
    assert metrics["tree_blend_weights"] == {"value": cal.value_tree, "churn": cal.churn_tree}
    network = PowerCalibration.from_dict(meta.calibration["network"])    # the ablation's maps, stored beside
    assert not network.uses_trees and network.churn_d >= 0.05 and network != cal
    from ulv_spark.evaluate.methods import NetworkOnlyMethod

    ablation = NetworkOnlyMethod(summary["model_dir"], check_origin=False).fit()
    assert ablation.name == "model_network" and ablation.model_.trees is None
    assert ablation.meta_.calibration == meta.calibration["network"]
    assert (tmp_path / "t" / "models" / Path(summary["model_dir"]).name / TREES_FILE).is_file()
    model, meta = load_model(summary["model_dir"])
    data = synthetic.synthetic_arrays(40, seq_len=SEQ, vocab_size=VOCAB, seed=9)
    tab = np.stack([np.asarray(data[c], dtype=np.float64) for c in meta.feature_columns], axis=1)
    tokens, mask = np.stack(data["seq_tokens"]), np.stack(data["seq_mask"])
    got = predict_arrays(model, meta, tokens, mask, tab)
    bare = dict(meta.__dict__)
    raw = predict_arrays(model, ModelMeta(**{**bare, "calibration": {}}), tokens, mask, tab)
    trees = tree_predictions(model, cal, standardise(tab, meta.feature_mean, meta.feature_std))
    want = calibrate({k: np.array(v, copy=True) for k, v in raw.items()}, cal, **trees)
    np.testing.assert_allclose(got["expected_value"], want["expected_value"], rtol=1e-9)
    np.testing.assert_allclose(got["churn_probability"], want["churn_probability"], rtol=1e-9)
    assert not np.allclose(got["churn_probability"], calibrate(
        {k: np.array(v, copy=True) for k, v in raw.items()},
        PowerCalibration(churn_c=cal.churn_c, churn_d=cal.churn_d))["churn_probability"])   # the trees move it
    model.trees = None
    with pytest.raises(ValueError, match="tree companion"):
        predict_arrays(model, meta, tokens, mask, tab)
    # none (the ablation; the default is churn): no trees, the plain maps
    off = loop.train_rank(_spec(tmp_path / "o", root, epochs=1, tree_blend="none"))
    assert not PowerCalibration.from_dict(read_meta(off["model_dir"]).calibration).uses_trees
    assert not (Path(off["model_dir"]) / TREES_FILE).exists() and "tree_rows" not in off["metrics"]


# --------------------------------------------------------------------------------------------
# the weight average (train.weight_average_epochs)
# --------------------------------------------------------------------------------------------
def test_weight_average_follows_the_warmed_up_exponential_rule_exactly():
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    avg = loop.WeightAverage(net, horizon_epochs=2.0, steps_per_epoch=10)   # decay 1 - 1/20 = 0.95
    assert avg.decay == pytest.approx(0.95)
    expected = 0.0
    for t, w in enumerate([10.0, 20.0, 30.0, 40.0] + [1.0] * 300):
        with torch.no_grad():
            net.weight.fill_(w)
        avg.update(net)
        d = min(0.95, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * w
        assert float(avg.module.weight) == pytest.approx(expected, rel=1e-6)
    assert d == 0.95 and float(avg.module.weight) == pytest.approx(1.0, abs=0.01)   # it forgets the old weights
    assert not avg.module.weight.requires_grad and net.weight.requires_grad


def test_training_with_a_weight_average_writes_the_average_and_resumes_it_exactly(tmp_path):
    root = synthetic.write_synthetic_feed(str(tmp_path / "feed"), 128, files=2, val_rows=64, seq_len=SEQ,
                                          vocab_size=VOCAB, seed=4)
    kw = dict(epochs=3, weight_average_epochs=1.0, patience=5, calibration="none")
    whole = loop.train_rank(_spec(tmp_path / "whole", root, **kw))
    run = str(tmp_path / "whole" / "ck" / "run")
    last = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(run))
    assert last.average is not None and last.state.average_updates == 3 * 4   # 3 epochs of 128 rows / 32
    written, _ = load_model(whole["model_dir"])
    best = checkpoints.load_best_weights(run)
    assert all(torch.equal(v, best[k]) for k, v in written.state_dict().items())
    if whole["best_epoch"] == 3:
        assert all(torch.equal(v, last.average[k]) for k, v in written.state_dict().items())
    assert not all(torch.equal(last.average[k], last.weights[k]) for k in last.weights)   # an average, not the raw
    # interrupted after epoch 1 and resumed: the average goes on from the saved one (a resumed run reads
    # its rows in another order, so it is not the uninterrupted run's model)
    loop.train_rank(_spec(tmp_path / "cut", root, stop_after_epochs=1, **kw))
    cut = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(str(tmp_path / "cut" / "ck" / "run")))
    assert cut.state.average_updates == 4 and cut.average is not None
    seeded = loop.WeightAverage(torch.nn.Module(), 1.0, 4)
    restored = loop.WeightAverage(written, 1.0, 4, state=cut.average, updates=cut.state.average_updates)
    assert seeded.updates == 0 and restored.updates == 4
    assert all(torch.equal(v, cut.average[k]) for k, v in restored.module.state_dict().items())
    resumed = loop.train_rank(_spec(tmp_path / "cut", root, **kw))
    assert resumed["resumed_from_epoch"] == 1
    end = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(str(tmp_path / "cut" / "ck" / "run")))
    assert end.state.average_updates == 12
    # off: the raw weights are validated and written
    raw = loop.train_rank(_spec(tmp_path / "raw", root, **{**kw, "weight_average_epochs": 0.0}))
    assert checkpoints.load_checkpoint(checkpoints.latest_checkpoint(str(tmp_path / "raw" / "ck" / "run"))).average is None
    assert raw["history"][0]["val_loss"] != whole["history"][0]["val_loss"]
