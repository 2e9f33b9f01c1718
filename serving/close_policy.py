"""When a batch closes: the batcher's scheduling decision as pure functions of what the queue looks like now.

A batch closes when it holds `batch_rows` rows or its oldest chunk has waited `max_queue_delay_s`. With
`early_dispatch` it also closes when waiting cannot help:
1. at once for a lone caller: the last batch held one chunk, one chunk is queued and no batch is running
   (requests arrive one at a time; a mate would only be waited for);
2. as soon as arrivals pause: no chunk for `PAUSE_GAPS` mean gaps between arrivals, nor for a run's fixed cost
   (a closed group of callers has all come; waiting less than a mate would save is cheap).
Once requests share batches, a batch waits for its mates even with a worker idle: under load each batch's fixed
cost (a session run, the hop to a worker thread) is what bounds small-request throughput.
A retired batcher closes every batch at once (no mates will come). With batching off, every chunk runs alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.config import BatcherConfig

__all__ = ["PAUSE_GAPS", "Decision", "QueueView", "close_decision", "runs_inline"]

PAUSE_GAPS = 2.0  # no arrival for this many mean gaps between arrivals: the batch closes


@dataclass(frozen=True)
class QueueView:
    """The queue as the policy sees it (times from time.monotonic)."""

    now: float
    queued_rows: int
    queued_chunks: int
    oldest_at: float  # when the oldest queued chunk arrived
    newest_at: float  # when the newest queued chunk arrived
    batch_rows: int  # rows a run may hold
    last_batch_chunks: int  # chunks in the batch that closed last
    running: int  # batches running now
    retired: bool
    mean_gap_s: float  # EWMA of the gaps between chunks that arrived while others waited
    fixed_s: float  # a run's fixed cost (RunCost)


@dataclass(frozen=True)
class Decision:
    wait_s: float  # 0: close the batch now; otherwise look again after this long (or on the next arrival)
    alone: bool  # a lone caller's batch (it may run inline: `runs_inline`)


def close_decision(view: QueueView, config: BatcherConfig) -> Decision:
    if not config.enabled or view.queued_chunks == 0 or view.queued_rows >= view.batch_rows:
        return Decision(0.0, False)
    alone = view.last_batch_chunks == 1 and view.queued_chunks == 1 and view.running == 0
    if view.retired or (config.early_dispatch and alone):
        return Decision(0.0, alone)
    close_at = view.oldest_at + config.max_queue_delay_s
    if config.early_dispatch:
        close_at = min(close_at, view.newest_at + max(PAUSE_GAPS * view.mean_gap_s, view.fixed_s))
    return Decision(max(0.0, close_at - view.now), alone)


def runs_inline(enqueued_at: float, inline_until: float, expected_s: float | None, config: BatcherConfig) -> bool:
    """Whether a lone caller's batch runs on the event loop instead of a worker thread: its expected run is within
    `inline_max_s`, and its chunk did not arrive while the previous inline run held the loop (until
    `inline_until`): a blocked loop hides concurrent callers, and they must reach a worker to be merged."""
    if enqueued_at <= inline_until or config.inline_max_s <= 0:
        return False
    return expected_s is not None and expected_s <= config.inline_max_s
