"""Conditions on feature values through a real server: exact counts, rows that meet every condition, the
contract's candidate rule (checked against the fixture's closed form), stream = unary = Balance, and refusals that
name the condition."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest

from serving.client import SynthClient
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from synthserve.contract import condition_seed
from tests.serving.conftest import ServerThread
from tests.serving.helpers import expected_rows, labels_of, rows_of

Stub = pb_grpc.SynthesizerStub
TOLERANCE = 2e-6


def _conditions(**tests: Any) -> list[pb.FeatureCondition]:
    out = []
    for column, test in tests.items():
        condition = pb.FeatureCondition(column=column)
        if isinstance(test, tuple):
            condition.range.low, condition.range.high = test
        elif isinstance(test, str):
            condition.equals.string_value = test
        else:
            condition.equals.number_value = test
        out.append(condition)
    return out


def _expected(seed: int, class_index: int, needed: int, version: int, keep: Any) -> np.ndarray:
    """The first `needed` of class `class_index`'s candidates that `keep` accepts, in closed form."""
    candidates = expected_rows(condition_seed(seed, class_index), np.full(50_000, class_index), version)
    return candidates[keep(candidates)][:needed]


def test_sample_keeps_the_first_candidates_that_meet_every_condition(stub: Stub) -> None:
    # Version 2: class means (10, 10) and (20, -20), scale 0.5; cat uniform over a, b, c.
    request = pb.SampleRequest(
        model="gauss",
        num_rows=700,
        seed=8,
        proportions=pb.ClassProportions(weights={"neg": 1, "pos": 1}),
        conditions=_conditions(cat="b", x0=(9.5, 20.2)),
    )
    response = stub.Sample(request)
    rows, labels = rows_of(response.rows), labels_of(response.rows)
    assert len(rows) == 700 and np.bincount(labels).tolist() == [350, 350]
    assert (rows[:, 2] == 1).all() and ((rows[:, 0] >= 9.5) & (rows[:, 0] <= 20.2)).all()

    def keep(c: np.ndarray) -> np.ndarray:
        return (c[:, 2] == 1) & (c[:, 0] >= 9.5) & (c[:, 0] <= 20.2)

    expected = np.concatenate([_expected(8, 0, 350, 2, keep), _expected(8, 1, 350, 2, keep)])
    np.testing.assert_allclose(rows, expected, rtol=TOLERANCE, atol=TOLERANCE)
    assert stub.Sample(request).rows == response.rows  # a function of (seed, request)


def test_stream_balance_and_concurrency_give_the_same_rows(stub: Stub) -> None:
    conditions = _conditions(cat="c", x1=(-20.5, -19.0))
    unary = stub.Sample(pb.SampleRequest(model="gauss", num_rows=900, seed=3, label="pos", conditions=conditions))
    stream = stub.SampleStream(
        pb.SampleStreamRequest(model="gauss", num_rows=900, seed=3, label="pos", chunk_rows=256, conditions=conditions)
    )
    chunks = list(stream)
    assert [c.start_row for c in chunks] == [0, 256, 512, 768]
    np.testing.assert_array_equal(np.concatenate([rows_of(c.rows) for c in chunks]), rows_of(unary.rows))
    balance = stub.Balance(
        pb.BalanceRequest(
            model="gauss",
            seed=3,
            class_counts={"neg": 900},
            strategy=pb.BALANCE_STRATEGY_EXPLICIT_COUNTS,
            explicit_counts={"pos": 900},
            sampling=pb.SamplingOptions(best_of=1),
            conditions=conditions,
        )
    )
    np.testing.assert_array_equal(np.concatenate([rows_of(c.rows) for c in balance]), rows_of(unary.rows))
    futures = [
        stub.Sample.future(pb.SampleRequest(model="gauss", num_rows=50 + i, seed=i, label="neg")) for i in range(20)
    ]
    together = stub.Sample.future(
        pb.SampleRequest(model="gauss", num_rows=900, seed=3, label="pos", conditions=conditions)
    )
    assert together.result().rows == unary.rows and all(f.result().rows.num_rows for f in futures)


def test_the_client_takes_values_and_ranges_by_column(server: ServerThread) -> None:
    with SynthClient(server.target) as client:
        frame = client.sample("gauss", 200, label="neg", seed=1, version=1, conditions={"cat": "a", "x0": (-1.0, 0.5)})
        streamed = list(
            client.sample_stream(
                "gauss", 200, label="neg", seed=1, version=1, chunk_rows=64, conditions={"cat": "a", "x0": (-1.0, 0.5)}
            )
        )
    assert len(frame) == 200 and set(frame["cat"]) == {"a"} and frame["x0"].between(-1.0, 0.5).all()
    pd.testing.assert_frame_equal(frame, pd.concat(streamed, ignore_index=True))


@pytest.mark.parametrize(
    ("conditions", "code", "message"),
    [
        (_conditions(colour="red"), "INVALID_ARGUMENT", "conditions[0].column: no column 'colour' in model 'gauss'"),
        (_conditions(x0=1.0), "INVALID_ARGUMENT", "conditions[0].equals: equality applies to categorical and integer"),
        (
            _conditions(cat=(0.0, 1.0)),
            "INVALID_ARGUMENT",
            "conditions[0].range: 'cat' is categorical with labels that are not numbers",
        ),
        (_conditions(x0=(2.0, 1.0)), "INVALID_ARGUMENT", "conditions[0].range: low 2 is above high 1"),
        (
            _conditions(cat="b", x1=(float("nan"), 1.0)),
            "INVALID_ARGUMENT",
            "conditions[1].range.low: expected a finite",
        ),
        (_conditions(cat="z"), "INVALID_ARGUMENT", "conditions[0].equals: 'z' is not a category of 'cat'"),
        ([pb.FeatureCondition(column="cat")], "INVALID_ARGUMENT", "conditions[0]: give equals or range"),
        (
            _conditions(cat="a", x0=(13.0, 14.0)),
            "FAILED_PRECONDITION",
            "the rarest, 13 <= x0 <= 14, alone keeps 0.00% of the candidates",
        ),
    ],
)
def test_bad_or_too_rare_conditions_are_refused_by_name(
    stub: Stub, conditions: list[pb.FeatureCondition], code: str, message: str
) -> None:
    request = pb.SampleRequest(model="gauss", num_rows=10, seed=1, label="neg", conditions=conditions)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Sample(request)
    assert caught.value.code().name == code and message in (caught.value.details() or ""), caught.value.details()


def test_conditions_do_not_combine_with_a_partition(stub: Stub) -> None:
    request = pb.SampleStreamRequest(model="gauss", num_rows=100, seed=1, first_row=10, conditions=_conditions(cat="a"))
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.SampleStream(request))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "a partition of a request with conditions is not supported" in (caught.value.details() or "")
