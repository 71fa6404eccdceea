"""Pure numpy/pandas: ranking, retrieval, cold start, metrics, evaluation, tuning, CF fitting. No Spark, no warehouse."""
