"""A self-contained HTML backtest report: metric tables plus embedded PNG plots.

The file opens in a browser with no server: styles are inline and every plot is a PNG
embedded as ``<img src="data:image/png;base64,...">`` (matplotlib's Agg renderer through the
object API, so no display or pyplot state is involved). Per split it shows:

* gain curves and lift curves of every value prediction (with the random and perfect lines);
* decile calibration bars: mean predicted vs mean actual value per predicted decile;
* Qini curves per treatment arm and outcome (with the random line);
* the churn reliability diagram (observed churn rate vs mean predicted probability);
* the Margins table: the model's paired-bootstrap margin over the best other method per metric
  (and over every other method), with its 95 % interval and P(not better) (see bootstrap.py);
* the Policies table and the budget curve: the off-policy (IPW / doubly robust) value of the plan's
  policy vs budget, beside the GBM policy, random at the same budget, send-all and send-none
  (see policy_backtest.py).
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from ulv_spark.config import EVALUATE_METHODS
from ulv_spark.evaluate import metrics as M
from ulv_spark.evaluate.bootstrap import BOOTSTRAP_METRICS, CLOSEST_TO_ONE, LOWER_IS_BETTER, is_margin_metric
from ulv_spark.evaluate.backtest import UPLIFT_OUTCOME, BacktestResult, SplitResult
from ulv_spark.evaluate.baselines import CHURN_PROBABILITY, EXPECTED_VALUE, UPLIFT_KINDS
from ulv_spark.evaluate.policy import NO_BUDGET, is_policy_metric, parse_policy_metric
from ulv_spark.schemas import ARM, IS_CONTROL, LABEL_CHURNED, LABEL_CONVERTED, LABEL_VALUE

METHOD_ORDER = ("model", "model_network") + tuple(m for m in EVALUATE_METHODS if m != "model")
COLORS = {"model": "#d62728", "model_network": "#ff9896", "oracle": "#7f7f7f", "bgnbd_gg": "#1f77b4", "gbm": "#2ca02c",
          "rfm_heuristic": "#ff7f0e", "two_model_gbm": "#9467bd", "x_learner": "#8c564b",
          "class_transformation": "#e377c2", "random": "#17becf"}
MARGINS_NOTE = ("Margins: the model minus another method on the same test users, signed so that a positive "
                "margin means the model is better (for decile MAPE and ECE: lower; for total_ratio: closer "
                "to 1). Best other = the best non-oracle method on the full test set (not model_network: the "
                "model without its tree companion, an ablation). [95 % CI] = the 2.5 and "
                "97.5 % percentiles of the margin over {n} paired bootstrap resamples of the test users (every "
                "method scored on the same resampled users); P(not better) = the share of resamples in which "
                "the model is not better (margin <= 0). A claim \"the model beats X\" is supported when the "
                "interval lies above 0 (P(not better) below 0.025); an interval that spans 0 is a tie at "
                "this test size.")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em} h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em} th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td.name,th.name{text-align:left} td.best{font-weight:bold;background:#e8f5e9}
img{max-width:100%;border:1px solid #eee;margin:.5em 0} .note{color:#555;font-size:.9em}
"""


def _style(method: str) -> dict:
    """Line style per method: the model drawn thick and on top, so overlapping baselines never hide it."""
    return {"color": COLORS.get(method), "linewidth": 2.2 if method == "model" else 1.3,
            "zorder": 5 if method == "model" else 3}


def _ordered(methods) -> list[str]:
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_ORDER)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(ncols: int = 1, nrows: int = 1, width: float = 6.0, height: float = 4.2):
    from matplotlib.figure import Figure

    # constrained layout: a panel's title never runs into the x-axis label of the panel above
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _img(fig, plot: str, caption: str) -> str:
    data = _png(fig)
    return (f'<figure><img data-plot="{html.escape(plot)}" alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{data}"/><figcaption class="note">{html.escape(caption)}</figcaption></figure>')


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def gain_lift_plot(res: SplitResult) -> Optional[str]:
    """Gain and lift curves of every method predicting expected_value on this split."""
    methods = [m for m in _ordered(res.predictions) if EXPECTED_VALUE in res.predictions[m]]
    actual = res.test[LABEL_VALUE].astype(float).clip(lower=0).to_numpy()
    if not methods or actual.sum() <= 0:
        return None
    fig, axes = _figure(2)
    gain_ax, lift_ax = axes[0]
    px, py = M.gain_curve(actual, actual)
    gain_ax.plot(px, py, color="black", linestyle=":", label="perfect")
    gain_ax.plot([0, 1], [0, 1], color="#999", linestyle="--", label="random")
    # cumulative lift on a grid from the top 2 %: the first few users alone give lifts in the
    # hundreds that flatten the rest of the curve
    grid = np.linspace(0.02, 1.0, 50)
    for m in methods:
        x, y = M.gain_curve(actual, res.predictions[m][EXPECTED_VALUE].to_numpy(float))
        gain_ax.plot(x, y, label=m, **_style(m))
        lift_ax.plot(grid, np.interp(grid, x, y) / grid, label=m, **_style(m))
    lift_ax.plot(grid, np.interp(grid, px, py) / grid, color="black", linestyle=":", label="perfect")
    lift_ax.axhline(1.0, color="#999", linestyle="--", label="random")
    gain_ax.set(xlabel="share of users targeted (by predicted value)", ylabel="share of actual spend",
                title="Gain curve")
    lift_ax.set(xlabel="share of users targeted", ylabel="lift (share of spend / share of users)",
                title="Cumulative lift", xlim=(0, 1))
    gain_ax.legend(fontsize=8)
    lift_ax.legend(fontsize=8)
    return _img(fig, "gain_lift", f"Gain and lift curves, {res.split.name}")


def decile_plot(res: SplitResult, bins: int = 10) -> Optional[str]:
    """Mean predicted vs mean actual value per predicted-value decile, one panel per method."""
    methods = [m for m in _ordered(res.predictions) if EXPECTED_VALUE in res.predictions[m]]
    if not methods or len(res.test) < bins:
        return None
    actual = res.test[LABEL_VALUE].astype(float).clip(lower=0).to_numpy()
    ncols = min(3, len(methods))
    nrows = math.ceil(len(methods) / ncols)
    fig, axes = _figure(ncols, nrows, width=4.6, height=3.4)
    for i, m in enumerate(methods):
        ax = axes[i // ncols][i % ncols]
        table = M.decile_table(actual, res.predictions[m][EXPECTED_VALUE].to_numpy(float), bins)
        x = table["bin"]
        ax.bar(x - 0.2, table["predicted_mean"], width=0.4, color=COLORS.get(m, "#555"), label="predicted")
        ax.bar(x + 0.2, table["actual_mean"], width=0.4, color="#bbb", label="actual")
        mape = M.decile_mape(actual, res.predictions[m][EXPECTED_VALUE].to_numpy(float), bins)
        ax.set(title=f"{m} (decile MAPE {mape:.2f})", xlabel="predicted-value decile (1 = top)",
               ylabel="mean value per user", xticks=list(x))
        ax.legend(fontsize=8)
    for j in range(len(methods), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    return _img(fig, "decile_calibration", f"Decile calibration, {res.split.name}")


def qini_plots(res: SplitResult) -> list[str]:
    """One Qini-curve plot per (outcome, arm) that some method predicts uplift for."""
    test = res.test
    if ARM not in test.columns or LABEL_CONVERTED not in test.columns:
        return []
    exposed = test[ARM].notna() & test[LABEL_CONVERTED].notna()
    control = exposed & test[IS_CONTROL].fillna(False).astype(bool)
    out = []
    for kind in UPLIFT_KINDS:
        cols = sorted({c for p in res.predictions.values() for c in p.columns if c.startswith(f"uplift_{kind}:")})
        for col in cols:
            arm = col.split(":", 1)[1]
            rows = (exposed & (test[ARM] == arm)) | control
            t = (test.loc[rows, ARM] == arm).astype(int).to_numpy()
            if t.sum() == 0 or t.sum() == t.size:
                continue
            y = test.loc[rows, UPLIFT_OUTCOME[kind]].astype(float).fillna(0.0).to_numpy()
            fig, axes = _figure(1)
            ax = axes[0][0]
            end = None
            for m in _ordered(res.predictions):
                if col not in res.predictions[m]:
                    continue
                x, q = M.qini_curve(y, t, res.predictions[m].loc[rows, col].to_numpy(float))
                coef = M.qini_coefficient(y, t, res.predictions[m].loc[rows, col].to_numpy(float))
                ax.plot(x, q, label=f"{m} (Qini {coef:.4g})", **_style(m))
                end = q[-1]
            ax.plot([0, 1], [0, end], color="#999", linestyle="--", label="random")
            ax.set(xlabel="share of users targeted (by predicted uplift)",
                   ylabel="incremental outcome per treated user", title=f"Qini curve: {kind}, {arm} vs control")
            ax.legend(fontsize=8)
            out.append(_img(fig, f"qini_{kind}_{arm}", f"Qini curve ({kind}, arm {arm}), {res.split.name}"))
    return out


def reliability_plot(res: SplitResult, bins: int = 10) -> Optional[str]:
    """Churn reliability diagram: observed churn rate vs mean predicted probability per bin."""
    methods = [m for m in _ordered(res.predictions) if CHURN_PROBABILITY in res.predictions[m]]
    if not methods:
        return None
    churned = res.test[LABEL_CHURNED].astype(int).to_numpy()
    fig, axes = _figure(1)
    ax = axes[0][0]
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", label="perfectly calibrated")
    for m in methods:
        table = M.reliability_table(churned, np.clip(res.predictions[m][CHURN_PROBABILITY].to_numpy(float), 0, 1), bins)
        filled = table["n"] > 0
        ece = M.expected_calibration_error(churned, np.clip(res.predictions[m][CHURN_PROBABILITY].to_numpy(float), 0, 1), bins)
        ax.plot(table["mean_predicted"][filled], table["observed_rate"][filled], marker="o",
                label=f"{m} (ECE {ece:.3f})", **_style(m))
    ax.set(xlabel="mean predicted churn probability", ylabel="observed churn rate",
           title="Churn reliability diagram", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    return _img(fig, "churn_reliability", f"Churn reliability diagram, {res.split.name}")


POLICY_NOTE = ("Policies valued off-policy on the randomised exposures of the evaluation origin (every exposed "
               "test user, control included): IPW weighs each user whose logged arm is the policy's arm by 1 / its "
               "assignment probability; DR (doubly robust) adds the outcome model's prediction (control mean + "
               "the model's predicted uplift) and corrects it with the same weights. value = spend in the response "
               "window, value_long = spend over the horizon, per exposed user; gain = value minus send_none's "
               "(paired); [95 % CI] over paired bootstrap resamples of the users; true gain = the policy's mean "
               "true uplift (synthetic data). model / two_model_gbm / oracle = plan/allocate.py's plan from that "
               "method's uplifts at the budget (a share of the cost of sending every exposed user an arm); "
               "random = the model plan's per-arm counts given to random users. profit = score.margin x gain minus "
               "the policy's mean arm cost per exposed user (score.arm_costs): the money the promotions made.")


def policy_frame(metrics: pd.DataFrame, split: str) -> pd.DataFrame:
    """The policy rows of one split, parsed: method, quantity, outcome, stat, budget, value."""
    sub = metrics[(metrics["split"] == split) & metrics["metric"].map(is_policy_metric)]
    parsed = [(r.method, *parse_policy_metric(r.metric), r.value) for r in sub.itertuples(index=False)
              if parse_policy_metric(r.metric)]
    return pd.DataFrame(parsed, columns=["method", "quantity", "outcome", "stat", "budget", "value"])


def _budget_key(budget) -> float:
    return math.inf if budget in (None, NO_BUDGET) else float(budget)


def policy_table(metrics: pd.DataFrame, split: str) -> str:
    """HTML table policy x (outcome, estimator): estimate [95 % CI], and the true gain where known."""
    frame = policy_frame(metrics, split)
    if frame.empty:
        return ""
    cells = {(r.method, r.budget, r.quantity, r.outcome, r.stat): r.value for r in frame.itertuples(index=False)}
    outcomes = [o for o in ("value", "value_long") if o in set(frame["outcome"])]
    quantities = [q for q in ("ipw", "dr", "ipw_gain", "dr_gain", "true_gain", "dr_profit", "true_profit")
                  if q in set(frame["quantity"])]
    keys = sorted({(r.method, r.budget) for r in frame.itertuples(index=False)},
                  key=lambda k: (k[1] is not None, _budget_key(k[1]), k[0]))
    head = "".join(f"<th>{html.escape(q)} {html.escape(o)}</th>" for o in outcomes for q in quantities)
    body = []
    for method, budget in keys:
        row = []
        for o in outcomes:
            for q in quantities:
                v = cells.get((method, budget, q, o, ""))
                lo, hi = cells.get((method, budget, q, o, "lo")), cells.get((method, budget, q, o, "hi"))
                text = _fmt(v) + (f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else "")
                row.append(f"<td>{html.escape(text)}</td>")
        label = method if budget is None else f"{method} (budget {budget})"
        body.append(f'<tr><td class="name">{html.escape(label)}</td>{"".join(row)}</tr>')
    return (f'<table class="policies" data-split="{html.escape(split)}"><tr><th class="name">policy</th>{head}</tr>'
            + "".join(body) + "</table>")


def budget_curve_plot(metrics: pd.DataFrame, split: str, estimator: str = "dr") -> Optional[str]:
    """Policy value vs budget per outcome: the plan (model), the GBM policy, random, with send-all/none lines."""
    frame = policy_frame(metrics, split)
    frame = frame[frame["quantity"] == estimator] if not frame.empty else frame
    if frame.empty or frame["budget"].isna().all():
        return None
    outcomes = [o for o in ("value", "value_long") if o in set(frame["outcome"])]
    fig, axes = _figure(len(outcomes))
    for ax, outcome in zip(axes[0], outcomes):
        sub = frame[frame["outcome"] == outcome]
        budgets = sorted({b for b in sub["budget"].dropna()}, key=_budget_key)
        position = {b: (float(b) if b != NO_BUDGET else None) for b in budgets}
        finite = [p for p in position.values() if p is not None]
        top = (max(finite) * 1.25) if finite else 1.0
        position = {b: (p if p is not None else top) for b, p in position.items()}
        for method in _ordered(set(sub.loc[sub["budget"].notna(), "method"])):
            rows = sub[(sub["method"] == method) & sub["budget"].notna()]
            pts = sorted(((position[b], rows[(rows["budget"] == b) & (rows["stat"] == s)]["value"])
                          for b in budgets for s in [""]), key=lambda t: t[0])
            xs = [x for x, v in pts if len(v)]
            ys = [float(v.iloc[0]) for _, v in pts if len(v)]
            if not xs:
                continue
            style = _style(method)
            ax.plot(xs, ys, marker="o", label=method, linestyle="--" if method == "random" else "-", **style)
            lo = [rows[(rows["budget"] == b) & (rows["stat"] == "lo")]["value"] for b in budgets]
            hi = [rows[(rows["budget"] == b) & (rows["stat"] == "hi")]["value"] for b in budgets]
            if all(len(v) for v in lo) and all(len(v) for v in hi) and len(lo) == len(xs):
                ax.fill_between(xs, [float(v.iloc[0]) for v in lo], [float(v.iloc[0]) for v in hi],
                                color=style["color"], alpha=0.12)
        for method in sorted(set(sub.loc[sub["budget"].isna(), "method"])):
            v = sub[(sub["method"] == method) & sub["budget"].isna() & (sub["stat"] == "")]["value"]
            if len(v):
                ax.axhline(float(v.iloc[0]), color="black" if method == "send_none" else "#bbb", linestyle=":",
                           linewidth=1.0, label=method)
        ax.set_xticks([position[b] for b in budgets], [("no budget" if b == NO_BUDGET else b) for b in budgets])
        ax.set(xlabel="budget (share of the cost of sending every exposed user an arm)",
               ylabel=f"{estimator.upper()} value per exposed user", title=f"Budget curve: {outcome}")
        ax.legend(fontsize=8)
    return _img(fig, "budget_curve", f"Budget curve ({estimator.upper()} policy value vs budget), {split}")


# --------------------------------------------------------------------------------------------
# tables and page
# --------------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4g}"


def _best(metric: str, values: Mapping[str, float]) -> Optional[str]:
    candidates = {m: v for m, v in values.items() if m != "oracle" and v is not None and not math.isnan(v)}
    if len(candidates) < 2 or metric.endswith("_share_of_oracle"):
        return None
    if any(k in metric for k in CLOSEST_TO_ONE):
        return min(candidates, key=lambda m: abs(candidates[m] - 1))
    if any(k in metric for k in LOWER_IS_BETTER):
        return min(candidates, key=candidates.get)
    return max(candidates, key=candidates.get)


def metrics_table(metrics: pd.DataFrame, split: str) -> str:
    """HTML table metric x method for one split; the best non-oracle value per row in bold."""
    from ulv_spark.evaluate.segments import is_segment_metric

    sub = metrics[(metrics["split"] == split) & ~metrics["metric"].map(is_margin_metric)
                  & ~metrics["metric"].map(is_segment_metric) & ~metrics["metric"].map(is_policy_metric)]
    if sub.empty:
        return '<p class="note">no metrics</p>'
    methods = _ordered(sub["method"].unique())
    wide = sub.pivot_table(index="metric", columns="method", values="value", aggfunc="first")
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    body = []
    for metric in wide.index:
        values = {m: wide.at[metric, m] if m in wide.columns else None for m in methods}
        best = _best(metric, values)
        cells = "".join(f'<td class="{"best" if m == best else ""}">{_fmt(values[m])}</td>' for m in methods)
        body.append(f'<tr><td class="name">{html.escape(metric)}</td>{cells}</tr>')
    return (f'<table class="metrics" data-split="{html.escape(split)}"><tr><th class="name">metric</th>{head}</tr>'
            + "".join(body) + "</table>")


def _ci(margin) -> str:
    return f"{margin.margin:+.4g} [{margin.lo:+.4g}, {margin.hi:+.4g}]"


def margins_table(res: SplitResult) -> str:
    """HTML tables of the model's bootstrapped margins: over the best other method, and over each."""
    if not res.margins:
        return ""
    order = {k: i for i, k in enumerate(BOOTSTRAP_METRICS)}
    best = sorted((m for m in res.margins if m.best), key=lambda m: (order.get(m.metric, len(order)), m.metric))
    body = "".join(
        f'<tr><td class="name">{html.escape(m.metric)}</td><td>{_fmt(m.model_value)}</td>'
        f'<td class="name">{html.escape(m.other)} ({_fmt(m.other_value)})</td>'
        f'<td class="{"best" if m.lo > 0 else ""}">{_ci(m)}</td><td>{m.p_not_better:.3f}</td></tr>' for m in best)
    parts = [f'<table class="margins" data-split="{html.escape(res.split.name)}"><tr><th class="name">metric</th>'
             "<th>model</th><th class='name'>best other</th><th>margin [95% CI]</th><th>P(not better)</th></tr>"
             + body + "</table>"]
    others = _ordered({m.other for m in res.margins if not m.best})
    metrics = list(dict.fromkeys(m.metric for m in best))
    cells = {(m.metric, m.other): m for m in res.margins if not m.best}
    if others:
        head = "".join(f"<th>{html.escape(o)}</th>" for o in others)
        rows = []
        for metric in metrics:
            row = "".join(f'<td class="{"best" if (metric, o) in cells and cells[(metric, o)].lo > 0 else ""}">'
                          f'{_ci(cells[(metric, o)]) if (metric, o) in cells else ""}</td>' for o in others)
            rows.append(f'<tr><td class="name">{html.escape(metric)}</td>{row}</tr>')
        parts.append(f'<p class="note">Margin of the model over each method [95% CI]:</p>'
                     f'<table class="margins-each" data-split="{html.escape(res.split.name)}">'
                     f'<tr><th class="name">metric</th>{head}</tr>' + "".join(rows) + "</table>")
    return "".join(parts)


def render_report(result: BacktestResult, *, title: str = "ulv_spark backtest",
                  facts: Optional[Mapping[str, object]] = None, notes: Optional[list[str]] = None,
                  bins: int = 10) -> str:
    """The complete HTML page for a backtest result (a string; see :func:`write_report`)."""
    facts = dict(facts or {})
    facts.setdefault("dataset", result.dataset)
    facts.setdefault("generated (UTC)", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             "<table class='facts'>" + "".join(f"<tr><th class='name'>{html.escape(str(k))}</th>"
                                               f"<td class='name'>{html.escape(str(v))}</td></tr>"
                                               for k, v in facts.items()) + "</table>"]
    parts.append("<p class='note'>Bold: best non-oracle method per metric (lower is better for MAPE and "
                 "ECE, closest to 1 for total_ratio). Value metrics score expected spend in the horizon "
                 "against actual spend; churn = no purchase in the horizon; Qini/AUUC/uplift@k per arm "
                 "vs control on exposed test users.</p>")
    for note in notes or []:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    for res in result.splits:
        name = res.split.name
        parts.append(f"<h2 data-split='{html.escape(name)}'>Split {html.escape(name)}</h2>")
        timing = ", ".join(f"{html.escape(m)} ({res.seconds[m]:.1f} s)" if m in res.seconds else html.escape(m)
                           for m in _ordered(res.predictions))
        parts.append(f"<p class='note'>{len(res.test)} test users; {res.n_train} training rows; "
                     f"methods (fit + predict time): {timing}</p>")
        for note in res.notes:
            parts.append(f"<p class='note split-note'>{html.escape(note)}</p>")
        if res.skipped:
            items = "".join(f"<li><b>{html.escape(m)}</b>: {html.escape(r)}</li>" for m, r in res.skipped.items())
            parts.append(f"<p class='note'>Not run on this split:</p><ul class='skipped'>{items}</ul>")
        parts.append(metrics_table(result.metrics, name))
        from ulv_spark.evaluate.segments import SEGMENTS_NOTE, segments_table

        segments = segments_table(result.metrics, name)
        if segments:
            parts.append(f"<h3>Segments</h3><p class='note'>{html.escape(SEGMENTS_NOTE)}</p>{segments}")
        if res.margins:
            n = max(m.resamples for m in res.margins)
            parts.append(f"<h3>Margins (paired bootstrap, {res.bootstrap_seconds:.1f} s)</h3>"
                         f"<p class='note'>{html.escape(MARGINS_NOTE.format(n=n))}</p>" + margins_table(res))
        plots = [("Value: gain and lift", gain_lift_plot(res)),
                 ("Value: decile calibration", decile_plot(res, bins)),
                 ("Churn: reliability", reliability_plot(res, bins))]
        for heading, img in plots:
            if img:
                parts.append(f"<h3>{heading}</h3>{img}")
        qini = qini_plots(res)
        if qini:
            parts.append("<h3>Uplift: Qini curves</h3>" + "".join(qini))
        policies = policy_table(result.metrics, name)
        if policies:
            parts.append(f"<h3>Policies (off-policy value)</h3><p class='note'>{html.escape(POLICY_NOTE)}</p>"
                         + policies)
            curve = budget_curve_plot(result.metrics, name)
            if curve:
                parts.append("<h3>Policies: budget curve</h3>" + curve)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: BacktestResult, path: str, **kwargs) -> str:
    """Render the report and write it to ``path`` (parent directories created); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_report(result, **kwargs), encoding="utf-8")
    return str(target)
