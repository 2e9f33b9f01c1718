"""Dynamic batching through a real server: merging, independence of rows from batch mates, deadlines, bounds."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from serving.batcher import PROBE_ROWS, Batcher
from serving.config import BatcherConfig
from serving.errors import DeadlineExceeded, ModelNotFound, QueueFull
from serving.planning import RowPlan
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.registry import Registry
from tests.serving.conftest import ServerThread, make_config
from tests.serving.helpers import expected_rows, labels_of, metric, rows_of


def _batch_rows(graph: str = "sample") -> tuple[float, float]:
    """(batches run, rows computed) of gauss so far."""
    count = metric("synthserve_batch_rows_count", {"model": "gauss", "graph": graph})
    total = metric("synthserve_batch_rows_sum", {"model": "gauss", "graph": graph})
    return count, total


@pytest.fixture()
def slow_server(store: Path) -> Iterator[ServerThread]:
    """Batches close only when full or after 1.5 s: queued requests wait, deterministically."""
    running = ServerThread(make_config(store, max_queue_delay_s=1.5, early_dispatch=False, max_queued_rows=4096))
    yield running
    running.stop()


@pytest.fixture()
def merging_server(store: Path) -> Iterator[ServerThread]:
    """Every batch waits 50 ms for mates: concurrent requests merge however busy the machine is."""
    running = ServerThread(make_config(store, max_queue_delay_s=0.05, early_dispatch=False))
    yield running
    running.stop()


def test_concurrent_requests_are_merged_and_rows_do_not_depend_on_batch_mates(merging_server: ServerThread) -> None:
    seeds = list(range(100, 150))
    with grpc.insecure_channel(merging_server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        alone = {seed: stub.Sample(pb.SampleRequest(model="gauss", num_rows=20, seed=seed)) for seed in seeds}
        batches_before, rows_before = _batch_rows()
        futures = [stub.Sample.future(pb.SampleRequest(model="gauss", num_rows=20, seed=seed)) for seed in seeds]
        together = {seed: future.result() for seed, future in zip(seeds, futures)}
        batches_after, rows_after = _batch_rows()
    assert rows_after - rows_before == 50 * 20
    assert batches_after - batches_before < 50  # at least two requests shared a session run
    identical = 0
    for seed in seeds:
        np.testing.assert_allclose(rows_of(together[seed].rows), rows_of(alone[seed].rows), rtol=2e-7, atol=2e-7)
        np.testing.assert_allclose(
            rows_of(alone[seed].rows), expected_rows(seed, labels_of(alone[seed].rows), 2), rtol=2e-6, atol=2e-6
        )
        identical += together[seed].rows == alone[seed].rows
    print(f"bit-identical alone vs batched: {identical}/50")


def test_a_queued_request_past_its_deadline_is_never_computed(slow_server: ServerThread) -> None:
    _, rows_before = _batch_rows()
    with grpc.insecure_channel(slow_server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Sample(pb.SampleRequest(model="gauss", num_rows=5, seed=1), timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.6)  # past the queue delay: the batch would have run by now
        _, rows_after = _batch_rows()
        assert rows_after == rows_before
        assert metric("synthserve_queued_rows", {"model": "gauss", "graph": "sample"}) == 0


def test_the_queue_bound_answers_resource_exhausted(slow_server: ServerThread) -> None:
    with grpc.insecure_channel(slow_server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        first = stub.Sample.future(pb.SampleRequest(model="gauss", num_rows=3000, seed=1))
        time.sleep(0.2)
        with pytest.raises(grpc.RpcError) as info:
            stub.Sample(pb.SampleRequest(model="gauss", num_rows=2000, seed=2))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queued_rows=4096" in str(info.value.details())
        assert first.result().rows.num_rows == 3000  # the queued request is unaffected


def test_batching_off_runs_every_request_alone(store: Path) -> None:
    running = ServerThread(make_config(store, enabled=False))
    try:
        batches_before, _ = _batch_rows()
        with grpc.insecure_channel(running.target) as channel:
            stub = pb_grpc.SynthesizerStub(channel)
            futures = [stub.Sample.future(pb.SampleRequest(model="gauss", num_rows=3, seed=s)) for s in range(20)]
            assert all(f.result().rows.num_rows == 3 for f in futures)
        batches_after, _ = _batch_rows()
        assert batches_after - batches_before == 20
    finally:
        running.stop()


def test_large_requests_are_split_into_batches_of_max_batch_rows(server: ServerThread) -> None:
    batches_before, rows_before = _batch_rows()
    with grpc.insecure_channel(server.target) as channel:
        response = pb_grpc.SynthesizerStub(channel).Sample(pb.SampleRequest(model="gauss", num_rows=10_000, seed=8))
    batches_after, rows_after = _batch_rows()
    assert rows_after - rows_before == 10_000 and batches_after - batches_before >= 3  # max_batch_rows 4096
    np.testing.assert_allclose(
        rows_of(response.rows), expected_rows(8, labels_of(response.rows), 2), rtol=2e-6, atol=2e-6
    )


class _Graph:
    """A fake session: doubles its input, fails on any batch holding a negative value."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.gate.wait(5)
        x = feeds["x"]
        self.batches.append(len(x))
        if (x < 0).any():
            raise RuntimeError("negative input")
        return [2 * x]


def _feeds(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full(2, value)}


def test_an_error_reaches_only_the_request_it_belongs_to_and_cancelled_chunks_are_dropped() -> None:
    async def scenario() -> tuple[list[Any], list[int]]:
        graph = _Graph()
        config = BatcherConfig(max_batch_rows=64, max_queue_delay_s=0.05, early_dispatch=False, max_queued_rows=64)
        with ThreadPoolExecutor(2) as executor:
            batcher = Batcher("fake", "sample", graph, config, executor, slots=1)
            values = [1.0, -1.0, 3.0]
            tasks = [asyncio.ensure_future(batcher.submit(2, functools.partial(_feeds, v))) for v in values]
            cancelled = asyncio.ensure_future(batcher.submit(2, functools.partial(_feeds, 9.0)))
            expired = asyncio.ensure_future(batcher.submit(2, functools.partial(_feeds, 7.0), deadline=0.0))
            await asyncio.sleep(0)
            cancelled.cancel()
            graph.gate.set()
            results = await asyncio.gather(*tasks, expired, return_exceptions=True)
            await batcher.close()
        return results, graph.batches

    results, batches = asyncio.run(scenario())
    np.testing.assert_array_equal(results[0][0], [2.0, 2.0])  # type: ignore[index]
    assert isinstance(results[1], RuntimeError)
    np.testing.assert_array_equal(results[2][0], [6.0, 6.0])  # type: ignore[index]
    assert isinstance(results[3], DeadlineExceeded)
    assert batches == [6, 2, 2, 2]  # one merged run (cancelled and expired chunks dropped), then isolation reruns


class _TimedGraph:
    """A fake session that records each batch's chunk count (2 rows per chunk) and takes `run_s` per run."""

    def __init__(self, run_s: float = 0.0) -> None:
        self.batches: list[int] = []
        self.run_s = run_s

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        time.sleep(self.run_s)
        self.batches.append(len(feeds["x"]) // 2)
        return [2 * feeds["x"]]


def test_a_lone_caller_never_waits_for_batch_mates() -> None:
    async def scenario() -> tuple[float, list[int]]:
        graph = _TimedGraph()
        config = BatcherConfig(max_batch_rows=64, max_queue_delay_s=5.0, max_queued_rows=64)
        with ThreadPoolExecutor(2) as executor:
            batcher = Batcher("fake", "sample", graph, config, executor, slots=2)
            started = time.monotonic()
            for value in range(20):
                (result,) = await batcher.submit(2, functools.partial(_feeds, float(value)))
                np.testing.assert_array_equal(result, [2.0 * value, 2.0 * value])
            elapsed = time.monotonic() - started
            await batcher.close()
        return elapsed, graph.batches

    elapsed, batches = asyncio.run(scenario())
    assert batches == [1] * 20
    assert elapsed < 2.0  # twenty requests, none waited out the 5 s delay


class _ThreadGraph:
    """A fake session that records the thread of each run and takes 0.2 s on batches of over 100 rows."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.threads.append(threading.get_ident())
        if len(feeds["x"]) > 100:
            time.sleep(0.2)
        return [2 * feeds["x"]]


@pytest.mark.parametrize("inline_max_s", [0.05, 0.0])
def test_a_lone_callers_small_batch_runs_on_the_event_loop_and_any_other_in_a_worker(inline_max_s: float) -> None:
    """On the loop: a lone caller's batch once its cost is known (the first batch teaches it) and expected within
    inline_max_s. In a worker: a 0.2 s batch, a chunk that came right after an inline run (it may have queued
    behind it), concurrent callers, and every batch when inline_max_s is 0."""

    async def scenario() -> tuple[int, list[int]]:
        graph = _ThreadGraph()
        config = BatcherConfig(
            max_batch_rows=1024, max_queue_delay_s=5.0, max_queued_rows=4096, inline_max_s=inline_max_s
        )
        with ThreadPoolExecutor(2) as executor:
            batcher = Batcher("fake", "sample", graph, config, executor, slots=2)
            for n_rows, pause_s in [(1000, 0.0), (2, 0.06), (1000, 0.06), (2, 0.06), (2, 0.0), (2, 0.06)]:
                await asyncio.sleep(pause_s)  # a caller's round trip between answer and next request
                (result,) = await batcher.submit(n_rows, functools.partial(dict, x=np.full(n_rows, 3.0)))
                np.testing.assert_array_equal(result, np.full(n_rows, 6.0))
            await asyncio.sleep(0.06)
            await asyncio.gather(*(batcher.submit(2, functools.partial(_feeds, float(v))) for v in range(3)))
            await batcher.close()
        return threading.get_ident(), graph.threads

    loop_thread, threads = asyncio.run(scenario())
    on_loop = [thread == loop_thread for thread in threads]
    if inline_max_s:
        assert on_loop == [False, True, False, True, False, True, False], on_loop
    else:
        assert not any(on_loop), on_loop


def test_a_closed_group_of_callers_shares_batches_without_waiting_out_the_delay() -> None:
    """Eight callers that each send again once answered: once they share a batch, every batch holds all eight,
    and it closes when their arrivals pause, long before the 5 s delay."""

    async def scenario() -> tuple[float, list[int]]:
        graph = _TimedGraph(run_s=0.002)
        config = BatcherConfig(max_batch_rows=1024, max_queue_delay_s=5.0, max_queued_rows=1024)
        with ThreadPoolExecutor(2) as executor:
            batcher = Batcher("fake", "sample", graph, config, executor, slots=2)

            async def caller(index: int) -> None:
                for round_ in range(30):
                    await asyncio.sleep(0.001 * index)  # the callers arrive spread out, not in one instant
                    value = float(100 * index + round_)
                    (result,) = await batcher.submit(2, functools.partial(_feeds, value))
                    np.testing.assert_array_equal(result, [2.0 * value, 2.0 * value])

            started = time.monotonic()
            await asyncio.gather(*(caller(i) for i in range(8)))
            elapsed = time.monotonic() - started
            await batcher.close()
        return elapsed, graph.batches

    elapsed, batches = asyncio.run(scenario())
    assert sum(batches) == 8 * 30
    assert elapsed < 5.0  # thirty rounds; waiting out the delay even once would take 5 s
    # Once the gaps are learned (one caller starts alone, a round ahead), batches wait for all eight, no longer.
    assert batches.count(8) >= 15, batches


@pytest.mark.serial  # measures waits and run costs: alone on the machine
def test_under_steady_arrivals_a_batch_waits_for_mates_though_a_worker_is_idle() -> None:
    """Chunks every 2 ms into a 5 ms session: once two share a batch, batches wait up to the delay for more
    instead of running as soon as one of the two workers is free (which gives batches of 2-3 chunks)."""

    async def scenario() -> tuple[list[int], float]:
        graph = _TimedGraph(run_s=0.005)
        config = BatcherConfig(max_batch_rows=1024, max_queue_delay_s=0.06, max_queued_rows=1024)
        with ThreadPoolExecutor(2) as executor:
            batcher = Batcher("fake", "sample", graph, config, executor, slots=2)
            waits: list[float] = []

            async def one(value: float) -> None:
                submitted = time.monotonic()
                await batcher.submit(2, functools.partial(_feeds, value))
                waits.append(time.monotonic() - submitted)

            tasks = [asyncio.ensure_future(one(0.0)), asyncio.ensure_future(one(1.0))]  # two at once: concurrent
            for value in range(2, 122):
                await asyncio.sleep(0.002)
                tasks.append(asyncio.ensure_future(one(float(value))))
            await asyncio.gather(*tasks)
            await batcher.close()
        return graph.batches, max(waits)

    batches, longest_wait_s = asyncio.run(scenario())
    assert sum(batches) == 122
    assert max(batches) >= 10, batches  # 60 ms of arrivals every 2 ms gather far more than a free worker would
    assert longest_wait_s < 0.06 + 0.1  # the delay bounds every wait (plus one run and scheduling slack)


@pytest.mark.serial  # measures waits and run costs: alone on the machine
def test_large_chunks_do_not_wait_for_batch_mates() -> None:
    """A group of callers whose 2,000-row chunks are mostly per-row work (0.1 ms per run, 3 us per row): a pause
    in arrivals is measured against a run's fixed cost, not its whole run, so each chunk runs as soon as a worker is
    free instead of waiting for the group."""

    class _LinearGraph(_TimedGraph):
        def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            time.sleep(0.0001 + 3e-6 * len(feeds["x"]))
            self.batches.append(len(feeds["x"]))
            return [2 * feeds["x"]]

    async def scenario() -> list[int]:
        graph = _LinearGraph()
        config = BatcherConfig(max_batch_rows=16384, max_queue_delay_s=1.0, max_queued_rows=65536)
        with ThreadPoolExecutor(2) as executor:
            batcher = Batcher("fake", "sample", graph, config, executor, slots=2)

            async def caller(index: int, sizes: list[int]) -> None:
                for n_rows in sizes:
                    await asyncio.sleep(0.003 * index)  # the group's chunks arrive 3 ms apart
                    await batcher.submit(n_rows, functools.partial(dict, x=np.ones(n_rows)))

            # Sizes from 1 to 2,000 rows first, so the fit learns the fixed and per-row costs.
            await asyncio.gather(*(caller(0, [1 + 500 * i, 7, 2000 - 300 * i] * 3) for i in range(4)))
            assert batcher.run_cost.fixed_s < 0.5 * batcher.run_cost.per_row_s * 2000  # a 6 ms run, mostly per row
            graph.batches.clear()
            await asyncio.gather(*(caller(i, [2000] * 10) for i in range(4)))
            await batcher.close()
        return graph.batches

    batches = asyncio.run(scenario())
    assert sum(batches) == 4 * 10 * 2000
    # Waiting for mates gathers the group's four chunks (8,000 rows) in most of its ten rounds: about 10 batches.
    # Running each chunk as a worker frees gives 40 batches of 2,000 rows, or pairs of them (20 batches) where a slow
    # machine keeps both workers busy while the next chunks arrive; neither is waiting.
    assert len(batches) >= 18, batches
    assert batches.count(8000) <= 4, batches


def test_a_cancelled_stream_stops_computing(server: ServerThread) -> None:
    _, rows_before = _batch_rows()
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        call = stub.SampleStream(pb.SampleStreamRequest(model="gauss", num_rows=2_000_000, seed=1, chunk_rows=1000))
        assert next(call).rows.num_rows == 1000
        call.cancel()
        time.sleep(0.5)
        _, rows_after_cancel = _batch_rows()
        time.sleep(0.5)
        _, rows_later = _batch_rows()
        assert stub.Sample(pb.SampleRequest(model="gauss", num_rows=2, seed=1)).rows.num_rows == 2
    assert rows_after_cancel - rows_before < 100_000  # a few prefetched chunks, not the 2M rows asked for
    assert rows_later == rows_after_cancel


def test_a_retired_batcher_drains_its_queue_and_refuses_new_chunks() -> None:
    async def scenario() -> tuple[list[Any], BaseException | None, list[int]]:
        graph = _Graph()
        # Batches would wait 30 s for mates: only the drain's immediate dispatch lets this finish in time.
        config = BatcherConfig(max_batch_rows=4, max_queue_delay_s=30.0, early_dispatch=False, max_queued_rows=64)
        with ThreadPoolExecutor(2) as executor:
            batcher = Batcher("fake", "sample", graph, config, executor, slots=1)
            tasks = [asyncio.ensure_future(batcher.submit(2, functools.partial(_feeds, v))) for v in range(1, 6)]
            await asyncio.sleep(0.05)  # all five queued; the first full batch is held at the gate
            drain = asyncio.ensure_future(batcher.drain())
            await asyncio.sleep(0)
            refused: BaseException | None = None
            try:
                await batcher.submit(2, functools.partial(_feeds, 9.0))
            except ModelNotFound as exc:
                refused = exc
            graph.gate.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
            await asyncio.wait_for(drain, timeout=10)
        return results, refused, graph.batches

    results, refused, batches = asyncio.run(scenario())
    for value, result in zip(range(1, 6), results):
        assert not isinstance(result, BaseException), result
        np.testing.assert_array_equal(result[0], [2.0 * value, 2.0 * value])
    assert isinstance(refused, ModelNotFound) and "retired" in str(refused)
    assert sum(batches) == 10  # every queued row computed once; the refused chunk never


def test_a_reload_retiring_a_version_lets_its_queued_requests_finish(slow_server: ServerThread) -> None:
    seeds = [11, 12, 13, 14]
    with grpc.insecure_channel(slow_server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        futures = [stub.Sample.future(pb.SampleRequest(model="gauss", version=1, num_rows=500, seed=s)) for s in seeds]
        time.sleep(0.3)  # queued: the slow server holds batches for 1.5 s
        engine = slow_server.server.engine
        old = engine.registry
        v1 = old.get("gauss", 1)
        kept = {"gauss": {2: old.get("gauss", 2)}, "gauss-gan": {1: old.get("gauss-gan", 1)}}
        slow_server.call(engine.use_registry(Registry(kept, {})))
        responses = [future.result(timeout=30) for future in futures]
        with pytest.raises(grpc.RpcError) as info:
            stub.Sample(pb.SampleRequest(model="gauss", version=1, num_rows=5, seed=1))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    for seed, response in zip(seeds, responses):
        assert response.version == 1
        np.testing.assert_allclose(
            rows_of(response.rows), expected_rows(seed, labels_of(response.rows), 1), rtol=2e-6, atol=2e-6
        )
    with pytest.raises(ModelNotFound):  # a request that resolved v1 before the reload gets no new queue
        slow_server.call(engine.generate(RowPlan(v1, 1, 5, None), 0, 5, None))


def test_a_stream_whose_version_is_retired_mid_way_ends_on_it(slow_server: ServerThread) -> None:
    """The stream holds its version's batcher: chunks it queues after the reload are still served, the rows are
    the version's closed form to the last chunk, and the retired queue closes once the stream ends."""
    engine = slow_server.server.engine
    with grpc.insecure_channel(slow_server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        request = pb.SampleStreamRequest(model="gauss", version=1, num_rows=600, chunk_rows=100, seed=21)
        stream = stub.SampleStream(request)
        first = next(stream)  # the first chunks are queued; later ones are queued after the reload
        old = engine.registry
        kept = {"gauss": {2: old.get("gauss", 2)}, "gauss-gan": {1: old.get("gauss-gan", 1)}}
        slow_server.call(engine.use_registry(Registry(kept, {})))
        with pytest.raises(grpc.RpcError) as info:  # a new request for the retired version: NOT_FOUND
            stub.Sample(pb.SampleRequest(model="gauss", version=1, num_rows=5, seed=1))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        chunks = [first, *stream]
    assert [c.start_row for c in chunks] == [0, 100, 200, 300, 400, 500]
    for chunk in chunks:
        assert chunk.version == 1
        labels = labels_of(chunk.rows)
        np.testing.assert_allclose(
            rows_of(chunk.rows), expected_rows(21, labels, 1, chunk.start_row), rtol=2e-6, atol=2e-6
        )
    deadline = time.monotonic() + 10
    while engine.batchers.draining and time.monotonic() < deadline:  # the retired batcher drains once the stream ended
        time.sleep(0.05)
    assert not engine.batchers.draining


def test_a_heavy_graph_runs_in_runs_of_about_max_run_s() -> None:
    """A graph costing 1 ms a row with max_run_s 20 ms: after the first (PROBE_ROWS) run, runs of ~20 rows."""

    class Heavy:
        def __init__(self) -> None:
            self.runs: list[int] = []

        def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            time.sleep(0.001 * len(feeds["x"]))
            self.runs.append(len(feeds["x"]))
            return [feeds["x"]]

    async def scenario() -> list[int]:
        graph = Heavy()
        config = BatcherConfig(max_batch_rows=1024, max_run_s=0.02, max_queued_rows=4096)
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher("fake", "log_prob", graph, config, executor, slots=1)
            assert batcher.batch_rows == PROBE_ROWS
            await batcher.submit(PROBE_ROWS, functools.partial(dict, x=np.ones(PROBE_ROWS)))
            assert 10 <= batcher.batch_rows <= 22
            n = batcher.batch_rows
            await asyncio.gather(*(batcher.submit(n, functools.partial(dict, x=np.ones(n))) for _ in range(5)))
            await batcher.close()
        return graph.runs

    runs = asyncio.run(scenario())
    assert runs[0] == PROBE_ROWS and max(runs[1:]) <= 22  # merged chunks never exceed a run's rows


def test_a_request_admitted_whole_is_never_refused_half_way_and_the_queue_time_is_bounded() -> None:
    class PerRow:  # 1 ms a row
        def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            time.sleep(0.001 * len(feeds["x"]))
            return [feeds["x"]]

    async def scenario() -> tuple[str, list[object]]:
        config = BatcherConfig(max_batch_rows=64, max_queue_delay_s=0.0, max_queued_rows=100, max_queue_time_s=0.05)
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher("fake", "sample", PerRow(), config, executor, slots=1)
            with batcher.admit(80):  # 80 of 100 rows: the queue bound counts them from now on
                with pytest.raises(QueueFull) as rows_full:
                    await batcher.submit(30, functools.partial(dict, x=np.ones(30)))
                await batcher.submit(64, functools.partial(dict, x=np.ones(64)), admitted=True)  # timed: 1 ms/row
            running = asyncio.ensure_future(batcher.submit(64, functools.partial(dict, x=np.ones(64))))
            await asyncio.sleep(0.01)  # it runs (64 ms); chunks now queue behind it
            queued = [
                asyncio.ensure_future(batcher.submit(10, functools.partial(dict, x=np.ones(10)))) for _ in range(9)
            ]
            outcomes = await asyncio.gather(running, *queued, return_exceptions=True)
            await batcher.close()
        return str(rows_full.value), outcomes[1:]

    rows_full, outcomes = asyncio.run(scenario())
    assert "rows queued or admitted" in rows_full and "max_queued_rows=100" in rows_full
    refused = [str(o) for o in outcomes if isinstance(o, QueueFull)]
    assert 3 <= len(refused) <= 5  # 50 ms of 1 ms rows: five 10-row chunks wait, the rest are refused at once
    assert all("max_queue_time_s=0.05" in message for message in refused)
