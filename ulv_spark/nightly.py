"""`ulv-spark nightly`: ingest -> embed -> features -> train (when due) -> score -> quality gates -> segment -> plan -> evaluate.

Each stage logs its start, end, duration and row counts; quality gates (thresholds in
`gates.*`) run between stages, and a failing gate stops the night before the output tables
are replaced. The run ends with a summary (stages, tables and versions, rejects, gates) and an
exit code a scheduler understands: 0 = all good, 1 = a stage or gate failed, 2 = bad conf.

`--only STAGE` runs one stage with its gates (the Databricks job runs one task per stage);
`--from STAGE` runs that stage and every later one (rerunning a failed night from where it
stopped: the earlier stages' tables of that date are already written).
"""
from __future__ import annotations

import datetime as dt
import time
from typing import Callable, Optional

from ulv_spark import catalog, gates, lake
from ulv_spark.context import JobContext, Summary
from ulv_spark.errors import ConfigError, GateFailed, JobFailed
from ulv_spark.runtime import get_logger

STAGES = ("ingest", "embed", "features", "train", "score", "segment", "plan", "evaluate")
# tables whose Delta versions the summary lists: the order log, the training inputs and the outputs
SUMMARY_TABLES = (catalog.ORDERS.name, catalog.USER_FEATURES.name, catalog.TRAINING_EXAMPLES.name,
                  *catalog.names(catalog.SCORES), *catalog.names(catalog.SEGMENTS), *catalog.names(catalog.PLANS))
log = get_logger("ulv_spark.nightly")


# ---- stages -------------------------------------------------------------------------------------
# Each takes (ctx, retrain, report), runs its stage function and records its gates in `report`.
def stage_ingest(ctx: JobContext, retrain: bool, report: dict) -> Summary:
    from ulv_spark.ingest.job import run_ingest

    result = run_ingest(ctx)
    for table, counts in _reject_counts(result).items():
        gate = gates.reject_share_gate(counts["rejected"], counts["total"], ctx.cfg.ingest.max_reject_share)
        _record_gate(report, gate, f"ingest.{table}")
    return result


def _reject_counts(result: dict) -> dict:
    """{table: {"rejected": n, "total": n}} from the ingest summary."""
    out = {}
    for table, info in (result.get("tables") or {}).items():
        if isinstance(info, dict) and "rejected" in info:
            total = info.get("source_rows", info.get("rows_read", 0))
            out[table] = {"rejected": int(info["rejected"]), "total": int(total or 0)}
    return out


def stage_embed(ctx: JobContext, retrain: bool, report: dict) -> Summary:
    """Embed new or changed product / review texts; skipped (encoder not loaded) without text tables."""
    spark, lake_cfg = ctx.spark, ctx.cfg.lakehouse
    present = [t.name for t in (catalog.PRODUCTS, catalog.REVIEWS)
               if lake.is_delta(spark, lake.table_ref(lake_cfg, t.name))]
    if not present:
        return {"skipped": "no products or reviews table: nothing to embed"}
    from ulv_spark.text.job import run_embed

    return run_embed(ctx)


def stage_features(ctx: JobContext, retrain: bool, report: dict) -> Summary:
    from ulv_spark.features.job import run_features

    result = run_features(ctx)
    spark, cfg = ctx.spark, ctx.cfg
    ref = lake.table_ref(cfg.lakehouse, catalog.USER_FEATURES.name)
    features = lake.read_table(spark, ref)
    current = features.filter(features.as_of_date == ctx.as_of)
    previous_date = (features.filter(features.as_of_date < ctx.as_of)
                     .agg({"as_of_date": "max"}).first()[0])
    users = current.count()
    previous = features.filter(features.as_of_date == previous_date).count() if previous_date else None
    _record_gate(report, gates.user_count_change_gate(users, previous, cfg.gates.max_user_count_change), "features")
    from ulv_spark.schemas import feature_columns

    shares = gates.null_shares(current, feature_columns(current.schema))
    _record_gate(report, gates.null_share_gate(shares, cfg.gates.max_null_feature_share), "features")
    result.setdefault("users", users)
    return result


def training_due(cfg, as_of: dt.date, force: bool = False) -> tuple[bool, str]:
    """Whether to train tonight, and why: no model, the schedule (train.retrain_every_days), or forced."""
    from ulv_spark.train.artifacts import latest_model_dir, read_meta

    if force:
        return True, "retrain requested"
    latest = latest_model_dir(cfg.train.model_dir)
    if latest is None:
        return True, f"no model under {cfg.train.model_dir}"
    meta = read_meta(latest)  # meta.json only: no weights, no torch
    trained = dt.date.fromisoformat(meta.trained_as_of)
    age = (as_of - trained).days
    if age >= cfg.train.retrain_every_days:
        return True, f"model {meta.version} trained for {trained} is {age} days old (retrain every {cfg.train.retrain_every_days})"
    if age < 0:
        return True, f"model {meta.version} was trained for a later date ({trained}); training one for {as_of}"
    return False, f"reusing model {meta.version} trained for {trained} ({age} days old)"


def stage_train(ctx: JobContext, retrain: bool, report: dict) -> Summary:
    from ulv_spark.train.job import run_train

    due, why = training_due(ctx.cfg, ctx.as_of, force=retrain)
    log.info("train: %s", why)
    if not due:
        return {"trained": False, "reason": why}
    result = run_train(ctx)
    return {"trained": True, "reason": why, **result}


def stage_score(ctx: JobContext, retrain: bool, report: dict) -> Summary:
    from ulv_spark.score import job as score

    staged = score.stage_predictions(ctx)
    gate = score_shift_gate(ctx, staged.predictions)
    _record_gate(report, gate, "score")
    if not gate.passed:
        raise GateFailed(f"gate score_psi failed: {gate.message}; output tables left untouched")
    return score.publish(ctx, staged)


def score_shift_gate(ctx, predictions) -> gates.GateResult:
    """PSI of tonight's expected_value vs the previous night's, over the previous night's deciles."""
    spark, cfg = ctx.spark, ctx.cfg
    ref = lake.table_ref(cfg.lakehouse, catalog.USER_VALUE.name)
    limit = cfg.gates.max_score_psi
    if not lake.is_delta(spark, ref):
        return gates.psi_gate(None, [], limit)
    values = lake.read_table(spark, ref)
    previous_date = values.filter(values.as_of_date < ctx.as_of).agg({"as_of_date": "max"}).first()[0]
    if previous_date is None:
        return gates.psi_gate(None, [], limit)
    previous = values.filter(values.as_of_date == previous_date)
    edges = sorted(set(gates.decile_edges(previous, "expected_value")))
    return gates.psi_gate(gates.bin_counts(previous, "expected_value", edges),
                          gates.bin_counts(predictions, "expected_value", edges), limit)


def stage_segment(ctx: JobContext, retrain: bool, report: dict) -> Summary:
    """Learned segments of the night (fitted once per model, else assigned); skipped without embeddings."""
    if not ctx.cfg.score.write_embeddings:
        return {"skipped": "score.write_embeddings is false: no user_embeddings to segment"}
    from ulv_spark.segments.job import run_segment

    return run_segment(ctx)


def stage_plan(ctx: JobContext, retrain: bool, report: dict) -> Summary:
    """The budgeted promotion plan of the night; skipped when promo_uplift has no rows (no campaign arms)."""
    from ulv_spark.plan.job import NothingToPlan, run_plan

    try:
        return run_plan(ctx)
    except NothingToPlan as exc:
        return {"skipped": str(exc)}


def stage_evaluate(ctx: JobContext, retrain: bool, report: dict) -> Summary:
    from ulv_spark.evaluate.job import run_evaluate

    return run_evaluate(ctx)


STAGE_FUNCTIONS: dict[str, Callable] = {
    "ingest": stage_ingest, "embed": stage_embed, "features": stage_features, "train": stage_train,
    "score": stage_score, "segment": stage_segment, "plan": stage_plan, "evaluate": stage_evaluate,
}


def _record_gate(report: dict, gate: gates.GateResult, where: str) -> None:
    entry = {"where": where, **gate.as_dict()}
    report["gates"].append(entry)
    (log.info if gate.passed else log.error)("gate %s [%s]: %s -> %s", gate.name, where, gate.message,
                                             "pass" if gate.passed else "FAIL")
    if not gate.passed and gate.name != "score_psi":
        raise GateFailed(f"gate {gate.name} ({where}) failed: {gate.message}; the night stopped before "
                         f"the output tables were replaced")


def _row_facts(result: dict) -> dict:
    keep = ("users", "rows", "rows_written", "model_version", "trained", "reason", "tables", "skipped",
            "plan", "cost", "objective",  # the promotion plan
            "fitted", "k", "method",  # the learned segments
            # training: where and how far it ran
            "world_size", "device", "loader", "rows_train", "epochs_run", "resumed_from_epoch", "early_stopped",
            "mlflow_model_uri")
    return {k: result[k] for k in keep if k in result}


def stages_to_run(*, only: Optional[str] = None, start_from: Optional[str] = None,
                  evaluate: bool = False) -> list[str]:
    """The stages a night runs, in order: `only` alone; else every stage (evaluate only with
    `evaluate`) from `start_from` on (`--from evaluate` runs it whatever `evaluate` says)."""
    for given in (only, start_from):
        if given is not None and given not in STAGES:
            raise ConfigError(f"unknown stage {given!r}; stages: {', '.join(STAGES)}")
    if only is not None and start_from is not None:
        raise ConfigError("--only and --from cannot be combined: --only runs one stage, --from that stage "
                          "and the later ones")
    if only is not None:
        return [only]
    wanted = [s for s in STAGES if s != "evaluate" or evaluate or start_from == "evaluate"]
    return wanted[wanted.index(start_from):] if start_from is not None else wanted


def run_nightly(ctx: JobContext, *, only: Optional[str] = None, start_from: Optional[str] = None,
                retrain: bool = False, evaluate: bool = False) -> Summary:
    """The nightly job: every stage in order with its gates; the summary carries ``exit_code`` 1 on failure.

    Args:
        only: run this one stage (with its gates).
        start_from: run this stage and the ones after it (not with `only`).
        retrain: train even when the current model is not due.
        evaluate: also run the evaluation (default: ``nightly.evaluate``).
    """
    cfg = ctx.cfg
    wanted = stages_to_run(only=only, start_from=start_from, evaluate=evaluate or cfg.nightly.evaluate)
    report: dict = {"stages": [], "gates": []}
    start = time.perf_counter()
    failed: Optional[str] = None
    results: dict = {}
    for name in wanted:
        t0 = time.perf_counter()
        log.info("== stage %s: start (as_of %s)", name, ctx.as_of)
        entry = {"stage": name}
        try:
            result = STAGE_FUNCTIONS[name](ctx, retrain, report) or {}
            results[name] = result
            entry.update(status="ok", **_row_facts(result))
        except JobFailed as exc:
            entry.update(status="failed", error=str(exc))
            failed = f"{name}: {exc}"
        except Exception as exc:  # noqa: BLE001 - the scheduler needs a summary and exit 1, not a crash
            log.exception("stage %s crashed", name)
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            failed = f"{name}: {type(exc).__name__}: {exc}"
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("== stage %s: %s in %.1fs", name, entry["status"], entry["seconds"])
        report["stages"].append(entry)
        if failed:
            break
    if not failed:
        champion = move_champion(ctx, results)
        if champion is not None:
            report["champion"] = champion
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["tables"] = _table_versions(ctx)
    report["status"] = "failed" if failed else "ok"
    if failed:
        report["error"] = failed
        report["exit_code"] = 1
        log.error("nightly FAILED at %s", failed)
    _log_summary(report)
    return report


def move_champion(ctx, results: dict) -> Optional[dict]:
    """Give the model registered tonight the ``champion`` alias when the rule allows (registry.promote_champion).

    The backtest compared is tonight's evaluate stage (when it ran): the training recipe of the
    new model backtested on past origins. None when no model was registered tonight.
    """
    trained = results.get("train") or {}
    if not trained.get("mlflow_model_uri"):
        return None
    from ulv_spark import registry

    name, _, version = registry.parse_model_uri(trained["mlflow_model_uri"])
    try:
        decision = registry.promote_champion(ctx.cfg.train, ctx.cfg.lakehouse.shared_dir, name=name, version=version,
                                             backtest=registry.backtest_metrics(results.get("evaluate")),
                                             run_id=trained.get("mlflow_run_id"))
    except Exception as exc:  # noqa: BLE001 - the night's tables are written; the alias is bookkeeping
        log.warning("champion alias not moved: %s: %s", type(exc).__name__, exc)
        return {"moved": False, "error": f"{type(exc).__name__}: {exc}"}
    log.info("champion of %s: version %s (%s)", name, decision["champion"], decision["reason"])
    return decision


def _table_versions(ctx) -> dict:
    out = {}
    spark = ctx.spark
    for name in SUMMARY_TABLES:
        ref = lake.table_ref(ctx.cfg.lakehouse, name)
        try:
            version = lake.current_version(spark, ref)
        except Exception:  # noqa: BLE001 - the summary must not fail on an unreadable table
            version = None
        if version is not None:
            out[ref.name] = {"version": version, "location": ref.path}
    return out


def _log_summary(report: dict) -> None:
    lines = ["nightly summary:"]
    for s in report["stages"]:
        lines.append(f"  {s['stage']:<9} {s['status']:<7} {s['seconds']:>8.1f}s")
    for g in report["gates"]:
        lines.append(f"  gate {g['gate']:<18} {g['where']:<28} {'pass' if g['passed'] else 'FAIL':<5} {g['message']}")
    lines.append(f"  total {report['seconds']:.1f}s, status {report['status']}")
    log.info("\n".join(lines))
