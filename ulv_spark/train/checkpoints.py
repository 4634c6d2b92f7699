"""A training run's checkpoints on shared storage: one per epoch, the best weights, the finished marker.

Layout of ``<train.checkpoint_dir>/<run key>/``: ``epoch-NNNN.pt`` (weights, optimizer state,
the stage it belongs to and :class:`TrainState`; the newest ``KEEP_CHECKPOINTS`` kept),
``best.pt`` (weights of the best fine-tuning epoch) and ``_FINISHED`` (written once the model
directory exists; it holds that directory's path). Torch is imported only where it is used.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

FINISHED_MARKER = "_FINISHED"
BEST_FILE = "best.pt"
KEEP_CHECKPOINTS = 2


@dataclass
class TrainState:
    """Where a run stands; saved in every epoch checkpoint so a resumed run goes on from it."""

    completed: int = 0                # epochs done, pretraining and fine-tuning together
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    early_stopped: bool = False
    history: list = field(default_factory=list)
    average_updates: int = 0          # optimiser steps folded into the weight average so far


@dataclass(frozen=True)
class Checkpoint:
    """An epoch checkpoint as read back."""

    weights: dict
    optimizer: dict
    optimizer_stage: str
    state: TrainState
    average: Optional[dict] = None   # the running weight average (train.weight_average_epochs), if any


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


def save_checkpoint(checkpoint_dir: str, model, optimizer, optimizer_stage: str, state: TrainState,
                    improved: bool, average=None) -> str:
    """Write ``epoch-<state.completed>.pt`` (and ``best.pt`` when ``improved``); prune old ones; returns the path.

    With ``average`` (the module holding the running weight average) the checkpoint carries it
    too, and ``best.pt`` holds the average: it is what was validated.
    """
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    averaged = None if average is None else {k: v.detach().cpu() for k, v in average.state_dict().items()}
    if improved:
        _atomic_save(weights if averaged is None else averaged, root / BEST_FILE)
    path = root / f"epoch-{state.completed:04d}.pt"
    payload = {"model": weights, "optimizer": optimizer.state_dict(), "optimizer_stage": optimizer_stage,
               "state": json.dumps(dataclasses.asdict(state))}
    if averaged is not None:
        payload["average"] = averaged
    _atomic_save(payload, path)
    for old in checkpoint_files(checkpoint_dir)[:-KEEP_CHECKPOINTS]:
        os.remove(old)
    return str(path)


def load_checkpoint(path: str) -> Checkpoint:
    """An epoch checkpoint written by :func:`save_checkpoint` (tensors on CPU)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return Checkpoint(weights=ckpt["model"], optimizer=ckpt["optimizer"], optimizer_stage=ckpt["optimizer_stage"],
                      state=TrainState(**json.loads(ckpt["state"])), average=ckpt.get("average"))


def load_best_weights(checkpoint_dir: str) -> Optional[dict]:
    """The weights of the best fine-tuning epoch, or None when none was saved."""
    import torch

    best = Path(checkpoint_dir) / BEST_FILE
    return torch.load(best, map_location="cpu", weights_only=True) if best.is_file() else None


def mark_finished(checkpoint_dir: str, model_dir: str) -> None:
    """Say the run wrote its model: the next run with this key starts over instead of resuming."""
    Path(checkpoint_dir, FINISHED_MARKER).write_text(model_dir, encoding="utf-8")


def pick_checkpoint(checkpoint_dir: str, *, resume: bool, rank: int, distributed: bool) -> Optional[str]:
    """Where to start: rank 0 decides and tells the others, so all ranks run the same epochs.

    Without ``resume``, or when the run already finished, rank 0 clears the directory (a
    finished run's checkpoints belong to a model already written) and every rank starts fresh.
    """
    choice = None
    if rank == 0:
        root = Path(checkpoint_dir)
        if not resume or (root / FINISHED_MARKER).exists():
            shutil.rmtree(root, ignore_errors=True)
        else:
            choice = latest_checkpoint(checkpoint_dir)
    if distributed:
        import torch.distributed as dist

        shared = [choice]
        dist.broadcast_object_list(shared, src=0)
        choice = shared[0]
    return choice
