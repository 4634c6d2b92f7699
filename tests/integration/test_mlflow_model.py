"""The registered MLflow pyfunc against the product's scoring, on the real mlflow (local SQLite store).

Reuses the tiny model and user_features of test_score_job (no training here): the model directory
is logged and registered exactly as `ulv-spark train` does, then
* `mlflow.pyfunc.spark_udf` on the registered model scores the same users as the product's
  `mapInPandas` scorer (score/udf.py) with the same numbers (|diff| <= 1e-9: same code, same weights);
* `score.model_version = models:/ulv_spark@champion` scores with the champion's model directory.
"""
import mlflow
import pytest
from pyspark.sql import functions as F

from tests.integration.test_score_job import D, FEATURES, _fingerprint, _make_ctx, _save, _write_features
from ulv_spark import registry
from ulv_spark.config import load_config
from ulv_spark.errors import JobFailed
from ulv_spark.names import ARM_OUTPUTS, ARM_VALUE_LONG, SCALAR_OUTPUTS
from ulv_spark.score import job, udf
from ulv_spark.score.predict import PREDICTION_SCHEMA

pytestmark = pytest.mark.slow
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def registered(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_model")
    conf = root / "conf.yaml"
    conf.write_text(
        f"lakehouse:\n  root: {root / 'lh'}\n  schema: mlflow_it\n  shared_dir: {root / 'shared'}\n"
        f"train:\n  model_dir: {root / 'models'}\nfeatures:\n  sequence_length: 8\n"
        f"score:\n  batch_size: 16\nrun:\n  horizon_days: 60\n", encoding="utf-8")
    cfg = load_config(conf)
    model_dir = _save(root / "models", fingerprint=_fingerprint(cfg), version="20250915T000000-mlflow")
    _save(root / "models", seed=9, fingerprint=_fingerprint(cfg), version="20250916T000000-newer")  # the latest
    _write_features(spark, cfg.lakehouse)
    logged = registry.log_training_run(cfg.train, cfg.lakehouse.shared_dir, model_dir=model_dir,
                                       conf={"train": {"epochs": 1}}, history=[], metrics={"val_loss": 1.0})
    decision = registry.promote_champion(cfg.train, cfg.lakehouse.shared_dir, name="ulv_spark",
                                         version=logged["version"])
    return {"conf": conf, "cfg": cfg, "model_dir": model_dir, "logged": logged, "decision": decision}


def test_registered_version_is_the_first_champion(registered):
    assert registered["logged"]["model_uri"] == "models:/ulv_spark/1"
    assert registered["decision"] == {"champion": "1", "moved": True, "reason": "first registered model"}
    cfg = registered["cfg"]
    assert registry.resolve_model_uri("models:/ulv_spark@champion", cfg.train, cfg.lakehouse.shared_dir) == \
        registered["model_dir"]


def test_spark_udf_of_the_registered_model_equals_the_product_scorer(spark, registered):
    cfg = registered["cfg"]
    from ulv_spark import lake

    features = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "user_features"), as_of_date=D)
    product = udf.score_users(features, model_dir=registered["model_dir"], feature_columns=FEATURES)

    mlflow.set_tracking_uri(registry.tracking_uri("local", cfg.lakehouse.shared_dir))
    result_type = PREDICTION_SCHEMA.replace("STRING", "string").replace("DOUBLE", "double")
    predict = mlflow.pyfunc.spark_udf(spark, "models:/ulv_spark@champion", result_type=result_type,
                                      env_manager="local")
    inputs = features.select("user_id", F.col("seq_tokens").cast("array<bigint>").alias("seq_tokens"),
                             F.col("seq_mask").cast("array<bigint>").alias("seq_mask"),
                             *[F.col(c).cast("double").alias(c) for c in FEATURES])
    served = inputs.select(predict(*[F.col(c) for c in inputs.columns]).alias("p")).select("p.*")

    mine = product.toPandas().sort_values("user_id").reset_index(drop=True)
    theirs = served.toPandas().sort_values("user_id").reset_index(drop=True)
    assert len(mine) == len(theirs) == features.count() and list(mine["user_id"]) == list(theirs["user_id"])
    for column in SCALAR_OUTPUTS:
        assert (mine[column] - theirs[column]).abs().max() <= TOLERANCE, column
    for column in ARM_OUTPUTS:
        arms = 0 if column == ARM_VALUE_LONG else 3   # this tiny model has no long-term head: empty arrays
        for a, b in zip(mine[column], theirs[column]):
            assert len(a) == len(b) == arms and max((abs(x - y) for x, y in zip(a, b)), default=0.0) <= TOLERANCE, column


def test_score_by_alias_uses_the_champion_not_the_latest_directory(spark, registered):
    ctx = _make_ctx(spark, registered["conf"], "run-alias", model_version="models:/ulv_spark@champion")
    staged = job.stage_predictions(ctx)
    assert staged.model_dir == registered["model_dir"] and staged.meta.version == "20250915T000000-mlflow"
    cfg = registered["cfg"]
    assert job.resolve_model_dir(cfg.train.model_dir, registry.registered_model_dir(cfg, None)).endswith(
        "20250916T000000-newer")  # without the alias the newest directory would score

    with pytest.raises(JobFailed, match=r"score.model_version='models:/ulv_spark@nope': not in the registry"):
        job.stage_predictions(_make_ctx(spark, registered["conf"], "run-bad", model_version="models:/ulv_spark@nope"))
