"""`ulv-spark train`: train the multi-task model on training_examples of --as-of; write a model version."""
from __future__ import annotations

from ulv_spark.context import JobContext, Summary

SUMMARY_KEYS = ("model_version", "model_dir", "epochs_run", "early_stopped", "best_epoch", "resumed_from_epoch",
                "rows_train", "rows_val", "rows_pretrain", "validation_origins", "train_sample", "loader", "world_size",
                "device", "seconds", "metrics", "mlflow_run_id", "mlflow_model_uri")


def run_train(ctx: JobContext, *, fresh: bool = False, export_feed: bool = False) -> Summary:
    """Train on training_examples of ctx.as_of and write a model version (or only export the feed).

    Args:
        fresh: ignore this run's checkpoints and start over.
        export_feed: only write the Arrow feed for ``ulv_spark.train.torchrun_main``.
    """
    from ulv_spark import lake
    from ulv_spark.errors import JobFailed
    from ulv_spark.config import to_dict
    from ulv_spark.features.sequences import vocab_size, vocabulary_fingerprint
    from ulv_spark.train import fit
    from ulv_spark.train.launch import TrainingFailed
    from ulv_spark.registry import log_training_run

    cfg, spark = ctx.cfg, ctx.spark
    ref = lake.table_ref(cfg.lakehouse, "training_examples")
    if not lake.is_delta(spark, ref):
        raise JobFailed(f"{ref.name} does not exist: run `ulv-spark features --as-of {ctx.as_of}` first")
    examples = lake.read_table(spark, ref, as_of_date=ctx.as_of)
    users = lake.table_ref(cfg.lakehouse, "user_features")
    # every current user's sequence (new users too) joins the masked-event pretraining
    current = lake.read_table(spark, users, as_of_date=ctx.as_of) if lake.is_delta(spark, users) else None
    inputs = dict(train_cfg=cfg.train, seq_len=cfg.features.sequence_length, vocab_size=vocab_size(cfg.features),
                  vocab_fingerprint=vocabulary_fingerprint(cfg.features), horizon_days=cfg.run.horizon_days,
                  as_of=ctx.as_of, data_version=_data_identity(examples, current), pretrain_sequences=current)
    try:
        if export_feed:
            return fit.export_feed(spark, examples, **inputs)
        summary = fit.train_model(spark, examples, conf=to_dict(cfg), fresh=fresh, **inputs)
    except (ValueError, TrainingFailed) as exc:
        raise JobFailed(str(exc)) from None
    if summary["status"] != "finished":
        raise JobFailed(f"stopped after {summary['epochs_run']} of {summary['epochs_planned']} epochs "
                        f"(train.stop_after_epochs); run again to resume from {summary['checkpoint_dir']}")
    logged = log_training_run(cfg.train, cfg.lakehouse.shared_dir, model_dir=summary["model_dir"], conf=to_dict(cfg),
                              history=summary.get("history") or [], metrics=summary["metrics"] or {})
    summary["mlflow_run_id"] = logged["run_id"] if logged else None
    summary["mlflow_model_uri"] = logged["model_uri"] if logged else None
    return {k: summary.get(k) for k in SUMMARY_KEYS}


def _data_identity(examples, pretrain) -> str:
    """What the checkpoint run key knows of the input: its content, not its Delta version.

    A nightly re-run rewrites training_examples with the same rows (a new Delta version), and a
    training run that died must still find and resume its checkpoints.
    """
    from ulv_spark import lake
    from ulv_spark import schemas as S

    parts = [lake.content_fingerprint(examples)]
    if pretrain is not None:
        parts.append(lake.content_fingerprint(pretrain.select(S.USER_ID, S.SEQ_TOKENS, S.SEQ_MASK)))
    return "/".join(parts)
