"""The quality benchmark of issue 4: synthserve's generators against SMOTE and classic anomaly scorers on KEEL.

`benchmarks/quality.py` is the command line; these modules hold the data protocol (`data`), the classifiers
and metrics (`metrics`), the baselines (`baselines`), the adapter that trains and samples synthserve models
through the CLI and the exported ONNX graphs (`generator`), the per-fold work (`runner`) and the tables
and plot (`report`).
"""
