"""Column and value names of the plan tables (promo_plan, campaign_forecast); no Spark, no torch.

The contracts themselves are registered in ``ulv_spark.catalog``; the plan code and the
catalog share these names.
"""
from __future__ import annotations

PLAN = "plan"                          # plan name (conf plan.name); with as_of_date the unit a run replaces
OBJECTIVE = "objective"                # (lambda * short + (1 - lambda) * long) * margin - cost
COST = "cost"                          # arm cost of sending (score.arm_costs)
UPLIFT_CONVERSION = "uplift_conversion"
UPLIFT_VALUE = "uplift_value"          # short term: the response window
UPLIFT_VALUE_LONG = "uplift_value_long"  # long term: the full horizon (promo_uplift column, when the model has it)
SHORT_TERM_WEIGHT = "short_term_weight"
SCENARIO = "scenario"

# campaign_forecast scenarios and the arm value of a scenario's total row
SCENARIO_PLAN = "plan"                 # the budgeted plan
SCENARIO_SEND_ALL = "send_all_best_arm"  # every user gets their best arm, no budget, no ROI floor
SCENARIO_SEND_NONE = "send_none"       # nobody is sent anything
SCENARIOS = (SCENARIO_PLAN, SCENARIO_SEND_ALL, SCENARIO_SEND_NONE)
ALL_ARMS = "all"                       # campaign_forecast.arm of a scenario's total row

LONG_TERM_MISSING = "long-term uplift not available: λ has no effect"
