"""Learned user segments from the model's representation (Spark MLlib clustering).

contracts.py: column names; inputs.py: the clustering inputs from score_predictions;
fit.py: the pyspark.ml pipeline, k by silhouette, save/load of the fitted segmenter;
matching.py: Hungarian matching of centroids so ids persist; profiles.py: segment_profiles
and the rule-based names; transitions.py: segment_transitions; job.py: `ulv-spark segment`.
"""
