"""Every RPC through a real server, checked against the fixture models' closed-form values."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from synthserve.contract import draw_noise
from tests.serving.fixture_store import CATEGORIES, CLASSES, ENCODE_NOISE, MEANS, PRIORS, SCALE, expected_log_prob
from tests.serving.helpers import expected_rows, labels_of, rows_of, table_of

Stub = pb_grpc.SynthesizerStub
FLOAT32_TOLERANCE = 2e-6  # relative and absolute: float32 rounding of values near 1-20


def test_list_and_get_model_describe_schema_classes_and_capabilities(stub: Stub) -> None:
    models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert sorted(models) == ["gauss", "gauss-gan"]  # broken and future were refused
    gauss = models["gauss"]
    assert (gauss.version, list(gauss.versions), gauss.family) == (2, [1, 2], "flow")
    assert list(gauss.capabilities) == ["sample", "log_prob", "encode"]
    assert [c.name for c in gauss.schema.columns] == ["x0", "x1", "cat"]
    assert [v.string_value for v in gauss.schema.columns[2].categories] == list(CATEGORIES)
    assert gauss.schema.columns[2].kind == pb.COLUMN_KIND_CATEGORICAL
    assert [v.string_value for v in gauss.schema.label.classes] == list(CLASSES)
    assert list(gauss.schema.label.priors) == pytest.approx(PRIORS)
    assert gauss.latent_dim == 2 and gauss.metrics["heldout_nll"] == 1.25
    assert list(models["gauss-gan"].capabilities) == ["sample"]
    v1 = stub.GetModel(pb.GetModelRequest(model="gauss", version=1)).model
    assert v1.version == 1 and list(v1.calibration.fpr) == [0.001, 0.01, 0.1]


@pytest.mark.parametrize("version", [0, 1, 2])
def test_sample_with_label_matches_the_closed_form(stub: Stub, version: int) -> None:
    response = stub.Sample(pb.SampleRequest(model="gauss", version=version, num_rows=300, label="pos", seed=11))
    served = version or 2
    assert (response.version, response.seed, response.rows.num_rows) == (served, 11, 300)
    labels = labels_of(response.rows)
    assert (labels == 1).all()
    np.testing.assert_allclose(
        rows_of(response.rows), expected_rows(11, labels, served), rtol=FLOAT32_TOLERANCE, atol=FLOAT32_TOLERANCE
    )


def test_sample_proportions_give_exact_counts_by_largest_remainder_in_class_order(stub: Stub) -> None:
    request = pb.SampleRequest(
        model="gauss", num_rows=7, seed=5, proportions=pb.ClassProportions(weights={"neg": 1, "pos": 1})
    )
    labels = labels_of(stub.Sample(request).rows)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1]  # 3.5 / 3.5: the tie goes to the lower class index
    default = labels_of(stub.Sample(pb.SampleRequest(model="gauss", num_rows=10, seed=5)).rows)
    assert np.bincount(default).tolist() == [7, 3]  # no condition: the training priors


def test_sample_without_seed_returns_a_seed_that_reproduces_the_rows(stub: Stub) -> None:
    first = stub.Sample(pb.SampleRequest(model="gauss", num_rows=50, label="neg"))
    again = stub.Sample(pb.SampleRequest(model="gauss", num_rows=50, label="neg", seed=first.seed))
    assert first.rows == again.rows
    other = stub.Sample(pb.SampleRequest(model="gauss", num_rows=50, label="neg"))
    assert other.seed != first.seed


def test_sample_stream_chunks_equal_the_unary_rows(stub: Stub) -> None:
    request = pb.SampleStreamRequest(model="gauss", num_rows=10_000, seed=3, chunk_rows=1_500)
    chunks = list(stub.SampleStream(request))
    assert [c.start_row for c in chunks] == list(range(0, 10_000, 1_500))
    streamed = np.concatenate([rows_of(c.rows) for c in chunks])
    unary = stub.Sample(pb.SampleRequest(model="gauss", num_rows=10_000, seed=3))
    np.testing.assert_array_equal(streamed, rows_of(unary.rows))
    np.testing.assert_array_equal(np.concatenate([labels_of(c.rows) for c in chunks]), labels_of(unary.rows))


def test_stream_partitions_concatenate_to_the_whole_stream(stub: Stub) -> None:
    def stream(**partition: int) -> list[pb.SampleStreamResponse]:
        request = pb.SampleStreamRequest(
            model="gauss",
            num_rows=5_000,
            seed=4,
            chunk_rows=700,
            proportions=pb.ClassProportions(weights={"neg": 1, "pos": 2}),
            **partition,
        )
        return list(stub.SampleStream(request))

    whole = stream()
    parts = [stream(first_row=0, stop_row=2_100), stream(first_row=2_100, stop_row=4_200), stream(first_row=4_200)]
    assert [c.start_row for c in parts[1]] == [2_100, 2_800, 3_500]  # indices within the whole request
    chunks = [c for part in parts for c in part]
    assert [c.start_row for c in chunks] == [c.start_row for c in whole]
    assert [c.rows for c in chunks] == [c.rows for c in whole]  # bit for bit, labels included
    assert np.bincount(np.concatenate([labels_of(c.rows) for c in parts[0]])).tolist() == [1_667, 433]
    # An uneven cut: the rows are the same values, wherever the chunks start.
    middle = stream(first_row=1_234, stop_row=3_000)
    np.testing.assert_array_equal(
        np.concatenate([rows_of(c.rows) for c in middle]), np.concatenate([rows_of(c.rows) for c in whole])[1_234:3_000]
    )


@pytest.mark.parametrize(
    ("partition", "message"),
    [
        ({"first_row": 5_000}, "first_row 5000 and stop_row 5000 must satisfy 0 <= first_row < stop_row <= num_rows"),
        ({"first_row": -1}, "first_row -1 and stop_row 5000 must satisfy"),
        ({"first_row": 10, "stop_row": 5_001}, "stop_row 5001 must satisfy"),
    ],
)
def test_a_partition_outside_the_request_is_refused(stub: Stub, partition: dict[str, int], message: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.SampleStream(pb.SampleStreamRequest(model="gauss", num_rows=5_000, seed=4, **partition)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("strategy", "extra", "expected"),
    [
        (pb.BALANCE_STRATEGY_MATCH_MAJORITY, {}, [0, 900]),
        (pb.BALANCE_STRATEGY_TARGET_RATIO, {"target_ratio": 0.5}, [0, 400]),
        (pb.BALANCE_STRATEGY_EXPLICIT_COUNTS, {"explicit_counts": {"neg": 5, "pos": 7}}, [5, 7]),
    ],
)
def test_balance_returns_exactly_the_rows_each_class_needs(
    stub: Stub, strategy: Any, extra: dict[str, Any], expected: list[int]
) -> None:
    plain = pb.SamplingOptions(best_of=1)  # plain rows, in closed form (the best-of default: test_sampling_options)
    request = pb.BalanceRequest(
        model="gauss",
        class_counts={"neg": 1000, "pos": 100},
        strategy=strategy,
        seed=9,
        chunk_rows=256,
        sampling=plain,
        **extra,
    )
    chunks = list(stub.Balance(request))
    labels = np.concatenate([labels_of(c.rows) for c in chunks])
    assert np.bincount(labels, minlength=2).tolist() == expected
    assert (np.diff(labels) >= 0).all()  # classes in index order, consecutive
    rows = np.concatenate([rows_of(c.rows) for c in chunks])
    np.testing.assert_allclose(rows, expected_rows(9, labels, 2), rtol=FLOAT32_TOLERANCE, atol=FLOAT32_TOLERANCE)


def test_balance_with_nothing_to_do_sends_one_empty_chunk(stub: Stub) -> None:
    request = pb.BalanceRequest(
        model="gauss", class_counts={"neg": 10, "pos": 10}, strategy=pb.BALANCE_STRATEGY_MATCH_MAJORITY
    )
    chunks = list(stub.Balance(request))
    assert len(chunks) == 1 and chunks[0].rows.num_rows == 0


@pytest.mark.parametrize("strategy", [pb.BALANCE_STRATEGY_UNSPECIFIED, 9])
def test_balance_without_a_known_strategy_is_refused_naming_them(stub: Stub, strategy: int) -> None:
    request = pb.BalanceRequest(model="gauss", class_counts={"neg": 10, "pos": 3}, strategy=strategy)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Balance(request))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    expected = f"strategy must be one of MATCH_MAJORITY, TARGET_RATIO, EXPLICIT_COUNTS, got {strategy}"
    assert expected in (info.value.details() or "")


@pytest.mark.parametrize("value_type", [pb.VALUE_TYPE_FLOAT32, pb.VALUE_TYPE_FLOAT64])
def test_score_density_matches_the_gaussian_density_and_flags_at_the_calibrated_threshold(
    stub: Stub, value_type: int
) -> None:
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(1, 2, 500), rng.normal(-1, 2, 500), rng.integers(0, 3, 500)]).astype(np.float32)
    request = pb.ScoreDensityRequest(
        model="gauss",
        version=1,
        rows=table_of(rows, value_type=value_type),
        include_class_log_density=True,
        include_posteriors=True,
        fpr=0.01,
    )
    response = stub.ScoreDensity(request)
    log_p, cond, posterior = expected_log_prob(rows.astype(np.float64), version=1)
    served_log_p = np.frombuffer(response.log_density, dtype="<f4")
    np.testing.assert_allclose(served_log_p, log_p, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        np.frombuffer(response.class_log_density, "<f4").reshape(-1, 2), cond, rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(np.frombuffer(response.posteriors, "<f4").reshape(-1, 2), posterior, atol=1e-5)
    assert response.threshold == pytest.approx(-6.0)
    # The fixture's graph has no anomaly score: the flag is on log p(x), as the response says.
    assert response.threshold_score == pb.ANOMALY_SCORE_KIND_LOG_DENSITY and not response.anomaly_score
    np.testing.assert_array_equal(np.frombuffer(response.is_anomaly, np.uint8), served_log_p < -6.0)
    assert 0 < np.frombuffer(response.is_anomaly, np.uint8).sum() < 500


def test_score_without_options_returns_only_the_log_density(stub: Stub) -> None:
    response = stub.ScoreDensity(pb.ScoreDensityRequest(model="gauss", rows=table_of(np.zeros((3, 3)))))
    assert len(response.log_density) == 12 and not response.posteriors and not response.is_anomaly


@pytest.mark.parametrize("seed", [None, 4])
def test_encode_standardizes_rows_with_noise_from_the_request_seed(stub: Stub, seed: int | None) -> None:
    rows = np.array([[3.0, -2.0, 0], [1.0, 1.0, 2], [0.5, 0.0, 1]])
    labels = np.array([1, 0, 0])
    response = stub.Encode(pb.EncodeRequest(model="gauss", version=1, rows=table_of(rows, labels), seed=seed))
    latent = np.frombuffer(response.latent, "<f4").reshape(response.num_rows, response.latent_dim)
    eps = draw_noise(seed or 0, 0, 0, 3, (2,), "normal")
    expected = (rows[:, :2] - MEANS[1][labels]) / SCALE + ENCODE_NOISE * eps
    np.testing.assert_allclose(latent, expected, rtol=FLOAT32_TOLERANCE, atol=FLOAT32_TOLERANCE)


def _sample(**fields: Any) -> tuple[str, object]:
    return "Sample", pb.SampleRequest(**{"model": "gauss", "num_rows": 10, **fields})


def _score(rows: pb.Table | None = None, **fields: Any) -> tuple[str, object]:
    return "ScoreDensity", pb.ScoreDensityRequest(
        **{"model": "gauss", "rows": rows or table_of(np.zeros((2, 3))), **fields}
    )


def _with_column(name: str, values: bytes, value_type: Any = pb.VALUE_TYPE_FLOAT64) -> pb.Table:
    table = table_of(np.zeros((2, 3)))
    for column in table.columns:
        if column.name == name:
            column.values, column.value_type = values, value_type
    return table


def _without_column(name: str) -> pb.Table:
    table = table_of(np.zeros((2, 3)))
    kept = [c for c in table.columns if c.name != name]
    del table.columns[:]
    table.columns.extend(kept)
    return table


def _with_extra_column() -> pb.Table:
    table = table_of(np.zeros((2, 3)))
    table.columns.add(name="surprise", value_type=pb.VALUE_TYPE_FLOAT64, values=np.zeros(2).tobytes())
    return table


BAD_INPUTS = {
    "unknown model": (_sample(model="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    "unknown version": (_sample(version=7), grpc.StatusCode.NOT_FOUND, "version 7"),
    "zero rows": (_sample(num_rows=0), grpc.StatusCode.INVALID_ARGUMENT, "num_rows"),
    "negative rows": (_sample(num_rows=-3), grpc.StatusCode.INVALID_ARGUMENT, "num_rows"),
    "rows above the limit": (
        _sample(num_rows=50_001),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_rows_per_request = 50000",
    ),
    "stream above the limit": (
        ("SampleStream", pb.SampleStreamRequest(model="gauss", num_rows=2_000_001)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_rows_per_stream = 2000000",
    ),
    "unknown class label": (_sample(label="maybe"), grpc.StatusCode.INVALID_ARGUMENT, "unknown class label 'maybe'"),
    "unknown proportion label": (
        _sample(proportions=pb.ClassProportions(weights={"maybe": 1.0})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "proportions.weights",
    ),
    "negative proportion": (
        _sample(proportions=pb.ClassProportions(weights={"neg": -1.0})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must be a finite number >= 0",
    ),
    "missing column": (_score(_without_column("x1")), grpc.StatusCode.INVALID_ARGUMENT, "missing column(s) ['x1']"),
    "unknown column": (
        _score(_with_extra_column()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown column(s) ['surprise']",
    ),
    "short buffer": (
        _score(_with_column("x0", b"\0" * 8)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "rows.columns['x0'].values",
    ),
    "infinite": (
        _score(_with_column("x0", np.array([0.0, np.inf]).tobytes())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "infinite or beyond float32's range",
    ),
    "beyond float32": (
        _score(_with_column("x0", np.array([0.0, 1e300]).tobytes())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "infinite or beyond float32's range",
    ),
    "infinity": (
        _score(_with_column("x1", np.array([np.inf, 0.0]).tobytes())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "rows.columns['x1']",
    ),
    "category code out of range": (
        _score(_with_column("cat", np.array([0, 3], "<i8").tobytes(), pb.VALUE_TYPE_INT64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "codes are whole numbers in [0, 3)",
    ),
    "fractional category code": (
        _score(_with_column("cat", np.array([0.5, 1.0]).tobytes())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "category code 0.5",
    ),
    "no rows to score": (_score(pb.Table(num_rows=0)), grpc.StatusCode.INVALID_ARGUMENT, "rows.num_rows must be > 0"),
    "fpr outside calibration": (
        _score(fpr=0.5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "fpr must be within the calibrated range [0.001, 0.1]",
    ),
    "density on a GAN": (_score(model="gauss-gan"), grpc.StatusCode.FAILED_PRECONDITION, "no log_prob graph"),
    "encode on a GAN": (
        ("Encode", pb.EncodeRequest(model="gauss-gan", rows=table_of(np.zeros((2, 3)), np.zeros(2)))),
        grpc.StatusCode.FAILED_PRECONDITION,
        "no encode graph",
    ),
    "encode without labels": (
        ("Encode", pb.EncodeRequest(model="gauss", rows=table_of(np.zeros((2, 3))))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "rows.labels",
    ),
    "encode with a label out of range": (
        ("Encode", pb.EncodeRequest(model="gauss", rows=table_of(np.zeros((2, 3)), np.array([0, 2])))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "class indices must be in [0, 2)",
    ),
    "balance without a strategy": (
        ("Balance", pb.BalanceRequest(model="gauss", class_counts={"neg": 3})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "strategy",
    ),
    "balance ratio above 1": (
        ("Balance", pb.BalanceRequest(model="gauss", strategy=pb.BALANCE_STRATEGY_TARGET_RATIO, target_ratio=2.0)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "target_ratio must be in (0, 1]",
    ),
    "balance unknown class": (
        (
            "Balance",
            pb.BalanceRequest(model="gauss", class_counts={"zebra": 3}, strategy=pb.BALANCE_STRATEGY_MATCH_MAJORITY),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "class_counts: unknown class label 'zebra'",
    ),
    "unary response above max_message_bytes": (
        _sample(num_rows=50_000, label="neg"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "beyond max_message_bytes = 524288",
    ),
    "stream chunk_rows negative": (
        ("SampleStream", pb.SampleStreamRequest(model="gauss", num_rows=5, chunk_rows=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunk_rows",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_gets_its_code_and_a_message_naming_the_field(stub: Stub, case: str) -> None:
    (method, request), code, fragment = BAD_INPUTS[case]
    with pytest.raises(grpc.RpcError) as info:
        result = getattr(stub, method)(request)
        if method in ("SampleStream", "Balance"):
            list(result)
    assert info.value.code() == code
    assert fragment in str(info.value.details())
    # The server is unharmed: the next request succeeds.
    assert stub.Sample(pb.SampleRequest(model="gauss", num_rows=1, seed=1)).rows.num_rows == 1
