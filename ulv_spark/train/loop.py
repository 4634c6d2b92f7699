"""The per-rank training function (DDP; no Spark): pretrain, fine-tune, validate, checkpoint, save.

:func:`train_rank` is the whole training run of one process. It reads its shard through
:mod:`ulv_spark.train.feed`, optionally pretrains the encoder with masked-event modelling,
fine-tunes encoder + heads, validates on the held-out rows after every epoch, writes a
checkpoint per epoch, stops early, and on rank 0 writes the versioned model directory. It runs
the same under ``TorchDistributor`` (:func:`ulv_spark.train.launch.run_distributed`) and under
plain ``torchrun`` (:mod:`ulv_spark.train.torchrun_main`).

The fine-tuning recipe (issue 14; every piece a ``train`` conf key): AdamW with the event
encoder in its own parameter group at ``encoder_lr_mult`` x the learning rate; per step a
linear warm-up over ``warmup_share`` of the fine-tuning steps, then cosine decay to
``lr_floor`` x the rate (:func:`lr_factor`); gradient clipping; the encoder frozen after
``freeze_encoder_after`` fine-tuning epochs (no gradients, eval mode, its group's rate 0; DDP
runs with ``find_unused_parameters``, so the frozen parameters are simply unused); early
stopping on the validation loss, the best epoch kept; with ``weight_average_epochs`` > 0 a
running exponential average of the fine-tuning weights (:class:`WeightAverage`) is what is
validated, kept as the best epoch and written; and on rank 0 at the end the
:mod:`~ulv_spark.train.calibration` maps fitted on that epoch's validation predictions.

Reproducibility: with the same data, conf and seed a CPU run gives the same model, bit for
bit. Every random draw is seeded from ``train.seed``: the initial weights (the same on every
rank), dropout and masked-event picks per (epoch, rank), the loaders' row order per (seed,
rank) (see :func:`ulv_spark.train.feed.open_batches`), the validation masks; the torch thread
count is fixed per process. What GPU runs do not repeat is in README ("Reproducibility").
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path

from ulv_spark.names import TASKS
from ulv_spark.runtime import get_logger
from ulv_spark.train import checkpoints as ckpts
from ulv_spark.train import feed as feeds
from ulv_spark.train.spec import TrainSpec

LOG_NAME = "ulv_spark.train"
PRETRAIN, FINETUNE = "pretrain", "finetune"
EPOCH_SEED_STRIDE = 7919  # loader seeds of a run opened after k epochs: seed + k * stride (+1 for pretraining)


def select_device(want_gpu: bool, local_rank: int, log):
    """(torch device, on_gpu): the GPU of ``local_rank`` when wanted and visible, else CPU with a warning."""
    import torch

    if want_gpu and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank), True
    if want_gpu:
        log.warning("train.use_gpu is set but no GPU is visible to this process; training on CPU")
    return torch.device("cpu"), False


def _set_cpu_threads(cpu_threads: int, local_world: int) -> None:
    import torch

    if cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        # more threads than cores per process makes OpenMP spin against itself (10-50x slower)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))


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


def lr_factor(step: int, total: int, *, schedule: str = "cosine", warmup_share: float = 0.05,
              floor: float = 0.1) -> float:
    """Multiplier of the learning rate at fine-tuning step ``step`` (0-based) of ``total``.

    cosine: linear warm-up ``(step + 1) / W`` over ``W = max(1, int(warmup_share * total))``
    steps, then ``floor + (1 - floor) * (1 + cos(pi * progress)) / 2`` with progress
    ``(step - W) / max(1, total - W)`` capped at 1; constant (or ``total`` <= 0): 1.
    """
    if schedule != "cosine" or total <= 0:
        return 1.0
    warm = max(1, int(warmup_share * total))
    if step < warm:
        return (step + 1) / warm
    progress = min((step - warm) / max(1, total - warm), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _text(batch: dict):
    """The batch's per-event text (feed column ``text``; None when the feed has none)."""
    text = batch.get(feeds.TEXT)
    return None if text is None else text.float()


class WeightAverage:
    """An exponential moving average of the model's weights over the fine-tuning steps (Polyak averaging).

    The decay per step is ``1 - 1 / max(1, horizon_epochs * steps_per_epoch)`` (the average spans
    about ``horizon_epochs`` epochs whatever the data size), warmed up as ``min(decay, (1 + t) /
    (10 + t))`` over the first updates ``t`` (TensorFlow's ``num_updates`` rule), so early steps
    do not leave the initial weights in it. Buffers are copied, not averaged. Every rank holds the
    same average (DDP keeps the weights equal), so nothing is communicated.
    """

    def __init__(self, model, horizon_epochs: float, steps_per_epoch: int, state: dict | None = None,
                 updates: int = 0):
        import copy

        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        if state is not None:
            self.module.load_state_dict(state)
        self.module.eval()
        self.decay = 1.0 - 1.0 / max(1.0, horizon_epochs * steps_per_epoch)
        self.updates = updates

    def update(self, model) -> None:
        import torch

        t = self.updates
        decay = min(self.decay, (1.0 + t) / (10.0 + t))
        self.updates += 1
        with torch.no_grad():
            for avg, p in zip(self.module.parameters(), model.parameters()):
                avg.lerp_(p.detach().to(avg.dtype), 1.0 - decay)
            for avg, b in zip(self.module.buffers(), model.buffers()):
                avg.copy_(b)


def train_epoch(stage: str, ddp, optimizer, batches, spec: TrainSpec, device, autocast, set_lr=None,
                after_step=None) -> dict:
    """One epoch of ``stage`` over ``batches.steps_per_epoch`` batches; returns loss_sum, steps, rows, seconds.

    ``set_lr(i)``, when given, is called before the i-th step of the epoch (learning-rate schedule);
    ``after_step()`` after every optimiser step (the weight average).
    """
    import torch

    from ulv_spark.train.losses import mask_tokens, masked_event_loss, multitask_loss

    cfg = spec.train
    ddp.train()
    loss_sum, steps, rows = 0.0, 0, 0
    params = [p for p in ddp.parameters() if p.requires_grad]
    start = time.perf_counter()
    for batch in batches.epoch():
        if set_lr is not None:
            set_lr(steps)
        b = _to_device(batch, device)
        tokens, mask = b[feeds.TOKENS].long(), b[feeds.MASK].long()
        with autocast():
            if stage == PRETRAIN:
                inputs, labels = mask_tokens(tokens, mask, spec.model.vocab_size, cfg.mlm_probability)
                out = ddp(inputs, mask, mlm_labels=labels)
                loss, _ = masked_event_loss(out["mlm_logits"], out["mlm_labels"])
            else:
                out = ddp(tokens, mask, b[feeds.FEATURES].float(), text=_text(b))
                loss, _ = multitask_loss(out, b, cfg.loss_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        if after_step is not None:
            after_step()
        loss_sum += float(loss.detach())
        steps += 1
        rows += int(tokens.shape[0])
    return {"loss_sum": loss_sum, "steps": steps, "rows": rows, "seconds": time.perf_counter() - start}


# Validation sums, all-reduced in this order: per task (loss * rows, rows), masked-event
# (loss * picked, picked), then the calibration sums of the value and churn heads.
_CALIBRATION = ("predicted_value", "observed_value", "predicted_churn", "observed_churn", "churn_brier")
VALIDATION_SUMS = (tuple(f"{task}_{part}" for task in TASKS for part in ("loss", "rows"))
                   + ("mlm_loss", "mlm_rows") + _CALIBRATION)


def validate(stage: str, model, batches, spec: TrainSpec, device, autocast, distributed: bool) -> dict:
    """Row-weighted validation losses over all ranks (+ calibration sums) for one pass."""
    import torch

    from ulv_spark.train.losses import mask_tokens, masked_event_loss, multitask_loss
    from ulv_spark.train.model import head_predictions

    cfg = spec.train
    model.eval()
    sums = dict.fromkeys(VALIDATION_SUMS, 0.0)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # same masks every epoch
    with torch.no_grad():
        for batch in batches.epoch():
            b = _to_device(batch, device)
            tokens, mask = b[feeds.TOKENS].long(), b[feeds.MASK].long()
            with autocast():
                if stage == PRETRAIN:
                    inputs, labels = mask_tokens(tokens, mask, spec.model.vocab_size, cfg.mlm_probability,
                                                 generator=generator)
                    out = model(inputs, mask, mlm_labels=labels)
                    loss, n = masked_event_loss(out["mlm_logits"], out["mlm_labels"])
                    sums["mlm_loss"] += float(loss) * float(n)
                    sums["mlm_rows"] += float(n)
                    continue
                out = model(tokens, mask, b[feeds.FEATURES].float(), text=_text(b))
                _, parts = multitask_loss(out, b, cfg.loss_weights)
            for task, (loss, n) in parts.items():
                sums[f"{task}_loss"] += loss * n
                sums[f"{task}_rows"] += n
            preds = head_predictions(out)
            churn_p, y_churn = preds["churn_probability"], b[feeds.Y_CHURN].double()
            sums["predicted_value"] += float(preds["expected_value"].sum())
            sums["observed_value"] += float(b[feeds.Y_VALUE].double().sum())
            sums["predicted_churn"] += float(churn_p.sum())
            sums["observed_churn"] += float(y_churn.sum())
            sums["churn_brier"] += float(((churn_p - y_churn) ** 2).sum())
    total = dict(zip(VALIDATION_SUMS, _reduce_sums(list(sums.values()), device, distributed)))
    if stage == PRETRAIN:
        n = total["mlm_rows"]
        return {"val_mlm_loss": total["mlm_loss"] / n if n else float("nan")}
    parts = {task: total[f"{task}_loss"] / total[f"{task}_rows"] for task in TASKS if total[f"{task}_rows"] > 0}
    result = {f"val_{task}_loss": value for task, value in parts.items()}
    result["val_loss"] = _weighted_total(parts, cfg.loss_weights)
    rows = total["value_rows"]
    if rows > 0:
        result["val_rows"] = rows
        result["val_expected_value_ratio"] = (total["predicted_value"] / total["observed_value"]
                                              if total["observed_value"] > 0 else float("nan"))
        result["val_churn_rate_predicted"] = total["predicted_churn"] / rows
        result["val_churn_rate_observed"] = total["observed_churn"] / rows
        result["val_churn_brier"] = total["churn_brier"] / rows
    return result


ENCODER_GROUP = 1  # optimiser param groups: 0 = tabular MLP, trunk and heads; 1 = the event encoder


def _new_optimizer(model, spec: TrainSpec):
    """AdamW with two groups (rest, encoder); each group's ``base_lr`` is its rate before the schedule."""
    import torch

    cfg = spec.train
    encoder = model.encoder_parameters()
    ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "base_lr": cfg.learning_rate},
              {"params": encoder, "base_lr": 0.0 if model.encoder_frozen else cfg.learning_rate * cfg.encoder_lr_mult}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def _lr_setter(optimizer, stage: str, spec: TrainSpec, *, first_step: int, total_steps: int):
    """``set_lr(i)`` for :func:`train_epoch`: pretraining at the plain rate, fine-tuning on the schedule."""
    cfg = spec.train

    def set_lr(i: int) -> None:
        if stage == PRETRAIN:
            for group in optimizer.param_groups:
                group["lr"] = cfg.learning_rate
            return
        factor = lr_factor(first_step + i, total_steps, schedule=cfg.lr_schedule, warmup_share=cfg.warmup_share,
                           floor=cfg.lr_floor)
        for group in optimizer.param_groups:
            group["lr"] = group.get("base_lr", cfg.learning_rate) * factor

    return set_lr


def _freeze_encoder(model, optimizer) -> None:
    """Freeze the encoder and zero its group's rate (AdamW then leaves its weights exactly as they are)."""
    model.freeze_encoder()
    if optimizer is not None and len(optimizer.param_groups) > ENCODER_GROUP:
        optimizer.param_groups[ENCODER_GROUP]["base_lr"] = 0.0
        optimizer.param_groups[ENCODER_GROUP]["lr"] = 0.0


def _open_feeds(stack: contextlib.ExitStack, spec: TrainSpec, *, rank: int, world: int, completed: int):
    """(train, pretrain, validation or None) batches; pretrain is train unless a pretraining feed is given."""
    cfg = spec.train
    seed = cfg.seed + EPOCH_SEED_STRIDE * completed
    common = dict(rank=rank, world=world, batch_size=spec.batch_size, workers=cfg.reader_workers,
                  steps_cap=cfg.steps_per_epoch)
    train = stack.enter_context(feeds.open_batches(spec.train_feed, shuffle=True, seed=seed,
                                                   shuffle_buffer=cfg.shuffle_buffer, **common))
    pretrain = train
    if spec.pretrain_feed is not None and spec.pretrain_feed.rows > 0 and completed < cfg.pretrain_epochs:
        pretrain = stack.enter_context(feeds.open_batches(spec.pretrain_feed, shuffle=True, seed=seed + 1,
                                                          shuffle_buffer=cfg.shuffle_buffer, **common))
    val = None
    if spec.val_feed is not None and spec.val_feed.rows > 0:
        val_kw = {**common, "batch_size": feeds.covering_batch_size(spec.val_feed.rows, spec.batch_size, world),
                  "steps_cap": 0}
        val = stack.enter_context(feeds.open_batches(spec.val_feed, shuffle=False, seed=cfg.seed, **val_kw))
    return train, pretrain, val


def train_rank(spec: TrainSpec) -> dict:
    """Train on this process's shard; every rank returns rank 0's summary.

    Reads RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun and TorchDistributor; absent = one
    process). gloo on CPU; NCCL, the GPU of LOCAL_RANK and bf16 autocast on GPU. Resumes from
    the newest checkpoint in ``spec.checkpoint_dir`` when ``train.resume``.

    Returns:
        ``status`` ("finished" or "interrupted" by ``train.stop_after_epochs``), ``epochs_run``,
        ``epochs_planned``, ``resumed_from_epoch``, ``early_stopped``, ``best_epoch``,
        ``history``, ``world_size``, ``device``, ``seconds`` and, when finished, ``metrics``,
        ``model_dir`` and ``model_version``.
    """
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ulv_spark.train.model import build_model

    cfg = spec.train
    log = get_logger(LOG_NAME)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device, on_gpu = select_device(spec.use_gpu, local_rank, log)
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo")
    if not on_gpu:
        _set_cpu_threads(cfg.cpu_threads, local_world)
    started = time.perf_counter()

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(spec.model)
    model.set_output_bias(spec.label_stats)
    model.to(device)
    state, optimizer, optimizer_stage, resumed_from = ckpts.TrainState(), None, None, None
    average, average_state = None, None
    ckpt_path = ckpts.pick_checkpoint(spec.checkpoint_dir, resume=cfg.resume, rank=rank, distributed=distributed)
    if ckpt_path:
        ckpt = ckpts.load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt.weights)
        state = ckpt.state
        optimizer = _new_optimizer(model, spec)
        optimizer.load_state_dict(ckpt.optimizer)
        optimizer_stage, resumed_from, average_state = ckpt.optimizer_stage, state.completed, ckpt.average
        if rank == 0:
            log.info("resuming from %s (epoch %d done)", ckpt_path, state.completed)
    ddp = (DistributedDataParallel(model, device_ids=[local_rank] if on_gpu else None, find_unused_parameters=True)
           if distributed else model)
    use_bf16 = on_gpu and cfg.bf16

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()

    plan = [PRETRAIN] * cfg.pretrain_epochs + [FINETUNE] * cfg.epochs
    status, epochs_this_run = "finished", 0
    with contextlib.ExitStack() as stack:
        train_batches, pretrain_batches, val_batches = _open_feeds(stack, spec, rank=rank, world=world,
                                                                   completed=state.completed)
        while state.completed < len(plan) and not state.early_stopped:
            if cfg.stop_after_epochs is not None and epochs_this_run >= cfg.stop_after_epochs:
                status = "interrupted"
                break
            stage = plan[state.completed]
            if optimizer is None or optimizer_stage != stage:
                optimizer, optimizer_stage = _new_optimizer(model, spec), stage  # fresh moments per stage
            finetuned = state.completed - cfg.pretrain_epochs  # fine-tuning epochs done (< 0: pretraining)
            if (stage == FINETUNE and cfg.freeze_encoder_after and finetuned >= cfg.freeze_encoder_after
                    and not model.encoder_frozen):
                _freeze_encoder(model, optimizer)
                if rank == 0:
                    log.info("encoder frozen after %d fine-tuning epochs", finetuned)
            torch.manual_seed(cfg.seed + 1000 * state.completed + rank)  # dropout / masks per epoch
            batches = pretrain_batches if stage == PRETRAIN else train_batches
            if stage == FINETUNE and cfg.weight_average_epochs > 0 and average is None:
                average = WeightAverage(model, cfg.weight_average_epochs, batches.steps_per_epoch,
                                        state=average_state, updates=state.average_updates)
            set_lr = _lr_setter(optimizer, stage, spec, first_step=max(finetuned, 0) * batches.steps_per_epoch,
                                total_steps=cfg.epochs * batches.steps_per_epoch)
            after_step = (lambda: average.update(model)) if stage == FINETUNE and average is not None else None
            stats = train_epoch(stage, ddp, optimizer, batches, spec, device, autocast, set_lr, after_step)
            if after_step is not None:
                state.average_updates = average.updates
            loss_sum, steps, rows, seconds = _reduce_sums(
                [stats["loss_sum"], stats["steps"], stats["rows"], stats["seconds"]], device, distributed)
            record = {"epoch": state.completed + 1, "stage": stage, "train_loss": loss_sum / max(steps, 1),
                      "rows": int(rows), "rows_per_second": rows / max(seconds / world, 1e-9)}
            if val_batches is not None:
                judged = average.module if stage == FINETUNE and average is not None else model
                record.update(validate(stage, judged, val_batches, spec, device, autocast, distributed))
            improved = False
            if stage == FINETUNE:
                current = record.get("val_loss", record["train_loss"])
                if current < state.best_loss - 1e-6:
                    state.best_loss, state.best_epoch, state.bad_epochs, improved = current, state.completed + 1, 0, True
                else:
                    state.bad_epochs += 1
                    state.early_stopped = val_batches is not None and state.bad_epochs >= cfg.patience
            state.completed += 1
            state.history.append(record)
            epochs_this_run += 1
            if rank == 0:
                saved = ckpts.save_checkpoint(spec.checkpoint_dir, model, optimizer, optimizer_stage, state, improved,
                                              average=average.module if average is not None else None)
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
        summary.update(_write_model(model, spec, state, world=world, device=device, autocast=autocast, log=log))
    if distributed:
        shared = [summary]
        dist.broadcast_object_list(shared, src=0)
        summary = shared[0]
        dist.barrier()
        dist.destroy_process_group()
    return summary


def validation_predictions(model, spec: TrainSpec, device, autocast, feed=None, features: bool = False) -> dict:
    """Rank 0 alone: raw expected value / churn predictions and labels over one whole pass of ``feed``.

    ``feed`` defaults to the validation feed; the training feed is read the same way (one
    unshuffled pass, a batch size that covers nearly every row) for the calibration levels.
    ``features``: also return the standardised tabular inputs as "x" (the tree companion's).
    """
    import numpy as np
    import torch

    from ulv_spark.train.model import head_predictions

    cfg, feed = spec.train, feed if feed is not None else spec.val_feed
    parts: dict[str, list] = {"ev": [], "y_value": [], "churn": [], "y_churn": []}
    if features:
        parts["x"] = []
    model.eval()
    with feeds.open_batches(feed, rank=0, world=1, batch_size=feeds.covering_batch_size(feed.rows, spec.batch_size, 1),
                            shuffle=False, seed=cfg.seed, workers=cfg.reader_workers) as batches, torch.no_grad():
        for batch in batches.epoch():
            b = _to_device(batch, device)
            with autocast():
                out = model(b[feeds.TOKENS].long(), b[feeds.MASK].long(), b[feeds.FEATURES].float(), text=_text(b))
            preds = head_predictions(out)
            parts["ev"].append(preds["expected_value"].cpu().numpy())
            parts["churn"].append(preds["churn_probability"].cpu().numpy())
            parts["y_value"].append(b[feeds.Y_VALUE].double().cpu().numpy())
            parts["y_churn"].append(b[feeds.Y_CHURN].double().cpu().numpy())
            if features:
                parts["x"].append(b[feeds.FEATURES].float().cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def _fit_calibration(model, spec: TrainSpec, device, autocast) -> tuple[dict, dict]:
    """(meta.calibration, metrics) from the selected weights' predictions; ({}, {}) when off.

    Fitted on the validation rows, plus every training row when ``train.calibration_rows`` is
    ``all`` (see :mod:`ulv_spark.train.calibration`); the selected epoch is still the one with
    the best validation loss.
    """
    import numpy as np

    from ulv_spark.train.calibration import fit_power_calibration

    if spec.train.calibration not in ("power", "isotonic") or spec.val_feed is None or spec.val_feed.rows == 0:
        return {}, {}
    blend = spec.train.tree_blend != "none" and spec.train_feed is not None and spec.train_feed.rows > 0
    rows = validation_predictions(model, spec, device, autocast, features=blend)
    held_out = rows
    fit = None
    if (blend or spec.train.calibration_rows == "all") and spec.train_feed is not None and spec.train_feed.rows > 0:
        fit = validation_predictions(model, spec, device, autocast, feed=spec.train_feed, features=blend)
    if spec.train.calibration_rows == "all" and fit is not None:
        rows = {k: np.concatenate([fit[k], rows[k]]) for k in rows}
    trees, tree_rows, tree_metrics = _fit_trees(model, spec, fit, held_out, rows) if blend else (None, None, {})
    knot_rows = None
    if spec.train.calibration == "isotonic":
        knot_rows = held_out if tree_rows is None else {**held_out, "tree_value": tree_rows["held_out"]["tree_value"]}
    calibration = fit_power_calibration(rows["ev"], rows["y_value"], rows["churn"], rows["y_churn"],
                                        knot_rows=knot_rows, trees=tree_rows)
    stored = calibration.to_dict()
    if calibration.uses_trees:   # the network's own maps beside the stack: the ablation (evaluate's model_network)
        stored["network"] = fit_power_calibration(rows["ev"], rows["y_value"], rows["churn"], rows["y_churn"],
                                                  knot_rows=knot_rows).to_dict()
    else:
        trees = None   # the stack gave the trees no weight on the held-out rows: the model stays without them
    getattr(model, "module", model).trees = trees
    observed = float(rows["y_value"].sum())
    metrics = {"calibration": stored, "calibration_rows": int(len(rows["ev"])), **tree_metrics}
    if blend:
        metrics["tree_blend_weights"] = {"value": calibration.value_tree, "churn": calibration.churn_tree}
    if observed > 0:   # 1 up to rounding: the Poisson fit's score equation matches the totals
        tree_value = tree_rows["tree_value"] if calibration.value_tree else None
        metrics["calibration_expected_value_ratio"] = float(calibration.value(rows["ev"], tree_value).sum()) / observed
    return stored, metrics


def _fit_trees(model, spec: TrainSpec, fit: dict, held_out: dict, rows: dict):
    """(trees, the ``trees`` argument of fit_power_calibration, metrics): the tree companion cross-fitted
    on every training and validation row's standardised features and labels, with its out-of-fold
    predictions on the held-out rows and on the calibration rows (train/trees.py). (None, None,
    metrics) when nothing could be fitted."""
    import time

    import numpy as np

    from ulv_spark.train.trees import fit_trees

    started = time.perf_counter()
    both = {k: np.concatenate([fit[k], held_out[k]]) for k in ("x", "y_churn", "y_value")}
    fitted = fit_trees(both["x"], both["y_churn"], both["y_value"], spec.meta.feature_columns,
                       kind=spec.train.tree_blend, seed=spec.train.seed)
    metrics = {"tree_blend": spec.train.tree_blend, "tree_rows": int(len(both["x"])),
               "tree_seconds": round(time.perf_counter() - started, 2)}
    if fitted is None:
        return None, None, metrics
    trees, oof = fitted
    n_fit = len(fit["x"])
    held = {k: held_out[k] for k in ("ev", "y_value", "churn", "y_churn")}
    on_rows = {}
    for head in ("churn", "value"):
        out = oof[head]
        held[f"tree_{head}"] = None if out is None else out[n_fit:]
        # rows: every fit + held-out row (calibration_rows all) or the held-out rows alone
        on_rows[f"tree_{head}"] = None if out is None else (out if len(rows["ev"]) == len(out) else out[n_fit:])
    return trees, {"held_out": held, **on_rows}, metrics


def _write_model(model, spec: TrainSpec, state: ckpts.TrainState, *, world: int, device, autocast, log) -> dict:
    """Rank 0 at the end: the best epoch's weights (+ their calibration) into a new model directory.

    Returns model_dir, model_version and metrics.
    """
    from ulv_spark.train.artifacts import save_model

    best = ckpts.load_best_weights(spec.checkpoint_dir) if state.best_epoch > 0 else None
    if best is not None:
        model.load_state_dict(best)
    calibration, calibration_metrics = _fit_calibration(model, spec, device, autocast)
    model.to("cpu")
    best_record: dict = next((h for h in state.history if h["epoch"] == state.best_epoch),
                             state.history[-1] if state.history else {})
    metrics = {**{k: v for k, v in best_record.items() if k not in ("epoch", "stage")},
               "best_epoch": state.best_epoch, "epochs_run": state.completed,
               "rows_train": spec.train_feed.rows, "rows_val": spec.val_feed.rows if spec.val_feed else 0,
               "world_size": world, "device": str(device), **calibration_metrics}
    meta = dataclasses.replace(spec.meta, calibration=calibration)
    model_dir = save_model(model, meta, spec.train.model_dir, metrics, spec.conf)
    ckpts.mark_finished(spec.checkpoint_dir, model_dir)
    log.info("model written to %s", model_dir)
    return {"model_dir": model_dir, "model_version": Path(model_dir).name, "metrics": metrics}
