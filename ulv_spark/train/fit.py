"""Training: the per-rank function (DDP; no Spark) and its launch through TorchDistributor.

:func:`train_rank` is the whole training run of one process. It reads its shard through
:mod:`ulv_spark.train.feed`, pretrains the encoder with masked-event modelling, fine-tunes
encoder + heads, validates on the held-out origins after every epoch, writes a checkpoint per
epoch, stops early, and on rank 0 writes the versioned model directory. It runs the same
under ``TorchDistributor`` (:func:`run_distributed`) and under plain ``torchrun``
(:mod:`ulv_spark.train.torchrun_main`).

:func:`train_model` is the driver side: it turns a training_examples DataFrame into the
feed, a :class:`TrainSpec`, and launches the ranks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ulv_spark import schemas as S
from ulv_spark.runtime import get_logger
from ulv_spark.train import feed as feeds
from ulv_spark.train.artifacts import ModelMeta, ModelSpec

LOG_NAME = "ulv_spark.train"
FINISHED_MARKER = "_FINISHED"
KEEP_CHECKPOINTS = 2
PRETRAIN, FINETUNE = "pretrain", "finetune"


@dataclass(frozen=True)
class TrainSpec:
    """Everything one rank needs to train (picklable: TorchDistributor ships it to every process)."""

    model: ModelSpec
    meta: ModelMeta                   # version "" -> assigned when the model directory is written
    train_feed: feeds.FeedSpec
    val_feed: Optional[feeds.FeedSpec]
    checkpoint_dir: str               # this run's checkpoints (shared storage)
    model_root: str                   # versioned model directories go under here
    pretrain_feed: Optional[feeds.FeedSpec] = None    # sequences for pretraining; None = train_feed
    conf: dict = field(default_factory=dict)          # resolved conf, saved with the model
    label_stats: dict = field(default_factory=dict)   # base rates for the output biases
    batch_size: int = 256
    epochs: int = 4
    pretrain_epochs: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 2
    seed: int = 7
    mlm_probability: float = 0.15
    loss_weights: dict = field(default_factory=dict)
    max_grad_norm: float = 1.0
    use_gpu: bool = False
    bf16: bool = True
    reader_workers: int = 2
    cpu_threads: int = 0
    shuffle_buffer: int = 1024
    steps_cap: int = 0
    resume: bool = True
    stop_after_epochs: Optional[int] = None


@dataclass
class _State:
    completed: int = 0                # epochs done, pretraining and fine-tuning together
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    early_stopped: bool = False
    history: list = field(default_factory=list)


def model_spec_from_conf(train_cfg, *, vocab_size: int, seq_len: int, n_features: int, n_arms: int) -> ModelSpec:
    """The architecture from ``train`` conf and the data's shapes."""
    enc = train_cfg.encoder
    local_dir = str(Path(enc.local_dir).expanduser().resolve()) if enc.local_dir else None
    return ModelSpec(
        vocab_size=vocab_size, seq_len=seq_len, n_features=n_features, n_arms=n_arms,
        hidden_size=enc.hidden_size, num_layers=enc.num_layers, num_heads=enc.num_heads,
        intermediate_size=enc.intermediate_size, dropout=enc.dropout, pooling=enc.pooling,
        tabular_hidden=train_cfg.tabular_hidden, head_hidden=train_cfg.head_hidden,
        propensity=not train_cfg.randomised_assignment, encoder_local_dir=local_dir)


def train_spec_from_conf(train_cfg, *, model: ModelSpec, meta: ModelMeta, train_feed, val_feed,
                         checkpoint_dir: str, conf: dict, label_stats: dict, batch_size: int,
                         use_gpu: bool, pretrain_feed=None) -> TrainSpec:
    """A :class:`TrainSpec` with the optimisation settings of ``train`` conf."""
    return TrainSpec(
        model=model, meta=meta, train_feed=train_feed, val_feed=val_feed, checkpoint_dir=checkpoint_dir,
        pretrain_feed=pretrain_feed,
        model_root=train_cfg.model_dir, conf=conf, label_stats=label_stats, batch_size=batch_size,
        epochs=train_cfg.epochs, pretrain_epochs=train_cfg.pretrain_epochs,
        learning_rate=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay,
        patience=train_cfg.patience, seed=train_cfg.seed, mlm_probability=train_cfg.mlm_probability,
        loss_weights=dict(train_cfg.loss_weights), max_grad_norm=train_cfg.max_grad_norm,
        use_gpu=use_gpu, bf16=train_cfg.bf16, reader_workers=train_cfg.reader_workers, cpu_threads=train_cfg.cpu_threads,
        shuffle_buffer=train_cfg.shuffle_buffer, steps_cap=train_cfg.steps_per_epoch,
        resume=train_cfg.resume, stop_after_epochs=train_cfg.stop_after_epochs)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def checkpoint_files(checkpoint_dir: str) -> list[str]:
    """The run's epoch checkpoints, oldest first (``epoch-NNNN.pt``)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    return sorted(str(p) for p in root.glob("epoch-*.pt") if re.fullmatch(r"epoch-\d{4}\.pt", p.name))


def latest_checkpoint(checkpoint_dir: str) -> Optional[str]:
    """The newest epoch checkpoint of a run, or None."""
    files = checkpoint_files(checkpoint_dir)
    return files[-1] if files else None


def _atomic_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a reader never sees a half-written checkpoint


def _save_checkpoint(checkpoint_dir: str, model, optimizer, optimizer_stage: str, state: _State,
                     improved: bool) -> str:
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if improved:
        _atomic_save(weights, root / "best.pt")
    path = root / f"epoch-{state.completed:04d}.pt"
    _atomic_save({"model": weights, "optimizer": optimizer.state_dict(), "optimizer_stage": optimizer_stage,
                  "state": json.dumps(dataclasses.asdict(state))}, path)
    for old in checkpoint_files(checkpoint_dir)[:-KEEP_CHECKPOINTS]:
        os.remove(old)
    return str(path)


# --------------------------------------------------------------------------------------------
# The per-rank function
# --------------------------------------------------------------------------------------------
def _device(want_gpu: bool, local_rank: int, log):
    import torch

    if want_gpu and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank), True
    if want_gpu:
        log.warning("train.use_gpu is set but no GPU is visible to this process; training on CPU")
    return torch.device("cpu"), False


def _reduce_sums(values: list[float], device, distributed: bool) -> list[float]:
    import torch
    import torch.distributed as dist

    if not distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _weighted_total(parts: dict[str, float], weights: dict) -> float:
    return sum(weights.get(task, 1.0) * value for task, value in parts.items())


def _train_epoch(stage, ddp, optimizer, batches, spec: TrainSpec, device, autocast) -> dict:
    import torch

    from ulv_spark.train.losses import mask_tokens, masked_event_loss, multitask_loss

    ddp.train()
    loss_sum, steps, rows = 0.0, 0, 0
    params = [p for p in ddp.parameters() if p.requires_grad]
    start = time.perf_counter()
    for batch in batches.epoch():
        b = _to_device(batch, device)
        tokens, mask = b[feeds.TOKENS].long(), b[feeds.MASK].long()
        with autocast():
            if stage == PRETRAIN:
                inputs, labels = mask_tokens(tokens, mask, spec.model.vocab_size, spec.mlm_probability)
                out = ddp(inputs, mask, mlm_labels=labels)
                loss, _ = masked_event_loss(out["mlm_logits"], out["mlm_labels"])
            else:
                out = ddp(tokens, mask, b[feeds.FEATURES].float())
                loss, _ = multitask_loss(out, b, spec.loss_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if spec.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
        optimizer.step()
        loss_sum += float(loss.detach())
        steps += 1
        rows += int(tokens.shape[0])
    return {"loss_sum": loss_sum, "steps": steps, "rows": rows, "seconds": time.perf_counter() - start}


def _validate(stage, model, batches, spec: TrainSpec, device, autocast, distributed: bool) -> dict:
    """Row-weighted validation losses over all ranks (+ calibration sums) for one pass."""
    import torch

    from ulv_spark.train.losses import mask_tokens, masked_event_loss, multitask_loss
    from ulv_spark.train.model import head_predictions

    model.eval()
    from ulv_spark.names import TASKS as tasks

    sums = [0.0] * (2 * len(tasks) + 7)  # per task (loss*n, n), mlm (loss*n, n), ev, y, churn p, y_churn, brier
    generator = torch.Generator(device=device).manual_seed(spec.seed)  # same masks every epoch
    with torch.no_grad():
        for batch in batches.epoch():
            b = _to_device(batch, device)
            tokens, mask = b[feeds.TOKENS].long(), b[feeds.MASK].long()
            with autocast():
                if stage == PRETRAIN:
                    inputs, labels = mask_tokens(tokens, mask, spec.model.vocab_size, spec.mlm_probability,
                                                 generator=generator)
                    out = model(inputs, mask, mlm_labels=labels)
                    loss, n = masked_event_loss(out["mlm_logits"], out["mlm_labels"])
                    sums[2 * len(tasks)] += float(loss) * float(n)
                    sums[2 * len(tasks) + 1] += float(n)
                    continue
                out = model(tokens, mask, b[feeds.FEATURES].float())
                _, parts = multitask_loss(out, b, spec.loss_weights)
            for i, task in enumerate(tasks):
                if task in parts:
                    sums[2 * i] += parts[task][0] * parts[task][1]
                    sums[2 * i + 1] += parts[task][1]
            preds = head_predictions(out)
            churn_p, y_churn = preds["churn_probability"], b[feeds.Y_CHURN].double()
            base = 2 * len(tasks) + 2
            sums[base] += float(preds["expected_value"].sum())
            sums[base + 1] += float(b[feeds.Y_VALUE].double().sum())
            sums[base + 2] += float(churn_p.sum())
            sums[base + 3] += float(y_churn.sum())
            sums[base + 4] += float(((churn_p - y_churn) ** 2).sum())
    total = _reduce_sums(sums, device, distributed)
    result: dict[str, float] = {}
    if stage == PRETRAIN:
        n = total[2 * len(tasks) + 1]
        result["val_mlm_loss"] = total[2 * len(tasks)] / n if n else float("nan")
        return result
    parts = {task: total[2 * i] / total[2 * i + 1] for i, task in enumerate(tasks) if total[2 * i + 1] > 0}
    for task, value in parts.items():
        result[f"val_{task}_loss"] = value
    result["val_loss"] = _weighted_total(parts, spec.loss_weights)
    base = 2 * len(tasks) + 2
    rows = total[1]
    if rows > 0:
        result["val_rows"] = rows
        result["val_expected_value_ratio"] = total[base] / total[base + 1] if total[base + 1] > 0 else float("nan")
        result["val_churn_rate_predicted"] = total[base + 2] / rows
        result["val_churn_rate_observed"] = total[base + 3] / rows
        result["val_churn_brier"] = total[base + 4] / rows
    return result


def _pick_checkpoint(spec: TrainSpec, rank: int, distributed: bool) -> Optional[str]:
    """Rank 0 decides where to start and tells the others, so all ranks run the same epochs."""
    import torch.distributed as dist

    choice = None
    if rank == 0:
        root = Path(spec.checkpoint_dir)
        if not spec.resume or (root / FINISHED_MARKER).exists():
            # a finished run's checkpoints belong to a model already written: start over
            shutil.rmtree(root, ignore_errors=True)
        else:
            choice = latest_checkpoint(spec.checkpoint_dir)
    if distributed:
        shared = [choice]
        dist.broadcast_object_list(shared, src=0)
        choice = shared[0]
    return choice


def _new_optimizer(model, spec: TrainSpec):
    import torch

    return torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)


def train_rank(spec: TrainSpec) -> dict:
    """Train on this process's shard; every rank returns rank 0's summary.

    Reads RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun and TorchDistributor; absent = one
    process). gloo on CPU; NCCL, the GPU of LOCAL_RANK and bf16 autocast on GPU. Resumes from
    the newest checkpoint in ``spec.checkpoint_dir`` when ``spec.resume``.

    Returns:
        ``status`` ("finished" or "interrupted" by ``stop_after_epochs``), ``epochs_run``,
        ``resumed_from_epoch``, ``early_stopped``, ``best_epoch``, ``metrics``, ``history``
        and, when finished, ``model_dir`` and ``model_version``.
    """
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ulv_spark.train.artifacts import save_model
    from ulv_spark.train.model import build_model

    log = get_logger(LOG_NAME)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device, on_gpu = _device(spec.use_gpu, local_rank, log)
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo")
    if not on_gpu and spec.cpu_threads > 0:
        torch.set_num_threads(spec.cpu_threads)
    elif not on_gpu and "OMP_NUM_THREADS" not in os.environ:
        # more threads than cores per process makes OpenMP spin against itself (10-50x slower)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))
    started = time.perf_counter()

    torch.manual_seed(spec.seed)  # the same initial weights on every rank
    model = build_model(spec.model)
    model.set_output_bias(spec.label_stats)
    model.to(device)
    state, optimizer, optimizer_stage, resumed_from = _State(), None, None, None
    ckpt_path = _pick_checkpoint(spec, rank, distributed)
    if ckpt_path:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        state = _State(**json.loads(ckpt["state"]))
        optimizer = _new_optimizer(model, spec)
        optimizer.load_state_dict(ckpt["optimizer"])
        optimizer_stage, resumed_from = ckpt["optimizer_stage"], state.completed
        if rank == 0:
            log.info("resuming from %s (epoch %d done)", ckpt_path, state.completed)
    ddp = (DistributedDataParallel(model, device_ids=[local_rank] if on_gpu else None, find_unused_parameters=True)
           if distributed else model)
    use_bf16 = on_gpu and spec.bf16

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()

    plan = [PRETRAIN] * spec.pretrain_epochs + [FINETUNE] * spec.epochs
    status, epochs_this_run = "finished", 0
    with contextlib.ExitStack() as stack:
        open_kw = dict(rank=rank, world=world, batch_size=spec.batch_size, workers=spec.reader_workers,
                       steps_cap=spec.steps_cap)
        train_batches = stack.enter_context(feeds.open_batches(
            spec.train_feed, shuffle=True, seed=spec.seed + 7919 * state.completed, shuffle_buffer=spec.shuffle_buffer,
            **open_kw))
        pretrain_batches = train_batches
        if spec.pretrain_feed is not None and spec.pretrain_feed.rows > 0 and state.completed < spec.pretrain_epochs:
            pretrain_batches = stack.enter_context(feeds.open_batches(
                spec.pretrain_feed, shuffle=True, seed=spec.seed + 7919 * state.completed + 1,
                shuffle_buffer=spec.shuffle_buffer, **open_kw))
        val_batches = None
        if spec.val_feed is not None and spec.val_feed.rows > 0:
            val_kw = {**open_kw, "batch_size": feeds.covering_batch_size(spec.val_feed.rows, spec.batch_size, world),
                      "steps_cap": 0}
            val_batches = stack.enter_context(feeds.open_batches(spec.val_feed, shuffle=False, seed=spec.seed, **val_kw))
        while state.completed < len(plan) and not state.early_stopped:
            if spec.stop_after_epochs is not None and epochs_this_run >= spec.stop_after_epochs:
                status = "interrupted"
                break
            stage = plan[state.completed]
            if optimizer is None or optimizer_stage != stage:
                optimizer, optimizer_stage = _new_optimizer(model, spec), stage  # fresh moments per stage
            torch.manual_seed(spec.seed + 1000 * state.completed + rank)  # dropout / masks per epoch
            batches = pretrain_batches if stage == PRETRAIN else train_batches
            stats = _train_epoch(stage, ddp, optimizer, batches, spec, device, autocast)
            loss_sum, steps, rows, seconds = _reduce_sums(
                [stats["loss_sum"], stats["steps"], stats["rows"], stats["seconds"]], device, distributed)
            record = {"epoch": state.completed + 1, "stage": stage, "train_loss": loss_sum / max(steps, 1),
                      "rows": int(rows), "rows_per_second": rows / max(seconds / world, 1e-9)}
            if val_batches is not None:
                record.update(_validate(stage, model, val_batches, spec, device, autocast, distributed))
            improved = False
            if stage == FINETUNE:
                current = record.get("val_loss", record["train_loss"])
                if current < state.best_loss - 1e-6:
                    state.best_loss, state.best_epoch, state.bad_epochs, improved = current, state.completed + 1, 0, True
                else:
                    state.bad_epochs += 1
                    state.early_stopped = val_batches is not None and state.bad_epochs >= spec.patience
            state.completed += 1
            state.history.append(record)
            epochs_this_run += 1
            if rank == 0:
                saved = _save_checkpoint(spec.checkpoint_dir, model, optimizer, optimizer_stage, state, improved)
                log.info("epoch %d/%d %s: %s (checkpoint %s)", state.completed, len(plan), stage,
                         ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)),
                         Path(saved).name)
            if distributed:
                dist.barrier()  # nobody reads a checkpoint that rank 0 is still writing
    summary = {"status": status, "epochs_run": state.completed, "epochs_planned": len(plan),
               "resumed_from_epoch": resumed_from, "early_stopped": state.early_stopped,
               "best_epoch": state.best_epoch, "history": state.history, "world_size": world,
               "device": str(device), "seconds": round(time.perf_counter() - started, 2)}
    if status == "finished" and rank == 0:
        best = Path(spec.checkpoint_dir) / "best.pt"
        if state.best_epoch > 0 and best.is_file():
            model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
        model.to("cpu")
        best_record = next((h for h in state.history if h["epoch"] == state.best_epoch), state.history[-1] if state.history else {})
        metrics = {**{k: v for k, v in best_record.items() if k not in ("epoch", "stage")},
                   "best_epoch": state.best_epoch, "epochs_run": state.completed,
                   "rows_train": spec.train_feed.rows, "rows_val": spec.val_feed.rows if spec.val_feed else 0,
                   "world_size": world, "device": str(device)}
        model_dir = save_model(model, spec.meta, spec.model_root, metrics, spec.conf)
        Path(spec.checkpoint_dir, FINISHED_MARKER).write_text(model_dir, encoding="utf-8")
        summary.update(model_dir=model_dir, model_version=Path(model_dir).name, metrics=metrics)
        log.info("model written to %s", model_dir)
    if distributed:
        shared = [summary]
        dist.broadcast_object_list(shared, src=0)
        summary = shared[0]
        dist.barrier()
        dist.destroy_process_group()
    return summary


# --------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------
class TrainingFailed(RuntimeError):
    """The distributed training job died (a lost worker, a crashed rank); checkpoints are kept."""

    def __init__(self, reason: str, checkpoint_dir: str, last_checkpoint: Optional[str]):
        self.reason, self.checkpoint_dir, self.last_checkpoint = reason, checkpoint_dir, last_checkpoint
        resume = (f"the last checkpoint is {last_checkpoint}; run the same command again to resume from it"
                  if last_checkpoint else f"no checkpoint was written yet under {checkpoint_dir}")
        super().__init__(f"training failed: {reason}; {resume}")


def failure_reason(exc: BaseException) -> str:
    """One line saying why a Spark/TorchDistributor job died, without the JVM stack trace."""
    text = str(exc)
    for marker in ("Most recent failure reason: ", "Job aborted due to stage failure: ", "SparkException: "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    text = text.split("\n\tat ", 1)[0]
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line[:400] or type(exc).__name__


def run_distributed(spec: TrainSpec, *, num_processes: int, local_mode: bool, use_gpu: bool) -> dict:
    """Run :func:`train_rank` on ``num_processes`` processes with TorchDistributor."""
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu)
    return distributor.run(train_rank, spec)


def _local_slots(master: str) -> Optional[int]:
    match = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master or "")
    if master == "local":
        return 1
    if not match:
        return None
    return os.cpu_count() or 1 if match.group(1) == "*" else int(match.group(1))


def resolve_gpu(spark, train_cfg, log) -> bool:
    """use_gpu from conf, or False with a warning where no GPU can be had (clean CPU fallback)."""
    if not train_cfg.use_gpu:
        return False
    if train_cfg.local_mode:
        import torch

        if not torch.cuda.is_available():
            log.warning("train.use_gpu: no GPU on the driver; training on CPU with gloo")
            return False
        return True
    if not spark.conf.get("spark.task.resource.gpu.amount", None):
        log.warning("train.use_gpu: spark.task.resource.gpu.amount is not set, so tasks get no GPU; "
                    "training on CPU with gloo")
        return False
    return True


def check_barrier_slots(spark, train_cfg, wait_seconds: float = 60.0) -> None:
    """Barrier mode needs num_processes free task slots at once; fail early, not by hanging.

    On ``local[N]`` the slots are N. On a cluster they are what the registered executors offer
    now: wait up to ``wait_seconds`` for executors to (re)register, then fail with a clear
    message instead of letting Spark retry its slot check for minutes.
    """
    if train_cfg.local_mode:
        return
    needed = train_cfg.num_processes
    master = spark.sparkContext.master
    slots = _local_slots(master)
    if slots is not None:
        if slots < needed:
            raise ValueError(f"train.local_mode=false with num_processes={needed} needs as many "
                             f"task slots, but the master is {master}")
        return
    deadline, warned = time.time() + wait_seconds, False
    while True:
        slots = cluster_slots(spark)
        if slots is None or slots >= needed:
            return
        if time.time() >= deadline:
            raise ValueError(f"train.local_mode=false with num_processes={needed} needs {needed} free task slots, "
                             f"but the executors on {master} offer {slots} (a worker lost or not registered?): "
                             "bring the workers back or lower train.num_processes")
        if not warned:
            get_logger(LOG_NAME).warning("barrier training needs %d task slots, the cluster offers %d: "
                                         "waiting up to %.0fs for executors", needed, slots, wait_seconds)
            warned = True
        time.sleep(2.0)


def cluster_slots(spark) -> Optional[int]:
    """Task slots the registered executors offer now, or None where Spark does not say."""
    try:
        sc = spark.sparkContext._jsc.sc()
        return int(sc.maxNumConcurrentTasks(sc.resourceProfileManager().defaultResourceProfile()))
    except Exception:  # not exposed (e.g. a restricted Py4J gateway): let Spark's own check decide
        return None


def run_key(as_of, data_version, train_cfg, feature_columns: list[str]) -> str:
    """Checkpoint directory name: same data + same training conf = same run (so it can resume)."""
    settings = dataclasses.asdict(train_cfg)
    # how rows travel and where things are kept do not change what is learned: a run stopped with
    # one loader may resume with the other
    for volatile in ("stop_after_epochs", "resume", "mlflow_tracking_uri", "retrain_every_days", "loader",
                     "reader_workers", "cpu_threads", "model_dir", "checkpoint_dir", "petastorm_cache",
                     "parquet_dir"):
        settings.pop(volatile, None)
    blob = json.dumps({"as_of": str(as_of), "data_version": data_version, "train": settings,
                       "features": feature_columns}, sort_keys=True, default=str)
    return f"{as_of}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def profile_examples(examples, *, seq_len: int, horizon_days: int, log=None) -> dict:
    """Check the examples in one aggregate; returns rows, horizon_days and the distinct origins (few).

    Raises:
        ValueError: no rows, or seq_tokens / seq_mask not all of length ``seq_len``.
    """
    from pyspark.sql import functions as F

    row = examples.agg(
        F.count(F.lit(1)).alias("rows"), F.min(F.size(S.SEQ_TOKENS)).alias("lo"), F.max(F.size(S.SEQ_TOKENS)).alias("hi"),
        F.sum((F.size(S.SEQ_MASK) != F.size(S.SEQ_TOKENS)).cast("int")).alias("bad"),
        F.min(S.HORIZON_DAYS).alias("h_lo"), F.max(S.HORIZON_DAYS).alias("h_hi"),
        F.collect_set(S.ORIGIN_DATE).alias("origins")).first()
    if not row["rows"]:
        raise ValueError("no training_examples rows for this as_of date: run `ulv-spark features` for it first")
    if row["lo"] != seq_len or row["hi"] != seq_len or (row["bad"] or 0) > 0:
        raise ValueError(f"{S.SEQ_TOKENS} / {S.SEQ_MASK} must all have length {seq_len} "
                         f"(features.sequence_length); found lengths {row['lo']}..{row['hi']}")
    horizon = horizon_days
    if row["h_lo"] is not None and row["h_lo"] == row["h_hi"]:
        horizon = int(row["h_lo"])
        if horizon != horizon_days and log is not None:
            log.warning("training_examples has horizon_days=%d, conf run.horizon_days=%d: the model keeps %d",
                        horizon, horizon_days, horizon)
    return {"rows": int(row["rows"]), "horizon_days": horizon, "origins": sorted(row["origins"])}


@dataclass(frozen=True)
class PreparedFeed:
    """The driver's half of a run: feeds, model shapes and metadata, ready to train."""

    train: feeds.FeedSpec
    val: Optional[feeds.FeedSpec]
    model: ModelSpec
    meta: ModelMeta
    label_stats: dict
    validation_origins: list
    pretrain: Optional[feeds.FeedSpec] = None  # train split + extra sequences (None: pretrain on train)

    def feeds(self) -> list:
        return [f for f in (self.train, self.val, self.pretrain) if f is not None]


def prepare(spark, examples, *, train_cfg, seq_len: int, vocab_size: int, vocab_fingerprint: str,
            horizon_days: int, as_of, key: str, loader: Optional[str] = None, world: int = 1,
            extra_sequences=None) -> PreparedFeed:
    """Split, compute statistics and arms, and materialise the feed for ``loader``.

    Only aggregates (statistics, distinct origins and arms) reach the driver; the rows go to
    Petastorm's cache or to Parquet under ``train.parquet_dir/<key>``. ``extra_sequences``
    (user_features rows of the run date: every current user, new ones included) are added to
    the training split's sequences as a separate pretraining feed.
    """
    loader = loader or train_cfg.loader
    feature_cols = S.feature_columns(examples.schema)
    if not feature_cols:
        raise ValueError("training_examples has no numeric tabular feature column")
    profile = profile_examples(examples, seq_len=seq_len, horizon_days=horizon_days, log=get_logger(LOG_NAME))
    train_df, val_df, val_origins = feeds.split_by_origin(examples, validation_share=train_cfg.validation_share,
                                                          origins=profile["origins"])
    stats = feeds.training_statistics(train_df, feature_cols)
    mean, std, arms, arm_campaigns, label_stats = (stats.feature_mean, stats.feature_std, stats.arms,
                                                   stats.arm_campaigns, stats.labels)
    horizon_days = profile["horizon_days"]
    meta = ModelMeta(version="", feature_columns=feature_cols, feature_mean=mean, feature_std=std,
                     seq_len=seq_len, vocab_size=vocab_size, vocab_fingerprint=vocab_fingerprint,
                     arms=arms, arm_campaigns=arm_campaigns, horizon_days=int(horizon_days),
                     trained_as_of=str(as_of))
    model = model_spec_from_conf(train_cfg, vocab_size=vocab_size, seq_len=seq_len,
                                 n_features=len(feature_cols), n_arms=len(arms))
    files = train_cfg.feed_files or 4 * world
    frames = {"train": feeds.prepare_feed_frame(train_df, feature_columns=feature_cols, mean=mean, std=std,
                                                arms=arms, seq_len=seq_len)}
    if val_df is not None:
        frames["val"] = feeds.prepare_feed_frame(val_df, feature_columns=feature_cols, mean=mean, std=std,
                                                 arms=arms, seq_len=seq_len)
    if extra_sequences is not None:
        frames["pretrain"] = (
            feeds.sequence_feed_frame(train_df, key_columns=[S.USER_ID, S.ORIGIN_DATE], seq_len=seq_len)
            .unionByName(feeds.sequence_feed_frame(extra_sequences, key_columns=[S.USER_ID, S.AS_OF_DATE],
                                                   seq_len=seq_len)))
    built: dict[str, feeds.FeedSpec] = {}
    root = Path(train_cfg.parquet_dir) / key
    for name, frame in frames.items():
        if loader == "petastorm":
            built[name] = feeds.make_petastorm_feed(spark, frame, cache_dir=train_cfg.petastorm_cache, files=files)
        else:
            built[name] = feeds.write_arrow_feed(frame, str(root / name), files=files)
    if loader == "arrow":
        (root / feeds.FEED_META_FILE).write_text(json.dumps({
            "meta": meta.to_dict(), "model": model.to_dict(), "label_stats": label_stats,
            "validation_origins": val_origins, "rows": {k: v.rows for k, v in built.items()}}, indent=2),
            encoding="utf-8")
    val = built.get("val")
    return PreparedFeed(train=built["train"], val=val if val is not None and val.rows > 0 else None, model=model,
                        meta=meta, label_stats=label_stats, validation_origins=val_origins,
                        pretrain=built.get("pretrain"))


def effective_batch_size(batch_size: int, rows: int, world: int) -> int:
    """The conf batch size, shrunk so every rank gets at least one full batch per epoch."""
    return max(1, min(batch_size, rows // max(world, 1)))


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
        the :func:`train_rank` summary plus ``checkpoint_dir``, ``loader``, ``batch_size``,
        ``validation_origins`` and ``rows_train`` / ``rows_val``.
    """
    log = get_logger(LOG_NAME)
    check_barrier_slots(spark, train_cfg)
    use_gpu = resolve_gpu(spark, train_cfg, log)
    feature_cols = S.feature_columns(examples.schema)
    key = run_key(as_of, data_version, train_cfg, feature_cols)
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
        batch = effective_batch_size(train_cfg.batch_size, prepared.train.rows, world)
        if batch < train_cfg.batch_size:
            log.warning("batch size %d -> %d: only %d training rows for %d processes",
                        train_cfg.batch_size, batch, prepared.train.rows, world)
        spec = train_spec_from_conf(train_cfg, model=prepared.model, meta=prepared.meta,
                                    train_feed=prepared.train, val_feed=val, checkpoint_dir=ckpt_dir,
                                    conf=conf, label_stats=prepared.label_stats, batch_size=batch, use_gpu=use_gpu,
                                    pretrain_feed=prepared.pretrain)
        if fresh:
            spec = dataclasses.replace(spec, resume=False)
        log.info("training: %d rows (%d validation, origins %s; %d sequences to pretrain on), %d features, "
                 "arms %s, loader %s, %d processes (local_mode=%s, gpu=%s)", prepared.train.rows,
                 prepared.val.rows if prepared.val else 0, prepared.validation_origins or "hash split",
                 (prepared.pretrain or prepared.train).rows,
                 len(prepared.meta.feature_columns), prepared.meta.arms, train_cfg.loader, world,
                 train_cfg.local_mode, use_gpu)
        try:
            summary = run_distributed(spec, num_processes=world, local_mode=train_cfg.local_mode, use_gpu=use_gpu)
        except Exception as exc:
            raise TrainingFailed(failure_reason(exc), ckpt_dir, latest_checkpoint(ckpt_dir)) from exc
    finally:
        for materialised in prepared.feeds():
            feeds.delete_feed(materialised)
        if train_cfg.loader == "arrow":
            shutil.rmtree(Path(train_cfg.parquet_dir) / key, ignore_errors=True)
    return {**summary, "checkpoint_dir": ckpt_dir, "loader": train_cfg.loader, "batch_size": batch,
            "validation_origins": prepared.validation_origins, "rows_train": prepared.train.rows,
            "rows_val": prepared.val.rows if prepared.val else 0,
            "rows_pretrain": (prepared.pretrain or prepared.train).rows}


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
    return {"feed_dir": str(Path(train_cfg.parquet_dir) / key), "rows_train": prepared.train.rows,
            "rows_val": prepared.val.rows if prepared.val else 0,
            "rows_pretrain": (prepared.pretrain or prepared.train).rows,
            "validation_origins": prepared.validation_origins}
