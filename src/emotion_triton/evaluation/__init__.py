"""The evaluation layer: accuracy, throughput and latency of the served ensemble on labelled data,
and scikit-learn's classification metrics (`classification_metrics`), shared with the build.

Needs the `evaluate` extra; never torch or transformers (import-linter contracts in pyproject.toml).
"""
