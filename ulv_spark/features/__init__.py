"""Point-in-time features and labels: RFM, behaviour and event-token sequences (DataFrame -> DataFrame).

Public builders (pure; see build.py): ``build_user_features``, ``build_training_examples``;
the feature columns (declared beside their expressions, see declare.py): ``feature_table_columns``,
``declared_features``; the token vocabulary (see sequences.py): ``vocab_size``,
``vocabulary_fingerprint``, ``build_token_vocabulary``, ``PAD_ID``, ``MASK_ID``, ``CLS_ID``, ``UNK_ID``.
"""
from ulv_spark.features.build import (attribute_feature_columns, build_training_examples, build_user_features,
                                      declared_features, feature_table_columns, origins)
from ulv_spark.features.sequences import (CLS_ID, MASK_ID, PAD_ID, UNK_ID, build_token_vocabulary, vocab_size,
                                          vocabulary_fingerprint)

__all__ = [
    "build_user_features", "build_training_examples", "attribute_feature_columns", "origins",
    "declared_features", "feature_table_columns",
    "build_token_vocabulary", "vocab_size", "vocabulary_fingerprint", "PAD_ID", "MASK_ID", "CLS_ID", "UNK_ID",
]
