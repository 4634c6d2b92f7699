"""Which stages a night runs: all, `--only`, `--from` (a failed night rerun from where it stopped)."""
import pytest

from ulv_spark.config import ConfigError
from ulv_spark.nightly import stages_to_run

ALL = ["ingest", "embed", "features", "train", "score", "segment", "plan"]


def test_a_plain_night_runs_every_stage_and_evaluate_only_when_asked():
    assert stages_to_run() == ALL
    assert stages_to_run(evaluate=True) == [*ALL, "evaluate"]


def test_only_runs_that_stage_alone():
    assert stages_to_run(only="score") == ["score"]
    assert stages_to_run(only="evaluate") == ["evaluate"]


def test_from_runs_that_stage_and_every_later_one():
    assert stages_to_run(start_from="train") == ["train", "score", "segment", "plan"]
    assert stages_to_run(start_from="train", evaluate=True) == ["train", "score", "segment", "plan", "evaluate"]
    assert stages_to_run(start_from="ingest") == ALL
    assert stages_to_run(start_from="evaluate") == ["evaluate"]


def test_unknown_stages_and_only_with_from_are_conf_errors():
    with pytest.raises(ConfigError, match="unknown stage 'trian'"):
        stages_to_run(start_from="trian")
    with pytest.raises(ConfigError, match="cannot be combined"):
        stages_to_run(only="score", start_from="train")
