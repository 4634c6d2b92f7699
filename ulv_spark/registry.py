"""MLflow tracking and model registry: one run per training, the pyfunc model registered, aliases.

* :func:`tracking_uri` — ``train.mlflow_tracking_uri`` made concrete: ``"local"`` (the default) is
  a SQLite store ``sqlite:///<lakehouse.shared_dir>/mlflow.db`` with artifacts under
  ``<shared_dir>/mlruns`` (SQLite, not files, so the model registry and aliases work);
  ``"none"`` turns MLflow off; anything else (``databricks``, ``http://…``) is used as is.
* :func:`log_training_run` — params (the flattened conf), per-epoch metrics, the final metrics,
  and the model as an MLflow pyfunc (`ulv_spark.mlflow_model.UlvPyfunc`, with the model directory
  inside it as the artifact ``model_dir``) registered as ``train.registered_model_name``.
  Everything is logged once, after training, so a run costs the time of copying the model.
* :func:`resolve_model_uri` — ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> the
  model directory to score with (the registered version's original directory when it is still
  there, else its artifact downloaded once under ``<shared_dir>/mlflow_models``).
* :func:`promote_champion` — the ``champion`` alias rule of the nightly (see its docstring).

mlflow is imported inside the functions: importing this module costs nothing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ulv_spark.errors import JobFailed

LOCAL = "local"
OFF_VALUES = ("none", "off", "")
CHAMPION = "champion"
# backtest metrics the champion rule compares (higher is better); tags "backtest.<metric>" on a version
CHAMPION_METRICS = ("value_gini", "churn_auc")
BACKTEST_TAG = "backtest."
MODEL_DIR_TAG = "model_dir"
MODEL_VERSION_TAG = "ulv_model_version"
PARAM_VALUE_LIMIT = 500  # MLflow servers accept 500 characters at least (newer ones 6000)


def tracking_uri(configured: Optional[str], shared_dir: str) -> Optional[str]:
    """The MLflow tracking URI for ``train.mlflow_tracking_uri``; None when MLflow is off."""
    if configured is None or str(configured).strip().lower() in OFF_VALUES:
        return None
    if configured == LOCAL:
        return f"sqlite:///{Path(shared_dir).resolve() / 'mlflow.db'}"
    return _absolute_file_uri(configured)


def registry_uri(configured: Optional[str], tracking: str) -> str:
    """``train.mlflow_registry_uri``, or the tracking store when unset."""
    return configured or tracking


def _absolute_file_uri(uri: str) -> str:
    # "file:lakehouse/_shared/mlruns" is relative to the working directory; make it absolute
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return "file:" + str(Path(uri[len("file:"):]).resolve())
    if "://" not in uri and ":" not in uri.split("/")[0] and ("/" in uri or uri.startswith(".")):  # a path
        return "file:" + str(Path(uri).resolve())
    return uri


def _client(train_cfg, shared_dir: str):
    """(MlflowClient, tracking uri) for the conf; JobFailed when MLflow is off."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in job logs
    import mlflow

    tracking = tracking_uri(train_cfg.mlflow_tracking_uri, shared_dir)
    if tracking is None:
        raise JobFailed("train.mlflow_tracking_uri is 'none': models:/ URIs need the MLflow registry")
    registry = registry_uri(train_cfg.mlflow_registry_uri, tracking)
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
    return mlflow.MlflowClient(tracking_uri=tracking, registry_uri=registry), tracking


def _experiment_id(client, name: str, tracking: str, shared_dir: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # a SQLite store's default artifact root is ./mlruns of the working directory: keep them shared
    location = (Path(shared_dir).resolve() / "mlruns").as_uri() if tracking.startswith("sqlite:") else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001 - created meanwhile by a concurrent run
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def flatten(data: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _requirements() -> list[str]:
    # stated, not inferred: MLflow's inference loads the model in a subprocess (seconds per run)
    from importlib.metadata import PackageNotFoundError, version

    out = []
    # scikit-learn: the tree companion (train.tree_blend) is a pickled scikit-learn model
    for package in ("mlflow", "torch", "transformers", "safetensors", "numpy", "pandas", "pyyaml", "scikit-learn"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return out


def log_training_run(train_cfg, shared_dir: str, *, model_dir: str, conf: dict, history: list,
                     metrics: dict, log=None) -> Optional[dict]:
    """One MLflow run for a finished training; returns {run_id, model_uri, registered_model, version}.

    Params: the flattened conf (values cut at 500 characters). Metrics: ``<stage>.<metric>`` per
    epoch (step = epoch) and the final validation metrics. The pyfunc model (signature, input
    example) holds the model directory and is registered as ``train.registered_model_name``.
    None (nothing logged) when ``train.mlflow_tracking_uri`` is "none".
    """
    import mlflow
    from mlflow.entities import Metric

    from ulv_spark import mlflow_model
    from ulv_spark.runtime import get_logger
    from ulv_spark.train.artifacts import read_meta

    log = log or get_logger("ulv_spark.train")
    if tracking_uri(train_cfg.mlflow_tracking_uri, shared_dir) is None:
        log.info("mlflow: train.mlflow_tracking_uri is none; no MLflow run")
        return None
    client, tracking = _client(train_cfg, shared_dir)
    experiment = _experiment_id(client, train_cfg.mlflow_experiment, tracking, shared_dir)
    meta = read_meta(model_dir)
    dims = mlflow_model.text_dims(model_dir)
    with mlflow.start_run(experiment_id=experiment, run_name=meta.version) as run:
        run_id = run.info.run_id
        mlflow.log_params({k: str(v)[:PARAM_VALUE_LIMIT] for k, v in flatten(conf).items()})
        per_epoch = [Metric(f"{rec.get('stage', 'train')}.{k}", float(v), 0, int(rec.get("epoch", 0)))
                     for rec in history for k, v in rec.items() if k not in ("epoch", "stage") and _numeric(v)]
        final = [Metric(k, float(v), 0, 0) for k, v in flatten(metrics).items() if _numeric(v)]
        for start in range(0, len(per_epoch) + len(final), 1000):  # MLflow takes 1000 metrics per batch
            client.log_batch(run_id, metrics=(per_epoch + final)[start:start + 1000])
        mlflow.set_tags({MODEL_DIR_TAG: model_dir, MODEL_VERSION_TAG: meta.version})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=mlflow_model.UlvPyfunc(),
            artifacts={mlflow_model.MODEL_DIR_ARTIFACT: model_dir},
            signature=mlflow_model.signature(meta, dims), input_example=mlflow_model.input_example(meta, dims),
            pip_requirements=_requirements(), registered_model_name=train_cfg.registered_model_name)
    version = str(info.registered_model_version)
    name = train_cfg.registered_model_name
    client.set_model_version_tag(name, version, MODEL_DIR_TAG, model_dir)
    client.set_model_version_tag(name, version, MODEL_VERSION_TAG, meta.version)
    log.info("mlflow: run %s, registered %s version %s (%s)", run_id, name, version, tracking)
    return {"run_id": run_id, "model_uri": f"models:/{name}/{version}", "registered_model": name, "version": version}


def parse_model_uri(uri: str) -> tuple[str, Optional[str], Optional[str]]:
    """``models:/<name>@<alias>`` -> (name, alias, None); ``models:/<name>/<version>`` -> (name, None, version)."""
    body = uri[len("models:/"):] if uri.startswith("models:/") else None
    if body and "@" in body and "/" not in body.split("@", 1)[1]:
        name, alias = body.split("@", 1)
        if name and alias:
            return name, alias, None
    if body and "/" in body:
        name, version = body.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    raise JobFailed(f"model URI {uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")


def resolve_model_uri(uri: str, train_cfg, shared_dir: str) -> str:
    """The model directory of a registered version (``score.model_version = models:/…``).

    The version's original model directory when it is still complete (no copy), else the
    version's MLflow artifact, downloaded once to ``<shared_dir>/mlflow_models/<name>/<version>``.
    """
    from ulv_spark.train.artifacts import COMPLETE_MARKER

    name, alias, version = parse_model_uri(uri)
    client, _ = _client(train_cfg, shared_dir)
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, version))
    except Exception as exc:  # noqa: BLE001 - MLflow raises MlflowException with a long message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobFailed(f"score.model_version={uri!r}: not in the registry ({first})") from None
    original = (found.tags or {}).get(MODEL_DIR_TAG)
    if original and (Path(original) / COMPLETE_MARKER).is_file():
        return original
    import mlflow

    from ulv_spark.mlflow_model import MODEL_DIR_ARTIFACT

    target = Path(shared_dir) / "mlflow_models" / name / str(found.version)
    local = target / "artifacts" / MODEL_DIR_ARTIFACT
    if not (local / COMPLETE_MARKER).is_file():
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{found.version}", dst_path=str(target))
    if not (local / COMPLETE_MARKER).is_file():
        raise JobFailed(f"score.model_version={uri!r}: version {found.version} holds no ulv_spark model directory")
    return str(local)


def registered_model_dir(cfg, model_version: Optional[str]) -> Optional[str]:
    """``score.model_version`` with a ``models:/`` URI replaced by its model directory (other values unchanged)."""
    if model_version is None or not str(model_version).startswith("models:/"):
        return model_version
    return resolve_model_uri(str(model_version), cfg.train, cfg.lakehouse.shared_dir)


def backtest_metrics(evaluate_summary: Optional[dict]) -> Optional[dict]:
    """{metric: mean over the backtest splits} of the model's CHAMPION_METRICS from `run_evaluate`'s summary."""
    if not evaluate_summary:
        return None
    values: dict[str, list] = {}
    for methods in (evaluate_summary.get("headline") or {}).values():
        for metric, value in (methods.get("model") or {}).items():
            if metric in CHAMPION_METRICS and _numeric(value):
                values.setdefault(metric, []).append(float(value))
    return {m: sum(v) / len(v) for m, v in values.items()} or None


def better_or_equal(new: dict, champion: dict) -> tuple[bool, str]:
    """The champion rule: every CHAMPION_METRICS value both sides have is not worse (>=) for the new model."""
    compared = [m for m in CHAMPION_METRICS if m in new and m in champion]
    if not compared:
        return True, "the champion has no comparable backtest"
    worse = [f"{m} {new[m]:.4f} < {champion[m]:.4f}" for m in compared if new[m] < champion[m]]
    if worse:
        return False, "backtest worse than the champion's: " + ", ".join(worse)
    return True, "backtest not worse than the champion's: " + ", ".join(
        f"{m} {new[m]:.4f} >= {champion[m]:.4f}" for m in compared)


def promote_champion(train_cfg, shared_dir: str, *, name: str, version: str,
                     backtest: Optional[dict] = None, run_id: Optional[str] = None) -> dict:
    """Move the ``champion`` alias of ``name`` to ``version`` when the rule allows it.

    Rule: with no champion yet, the version becomes champion. With a champion and a backtest of
    the new version (``nightly.evaluate``), it moves when value_gini and churn_auc are both not
    worse than the champion's recorded backtest (a champion without one is replaced). Without a
    backtest tonight the champion stays. The backtest is recorded on the version (tags
    ``backtest.<metric>``) and its training run (metrics) either way.

    Returns {"champion": version now holding the alias, "moved": bool, "reason": str}.
    """
    client, _ = _client(train_cfg, shared_dir)
    for metric, value in (backtest or {}).items():
        client.set_model_version_tag(name, version, BACKTEST_TAG + metric, repr(float(value)))
        if run_id:
            client.log_metric(run_id, BACKTEST_TAG + metric, float(value))
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # noqa: BLE001 - no alias yet
        current = None
    if current is None:
        move, reason = True, "first registered model"
    elif str(current.version) == str(version):
        return {"champion": str(version), "moved": False, "reason": "already champion"}
    elif not backtest:
        move, reason = False, "no backtest tonight (nightly.evaluate off): the champion stays"
    else:
        recorded = {k[len(BACKTEST_TAG):]: float(v) for k, v in (current.tags or {}).items()
                    if k.startswith(BACKTEST_TAG)}
        move, reason = better_or_equal(backtest, recorded)
    if move:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    return {"champion": str(version) if move else str(current.version), "moved": move, "reason": reason}

