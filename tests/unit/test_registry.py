"""The MLflow conf rules without a store: tracking URIs, model URIs, the champion rule."""
from pathlib import Path

import pytest

from ulv_spark import registry
from ulv_spark.errors import JobFailed


def test_local_tracking_is_sqlite_under_the_shared_dir_and_none_turns_it_off(tmp_path):
    assert registry.tracking_uri("local", str(tmp_path)) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert registry.tracking_uri("none", str(tmp_path)) is None
    assert registry.tracking_uri(None, str(tmp_path)) is None
    assert registry.tracking_uri("databricks", str(tmp_path)) == "databricks"
    assert registry.tracking_uri("file:mlruns", str(tmp_path)) == "file:" + str(Path("mlruns").resolve())
    assert registry.registry_uri(None, "databricks") == "databricks"
    assert registry.registry_uri("databricks-uc", "databricks") == "databricks-uc"


def test_model_uris_by_alias_and_by_version():
    assert registry.parse_model_uri("models:/ulv_spark@champion") == ("ulv_spark", "champion", None)
    assert registry.parse_model_uri("models:/main.ulv.ulv_spark/12") == ("main.ulv.ulv_spark", None, "12")
    for bad in ("models:/ulv_spark", "models:/ulv_spark/latest", "runs:/abc/model", "models:/@champion"):
        with pytest.raises(JobFailed, match="expected models:/<name>@<alias> or models:/<name>/<version>"):
            registry.parse_model_uri(bad)


def test_champion_moves_only_when_no_champion_metric_is_worse():
    assert registry.better_or_equal({"value_gini": 0.5, "churn_auc": 0.7}, {"value_gini": 0.5, "churn_auc": 0.69}) == (
        True, "backtest not worse than the champion's: value_gini 0.5000 >= 0.5000, churn_auc 0.7000 >= 0.6900")
    assert registry.better_or_equal({"value_gini": 0.6, "churn_auc": 0.6}, {"value_gini": 0.5, "churn_auc": 0.7}) == (
        False, "backtest worse than the champion's: churn_auc 0.6000 < 0.7000")
    assert registry.better_or_equal({"value_gini": 0.6}, {}) == (True, "the champion has no comparable backtest")


def test_backtest_metrics_average_the_models_headline_over_splits():
    summary = {"headline": {"origin=a": {"model": {"value_gini": 0.4, "churn_auc": 0.8, "qini_value": 0.1},
                                         "gbm": {"value_gini": 0.9}},
                            "origin=b": {"model": {"value_gini": 0.6}}}}
    assert registry.backtest_metrics(summary) == {"value_gini": 0.5, "churn_auc": 0.8}
    assert registry.backtest_metrics(None) is None
    assert registry.backtest_metrics({"headline": {}}) is None


def test_flatten_names_nested_keys_with_dots():
    assert registry.flatten({"train": {"epochs": 2, "encoder": {"hidden_size": 8}, "loss_weights": {}}, "x": 1}) == {
        "train.epochs": 2, "train.encoder.hidden_size": 8, "train.loss_weights": {}, "x": 1}


def test_the_pyfunc_signature_takes_seq_text_only_for_a_model_with_text_fusion():
    from types import SimpleNamespace

    from ulv_spark import mlflow_model

    meta = SimpleNamespace(feature_columns=["f1"], feature_mean=[0.5], seq_len=4)
    plain = [c.name for c in mlflow_model.signature(meta).inputs.inputs]
    fused = mlflow_model.signature(meta, text_dims=3).inputs.inputs
    assert plain == ["user_id", "seq_tokens", "seq_mask", "f1"]
    assert [c.name for c in fused] == [*plain, "seq_text"] and fused[-1].required is False
    example = mlflow_model.input_example(meta, text_dims=3)
    assert "seq_text" not in mlflow_model.input_example(meta).columns
    assert [len(v) for v in example["seq_text"]] == [12, 12] and not any(v.any() for v in example["seq_text"])
