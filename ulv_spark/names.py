"""Vocabularies shared by features, train, score and evaluate: one definition each, torch- and Spark-free.

Table and column names of the Delta tables live with their contracts (``schemas`` / ``catalog``);
this module holds the names that are not table columns of one table: token ids of the event
sequences, the model's prediction outputs, the training tasks, and the feature columns that
code outside ``features/`` reads by name (the baselines' RFM inputs).
"""
from __future__ import annotations

# ---- event-token vocabulary (features/sequences.py writes these ids, train/ reads them) --------
PAD_ID, MASK_ID, CLS_ID, UNK_ID = 0, 1, 2, 3
RESERVED_TOKENS = ("[PAD]", "[MASK]", "[CLS]", "[UNK]")
FIRST_EVENT_ID = len(RESERVED_TOKENS)   # the first id of a real event token
IGNORE_INDEX = -100                      # label of positions the masked-event loss skips (torch's default)

# ---- prediction outputs (score_predictions columns, model outputs, baseline predictions) -------
EXPECTED_VALUE = "expected_value"
P_PURCHASE = "p_purchase"
VALUE_P10 = "value_p10"
VALUE_P90 = "value_p90"
CHURN_PROBABILITY = "churn_probability"
ARM_CONVERSION = "arm_conversion"    # ARRAY<DOUBLE>: P(convert | arm) for the model's arms, control first
ARM_VALUE = "arm_value"              # ARRAY<DOUBLE>: E[response spend | arm], control first
ARM_VALUE_LONG = "arm_value_long"    # ARRAY<DOUBLE>: E[spend over the horizon | arm sent at D], control first;
                                     # empty for models without the long-term head
ARM_PROPENSITY = "arm_propensity"    # (B, A) P(arm | user), only with a propensity head

SCALAR_OUTPUTS = (EXPECTED_VALUE, P_PURCHASE, VALUE_P10, VALUE_P90, CHURN_PROBABILITY)
ARM_OUTPUTS = (ARM_CONVERSION, ARM_VALUE, ARM_VALUE_LONG)

# ---- training tasks (loss parts, loss weights in train.loss_weights, validation losses) -------
TASKS = ("value", "churn", "uplift", "uplift_long", "propensity")

# ---- feature columns read by name outside features/ (declared in features.rfm / features.build) --
FREQUENCY = "frequency"              # lifetimes definitions, in days
RECENCY = "recency"
T_AGE = "T"
MONETARY = "monetary_value"
RFM_COLUMNS = (FREQUENCY, RECENCY, T_AGE, MONETARY)
HAS_PURCHASE = "has_purchase"        # 1 when the user bought before the as-of date, else 0
