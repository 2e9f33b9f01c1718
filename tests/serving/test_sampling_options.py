"""Sampling options through a real server: temperature and best-of-k follow synthserve.contract.sampling
(checked against the fixture's closed form), do not depend on chunking, are echoed, and bad values are refused
naming the field and the limit."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from synthserve.contract import BALANCE_SAMPLING, SamplingOptions, draw_noise
from tests.serving.conftest import ServerThread, make_config
from tests.serving.fixture_store import CATEGORIES, MEANS, SCALE, expected_log_prob
from tests.serving.helpers import labels_of, rows_of, table_of


def closed_form(
    stub: pb_grpc.SynthesizerStub, seed: int, label: int, n_rows: int, temperature: float, best_of: int
) -> np.ndarray:
    """Rows of gauss v1 for class `label` under the options, by the contract's definition: candidates in closed
    form, chosen by the posterior the server's own ScoreDensity gives them (float32, as the selection sees it;
    the fixture's posteriors saturate, so first-on-ties decides many rows)."""
    n = n_rows * best_of
    z = draw_noise(seed, 0, 0, n, (2,), "normal") * np.float32(temperature)
    u = draw_noise(seed, 1, 0, n, (1,), "uniform")
    candidates = np.concatenate(
        [MEANS[1][label].astype(np.float64) + SCALE * z.astype(np.float64), np.floor(len(CATEGORIES) * u)], axis=1
    )
    if best_of == 1:
        return candidates
    scored = stub.ScoreDensity(
        pb.ScoreDensityRequest(model="gauss", version=1, rows=table_of(candidates), include_posteriors=True)
    )
    posterior = np.frombuffer(scored.posteriors, dtype="<f4").reshape(n, 2)
    winners = posterior[:, label].reshape(n_rows, best_of).argmax(axis=1)
    return candidates[np.arange(n_rows) * best_of + winners]


@pytest.fixture()
def balancing_server(store: Path) -> Iterator[ServerThread]:
    running = ServerThread(dataclasses.replace(make_config(store), balance_sampling=SamplingOptions(best_of=4)))
    yield running
    running.stop()


@pytest.mark.parametrize(("temperature", "best_of"), [(0.5, 1), (1.0, 3), (0.5, 5)])
def test_rows_follow_the_contract_and_do_not_depend_on_chunking(
    server: ServerThread, temperature: float, best_of: int
) -> None:
    options = pb.SamplingOptions(temperature=temperature, best_of=best_of)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        expected = closed_form(stub, 31, 1, 50, temperature, best_of)
        response = stub.Sample(
            pb.SampleRequest(model="gauss", version=1, num_rows=50, label="pos", seed=31, sampling=options)
        )
        stream = list(
            stub.SampleStream(
                pb.SampleStreamRequest(
                    model="gauss", version=1, num_rows=50, label="pos", seed=31, chunk_rows=7, sampling=options
                )
            )
        )
    assert (response.sampling.temperature, response.sampling.best_of) == (temperature, best_of)
    assert all(chunk.sampling == response.sampling for chunk in stream)
    np.testing.assert_allclose(rows_of(response.rows), expected, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(np.concatenate([rows_of(c.rows) for c in stream]), rows_of(response.rows))


def test_best_of_k_moves_rows_towards_their_class(server: ServerThread) -> None:
    """At T = 4 the classes overlap; the rows best-of-5 keeps have a higher mean posterior than plain rows."""
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        plain, chosen = (
            stub.Sample(
                pb.SampleRequest(
                    model="gauss",
                    version=1,
                    num_rows=2000,
                    label="pos",
                    seed=8,
                    sampling=pb.SamplingOptions(temperature=4.0, best_of=k),
                )
            )
            for k in (1, 5)
        )
    posterior = [expected_log_prob(rows_of(r.rows), 1)[2][:, 1].mean() for r in (plain, chosen)]
    assert posterior[1] > posterior[0] + 0.05


def test_the_default_server_balances_with_best_of_five(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        request = pb.BalanceRequest(
            model="gauss", version=1, class_counts={"neg": 10}, strategy=pb.BALANCE_STRATEGY_EXPLICIT_COUNTS, seed=3
        )
        request.explicit_counts["pos"] = 20
        (chunk,) = stub.Balance(request)
        expected = closed_form(stub, 3, 1, 20, 1.0, BALANCE_SAMPLING.best_of)
    assert (chunk.sampling.temperature, chunk.sampling.best_of) == (1.0, 8) == (1.0, BALANCE_SAMPLING.best_of)
    np.testing.assert_allclose(rows_of(chunk.rows), expected, rtol=2e-6, atol=2e-6)


def test_balance_takes_the_servers_best_of_unless_the_request_sets_it(balancing_server: ServerThread) -> None:
    def balance(model: str, sampling: pb.SamplingOptions | None = None) -> list[pb.BalanceResponse]:
        request = pb.BalanceRequest(
            model=model,
            version=1,
            class_counts={"neg": 40, "pos": 10},
            strategy=pb.BALANCE_STRATEGY_MATCH_MAJORITY,
            seed=4,
            sampling=sampling,
        )
        return list(stub.Balance(request))

    with grpc.insecure_channel(balancing_server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        default, plain, gan = balance("gauss"), balance("gauss", pb.SamplingOptions(best_of=1)), balance("gauss-gan")
        expected = closed_form(stub, 4, 1, 30, 1.0, 4), closed_form(stub, 4, 1, 30, 1.0, 1)
    assert [c.sampling.best_of for c in default] == [4] and default[0].sampling.temperature == 1.0
    assert plain[0].sampling.best_of == 1 and gan[0].sampling.best_of == 1  # a GAN has no posterior: plain
    assert labels_of(default[0].rows).tolist() == [1] * 30
    np.testing.assert_allclose(rows_of(default[0].rows), expected[0], rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(rows_of(plain[0].rows), expected[1], rtol=2e-6, atol=2e-6)
    assert not np.allclose(expected[0], expected[1])


@pytest.mark.parametrize(
    ("model", "sampling", "rows", "code", "message"),
    [
        (
            "gauss",
            pb.SamplingOptions(temperature=0.0),
            5,
            "INVALID_ARGUMENT",
            "sampling.temperature must be in (0, 4.0]",
        ),
        ("gauss", pb.SamplingOptions(temperature=float("nan")), 5, "INVALID_ARGUMENT", "sampling.temperature"),
        ("gauss", pb.SamplingOptions(best_of=0), 5, "INVALID_ARGUMENT", "sampling.best_of must be in [1, 64], got 0"),
        ("gauss", pb.SamplingOptions(best_of=65), 5, "INVALID_ARGUMENT", "sampling.best_of must be in [1, 64]"),
        ("gauss-gan", pb.SamplingOptions(best_of=2), 5, "FAILED_PRECONDITION", "sampling.best_of 2: model 'gauss-gan'"),
        ("gauss", pb.SamplingOptions(best_of=2), 30_000, "INVALID_ARGUMENT", "x sampling.best_of 2 exceeds"),
        ("gauss", pb.SamplingOptions(guidance=-1), 5, "INVALID_ARGUMENT", "sampling.guidance must be in [0, 10.0]"),
        ("gauss", pb.SamplingOptions(guidance=10.5), 5, "INVALID_ARGUMENT", "sampling.guidance must be in [0, 10.0]"),
        ("gauss", pb.SamplingOptions(guidance=float("nan")), 5, "INVALID_ARGUMENT", "sampling.guidance"),
        (
            "gauss",
            pb.SamplingOptions(guidance=2),
            5,
            "FAILED_PRECONDITION",
            "sampling.guidance 2: model 'gauss' (flow)",
        ),
    ],
)
def test_bad_options_are_refused_naming_the_field_and_limit(
    server: ServerThread, model: str, sampling: pb.SamplingOptions, rows: int, code: str, message: str
) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Sample(pb.SampleRequest(model=model, version=1, num_rows=rows, seed=1, sampling=sampling))
    assert info.value.code().name == code
    assert message in (info.value.details() or "")
