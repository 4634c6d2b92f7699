"""The training feed: training_examples -> model-ready rows -> batches per rank.

Two halves:

* driver side (Spark, pure DataFrame -> DataFrame plus small aggregates):
  :func:`split_examples` (a user-hash share at every origin, or :func:`split_by_origin`),
  :func:`exposure_rows` (the arm catalogue of all training rows), :func:`training_statistics`
  (feature scaling, label base rates and the fit split's arms in one aggregate) and
  :func:`prepare_feed_frame`; then materialise the
  rows for one of two loaders — Petastorm (:func:`make_petastorm_feed`, ``make_spark_converter``)
  or Arrow (:func:`write_arrow_feed`, plain Parquet files);
* rank side (no Spark): :func:`open_batches` gives an endless iterator of torch batches for
  (rank, world) plus a fixed ``steps_per_epoch``, identical on every rank, so DDP ranks never
  disagree on the number of all-reduces (Petastorm shards by row group, so per-rank row
  counts differ).

Feed rows (grain: one row per training example, i.e. per (user_id, origin_date)):
``row_id`` BIGINT (xxhash64 of user_id, origin_date), ``tokens`` / ``mask`` ARRAY<INT> (L),
``features`` ARRAY<FLOAT> (standardised), ``y_value``, ``y_churn``, ``y_converted``,
``y_response`` FLOAT (0 when not exposed) and ``arm_index`` INT (-1: not exposed), plus
``text`` ARRAY<FLOAT> (L * k, zeros for a row without seq_text) for a model with text fusion. The
optional pretraining feed (all users' sequences, labels or not) has ``row_id``, ``tokens``,
``mask`` only.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ulv_spark import schemas as S
from ulv_spark.train.scaling import signed_log1p_column, standardised_features_column

ROW_ID, TOKENS, MASK, FEATURES, TEXT = "row_id", "tokens", "mask", "features", "text"
Y_VALUE, Y_CHURN, Y_CONVERTED, Y_RESPONSE, ARM_INDEX = "y_value", "y_churn", "y_converted", "y_response", "arm_index"
FEED_COLUMNS = (ROW_ID, TOKENS, MASK, FEATURES, Y_VALUE, Y_CHURN, Y_CONVERTED, Y_RESPONSE, ARM_INDEX, TEXT)
FEED_META_FILE = "feed.json"  # next to train/ and val/ of an exported feed (torchrun_main reads it)
CONTROL_ARM = "control"


# --------------------------------------------------------------------------------------------
# Driver side (Spark)
# --------------------------------------------------------------------------------------------
def split_by_origin(examples, *, validation_share: float, origins: list):
    """Hold out the newest origin dates as validation (time-based split).

    With k origins, the newest max(1, round(k * share)) are held out, but always at least one
    stays for training. With a single origin there is no time to split on, so a stable hash
    of user_id picks ``share`` of the users instead.

    Args:
        examples: training_examples rows.
        validation_share: share of origins (or users) held out; 0 = no validation.
        origins: the distinct origin dates of ``examples`` (see ``prepare.profile_examples``).

    Returns:
        (train DataFrame, validation DataFrame or None, held-out origin dates as ISO strings).
    """
    from pyspark.sql import functions as F

    if validation_share <= 0:
        return examples, None, []
    origins = sorted(origins)
    if len(origins) >= 2:
        held = origins[-min(len(origins) - 1, max(1, round(len(origins) * validation_share))):]
        is_val = F.col(S.ORIGIN_DATE).isin(held)
        return examples.filter(~is_val), examples.filter(is_val), [d.isoformat() for d in held]
    bucket = F.pmod(F.xxhash64(F.col(S.USER_ID)), F.lit(HASH_BUCKETS)) < F.lit(int(validation_share * HASH_BUCKETS))
    return examples.filter(~bucket), examples.filter(bucket), []


HASH_BUCKETS = 10_000


def user_hash_holdout(share: float):
    """Column: True for the users held out by hash, ``pmod(xxhash64(user_id), 10000) < share * 10000``.

    A function of user_id alone, so the same users are held out at every origin (no user is in
    both parts) and in every run.
    """
    from pyspark.sql import functions as F

    return (F.pmod(F.xxhash64(F.col(S.USER_ID)), F.lit(HASH_BUCKETS))
            < F.lit(int(round(share * HASH_BUCKETS))))


def split_examples(examples, *, method: str, validation_share: float, origins: list):
    """(fit rows, validation rows or None, held-out origin dates as ISO strings) of the examples.

    ``method`` "hash" (default, ``train.validation_split``): the users of
    :func:`user_hash_holdout` at every origin, so every origin (and every campaign) is in both
    parts; "origin": :func:`split_by_origin` (newest origins held out). Share 0: no validation.
    """
    if method == "origin":
        return split_by_origin(examples, validation_share=validation_share, origins=origins)
    if method != "hash":
        raise ValueError(f"unknown train.validation_split {method!r} (hash or origin)")
    if validation_share <= 0:
        return examples, None, []
    held = user_hash_holdout(validation_share)
    return examples.filter(~held), examples.filter(held), []


@dataclass(frozen=True)
class TrainingStatistics:
    """What the driver learns about the training split: feature scaling, label base rates, arms."""

    feature_mean: list
    feature_std: list
    labels: dict            # p_purchase, log_mean, log_std, p_churn, p_converted, p_response, response_log_*
    arms: list              # control first; [] without campaigns
    arm_campaigns: dict     # arm -> campaign_id


def training_statistics(train, feature_columns: list[str]) -> TrainingStatistics:
    """Feature mean/std of sign(x)*log1p(|x|), label base rates and the arm catalogue in one pass.

    One aggregate row reaches the driver: numbers plus the distinct (campaign, arm, is_control,
    origin) combinations, which are few. NaN and null features are left out of the statistics;
    a feature with no spread gets std 1.
    """
    from pyspark.sql import functions as F

    aggs = []
    for i, name in enumerate(feature_columns):
        t = signed_log1p_column(F.col(name))
        aggs += [F.avg(t).alias(f"m{i}"), F.stddev_pop(t).alias(f"s{i}")]
    value = F.col(S.LABEL_VALUE).cast("double")
    response = F.col(S.LABEL_RESPONSE_VALUE).cast("double")
    exposed = F.col(S.ARM).isNotNull()
    labels = {
        "p_purchase": F.avg((value > 0).cast("double")),
        "log_mean": F.avg(F.when(value > 0, F.log(value))),
        "log_std": F.stddev_pop(F.when(value > 0, F.log(value))),
        "p_churn": F.avg(F.col(S.LABEL_CHURNED).cast("double")),
        "p_converted": F.avg(F.when(exposed, F.coalesce(F.col(S.LABEL_CONVERTED).cast("double"), F.lit(0.0)))),
        "p_response": F.avg(F.when(exposed, (F.coalesce(response, F.lit(0.0)) > 0).cast("double"))),
        "response_log_mean": F.avg(F.when(exposed & (response > 0), F.log(response))),
        "response_log_std": F.stddev_pop(F.when(exposed & (response > 0), F.log(response))),
    }
    aggs += [column.alias(f"label_{name}") for name, column in labels.items()]
    arm_row = F.struct(F.col(S.CAMPAIGN_ID).alias("campaign_id"), F.col(S.ARM).alias("arm"),
                       F.coalesce(F.col(S.IS_CONTROL), F.lit(False)).alias("is_control"),
                       F.col(S.ORIGIN_DATE).alias("origin"))
    aggs.append(F.collect_set(F.when(exposed, arm_row)).alias("arm_rows"))
    row = train.agg(*aggs).first()
    n = len(feature_columns)
    mean = [float(row[f"m{i}"]) if row[f"m{i}"] is not None else 0.0 for i in range(n)]
    std = [float(row[f"s{i}"]) if row[f"s{i}"] is not None and row[f"s{i}"] > 1e-9 else 1.0 for i in range(n)]
    label_stats = {name: float(row[f"label_{name}"]) for name in labels if row[f"label_{name}"] is not None}
    arms, arm_campaigns = arms_from_exposures([r.asDict() for r in row["arm_rows"]])
    return TrainingStatistics(mean, std, label_stats, arms, arm_campaigns)


def exposure_rows(examples) -> list[dict]:
    """The distinct ``{campaign_id, arm, is_control, origin}`` of the exposed rows (one small aggregate)."""
    from pyspark.sql import functions as F

    arm_row = F.struct(F.col(S.CAMPAIGN_ID).alias("campaign_id"), F.col(S.ARM).alias("arm"),
                       F.coalesce(F.col(S.IS_CONTROL), F.lit(False)).alias("is_control"),
                       F.col(S.ORIGIN_DATE).alias("origin"))
    row = examples.agg(F.collect_set(F.when(F.col(S.ARM).isNotNull(), arm_row)).alias("arm_rows")).first()
    return [r.asDict() for r in row["arm_rows"]]


def check_arms_learnable(arms: list[str], arm_campaigns: dict, fit_arms: list[str], *, split: str) -> None:
    """Fail when an arm of the catalogue (all training rows) has no row in the fit split.

    Raises:
        ValueError: naming the arm(s), their campaign and the split that hid them.
    """
    missing = [a for a in arms if a not in set(fit_arms)]
    if missing:
        named = ", ".join(f"arm {a!r} of campaign {arm_campaigns.get(a)!r}" for a in missing)
        raise ValueError(f"the training examples carry exposures, but {named} {'has' if len(missing) == 1 else 'have'} "
                         f"no row in the fit split (train.validation_split={split}): no head could learn "
                         f"{'it' if len(missing) == 1 else 'them'}; use "
                         f"train.validation_split: hash or lower train.validation_share")


def arms_from_exposures(rows: list[dict]) -> tuple[list[str], dict[str, str]]:
    """The arms to model (control first) and the campaign each arm's head is trained on.

    Args:
        rows: distinct ``{campaign_id, arm, is_control, origin}`` of exposed examples.

    The control is the arm named "control" if there is one, else the arm flagged is_control in
    most (campaign, origin) combinations. An arm name seen in several campaigns is tied to its
    most recent campaign (latest origin, then campaign_id).

    Returns:
        (arms, {arm: campaign_id}); ([], {}) without exposures.

    Raises:
        ValueError: exposures exist but no arm is the control.
    """
    if not rows:
        return [], {}
    latest: dict[str, tuple] = {}
    control_votes: dict[str, int] = {}
    for r in rows:
        key = (r["origin"], r["campaign_id"] or "")
        if r["arm"] not in latest or key > latest[r["arm"]]:
            latest[r["arm"]] = key
        control_votes[r["arm"]] = control_votes.get(r["arm"], 0) + int(bool(r["is_control"]))
    if CONTROL_ARM in latest:
        control = CONTROL_ARM
    else:
        control = max(sorted(control_votes), key=lambda a: control_votes[a])
        if control_votes[control] == 0:
            raise ValueError(f"no control arm: none is named '{CONTROL_ARM}' or flagged is_control "
                             f"(arms: {sorted(latest)})")
    arms = [control] + sorted(a for a in latest if a != control)
    return arms, {a: latest[a][1] for a in arms}


def prepare_feed_frame(examples, *, feature_columns: list[str], mean: list[float], std: list[float],
                       arms: list[str], seq_len: int, text_dims: int = 0):
    """training_examples rows -> feed rows (see the module docstring for the columns).

    Grain: one row per input row. Rows whose arm is not in ``arms`` count as not exposed;
    missing sequences become all-padding, null labels 0; with ``text_dims`` = k > 0 the
    ``text`` column is seq_text (zeros where null).
    """
    from pyspark.sql import functions as F

    arm_index = F.lit(-1)
    for i, arm in reversed(list(enumerate(arms))):
        arm_index = F.when(F.col(S.ARM) == F.lit(arm), F.lit(i)).otherwise(arm_index)
    padding = F.array_repeat(F.lit(0), seq_len)
    exposed = arm_index >= 0
    return examples.select(
        F.xxhash64(F.col(S.USER_ID), F.col(S.ORIGIN_DATE)).alias(ROW_ID),
        F.coalesce(F.col(S.SEQ_TOKENS).cast("array<int>"), padding).alias(TOKENS),
        F.coalesce(F.col(S.SEQ_MASK).cast("array<int>"), padding).alias(MASK),
        standardised_features_column(feature_columns, mean, std).alias(FEATURES),
        F.greatest(F.coalesce(F.col(S.LABEL_VALUE).cast("double"), F.lit(0.0)), F.lit(0.0)).cast("float").alias(Y_VALUE),
        F.coalesce(F.col(S.LABEL_CHURNED), F.lit(0)).cast("float").alias(Y_CHURN),
        F.when(exposed, F.coalesce(F.col(S.LABEL_CONVERTED).cast("float"), F.lit(0.0))).otherwise(F.lit(0.0)).cast("float").alias(Y_CONVERTED),
        F.when(exposed, F.greatest(F.coalesce(F.col(S.LABEL_RESPONSE_VALUE).cast("double"), F.lit(0.0)), F.lit(0.0)))
        .otherwise(F.lit(0.0)).cast("float").alias(Y_RESPONSE),
        arm_index.cast("int").alias(ARM_INDEX),
        *([F.coalesce(F.col(S.SEQ_TEXT).cast("array<float>"),
                      F.array_repeat(F.lit(0.0).cast("float"), seq_len * text_dims)).alias(TEXT)]
          if text_dims > 0 else []),
    )


def sequence_feed_frame(rows, *, key_columns: list[str], seq_len: int):
    """Rows with seq_tokens / seq_mask -> pretraining feed rows (row_id, tokens, mask).

    Grain: one row per input row whose sequence has length ``seq_len``; ``row_id`` is
    xxhash64 of ``key_columns`` (e.g. user_id, as_of_date for user_features).
    """
    from pyspark.sql import functions as F

    return (rows.filter(F.size(S.SEQ_TOKENS) == F.lit(seq_len))
            .select(F.xxhash64(*[F.col(c) for c in key_columns]).alias(ROW_ID),
                    F.col(S.SEQ_TOKENS).cast("array<int>").alias(TOKENS),
                    F.col(S.SEQ_MASK).cast("array<int>").alias(MASK)))


@dataclass(frozen=True)
class FeedSpec:
    """Where a rank finds its rows: picklable, needs no Spark to open (Arrow) or only its files (Petastorm)."""

    loader: str                    # "petastorm" or "arrow"
    rows: int                      # rows in the feed (fixes steps per epoch)
    converter: object = None       # petastorm SparkDatasetConverter (loader = petastorm)
    path: Optional[str] = None     # directory of Parquet files (loader = arrow)


def file_url(path: str) -> str:
    """A local path as a file:// URL (Petastorm wants URLs); URLs pass through unchanged."""
    return path if "://" in path or path.startswith("dbfs:") else Path(path).resolve().as_uri()


def make_petastorm_feed(spark, frame, *, cache_dir: str, files: int) -> FeedSpec:
    """Materialise ``frame`` with Petastorm's ``make_spark_converter`` under ``cache_dir``.

    ``frame`` is spread round-robin over ``files`` Parquet files of near-equal size, so row
    groups (Petastorm's shard unit) balance across ranks; the same input partitions give the
    same files. Call :func:`delete_feed` when done.
    """
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    _quiet_petastorm_warnings()
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, file_url(cache_dir))
    converter = make_spark_converter(frame.repartition(files), dtype="float32")
    # the converter lists its files as Spark's inputFiles() returns them, in set order, which changes
    # from run to run (the names hold a random job id); Petastorm numbers the row groups in that
    # order and deals them to the ranks by number, so sorted they keep their order and owner
    converter = SparkDatasetConverter(converter.cache_dir_url, sorted(converter.file_urls), len(converter))
    return FeedSpec(loader="petastorm", rows=len(converter), converter=converter)


def write_arrow_feed(frame, path: str, *, files: int) -> FeedSpec:
    """Write ``frame`` as ``files`` near-equal Parquet files under ``path`` (replacing it)."""
    frame.repartition(files).write.mode("overwrite").parquet(path)
    return arrow_feed(path)


def delete_feed(spec: Optional[FeedSpec]) -> None:
    """Remove the materialised feed (Petastorm cache or Arrow Parquet directory)."""
    import shutil

    if spec is None:
        return
    if spec.loader == "petastorm" and spec.converter is not None:
        spec.converter.delete()
    elif spec.path and os.path.isdir(spec.path):
        shutil.rmtree(spec.path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Rank side (no Spark)
# --------------------------------------------------------------------------------------------
def parquet_files(path: str) -> list[str]:
    """The data files of a Parquet directory, sorted (Spark's _SUCCESS and dot files left out)."""
    return sorted(str(p) for p in Path(path).glob("*.parquet") if not p.name.startswith(("_", ".")))


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))


def arrow_feed(path: str) -> FeedSpec:
    """A :class:`FeedSpec` for an existing Arrow feed directory (e.g. copied to a GPU machine)."""
    return FeedSpec(loader="arrow", rows=_parquet_rows(path), path=path)


def steps_per_epoch(rows: int, batch_size: int, world: int, cap: int = 0) -> int:
    """Batches per rank per epoch: rows // (batch_size * world), at least 1, at most ``cap`` (0 = no cap)."""
    steps = max(1, rows // (batch_size * world))
    return min(steps, cap) if cap > 0 else steps


def usable_validation(spec: Optional[FeedSpec], world: int) -> Optional[FeedSpec]:
    """The validation feed, or None when it has fewer rows than ranks (a rank would get nothing)."""
    return spec if spec is not None and spec.rows >= world else None


def effective_batch_size(batch_size: int, rows: int, world: int) -> int:
    """The conf batch size, shrunk so every rank gets at least one full batch per epoch."""
    return max(1, min(batch_size, rows // max(world, 1)))


def covering_batch_size(rows: int, batch_size: int, world: int) -> int:
    """A batch size <= ``batch_size`` whose fixed steps cover nearly all ``rows`` (for validation)."""
    steps = max(1, -(-rows // (batch_size * world)))
    return max(1, rows // (steps * world))


def _quiet_petastorm_warnings() -> None:
    # Petastorm 0.12 on pyarrow 14 warns on every read about APIs it cannot stop using.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"petastorm\..*")
    warnings.filterwarnings("ignore", message=".*NumPy array is not writable.*")
    warnings.filterwarnings("ignore", message=".*LocalFileSystem.*")


class Batches:
    """An endless iterator of batches (dict of torch tensors) for one rank, plus its epoch length."""

    def __init__(self, iterator: Iterator[dict], steps: int):
        self._iterator = iterator
        self.steps_per_epoch = steps

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return next(self._iterator)

    def epoch(self) -> Iterator[dict]:
        """The next ``steps_per_epoch`` batches."""
        for _ in range(self.steps_per_epoch):
            yield next(self._iterator)


@contextlib.contextmanager
def open_batches(spec: FeedSpec, *, rank: int, world: int, batch_size: int, shuffle: bool = True,
                 seed: int = 0, workers: int = 1, shuffle_buffer: int = 0, steps_cap: int = 0) -> Iterator[Batches]:
    """Open this rank's share of the feed as :class:`Batches` (a context manager).

    Petastorm: ``make_torch_dataloader(cur_shard=rank, shard_count=world, num_epochs=1)``, one
    reader per pass, passes joined into an endless stream of full batches.
    Arrow: files ``rank, rank + world, ...`` of the directory read with ``pyarrow.dataset``
    (every ``world``-th row of all files when there are fewer files than ranks), cycled forever
    (shuffled file order and rows per epoch when ``shuffle``).

    The order of the batches is a function of (feed, rank, world, batch_size, seed) alone, so a
    training run can be repeated exactly, with one exception: Petastorm with ``workers`` > 1
    reader threads delivers row groups in the order the threads finish them. Petastorm reads
    one pass over the shard per reader (``num_epochs=1``; its endless mode reshuffles the
    row groups as often as its ventilator thread happens to wait), each pass with a seed of
    its own, and its shuffling queue, which draws from torch's global random generator, gets
    a seeded generator state of its own, so neither the model's dropout nor anything else that
    draws random numbers moves the data order.
    """
    steps = steps_per_epoch(spec.rows, batch_size, world, steps_cap)
    if spec.loader == "petastorm":
        _quiet_petastorm_warnings()
        stream = _petastorm_batches(spec.converter, rank=rank, world=world, batch_size=batch_size,
                                    shuffle=shuffle, seed=seed, workers=workers, shuffle_buffer=shuffle_buffer)
        try:
            yield Batches(stream, steps)
        finally:
            stream.close()  # stops the open reader's threads
    elif spec.loader == "arrow":
        yield Batches(_arrow_batches(spec.path, rank=rank, world=world, batch_size=batch_size,
                                     shuffle=shuffle, seed=seed), steps)
    else:
        raise ValueError(f"unknown loader {spec.loader!r} (petastorm or arrow)")


def _rank_seed(seed: int, rank: int, step: int = 0) -> int:
    return ((int(seed) * 1_000_003 + int(rank)) * 1_000_033 + int(step)) % (2 ** 63)


def _petastorm_batches(converter, *, rank: int, world: int, batch_size: int, shuffle: bool, seed: int,
                       workers: int, shuffle_buffer: int) -> Iterator[dict]:
    """This rank's shard, pass after pass (one seeded Petastorm reader each), in batches of exactly ``batch_size``."""
    import torch
    from petastorm.pytorch import BatchedDataLoader

    carry: Optional[dict] = None  # rows of a pass's last, short batch, completed by the next pass
    for n in itertools.count():
        pass_seed = _rank_seed(seed, 0, n)  # the same on every rank: Petastorm shards by it
        manager = converter.make_torch_dataloader(
            batch_size=batch_size, num_epochs=1, workers_count=workers,
            shuffling_queue_capacity=shuffle_buffer if shuffle else 0, data_loader_fn=BatchedDataLoader,
            cur_shard=rank, shard_count=world, shuffle_row_groups=shuffle, seed=pass_seed % (2 ** 32))
        rows = 0
        with manager as loader:
            for batch in _with_own_torch_rng(iter(loader), _rank_seed(seed, rank, n)):
                size = len(next(iter(batch.values())))
                rows += size
                if carry is None and size == batch_size:
                    yield batch
                    continue
                carry = batch if carry is None else {k: torch.cat([carry[k], v]) for k, v in batch.items()}
                while carry is not None and len(carry[ROW_ID]) >= batch_size:
                    yield {k: v[:batch_size] for k, v in carry.items()}
                    rest = {k: v[batch_size:] for k, v in carry.items()}
                    carry = rest if len(rest[ROW_ID]) else None
        if rows == 0:  # cycling an empty shard would spin forever
            raise ValueError(f"Petastorm feed: rank {rank} of {world} has no rows to read")


def _with_own_torch_rng(iterator: Iterator[dict], seed: int) -> Iterator[dict]:
    """``iterator``'s draws from torch's global CPU generator come from a seeded state of their own.

    Petastorm's ``BatchedRandomShufflingBuffer`` calls ``torch.randperm`` without a generator,
    in the thread that asks for the batch; the caller's generator state is put back after each batch.
    """
    import torch

    state = torch.Generator().manual_seed(seed).get_state()
    while True:
        outer = torch.get_rng_state()
        torch.set_rng_state(state)
        try:
            batch = next(iterator)
        except StopIteration:
            return
        finally:
            state = torch.get_rng_state()
            torch.set_rng_state(outer)
        yield batch


def _column_to_numpy(column) -> np.ndarray:
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)
    return column.to_numpy(zero_copy_only=False)


def _arrow_batches(path: str, *, rank: int, world: int, batch_size: int, shuffle: bool, seed: int) -> Iterator[dict]:
    import pyarrow.dataset as ds
    import torch

    every_file = parquet_files(path)
    if not every_file:
        raise ValueError(f"{path}: no Parquet file to read")
    # fewer files than ranks (a tiny split): every rank reads all files and keeps every world-th row
    by_row = len(every_file) < world
    dataset = ds.dataset(every_file if by_row else every_file[rank::world], format="parquet")
    fragments = list(dataset.get_fragments())
    columns = [c for c in FEED_COLUMNS if c in dataset.schema.names]
    pending: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    held, epoch = 0, 0
    while True:
        rng = np.random.default_rng([seed, rank, epoch])
        order = range(len(fragments)) if by_row or not shuffle else rng.permutation(len(fragments))
        seen, mine = 0, 0
        for i in order:
            table = fragments[i].to_table(columns=columns)
            arrays = {c: _column_to_numpy(table.column(c)) for c in columns}
            rows = table.num_rows
            if by_row:
                keep = (seen + np.arange(rows)) % world == rank
                seen += rows
                arrays = {c: a[keep] for c, a in arrays.items()}
                rows = int(keep.sum())
            if shuffle:
                perm = rng.permutation(rows)
                arrays = {c: a[perm] for c, a in arrays.items()}
            for c in columns:
                pending[c].append(arrays[c])
            held += rows
            mine += rows
            if held < batch_size:
                continue
            joined = {c: np.concatenate(pending[c]) for c in columns}
            start = 0
            while held - start >= batch_size:
                yield {c: torch.from_numpy(np.ascontiguousarray(joined[c][start:start + batch_size])) for c in columns}
                start += batch_size
            pending = {c: [joined[c][start:]] for c in columns}
            held -= start
        if mine == 0:  # cycling an empty shard would spin forever
            raise ValueError(f"{path}: rank {rank} of {world} has no rows to read")
        epoch += 1
