"""Budgeted promotion planning from the scored uplift (`ulv-spark plan`).

* ``contracts``: column and value names of promo_plan / campaign_forecast (no Spark);
* ``allocate``: pure DataFrame functions choosing at most one arm per user under a budget,
  per-arm capacities and a minimum ROI (Lagrangian price on the budget, found by a few
  aggregate passes);
* ``forecast``: per plan and arm, what the plan is expected to bring, with bootstrap intervals
  over users (Spark aggregates only), beside "send to everyone" and "send to nobody";
* ``job``: ``run_plan(ctx)``, the stage function (reads promo_uplift, writes both tables).
"""
