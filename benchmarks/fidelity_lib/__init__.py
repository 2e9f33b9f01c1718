"""The fidelity benchmark: synthserve's families against SDV's GaussianCopula, TVAE and CTGAN on real tables.

`benchmarks/fidelity.py` is the command line; these modules hold the tables and their two written forms
(`tables`), the measures on user-facing frames (`measures`), the generators behind one interface (`generators`,
with `sdv_worker`, which runs inside SDV's own virtual environment) and the printed tables and verdicts
(`report`). docs/fidelity.md states the protocol and the measured results.
"""
