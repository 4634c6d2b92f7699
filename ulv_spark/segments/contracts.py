"""Column names of the segment tables (user_embeddings, segment_profiles, segment_transitions); no Spark.

The contracts themselves are registered in ``ulv_spark.catalog`` (group ``segments``; the
learned columns of ``user_segments`` are registered with that table, group ``scores``).
"""
from __future__ import annotations

EMBEDDING = "embedding"                 # ARRAY<FLOAT>: the encoder's pooled representation of the user
LEARNED_SEGMENT = "learned_segment"     # INT: stable id of the learned segment
LEARNED_SEGMENT_NAME = "learned_segment_name"  # STRING: rule-based name from the segment's profile
BEST_UPLIFT = "best_uplift_value"       # largest uplift_value over the non-control arms (0 without arms)
FROM_SEGMENT = "from_segment"
TO_SEGMENT = "to_segment"
USERS = "users"
SEGMENT_TABLE_NAMES = ("user_embeddings", "segment_profiles", "segment_transitions")
