"""Fine-tune the top layers of the text encoder on what each product's buyers did next (off by default).

With ``embed.finetune_layers: k > 0`` the embed job, the first night it runs with that conf:

1. computes per product the purchase outcomes of `features.text.purchase_outcomes` (did the buyer
   buy again within the horizon, log spend in it; only windows closed before the night's as-of
   date), joined to the product texts - one row per product, at most
   ``embed.finetune_max_products`` (the most-bought first), collected to the driver;
2. trains the top k transformer layers and a linear head (mean-pooled, L2-normalised embedding ->
   the two standardised outcomes, weighted MSE) with AdamW for ``finetune_epochs`` passes; every
   lower layer and the token embeddings stay frozen. The head starts as the ridge fit on the
   frozen embeddings (epoch 0 in the history is that linear probe), and the epoch with the lowest
   holdout loss is kept (epoch 0: the shipped weights). One product in ten (by a hash of its id) is
   held out and its loss reported per epoch;
3. saves the encoder (without the head) with its tokenizer and ``finetune.json`` under
   ``embed.finetune_dir/<base label>-<base fingerprint>-top<k>/`` (written to a temporary dir,
   then renamed: a failed fit leaves nothing).

That directory is then the encoder for every text (its weights differ, so its model_id does, and
the embed job re-embeds every stored row once). Later nights find it and reuse it; delete it to
refit. With fewer than ``MIN_PRODUCTS`` products with outcomes the shipped encoder is used, with a
warning. The fit runs on the driver (GPU when ``embed.use_gpu`` and CUDA are there).
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import time
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ulv_spark.runtime import get_logger
from ulv_spark.text.encoder import EncoderInfo, mean_pool

log = get_logger("ulv_spark.text")

MIN_PRODUCTS = 50            # products with outcomes (and text) needed to fine-tune
HOLDOUT_BUCKETS = 10         # one product in this many is held out (crc32 of its id)
BATCH_SIZE = 32
MAX_TOKENS = 128             # product texts are short; tokens per text while fitting (embedding uses the encoder's own)
MARKER = "finetune.json"


def finetuned_dir(root: str, base: EncoderInfo, layers: int) -> Path:
    """Where the fine-tuned copy of `base` with its top `layers` trained lives."""
    label, _, fingerprint = base.model_id.partition("@")
    return Path(root) / f"{label}-{fingerprint[:8]}-top{int(layers)}"


def stored(root: str, base: EncoderInfo, layers: int) -> Optional[Path]:
    """The fine-tuned directory for (base, layers) when a finished fit is there, else None."""
    path = finetuned_dir(root, base, layers)
    return path if (path / MARKER).is_file() else None


def holdout(product_ids: Sequence[str]) -> np.ndarray:
    """bool per product: held out for the validation loss (stable across runs and machines)."""
    return np.array([zlib.crc32(str(p).encode("utf-8")) % HOLDOUT_BUCKETS == 0 for p in product_ids], dtype=bool)


def _standardise(targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    mean = np.average(targets, axis=0, weights=weights)
    std = np.sqrt(np.average((targets - mean) ** 2, axis=0, weights=weights))
    return (targets - mean) / np.where(std > 0, std, 1.0)


def fit(base: EncoderInfo, texts: Sequence[str], targets: np.ndarray, weights: np.ndarray, *, layers: int,
        epochs: int, lr: float, seed: int, out_dir: Path, device: str = "cpu", product_ids: Sequence[str] = (),
        extra: Optional[dict] = None) -> dict:
    """Train the top `layers` layers of `base` to predict `targets` (n, k) from `texts`; save to `out_dir`.

    `weights` (n,) weight each text's squared error (purchase lines, capped at their 95th
    percentile). Returns the facts written to finetune.json: losses per epoch (train and holdout,
    in units of the standardised targets' variance; epoch 0 is the ridge head on the frozen
    embeddings), the epoch kept, products, seconds. Deterministic on CPU for the same inputs and seed.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    n = len(texts)
    targets = np.asarray(targets, dtype=np.float64).reshape(n, -1)
    weights = np.asarray(weights, dtype=np.float64)
    weights = np.minimum(weights, np.quantile(weights, 0.95))
    weights = weights / weights.mean()
    y = _standardise(targets, weights)
    held = holdout(product_ids) if len(product_ids) == n else np.zeros(n, dtype=bool)
    if held.all() or (~held).sum() < 2:
        held = np.zeros(n, dtype=bool)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tokenizer = AutoTokenizer.from_pretrained(base.path, local_files_only=True)
    model = AutoModel.from_pretrained(base.path, local_files_only=True).to(device)
    blocks = _layers(model)
    if not 1 <= layers <= len(blocks):
        raise ValueError(f"embed.finetune_layers={layers}, but {base.path} has {len(blocks)} layers")
    for p in model.parameters():
        p.requires_grad_(False)
    trained = [p for block in blocks[len(blocks) - layers:] for p in block.parameters()]
    for p in trained:
        p.requires_grad_(True)
    head = torch.nn.Linear(base.dim, y.shape[1]).to(device)
    optimiser = torch.optim.AdamW([*trained, *head.parameters()], lr=lr, weight_decay=0.01)
    max_tokens = min(MAX_TOKENS, base.max_length)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]
    y_t = torch.tensor(y, dtype=torch.float32)
    w_t = torch.tensor(weights, dtype=torch.float32)
    train_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)

    def batch(rows):
        pad = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
        return {k: v.to(device) for k, v in pad.items()}

    def embed(rows):
        enc = batch(rows)
        pooled = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    def forward(rows):
        return head(embed(rows))

    def loss_of(pred, rows):
        err = (pred - y_t[rows].to(device)) ** 2
        w = w_t[rows].to(device)
        return (err.mean(dim=1) * w).sum() / w.sum()

    def evaluate(rows) -> Optional[float]:
        if len(rows) == 0:
            return None
        model.eval()
        total, weight = 0.0, 0.0
        with torch.no_grad():
            for start in range(0, len(rows), BATCH_SIZE * 4):
                part = rows[start:start + BATCH_SIZE * 4]
                w = float(w_t[part].sum())
                total += float(loss_of(forward(part), part)) * w
                weight += w
        return round(total / weight, 4)

    start = time.perf_counter()
    # The untrained head first gets a least-squares fit on the frozen embeddings, so epoch 0 is
    # the best linear probe and every later epoch measures what the unfrozen layers add.
    model.eval()
    ridge = _fit_head(head, embed, train_idx, held_idx, y, weights, device)
    history = [{"epoch": 0, "train_loss": evaluate(train_idx), "holdout_loss": evaluate(held_idx)}]
    best, best_state = 0, _copy(trained)
    log.info("text fine-tune: %d products (%d held out), top %d of %d layers, epoch 0 (linear probe): %s",
             n, len(held_idx), layers, len(blocks), history[0])
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(train_idx)
        for s in range(0, len(order), BATCH_SIZE):
            rows = order[s:s + BATCH_SIZE]
            optimiser.zero_grad(set_to_none=True)
            loss_of(forward(rows), rows).backward()
            torch.nn.utils.clip_grad_norm_(trained + list(head.parameters()), 1.0)
            optimiser.step()
        history.append({"epoch": epoch, "train_loss": evaluate(train_idx), "holdout_loss": evaluate(held_idx)})
        log.info("text fine-tune: epoch %d/%d %s (%.0f s)", epoch, epochs, history[-1], time.perf_counter() - start)
        if len(held_idx) == 0 or history[-1]["holdout_loss"] < history[best]["holdout_loss"]:
            best, best_state = epoch, _copy(trained)
    with torch.no_grad():  # keep the epoch with the lowest holdout loss (0: the weights as shipped)
        for p, saved in zip(trained, best_state):
            p.copy_(saved)
    if best == 0:
        log.warning("text fine-tune: no epoch beat the linear probe on the held-out products; the saved encoder "
                    "has the shipped weights")
    facts = {"base_model_id": base.model_id, "base_path": base.path, "layers": int(layers),
             "layers_total": len(blocks), "epochs": int(epochs), "lr": float(lr), "seed": int(seed),
             "products": int(n), "held_out": int(len(held_idx)), "max_tokens": int(max_tokens),
             "head_ridge": ridge, "best_epoch": best, "history": history,
             "seconds": round(time.perf_counter() - start, 1), **(extra or {})}
    _save(model.eval(), tokenizer, Path(base.path), out_dir, facts)
    return facts


def _layers(model) -> list:
    """The transformer blocks, bottom first (BERT-style `encoder.layer`)."""
    encoder = getattr(model, "encoder", None)
    blocks = getattr(encoder, "layer", None)
    if blocks is None:
        raise ValueError(f"fine-tuning needs a BERT-style encoder (model.encoder.layer); {type(model).__name__} "
                         "has none")
    return list(blocks)


RIDGE_GRID = (0.1, 1.0, 10.0, 100.0)


def _fit_head(head, embed, rows, held, y: np.ndarray, weights: np.ndarray, device: str) -> float:
    """Weighted ridge of `y` on the frozen embeddings of `rows`, written into `head`; returns its strength.

    The strength is the one of RIDGE_GRID with the lowest weighted loss on the `held` rows (the
    largest when there are none): an overfitted head would make the first steps chase noise.
    """
    import torch

    def features(idx):
        with torch.no_grad():
            x = np.concatenate([embed(idx[s:s + BATCH_SIZE * 4]).cpu().double().numpy()
                                for s in range(0, len(idx), BATCH_SIZE * 4)]) if len(idx) else np.zeros((0, 1))
        return np.hstack([x, np.ones((len(x), 1))])

    x, xh = features(rows), features(held)
    dim = x.shape[1] - 1
    w = weights[rows][:, None]
    gram, moment = x.T @ (x * w), x.T @ (y[rows] * w)
    penalty = np.diag([1.0] * dim + [0.0])
    fits = {lam: np.linalg.solve(gram + lam * penalty, moment) for lam in RIDGE_GRID}
    if len(held):
        wh = weights[held][:, None]
        lam = min(RIDGE_GRID, key=lambda k: float((((xh @ fits[k]) - y[held]) ** 2 * wh).sum()))
    else:
        lam = RIDGE_GRID[-1]
    coef = fits[lam]
    with torch.no_grad():
        head.weight.copy_(torch.tensor(coef[:dim].T, dtype=head.weight.dtype, device=device))
        head.bias.copy_(torch.tensor(coef[dim], dtype=head.bias.dtype, device=device))
    return lam


def _copy(params) -> list:
    return [p.detach().clone() for p in params]


# copied from the base checkpoint: its sentence-transformers settings (max_seq_length, pooling) and licence notice
CARRIED = ("sentence_bert_config.json", "modules.json", "config_sentence_transformers.json", "1_Pooling",
           "README.md", "LICENSE")


def _save(model, tokenizer, base_path: Path, out_dir: Path, facts: dict) -> None:
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for name in CARRIED:
        source = base_path / name
        if source.is_dir():
            shutil.copytree(source, tmp / name)
        elif source.is_file():
            shutil.copy2(source, tmp / name)
    facts = {**facts, "fitted_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()}
    (tmp / MARKER).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
