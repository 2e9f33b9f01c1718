"""Sampling options: validation, temperature on normal noise only, best-of-k winners, chunk independence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from synthserve.contract import (
    BALANCE_SAMPLING,
    CLASS_MARGIN,
    MAX_BEST_OF,
    MAX_TEMPERATURE,
    PLAIN_SAMPLING,
    POSTERIOR,
    GraphSpec,
    RequestError,
    SamplingOptions,
    TensorSpec,
    UnsupportedRequest,
    best_candidates,
    draw_noise,
    noise_feeds,
    resolve_sampling,
    sample_feeds,
    selects_by_posterior,
)
from tests.contract.test_manifest import make_manifest

SPEC = GraphSpec(
    "sample.onnx",
    (
        TensorSpec("z", "float32", (None, 3), "noise", "normal"),
        TensorSpec("g", "float32", (None, 2), "noise", "uniform"),
        TensorSpec("label", "int64", (None,), "label"),
    ),
    (TensorSpec("rows", "float32", (None, 3), "output"),),
)


@pytest.mark.parametrize(
    ("temperature", "best_of", "message"),
    [
        (0.0, 1, "temperature must be in \\(0, 4.0\\], got 0.0"),
        (MAX_TEMPERATURE * 2, 1, "temperature must be in"),
        (float("nan"), 1, "temperature must be in"),
        (1.0, 0, "best_of must be in \\[1, 64\\], got 0"),
        (1.0, MAX_BEST_OF + 1, "best_of must be in"),
    ],
)
def test_options_out_of_range_are_refused_naming_the_limit(temperature: float, best_of: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingOptions(temperature, best_of)


def test_temperature_scales_normal_noise_only_and_streams_can_be_offset() -> None:
    plain = noise_feeds(SPEC, 9, 4, 6)
    cooled = noise_feeds(SPEC, 9, 4, 6, temperature=0.5)
    np.testing.assert_array_equal(plain["z"], draw_noise(9, 0, 4, 6, (3,), "normal"))
    np.testing.assert_array_equal(cooled["z"], np.float32(0.5) * plain["z"])
    np.testing.assert_array_equal(cooled["g"], plain["g"])
    np.testing.assert_array_equal(
        noise_feeds(SPEC, 9, 4, 6, stream_offset=7)["g"], draw_noise(9, 8, 4, 6, (2,), "uniform")
    )
    assert set(plain) == {"z", "g"}


def test_best_candidates_pick_the_highest_posterior_of_each_rows_label_first_on_ties() -> None:
    labels = np.array([0, 1, 1])
    posterior = np.array(
        [[0.2, 0.8], [0.9, 0.1], [0.9, 0.1],  # row 0 (class 0): candidates 1 and 2 tie -> 1
         [0.5, 0.5], [0.4, 0.6], [0.1, 0.9],  # row 1 (class 1): candidate 5
         [0.3, 0.7], [0.6, 0.4], [0.7, 0.3]],  # row 2 (class 1): candidate 6
        dtype=np.float32,
    )  # fmt: skip
    np.testing.assert_array_equal(best_candidates({POSTERIOR: posterior}, labels, 3), [1, 5, 6])
    np.testing.assert_array_equal(best_candidates({POSTERIOR: posterior[:3]}, labels[:1], 3), [1])  # a chunk agrees


def test_best_candidates_rank_by_the_class_margin_then_the_posterior() -> None:
    labels = np.array([0, 1])
    posterior = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [0.1, 0.9], [0.3, 0.7]], dtype=np.float32)
    margin = np.array(
        [[-1.0, 1.0], [2.0, -2.0], [2.0, -2.0],  # row 0 (class 0): 1 and 2 tie on the margin, 2's posterior wins
         [-0.5, 0.5], [0.1, -0.1], [-3.0, 3.0]],  # row 1 (class 1): candidate 5, though 4's posterior is higher
        dtype=np.float32,
    )  # fmt: skip
    outputs = {POSTERIOR: posterior, CLASS_MARGIN: margin}
    np.testing.assert_array_equal(best_candidates(outputs, labels, 3), [2, 5])


def test_resolve_sampling_fills_absent_fields_from_the_defaults() -> None:
    manifest = make_manifest()  # conditional, with a posterior
    assert resolve_sampling(manifest, None, None) is PLAIN_SAMPLING
    assert resolve_sampling(manifest, None, None, BALANCE_SAMPLING) is BALANCE_SAMPLING
    assert resolve_sampling(manifest, 0.5, None, BALANCE_SAMPLING) == SamplingOptions(0.5, BALANCE_SAMPLING.best_of)
    assert resolve_sampling(manifest, None, 3) == SamplingOptions(1.0, 3)
    with pytest.raises(RequestError, match=r"sampling.temperature must be in \(0, 4.0\], got 9.0"):
        resolve_sampling(manifest, 9.0, None)


def test_resolve_sampling_best_of_needs_a_class_posterior() -> None:
    no_density = dataclasses.replace(make_manifest(), graphs={"sample": make_manifest().graphs["sample"]})
    assert not selects_by_posterior(no_density) and selects_by_posterior(make_manifest())
    # The server's Balance default (best of 8) becomes 1 where the model cannot select; asking for it is refused.
    assert resolve_sampling(no_density, None, None, BALANCE_SAMPLING) == SamplingOptions(1.0, 1)
    assert resolve_sampling(no_density, None, 1) == PLAIN_SAMPLING
    with pytest.raises(UnsupportedRequest, match=r"sampling.best_of 2: model 'toy' \(flow\) has no class posterior"):
        resolve_sampling(no_density, None, 2)


GUIDED = GraphSpec(
    "sample_guided.onnx",
    (*SPEC.inputs, TensorSpec("guidance", "float32", (None,), "guidance")),
    SPEC.outputs,
)


def test_guidance_runs_the_guided_graph_and_needs_one() -> None:
    plain = dataclasses.replace(make_manifest(), family="diffusion", graphs={"sample": SPEC})
    guided = dataclasses.replace(plain, graphs={"sample": SPEC, "sample_guided": GUIDED})
    options = resolve_sampling(guided, None, None, guidance=2.5)
    assert options == SamplingOptions(1.0, 1, 2.5) and options.graph == "sample_guided"
    # w = 1 is plain sampling: the sample graph, the same options as leaving it out.
    assert resolve_sampling(guided, None, None, guidance=1.0) == PLAIN_SAMPLING
    assert PLAIN_SAMPLING.graph == "sample"
    assert resolve_sampling(plain, None, None, guidance=1.0) == PLAIN_SAMPLING
    with pytest.raises(
        UnsupportedRequest, match=r"sampling.guidance 2: model 'toy' \(diffusion\) has no classifier-free"
    ):
        resolve_sampling(plain, None, None, guidance=2.0)
    for bad in (-0.1, 10.5, float("nan")):
        with pytest.raises(RequestError, match=r"sampling.guidance must be in \[0, 10.0\]"):
            resolve_sampling(guided, None, None, guidance=bad)


def test_sample_feeds_give_every_row_its_weight_and_the_sample_graphs_noise() -> None:
    labels = np.array([0, 1, 1], dtype=np.int64)
    feeds = sample_feeds(GUIDED, 9, 4, 3, SamplingOptions(0.5, 1, 3.0), labels)
    plain = sample_feeds(SPEC, 9, 4, 3, SamplingOptions(0.5), labels)
    assert sorted(feeds) == ["g", "guidance", "label", "z"] and sorted(plain) == ["g", "label", "z"]
    np.testing.assert_array_equal(feeds["guidance"], np.full(3, 3.0, np.float32))
    for name in ("z", "g", "label"):
        np.testing.assert_array_equal(feeds[name], plain[name])
    np.testing.assert_array_equal(feeds["z"], 0.5 * draw_noise(9, 0, 4, 3, (3,), "normal"))
