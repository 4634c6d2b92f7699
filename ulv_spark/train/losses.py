"""Zero-inflated lognormal (ZILN) maths, masked-event targets and the multi-task loss (torch only).

ZILN (Wang, Liu & Miao 2019, "A Deep Probabilistic Model for Customer Lifetime Value
Prediction"): a spend Y is 0 with probability 1 - p and lognormal(mu, sigma) otherwise, so
one head gives the purchase probability, the expected spend and any quantile.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ulv_spark.names import CLS_ID, FIRST_EVENT_ID, IGNORE_INDEX, MASK_ID, PAD_ID, TASKS, UNK_ID  # noqa: F401

SIGMA_MIN = 1e-3
# exp() of a lognormal mean beyond this overflows float64 long before it means anything.
MAX_LOG_VALUE = 50.0


def ziln_sigma(raw: torch.Tensor) -> torch.Tensor:
    """The positive lognormal scale from an unconstrained head output."""
    return F.softplus(raw) + SIGMA_MIN


def ziln_nll(logit: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row ZILN negative log-likelihood: BCE(purchase) + lognormal NLL of y where y > 0.

    Args:
        logit: (B,) purchase logit; mu, sigma: (B,) lognormal location and scale (sigma > 0).
        y: (B,) observed spend, >= 0.

    Returns:
        (B,) loss per row. Rows with y = 0 contribute only the classification term, exactly as
        in the reference implementation (google/lifetime_value ``zero_inflated_lognormal_loss``).
    """
    y = y.to(mu.dtype)
    positive = (y > 0).to(mu.dtype)
    classification = F.binary_cross_entropy_with_logits(logit, positive, reduction="none")
    safe_y = torch.where(y > 0, y, torch.ones_like(y))
    log_y = torch.log(safe_y)
    log_prob = (-log_y - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
                - 0.5 * ((log_y - mu) / sigma) ** 2)
    return classification - positive * log_prob


def ziln_expected_value(logit: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[Y] = p * exp(mu + sigma^2 / 2), with p = sigmoid(logit)."""
    log_mean = torch.clamp(mu + 0.5 * sigma ** 2, max=MAX_LOG_VALUE)
    return torch.sigmoid(logit) * torch.exp(log_mean)


def ziln_quantile(logit: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of the zero-inflated lognormal mixture.

    P(Y <= y) = (1 - p) + p * Phi((ln y - mu) / sigma) for y > 0, so the quantile is 0 while
    q <= 1 - p and exp(mu + sigma * Phi^-1((q - (1 - p)) / p)) above that.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    p = torch.sigmoid(logit)
    inner = torch.clamp((q - (1.0 - p)) / torch.clamp(p, min=1e-12), min=1e-12, max=1.0 - 1e-12)
    log_q = torch.clamp(mu + sigma * torch.special.ndtri(inner), max=MAX_LOG_VALUE)
    return torch.where(q > 1.0 - p, torch.exp(log_q), torch.zeros_like(mu))


def masked_mean(values: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum(w * v) / max(sum(w), 1), sum(w)): a mean that is 0, not NaN, on an empty selection."""
    weight = weight.to(values.dtype)
    total = weight.sum()
    return (values * weight).sum() / torch.clamp(total, min=1.0), total


def mask_tokens(tokens: torch.Tensor, mask: torch.Tensor, vocab_size: int, probability: float,
                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masked-event targets: pick event tokens, replace 80 % MASK / 10 % random / 10 % kept.

    Only real events (mask = 1, id >= FIRST_EVENT_ID) are picked; PAD / CLS never are.

    Returns:
        (inputs, labels): labels hold the original id at picked positions, IGNORE_INDEX elsewhere.
    """
    tokens = tokens.long()
    eligible = (mask > 0) & (tokens >= FIRST_EVENT_ID)
    draw = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    picked = eligible & (draw < probability)
    labels = torch.where(picked, tokens, torch.full_like(tokens, IGNORE_INDEX))
    how = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    to_mask = picked & (how < 0.8)
    to_random = picked & (how >= 0.8) & (how < 0.9)
    span = max(vocab_size - FIRST_EVENT_ID, 1)
    random_ids = FIRST_EVENT_ID + torch.randint(0, span, tokens.shape, generator=generator, device=tokens.device)
    inputs = torch.where(to_mask, torch.full_like(tokens, MASK_ID), tokens)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


def masked_event_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy over picked positions, number picked); 0 when nothing was picked.

    Args:
        logits: (..., vocab) scores; labels: (...) ids, IGNORE_INDEX where not picked.
    """
    flat = labels.reshape(-1)
    picked = flat != IGNORE_INDEX
    count = picked.sum()
    if int(count) == 0:
        # keep every parameter in the graph so DDP's gradient all-reduce still matches up
        return logits.sum() * 0.0, count.to(logits.dtype)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=IGNORE_INDEX)
    return loss, count.to(logits.dtype)


def multitask_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                   weights: Optional[dict[str, float]] = None) -> tuple[torch.Tensor, dict[str, tuple[float, float]]]:
    """The fine-tuning loss: ZILN value + churn BCE + per-arm outcomes (TARNet) + propensity.

    Args:
        out: raw head outputs of :class:`~ulv_spark.train.model.MultiTaskModel` (``value`` (B, 3),
            ``churn`` (B,), ``arm`` (B, A, 4) = conversion logit, ZILN logit, mu, sigma-raw
            (B, A, 7 with the long-term head: + the horizon spend's ZILN logit, mu, sigma-raw),
            optionally ``propensity`` (B, A)).
        batch: ``y_value``, ``y_churn``, ``arm_index`` (-1: no exposure), ``y_converted``,
            ``y_response``.
        weights: task -> weight; missing tasks weigh 1.

    Returns:
        (total loss, {task: (mean loss, rows)}) — the parts as floats for logging and for
        row-weighted averaging across ranks.
    """
    weights = weights or {}
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    value = out["value"].float()
    rows = torch.ones_like(value[:, 0])
    parts["value"] = masked_mean(ziln_nll(value[:, 0], value[:, 1], ziln_sigma(value[:, 2]), batch["y_value"]), rows)
    churn = F.binary_cross_entropy_with_logits(out["churn"].float(), batch["y_churn"].float(), reduction="none")
    parts["churn"] = masked_mean(churn, rows)
    arm_out = out.get("arm")
    if arm_out is not None and arm_out.shape[1] > 0:
        arm_index = batch["arm_index"].long()
        exposed = arm_index >= 0
        # TARNet: each row trains only the head of the arm it actually received
        own = arm_out.float().gather(1, arm_index.clamp(min=0).view(-1, 1, 1).expand(-1, 1, arm_out.shape[2])).squeeze(1)
        conversion = F.binary_cross_entropy_with_logits(own[:, 0], batch["y_converted"].float(), reduction="none")
        response = ziln_nll(own[:, 1], own[:, 2], ziln_sigma(own[:, 3]), batch["y_response"])
        parts["uplift"] = masked_mean(conversion + response, exposed)
        if own.shape[1] >= 7:  # long-term head: the horizon's spend of the exposed row under its arm
            long = ziln_nll(own[:, 4], own[:, 5], ziln_sigma(own[:, 6]), batch["y_value"])
            parts["uplift_long"] = masked_mean(long, exposed)
        if "propensity" in out:
            ce = F.cross_entropy(out["propensity"].float(), arm_index.clamp(min=0), reduction="none")
            parts["propensity"] = masked_mean(ce, exposed)
    total = sum(weights.get(task, 1.0) * loss for task, (loss, _) in parts.items())
    return total, {task: (float(loss.detach()), float(n)) for task, (loss, n) in parts.items()}
