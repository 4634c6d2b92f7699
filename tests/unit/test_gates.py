import math

import numpy as np
import pytest

from ulv_spark import gates


def test_reject_share_gate_passes_at_limit_and_fails_above():
    assert gates.reject_share_gate(5, 100, 0.05).passed
    failed = gates.reject_share_gate(6, 100, 0.05)
    assert not failed.passed and failed.value == 0.06 and "6 of 100" in failed.message


def test_user_count_change_gate():
    assert gates.user_count_change_gate(100, None, 0.5).passed
    assert not gates.user_count_change_gate(0, None, 0.5).passed
    assert gates.user_count_change_gate(150, 100, 0.5).passed
    res = gates.user_count_change_gate(40, 100, 0.5)
    assert not res.passed and res.value == -0.6


def test_null_share_gate_names_worst_column():
    res = gates.null_share_gate({"a": 0.0, "b": 0.3}, 0.2)
    assert not res.passed and res.value == 0.3 and "b" in res.message
    assert gates.null_share_gate({}, 0.2).passed


def test_psi_matches_hand_computation():
    e, a = [50, 50], [60, 40]
    expected = (0.6 - 0.5) * math.log(0.6 / 0.5) + (0.4 - 0.5) * math.log(0.4 / 0.5)
    assert gates.population_stability_index(e, a) == pytest.approx(expected, abs=1e-12)
    assert gates.population_stability_index([10, 20, 30], [10, 20, 30]) == 0.0


def test_psi_is_symmetric_and_grows_with_shift():
    rng = np.random.default_rng(0)
    base = np.histogram(rng.normal(0, 1, 10000), bins=10, range=(-3, 3))[0]
    small = np.histogram(rng.normal(0.1, 1, 10000), bins=10, range=(-3, 3))[0]
    large = np.histogram(rng.normal(1.0, 1, 10000), bins=10, range=(-3, 3))[0]
    assert gates.population_stability_index(base, small) < 0.1 < gates.population_stability_index(base, large)
    assert gates.population_stability_index(base, large) == pytest.approx(
        gates.population_stability_index(large, base), rel=1e-9)


def test_psi_gate_without_previous_night_passes():
    assert gates.psi_gate(None, [1, 2], 0.25).passed
    assert not gates.psi_gate([100, 0], [0, 100], 0.25).passed


def test_psi_rejects_mismatched_bins():
    with pytest.raises(ValueError, match="same non-zero length"):
        gates.population_stability_index([1, 2], [1, 2, 3])


@pytest.mark.slow
def test_spark_null_shares_and_bins(spark):
    df = spark.createDataFrame([(1.0, None), (float("nan"), 2.0), (3.0, 3.0), (4.0, 4.0)], "a double, b double")
    assert gates.null_shares(df, ["a", "b"]) == {"a": 0.25, "b": 0.25}
    assert gates.bin_counts(df.na.drop(), "a", [2.0, 3.5]) == [0, 1, 1]


def test_the_nightly_reject_gate_uses_the_ingest_threshold(monkeypatch, write_conf):
    import datetime as dt

    from ulv_spark import nightly
    from ulv_spark.config import load_config
    from ulv_spark.context import JobContext
    from ulv_spark.errors import GateFailed
    from ulv_spark.ingest import job

    cfg = load_config(write_conf("ingest:\n  max_reject_share: 0.1\n"))
    summary = {"tables": {"orders": {"rows_read": 10, "source_rows": 10, "rejected": 2}}}
    monkeypatch.setattr(job, "run_ingest", lambda ctx: summary)
    report = {"gates": []}
    ctx = JobContext(cfg=cfg, as_of=dt.date(2025, 10, 1), run_id="r", command="nightly")
    with pytest.raises(GateFailed, match=r"gate reject_share \(ingest\.orders\) failed: 2 of 10 source rows"):
        nightly.stage_ingest(ctx, False, report)
    assert [(g["gate"], g["value"], g["threshold"], g["passed"]) for g in report["gates"]] == [
        ("reject_share", 0.2, 0.1, False)]
