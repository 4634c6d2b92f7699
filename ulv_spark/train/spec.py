"""What a model is and what a training run needs: plain frozen dataclasses, torch- and Spark-free.

* :class:`ModelSpec` — the architecture (``model_spec.json``): the data's shapes plus the
  ``train.encoder`` conf section and the widths of the tabular MLP and the trunk;
* :class:`ModelMeta` — what a trained model expects and means (``meta.json``);
* :class:`TrainSpec` — everything one rank needs to train: the ``train`` conf section as
  loaded, the model spec and meta, the feeds and this run's checkpoint directory.

All three pickle (TorchDistributor ships a TrainSpec to every process) and open where torch
is not imported yet (Spark executors, the nightly's ``training_due``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ulv_spark.config import EncoderConf, TrainConf
from ulv_spark.train.feed import FeedSpec
from ulv_spark.train.scaling import FEATURE_TRANSFORM

# model_spec.json is flat (as written before the encoder was held as its conf section): every
# EncoderConf field under its own name, except local_dir, which is "encoder_local_dir" there.
_ENCODER_JSON_KEYS = {"local_dir": "encoder_local_dir"}
# keys added later are written only when they differ from what a file without them means, so a
# model of the earlier kind writes exactly the file it was read from
_LATER_KEYS = {"arm_heads": "tarnet", "sequence_dropout": 0.0, "long_term": False, "text_dims": 0,
               "tabular_embedding": "none"}


def _known(cls, data: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a :class:`~ulv_spark.train.model.MultiTaskModel` (model_spec.json in the model dir)."""

    vocab_size: int
    seq_len: int
    n_features: int
    n_arms: int
    encoder: EncoderConf = field(default_factory=EncoderConf)  # train.encoder; its dropout also drops in the MLPs
    tabular_hidden: int = 64       # train.tabular_hidden
    head_hidden: int = 64          # train.head_hidden
    propensity: bool = False       # add a propensity head (targeted, non-randomised campaigns)
    # train.arm_heads; "tarnet" where model_spec.json has no such key (models written before the delta heads)
    arm_heads: str = "tarnet"
    sequence_dropout: float = 0.0  # train.sequence_dropout (training only; inference never drops)
    # train.long_term_uplift: arm heads also predict the horizon's spend per arm; False where
    # model_spec.json has no such key (models written before the long-term head)
    long_term: bool = False
    # per-event text fusion (train.text_fusion): the k = features.text_dims components per event of
    # seq_text, projected to the encoder width and added to the token embeddings; 0 = none (also
    # where model_spec.json has no such key: models written before the fusion)
    text_dims: int = 0
    # train.tabular_embedding: "periodic" = each standardised feature through its own periodic
    # embedding (sin/cos of learned frequencies -> linear -> ReLU) before the tabular MLP; "none"
    # (also where model_spec.json has no such key: models written before it) = the plain MLP
    tabular_embedding: str = "none"

    def to_dict(self) -> dict:
        """The flat model_spec.json mapping (readable by every version of :meth:`from_dict`)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "encoder" and not (f.name in _LATER_KEYS and getattr(self, f.name) == _LATER_KEYS[f.name])}
        for name, value in dataclasses.asdict(self.encoder).items():
            key = _ENCODER_JSON_KEYS.get(name, name)
            if key in data:  # pragma: no cover - a new field that would collide in the flat file
                raise ValueError(f"model_spec.json: encoder field {name!r} collides with ModelSpec.{key}")
            data[key] = value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        """From model_spec.json; unknown keys (written by newer versions) are ignored."""
        encoder = {name: data[_ENCODER_JSON_KEYS.get(name, name)] for name in (f.name for f in dataclasses.fields(EncoderConf))
                   if _ENCODER_JSON_KEYS.get(name, name) in data}
        return cls(**_known(cls, {k: v for k, v in data.items() if k != "encoder"}), encoder=EncoderConf(**encoder))


def model_spec(train_cfg: TrainConf, *, vocab_size: int, seq_len: int, n_features: int, n_arms: int,
               text_dims: int = 0) -> ModelSpec:
    """The architecture from the ``train`` conf section and the data's shapes.

    ``text_dims``: per-event text components the examples carry (seq_text; 0 = none); the model
    fuses them only with ``train.text_fusion``, so without text both settings give the same spec.
    """
    enc = train_cfg.encoder
    if enc.local_dir:  # resolved now: the ranks may run in another working directory
        enc = dataclasses.replace(enc, local_dir=str(Path(enc.local_dir).expanduser().resolve()))
    return ModelSpec(vocab_size=vocab_size, seq_len=seq_len, n_features=n_features, n_arms=n_arms, encoder=enc,
                     tabular_hidden=train_cfg.tabular_hidden, head_hidden=train_cfg.head_hidden,
                     propensity=not train_cfg.randomised_assignment, arm_heads=train_cfg.arm_heads,
                     sequence_dropout=train_cfg.sequence_dropout, long_term=train_cfg.long_term_uplift,
                     text_dims=int(text_dims) if train_cfg.text_fusion else 0,
                     tabular_embedding=train_cfg.tabular_embedding)


@dataclass(frozen=True)
class ModelMeta:
    """What a trained model expects and means; saved as meta.json in the model directory.

    ``feature_mean`` / ``feature_std`` are statistics of sign(x) * log1p(|x|) of each raw
    feature (see ``feature_transform``); :func:`ulv_spark.train.model.predict_arrays` applies
    the transform and the standardisation itself, so callers pass raw values.
    """

    version: str                  # model directory name, sortable (UTC time based)
    feature_columns: list[str]    # tabular inputs in model order
    feature_mean: list[float]
    feature_std: list[float]
    seq_len: int
    vocab_size: int
    vocab_fingerprint: str
    arms: list[str]               # arms[0] is the control; [] when no campaigns
    arm_campaigns: dict[str, str]  # arm -> campaign_id it was trained on
    horizon_days: int
    trained_as_of: str            # ISO date of the training run
    feature_transform: str = FEATURE_TRANSFORM  # applied to raw features before standardising
    # post-hoc maps (see ulv_spark.train.calibration): value_a, value_b, churn_c, churn_d and, with
    # train.calibration = isotonic, value_knots; {} (models written before calibration) = identity
    calibration: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelMeta":
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class TrainSpec:
    """Everything one rank needs to train (picklable: TorchDistributor ships it to every process).

    The optimisation settings, seed, loss weights, resume / stop_after_epochs and where model
    versions go (``train.model_dir``) are read from ``train``, the conf section itself; the
    other fields are what the driver derived from the data and the cluster.
    """

    train: TrainConf                  # the ``train`` conf section
    model: ModelSpec
    meta: ModelMeta                   # version "" -> assigned when the model directory is written
    train_feed: FeedSpec
    val_feed: Optional[FeedSpec]
    checkpoint_dir: str               # this run's checkpoints (shared storage)
    batch_size: int                   # per process: train.batch_size, shrunk so every rank gets a batch
    use_gpu: bool = False             # train.use_gpu where a GPU can be had (see launch.resolve_gpu)
    pretrain_feed: Optional[FeedSpec] = None    # sequences for pretraining; None = train_feed
    label_stats: dict = field(default_factory=dict)   # base rates for the output biases
    conf: dict = field(default_factory=dict)          # the whole resolved conf, saved with the model

    def restarted(self) -> "TrainSpec":
        """The same run, ignoring (and clearing) its checkpoints: ``--fresh``."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, resume=False))
