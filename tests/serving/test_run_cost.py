"""A graph's run cost fitted from its timed runs: the fixed part merging saves, and the rows a run may hold."""

from __future__ import annotations

import pytest

from serving.run_cost import PROBE_ROWS, RunCost


def test_run_cost_separates_a_runs_fixed_cost_from_its_cost_per_row() -> None:
    cost = RunCost()
    cost.observe(10, 0.001 + 10 * 2e-6)
    assert cost.fixed_s == 0.0 and cost.per_row_s == pytest.approx(0.00102 / 10)  # one size: all per-row
    for rows in [1, 7, 64, 300, 2048, 3, 1000] * 20:
        cost.observe(rows, 0.001 + rows * 2e-6)
    assert cost.fixed_s == pytest.approx(0.001, rel=1e-6)
    assert cost.per_row_s == pytest.approx(2e-6, rel=1e-6)


def test_runs_are_sized_from_timed_runs_of_at_least_probe_rows() -> None:
    cost = RunCost()
    assert cost.rows_within(0.05, 2048) == PROBE_ROWS  # never timed: a probe run
    cost.observe(8, 0.5)  # small runs do not size (one row's cost would be mostly fixed cost)
    assert cost.rows_within(0.05, 2048) == PROBE_ROWS
    cost.observe(100, 0.1)  # 1 ms a row
    assert cost.rows_within(0.05, 2048) == 50
    assert cost.rows_within(0.05, 20) == 20  # capped by max_batch_rows
    assert cost.rows_within(1e-9, 2048) == 1  # at least one row
