"""The batcher's close decision, as a pure function of the queue: each rule of serving.close_policy."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from serving.close_policy import PAUSE_GAPS, Decision, QueueView, close_decision, runs_inline
from serving.config import BatcherConfig

CONFIG = BatcherConfig(max_queue_delay_s=0.004, inline_max_s=0.0005)
# Two chunks queued 1 ms apart under load (the last batch merged 3 chunks): the batch waits for mates.
BUSY = QueueView(
    now=10.0,
    queued_rows=2,
    queued_chunks=2,
    oldest_at=9.999,
    newest_at=10.0,
    batch_rows=2048,
    last_batch_chunks=3,
    running=1,
    retired=False,
    mean_gap_s=0.0005,
    fixed_s=0.0001,
)


def test_a_busy_batch_waits_until_arrivals_pause() -> None:
    decision = close_decision(BUSY, CONFIG)
    assert not decision.alone and decision.wait_s == pytest.approx(PAUSE_GAPS * 0.0005)  # newest + 2 mean gaps
    slow_arrivals = dataclasses.replace(BUSY, mean_gap_s=0.01)  # the pause would come after the delay
    assert close_decision(slow_arrivals, CONFIG).wait_s == pytest.approx(0.003)  # oldest + 4 ms
    costly_runs = dataclasses.replace(BUSY, mean_gap_s=0.0, fixed_s=0.002)  # waiting less than a run saves is cheap
    assert close_decision(costly_runs, CONFIG).wait_s == pytest.approx(0.002)


def test_without_early_dispatch_a_batch_waits_the_full_delay() -> None:
    config = dataclasses.replace(CONFIG, early_dispatch=False)
    assert close_decision(BUSY, config).wait_s == pytest.approx(0.003)
    lone = dataclasses.replace(BUSY, queued_chunks=1, last_batch_chunks=1, running=0)
    decision = close_decision(lone, config)
    assert decision.alone and decision.wait_s == pytest.approx(0.003)


@pytest.mark.parametrize(
    ("change", "alone"),
    [
        ({"queued_rows": 2048}, False),  # full
        ({"now": 10.01}, False),  # the oldest chunk waited max_queue_delay_s
        ({"retired": True}, False),  # a draining batcher: no mates will come
        ({"queued_chunks": 1, "last_batch_chunks": 1, "running": 0}, True),  # a lone caller, a slot idle
    ],
)
def test_closes_at_once(change: dict[str, Any], alone: bool) -> None:
    assert close_decision(dataclasses.replace(BUSY, **change), CONFIG) == Decision(0.0, alone)


def test_a_lone_chunk_waits_while_a_batch_runs_or_the_last_one_was_merged() -> None:
    lone = dataclasses.replace(BUSY, queued_chunks=1, last_batch_chunks=1, running=0)
    changes: list[dict[str, Any]] = [{"running": 1}, {"last_batch_chunks": 2}]
    for change in changes:
        assert close_decision(dataclasses.replace(lone, **change), CONFIG).wait_s > 0


def test_batching_off_runs_every_chunk_at_once() -> None:
    assert close_decision(BUSY, dataclasses.replace(CONFIG, enabled=False)) == Decision(0.0, False)


def test_inline_runs_only_small_batches_that_did_not_queue_behind_the_last_inline_run() -> None:
    assert runs_inline(enqueued_at=5.0, inline_until=4.0, expected_s=0.0002, config=CONFIG)
    assert not runs_inline(5.0, 4.0, 0.001, CONFIG)  # expected beyond inline_max_s
    assert not runs_inline(5.0, 4.0, None, CONFIG)  # never timed
    assert not runs_inline(5.0, 5.0, 0.0002, CONFIG)  # arrived while the loop was blocked
    assert not runs_inline(5.0, 4.0, 0.0002, dataclasses.replace(CONFIG, inline_max_s=0.0))
