"""The multi-task network: a transformers encoder over event tokens + an MLP over tabular features.

Torch and transformers only (no Spark), so the same code trains under TorchDistributor or
torchrun and predicts inside a pandas UDF. Heads: ZILN value (purchase logit, mu, sigma),
churn logit, one outcome head per campaign arm (conversion logit + ZILN response spend) and,
for targeted campaigns, a propensity head. Arm heads are ``delta`` (default: arm k = a base
head shared by every exposed row + a delta head of arm k, the control's delta fixed at 0, so
weight decay shrinks treatment effects toward 0) or ``tarnet`` (one independent head per
arm). In training a row's whole pooled sequence vector is zeroed with probability
``spec.sequence_dropout`` (modality dropout, inverted scaling), and the encoder can be frozen
(:meth:`MultiTaskModel.freeze_encoder`). With ``spec.text_dims`` > 0 (train.text_fusion) each
event's product text (seq_text, k components) goes through a bias-free Linear to the encoder
width and is added to its token embedding, so the encoder attends over what was bought.
Pretraining uses the encoder's own masked-LM head (``AutoModelForMaskedLM``) on the same weights.
"""
from __future__ import annotations

import math
import os
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ulv_spark.names import SCALAR_OUTPUTS
from ulv_spark.train.losses import (CLS_ID, IGNORE_INDEX, UNK_ID, ziln_expected_value, ziln_quantile,
                                    ziln_sigma)
from ulv_spark.train.calibration import PowerCalibration
from ulv_spark.train.scaling import standardise
from ulv_spark.train.spec import ModelMeta, ModelSpec

ARM_OUTPUTS = 4  # conversion logit, response ZILN logit, mu, sigma-raw
LONG_OUTPUTS = 3  # with spec.long_term: + horizon-spend ZILN logit, mu, sigma-raw
PREDICT_CHUNK = 8192


def build_encoder_config(spec: ModelSpec):
    """A BertConfig sized from the spec: vocabulary from the features, positions for CLS + L."""
    from transformers import BertConfig

    enc = spec.encoder
    return BertConfig(
        vocab_size=spec.vocab_size, hidden_size=enc.hidden_size, num_hidden_layers=enc.num_layers,
        num_attention_heads=enc.num_heads, intermediate_size=enc.intermediate_size,
        hidden_dropout_prob=enc.dropout, attention_probs_dropout_prob=enc.dropout,
        max_position_embeddings=spec.seq_len + 1, type_vocab_size=1, pad_token_id=0)


def build_masked_lm(spec: ModelSpec, encoder_config: Any = None):
    """The encoder with its masked-LM head: from a saved config, a local checkpoint, or the spec.

    Args:
        spec: the architecture.
        encoder_config: a transformers config (loading a saved model: weights come afterwards).

    Raises:
        ValueError: ``encoder_local_dir`` is not a local directory, or its position limit is
            shorter than CLS + the sequence length.
    """
    from transformers import AutoModelForMaskedLM

    if encoder_config is not None:
        return AutoModelForMaskedLM.from_config(encoder_config)
    if spec.encoder.local_dir:
        local = spec.encoder.local_dir
        if not os.path.isdir(local):
            # a hub name would trigger a download: only local checkpoints are allowed
            raise ValueError(f"train.encoder.local_dir must be a local directory, got {local!r}")
        mlm = AutoModelForMaskedLM.from_pretrained(local, local_files_only=True)
        limit = getattr(mlm.config, "max_position_embeddings", None)
        if limit is not None and limit < spec.seq_len + 1:
            raise ValueError(f"encoder at {local} handles {limit} positions; the sequences need "
                             f"{spec.seq_len + 1} (CLS + features.sequence_length)")
        if mlm.get_input_embeddings().num_embeddings != spec.vocab_size:
            mlm.resize_token_embeddings(spec.vocab_size)
        return mlm
    return AutoModelForMaskedLM.from_config(build_encoder_config(spec))


class ArmHeads(nn.Module):
    """One independent two-layer head per arm on the shared representation (TARNet)."""

    def __init__(self, n_arms: int, width: int, outputs: int = ARM_OUTPUTS):
        super().__init__()
        bound = 1.0 / math.sqrt(width)
        self.w1 = nn.Parameter(torch.empty(n_arms, width, width).uniform_(-bound, bound))
        self.b1 = nn.Parameter(torch.zeros(n_arms, width))
        self.w2 = nn.Parameter(torch.empty(n_arms, width, outputs).uniform_(-bound, bound))
        self.b2 = nn.Parameter(torch.zeros(n_arms, outputs))

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(torch.einsum("bh,ahk->bak", rep, self.w1) + self.b1)
        return torch.einsum("bak,ako->bao", hidden, self.w2) + self.b2


class PeriodicEmbeddings(nn.Module):
    """Per-feature periodic embeddings of numeric inputs (the "PLR" of Gorishniy, Rubachev & Babenko,
    *On Embeddings for Numerical Features in Tabular Deep Learning*, NeurIPS 2022).

    Feature j of x (B, F) -> [sin(2 pi c_j x_j), cos(2 pi c_j x_j)] with k learned frequencies c_j
    (initialised N(0, ``scale``)) -> its own linear map to ``dim`` -> ReLU; the output is
    (B, F * dim) followed by x itself, so the MLP behind it still sees every raw value.
    """

    def __init__(self, n_features: int, frequencies: int = 16, dim: int = 8, scale: float = 0.1):
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, frequencies) * scale)
        self.weight = nn.Parameter(torch.empty(n_features, 2 * frequencies, dim))
        self.bias = nn.Parameter(torch.zeros(n_features, dim))
        bound = 1.0 / math.sqrt(2 * frequencies)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.out_features = n_features * dim + n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * self.frequencies.to(x.dtype) * x.unsqueeze(-1)         # (B, F, k)
        periodic = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)         # (B, F, 2k)
        emb = torch.relu(torch.einsum("bfk,fkd->bfd", periodic, self.weight.to(x.dtype)) + self.bias.to(x.dtype))
        return torch.cat([emb.flatten(1), x], dim=1)


class MultiTaskModel(nn.Module):
    """Encoder over ``[CLS] + tokens`` and an MLP over tabular features, feeding every head."""

    def __init__(self, spec: ModelSpec, mlm: nn.Module):
        super().__init__()
        self.spec = spec
        self.mlm = mlm
        enc_hidden = int(mlm.config.hidden_size)
        tab, width, drop = spec.tabular_hidden, spec.head_hidden, spec.encoder.dropout
        layers: list[nn.Module] = []
        tab_in = spec.n_features
        if spec.tabular_embedding == "periodic" and spec.n_features > 0:
            layers.append(PeriodicEmbeddings(spec.n_features))
            tab_in = layers[0].out_features
        self.tabular = nn.Sequential(*layers, nn.Linear(tab_in, tab), nn.GELU(), nn.Dropout(drop),
                                     nn.Linear(tab, tab), nn.GELU())
        self.trunk = nn.Sequential(nn.Linear(enc_hidden + tab, width), nn.GELU(), nn.Dropout(drop),
                                   nn.Linear(width, width), nn.GELU())
        self.value_head = nn.Linear(width, 3)
        self.churn_head = nn.Linear(width, 1)
        arm_outputs = ARM_OUTPUTS + (LONG_OUTPUTS if spec.long_term else 0)
        self.arm_heads = ArmHeads(spec.n_arms, width, arm_outputs) if spec.n_arms > 0 else None
        # delta: arm_heads holds the per-arm deltas (row 0, the control's, is never used)
        self.base_arm = ArmHeads(1, width, arm_outputs) if spec.n_arms > 0 and spec.arm_heads == "delta" else None
        self.encoder_frozen = False
        self.propensity_head = nn.Linear(width, spec.n_arms) if spec.propensity and spec.n_arms > 1 else None
        # per-event text fusion: no bias, so an event without text (zeros) adds exactly nothing
        self.text_proj = nn.Linear(spec.text_dims, enc_hidden, bias=False) if spec.text_dims > 0 else None

    def _with_cls(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # A leading CLS keeps every row attendable, even a user without any event.
        ids = tokens.long().clamp(min=0)
        ids = torch.where(ids >= self.spec.vocab_size, torch.full_like(ids, UNK_ID), ids)
        lead = torch.full((ids.shape[0], 1), CLS_ID, dtype=ids.dtype, device=ids.device)
        attn = torch.cat([torch.ones_like(lead), (mask > 0).long()], dim=1)
        return torch.cat([lead, ids], dim=1), attn

    def _states(self, ids: torch.Tensor, attn: torch.Tensor, text: Optional[torch.Tensor]) -> torch.Tensor:
        """Encoder states of ``[CLS] + tokens``; with text fusion each event's projected text is added
        to its token embedding (CLS and padding get none; zeros add exactly nothing)."""
        if self.text_proj is None or text is None:
            return self.mlm.base_model(input_ids=ids, attention_mask=attn).last_hidden_state
        batch, length = ids.shape[0], ids.shape[1] - 1
        text = text.reshape(batch, length, self.spec.text_dims)
        embeds = self.mlm.get_input_embeddings()(ids)
        fused = self.text_proj(text.to(embeds.dtype)) * attn[:, 1:].unsqueeze(-1).to(embeds.dtype)
        embeds = embeds + torch.cat([torch.zeros_like(embeds[:, :1]), fused], dim=1)
        return self.mlm.base_model(inputs_embeds=embeds, attention_mask=attn).last_hidden_state

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor, text: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, hidden) summary of each sequence: the CLS state or the masked mean.

        ``text``: (B, L * k) or (B, L, k) per-event text (seq_text) for a model with
        ``spec.text_dims`` = k; ignored without (None: no text, the same as all zeros).
        """
        ids, attn = self._with_cls(tokens, mask)
        states = self._states(ids, attn, text)
        if self.spec.encoder.pooling == "cls":
            return states[:, 0]
        weights = attn.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, tabular: Optional[torch.Tensor] = None,
                mlm_labels: Optional[torch.Tensor] = None, text: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Raw head outputs; given ``mlm_labels`` (B, L) only the masked-event logits for pretraining.

        Pretraining returns ``mlm_logits`` (N, vocab) and ``mlm_labels`` (N,) for the N picked
        positions only: the vocabulary projection is the costliest layer, and the other ~85 % of
        positions carry no loss. Pretraining sees the tokens only (no text fusion). ``text``: see
        :meth:`encode`.
        """
        if mlm_labels is not None:
            ids, attn = self._with_cls(tokens, mask)
            picked = mlm_labels != IGNORE_INDEX
            head = self._mlm_head()
            if head is None:
                logits = self.mlm(input_ids=ids, attention_mask=attn).logits[:, 1:][picked]
            else:
                states = self.mlm.base_model(input_ids=ids, attention_mask=attn).last_hidden_state[:, 1:]
                logits = head(states[picked])
            return {"mlm_logits": logits, "mlm_labels": mlm_labels[picked]}
        args = (tokens, mask) if text is None or self.text_proj is None else (tokens, mask, text)
        if self.encoder_frozen:
            with torch.no_grad():
                pooled = self.encode(*args)
        else:
            pooled = self.encode(*args)
        drop = self.spec.sequence_dropout
        if self.training and drop > 0:
            # modality dropout: a row's whole sequence vector, inverted scaling (inference sees it all)
            keep = (torch.rand(pooled.shape[0], 1, device=pooled.device) >= drop).to(pooled.dtype)
            pooled = pooled * keep / (1.0 - drop)
        rep = self.trunk(torch.cat([pooled, self.tabular(tabular.to(pooled.dtype))], dim=1))
        out = {"value": self.value_head(rep), "churn": self.churn_head(rep).squeeze(-1)}
        if self.arm_heads is not None:
            arm = self.arm_heads(rep)
            if self.base_arm is not None:
                delta = torch.cat([torch.zeros_like(arm[:, :1]), arm[:, 1:]], dim=1)
                arm = self.base_arm(rep) + delta
            out["arm"] = arm
        if self.propensity_head is not None:
            out["propensity"] = self.propensity_head(rep)
        return out

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The event encoder's parameters (transformers model + its MLM head, and the text projection
        that feeds it): their own optimiser group."""
        extra = list(self.text_proj.parameters()) if self.text_proj is not None else []
        return list(self.mlm.parameters()) + extra

    def freeze_encoder(self) -> None:
        """Stop training the encoder: no gradients, eval mode (no dropout), forward under no_grad.

        The rest (tabular MLP, trunk, heads) trains on. Idempotent; :meth:`train` keeps the
        encoder in eval mode from now on.
        """
        for p in self.mlm.parameters():
            p.requires_grad_(False)
        if self.text_proj is not None:  # it feeds the encoder, which then runs under no_grad
            for p in self.text_proj.parameters():
                p.requires_grad_(False)
        self.encoder_frozen = True
        self.mlm.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder_frozen:
            self.mlm.eval()
        return self

    def _mlm_head(self) -> Optional[nn.Module]:
        # BERT-style models call their masked-LM head "cls", RoBERTa-style ones "lm_head"
        for name in ("cls", "lm_head"):
            head = getattr(self.mlm, name, None)
            if isinstance(head, nn.Module):
                return head
        return None

    @torch.no_grad()
    def set_output_bias(self, stats: dict[str, float]) -> None:
        """Start the heads at the label base rates, so early steps learn signal, not scale.

        Args:
            stats: ``p_purchase``, ``log_mean``, ``log_std`` (value), ``p_churn``, and for
                arms ``p_converted``, ``p_response``, ``response_log_mean``, ``response_log_std``.
        """
        def logit(p: float) -> float:
            p = min(max(p, 1e-4), 1 - 1e-4)
            return math.log(p / (1 - p))

        def inv_softplus(s: float) -> float:
            s = max(s, 0.05)
            return s + math.log(-math.expm1(-s))

        self.value_head.bias.copy_(torch.tensor(
            [logit(stats.get("p_purchase", 0.5)), stats.get("log_mean", 0.0), inv_softplus(stats.get("log_std", 1.0))]))
        self.churn_head.bias.fill_(logit(stats.get("p_churn", 0.5)))
        if self.arm_heads is not None:
            base = [logit(stats.get("p_converted", 0.5)), logit(stats.get("p_response", 0.5)),
                    stats.get("response_log_mean", 0.0), inv_softplus(stats.get("response_log_std", 1.0))]
            if self.spec.long_term:  # the horizon's spend of exposed users starts at every user's base rates
                base += [logit(stats.get("p_purchase", 0.5)), stats.get("log_mean", 0.0),
                         inv_softplus(stats.get("log_std", 1.0))]
            base = torch.tensor(base)
            if self.base_arm is not None:  # delta: the base head starts at the base rates, every delta at 0
                self.base_arm.b2.copy_(base.expand_as(self.base_arm.b2))
                self.arm_heads.b2.zero_()
            else:
                self.arm_heads.b2.copy_(base.expand_as(self.arm_heads.b2))


def build_model(spec: ModelSpec, encoder_config: Any = None) -> MultiTaskModel:
    """A fresh :class:`MultiTaskModel` (random heads; encoder as in :func:`build_masked_lm`)."""
    return MultiTaskModel(spec, build_masked_lm(spec, encoder_config))


def head_predictions(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Business quantities from raw head outputs (float64): value, quantiles, churn, per-arm outcomes."""
    value = out["value"].double()
    logit, mu, sigma = value[:, 0], value[:, 1], ziln_sigma(value[:, 2])
    preds = {
        "expected_value": ziln_expected_value(logit, mu, sigma),
        "p_purchase": torch.sigmoid(logit),
        "value_p10": ziln_quantile(logit, mu, sigma, 0.1),
        "value_p90": ziln_quantile(logit, mu, sigma, 0.9),
        "churn_probability": torch.sigmoid(out["churn"].double()),
    }
    if "arm" in out:
        arm = out["arm"].double()
        preds["arm_conversion"] = torch.sigmoid(arm[..., 0])
        preds["arm_value"] = ziln_expected_value(arm[..., 1], arm[..., 2], ziln_sigma(arm[..., 3]))
        if arm.shape[-1] >= ARM_OUTPUTS + LONG_OUTPUTS:
            preds["arm_value_long"] = ziln_expected_value(arm[..., 4], arm[..., 5], ziln_sigma(arm[..., 6]))
    if "propensity" in out:
        preds["arm_propensity"] = torch.softmax(out["propensity"].double(), dim=-1)
    return preds


def predict_arrays(model: MultiTaskModel, meta: ModelMeta, tokens: np.ndarray, mask: np.ndarray,
                   tabular: np.ndarray, device: str = "cpu", text: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Predictions for a batch of users from raw inputs (no Spark, no pandas).

    Args:
        model: a loaded model (:func:`ulv_spark.train.artifacts.load_model`), in eval mode.
        meta: its :class:`~ulv_spark.train.spec.ModelMeta` (feature order and statistics).
        tokens, mask: int (B, L) event tokens and attention mask, L = ``meta.seq_len``.
        tabular: float (B, F) RAW features in ``meta.feature_columns`` order; NaN allowed.
        device: torch device string.
        text: float (B, L * k) per-event text (seq_text) for a model with ``spec.text_dims`` = k;
            None = none (zeros). Ignored by a model without text fusion.

    Returns:
        ``expected_value``, ``p_purchase``, ``value_p10``, ``value_p90``, ``churn_probability``
        (B,) and ``arm_conversion``, ``arm_value`` (B, A) with A = len(meta.arms), control at
        index 0 ((B, 0) without arms); ``arm_value_long`` (B, A) with the long-term head, else
        (B, 0); plus ``arm_propensity`` (B, A) when the model has that head.
        ``meta.calibration`` is applied: expected value and churn probability through the
        stored maps (stacked with the model's tree companion where it has one, train.tree_blend),
        value_p10 / p90 scaled by calibrated / raw expected value (identity for models saved
        without calibration).
    """
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    tabular = np.asarray(tabular, dtype=np.float64).reshape(len(tokens), -1)
    if tokens.ndim != 2 or tokens.shape != mask.shape or tokens.shape[1] != meta.seq_len:
        raise ValueError(f"tokens and mask must both be (B, {meta.seq_len}); got {tokens.shape} and {mask.shape}")
    if tabular.shape[1] != len(meta.feature_columns):
        raise ValueError(f"tabular must have {len(meta.feature_columns)} columns "
                         f"({', '.join(meta.feature_columns[:5])}...); got {tabular.shape[1]}")
    n_arms = len(meta.arms)
    features = standardise(tabular, meta.feature_mean, meta.feature_std)
    dims = int(getattr(model.spec, "text_dims", 0))
    if dims > 0 and text is not None:
        text = np.asarray(text, dtype=np.float32).reshape(len(tokens), -1)
        if text.shape[1] != meta.seq_len * dims:
            raise ValueError(f"text must be (B, {meta.seq_len * dims}) (seq_len x text_dims); got {text.shape}")
    else:
        text = None
    keys = list(SCALAR_OUTPUTS)
    chunks: dict[str, list[np.ndarray]] = {}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(tokens), PREDICT_CHUNK):
            sl = slice(start, start + PREDICT_CHUNK)
            out = model(torch.as_tensor(tokens[sl], dtype=torch.long, device=device),
                        torch.as_tensor(mask[sl], dtype=torch.long, device=device),
                        torch.as_tensor(features[sl], device=device),
                        text=None if text is None else torch.as_tensor(text[sl], device=device))
            for key, value in head_predictions(out).items():
                chunks.setdefault(key, []).append(value.cpu().numpy())
    model.train(was_training)
    result = {k: np.concatenate(chunks[k]) if k in chunks else np.zeros(0) for k in keys}
    calibration = PowerCalibration.from_dict(meta.calibration)
    calibrate(result, calibration, **tree_predictions(model, calibration, features))
    for key in ("arm_conversion", "arm_value", "arm_value_long", "arm_propensity"):
        if key in chunks:
            result[key] = np.concatenate(chunks[key])
        elif key == "arm_value_long":
            result[key] = np.zeros((len(tokens), 0))   # no long-term head: nothing, not a fake number
        elif key != "arm_propensity":
            result[key] = np.zeros((len(tokens), n_arms))
    return result


def tree_predictions(model, calibration: PowerCalibration, features: np.ndarray) -> dict[str, Optional[np.ndarray]]:
    """{"tree_value", "tree_churn"}: the tree companion's predictions on the standardised ``features``
    for the maps of ``calibration`` that stack them (None for the others).

    Raises:
        ValueError: the calibration stacks trees but the model was loaded without them (no trees.pkl).
    """
    out: dict[str, Optional[np.ndarray]] = {"tree_value": None, "tree_churn": None}
    if not calibration.uses_trees:
        return out
    trees = getattr(model, "trees", None)
    if trees is None:
        raise ValueError("the model's calibration stacks the tree companion (train.tree_blend) but the model "
                         "has none: load it with ulv_spark.train.artifacts.load_model from a directory with trees.pkl")
    if calibration.value_tree:
        out["tree_value"] = trees.predict_value(features)
    if calibration.churn_tree:
        out["tree_churn"] = trees.predict_churn(features)
    return out


def calibrate(predictions: dict[str, np.ndarray], calibration: PowerCalibration, *,
              tree_value: Optional[np.ndarray] = None, tree_churn: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Apply ``calibration`` in place to expected_value, value_p10 / p90 (same ratio) and churn_probability.

    ``tree_value`` / ``tree_churn``: the tree companion's predictions for the same rows, needed by a
    calibration that stacks them (:func:`tree_predictions`).
    """
    if calibration.is_identity or not len(predictions.get("expected_value", ())):
        return predictions
    raw = np.asarray(predictions["expected_value"], dtype=np.float64)
    ev = calibration.value(raw, tree_value)
    ratio = np.where(raw > 0, ev / np.where(raw > 0, raw, 1.0), 1.0)
    predictions["expected_value"] = ev
    for key in ("value_p10", "value_p90"):
        predictions[key] = np.asarray(predictions[key], dtype=np.float64) * ratio
    predictions["churn_probability"] = calibration.churn(predictions["churn_probability"], tree_churn)
    return predictions
