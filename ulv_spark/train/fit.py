"""Driver side of a training run: prepare the feed, launch the ranks, clean up.

:func:`train_model` turns a training_examples DataFrame into the feed
(:mod:`~ulv_spark.train.prepare`), a :class:`~ulv_spark.train.spec.TrainSpec` holding the
``train`` conf section, and runs :func:`~ulv_spark.train.loop.train_rank` on the ranks with
TorchDistributor (:mod:`~ulv_spark.train.launch`). :func:`export_feed` writes the same feed
for plain ``torchrun`` (:mod:`~ulv_spark.train.torchrun_main`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ulv_spark import schemas as S
from ulv_spark.runtime import get_logger
from ulv_spark.train import feed as feeds
from ulv_spark.train import launch
from ulv_spark.train.checkpoints import latest_checkpoint
from ulv_spark.train.prepare import prepare, run_key
from ulv_spark.train.spec import TrainSpec

LOG_NAME = "ulv_spark.train"


def train_model(spark, examples, *, train_cfg, seq_len: int, vocab_size: int, vocab_fingerprint: str,
                horizon_days: int, as_of, conf: dict, data_version=None, fresh: bool = False,
                pretrain_sequences=None) -> dict:
    """Train on a training_examples DataFrame with TorchDistributor; returns rank 0's summary.

    Args:
        spark: the session (its master decides the task slots in barrier mode).
        examples: training_examples rows of one as_of_date.
        train_cfg: the ``train`` conf section.
        seq_len, vocab_size, vocab_fingerprint: from the features vocabulary.
        horizon_days: label horizon, stored with the model.
        as_of: run date; conf: the resolved conf (saved with the model).
        data_version: identity of the input (part of the checkpoint run key; the train job passes a
            content fingerprint, so a re-run over rewritten but equal rows resumes).
        fresh: ignore and clear this run's checkpoints (as ``train.resume: false`` does).
        pretrain_sequences: rows with user_id, as_of_date, seq_tokens, seq_mask (user_features
            of the run date) pretrained on together with the training split; None = split only.

    Returns:
        the :func:`~ulv_spark.train.loop.train_rank` summary plus ``checkpoint_dir``, ``loader``,
        ``batch_size``, ``validation_origins`` and ``rows_train`` / ``rows_val`` / ``rows_pretrain``.

    Raises:
        ValueError: bad input or conf (no rows, too few task slots or rows for the processes).
        TrainingFailed: the ranks died; the message says where to resume from.
    """
    log = get_logger(LOG_NAME)
    launch.check_barrier_slots(spark, train_cfg)
    use_gpu = launch.resolve_gpu(spark, train_cfg, log)
    key = run_key(as_of, data_version, train_cfg, S.feature_columns(examples.schema))
    ckpt_dir = str(Path(train_cfg.checkpoint_dir) / key)
    world = train_cfg.num_processes
    prepared = prepare(spark, examples, train_cfg=train_cfg, seq_len=seq_len, vocab_size=vocab_size,
                       vocab_fingerprint=vocab_fingerprint, horizon_days=horizon_days, as_of=as_of, key=key,
                       world=world, extra_sequences=pretrain_sequences)
    try:
        if prepared.train.rows < world:
            raise ValueError(f"{prepared.train.rows} training rows cannot feed {world} processes")
        val = feeds.usable_validation(prepared.val, world)
        if prepared.val is not None and val is None:
            log.warning("validation split has %d rows for %d processes: training without validation",
                        prepared.val.rows, world)
        batch = feeds.effective_batch_size(train_cfg.batch_size, prepared.train.rows, world)
        if batch < train_cfg.batch_size:
            log.warning("batch size %d -> %d: only %d training rows for %d processes",
                        train_cfg.batch_size, batch, prepared.train.rows, world)
        spec = TrainSpec(train=train_cfg, model=prepared.model, meta=prepared.meta, train_feed=prepared.train,
                         val_feed=val, checkpoint_dir=ckpt_dir, batch_size=batch, use_gpu=use_gpu,
                         pretrain_feed=prepared.pretrain, label_stats=prepared.label_stats, conf=conf)
        if fresh:
            spec = spec.restarted()
        rows = prepared.rows()
        log.info("training: %d rows (%d validation, origins %s; %d sequences to pretrain on), %d features, "
                 "arms %s, loader %s, %d processes (local_mode=%s, gpu=%s)", rows["rows_train"], rows["rows_val"],
                 prepared.validation_origins or "hash split", rows["rows_pretrain"],
                 len(prepared.meta.feature_columns), prepared.meta.arms, train_cfg.loader, world,
                 train_cfg.local_mode, use_gpu)
        try:
            summary = launch.run_distributed(spec, num_processes=world, local_mode=train_cfg.local_mode,
                                             use_gpu=use_gpu)
        except Exception as exc:
            raise launch.TrainingFailed(launch.failure_reason(exc), ckpt_dir, latest_checkpoint(ckpt_dir)) from exc
    finally:
        prepared.delete()
        if train_cfg.loader == "arrow":
            shutil.rmtree(Path(train_cfg.parquet_dir) / key, ignore_errors=True)
    return {**summary, "checkpoint_dir": ckpt_dir, "loader": train_cfg.loader, "batch_size": batch,
            "validation_origins": prepared.validation_origins, **rows}


def export_feed(spark, examples, *, train_cfg, seq_len: int, vocab_size: int, vocab_fingerprint: str,
                horizon_days: int, as_of, data_version=None, pretrain_sequences=None) -> dict:
    """Write the Arrow feed (train/, val/, pretrain/, feed.json) for :mod:`ulv_spark.train.torchrun_main`.

    Returns:
        ``feed_dir`` (pass it as ``--data``), ``rows_train``, ``rows_val``, ``rows_pretrain``,
        ``validation_origins``.
    """
    key = run_key(as_of, data_version, train_cfg, S.feature_columns(examples.schema))
    prepared = prepare(spark, examples, train_cfg=train_cfg, seq_len=seq_len, vocab_size=vocab_size,
                       vocab_fingerprint=vocab_fingerprint, horizon_days=horizon_days, as_of=as_of, key=key,
                       loader="arrow", world=train_cfg.num_processes, extra_sequences=pretrain_sequences)
    return {"feed_dir": str(Path(train_cfg.parquet_dir) / key), **prepared.rows(),
            "validation_origins": prepared.validation_origins}

