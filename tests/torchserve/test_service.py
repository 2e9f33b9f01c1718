"""SynthService: sample and score responses, drawn seeds that replay, calibrated anomaly flags; handler config."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthserve.contract import RequestError, condition_seed, load_manifest
from tests.torchserve.support import SHIPPED_STORE, assert_rows_equal
from tests.torchserve.tiny_models import COLORS, TINY_MODELS
from torchserve_handler.model import ExportedModel
from torchserve_handler.service import HandlerConfig, SynthService

COND, UNCOND = TINY_MODELS


def respond(service: SynthService, body: dict[str, Any]) -> Any:
    response = service.respond(body)
    assert response.content_type == "application/json"
    return json.loads(response.body)


@pytest.fixture(scope="module")
def services(tiny_store: Path) -> dict[str, SynthService]:
    config = HandlerConfig(max_rows_per_request=500)
    return {m.name: SynthService(ExportedModel(tiny_store / m.name / "1"), config) for m in TINY_MODELS}


def test_sample_response(services: dict[str, SynthService]) -> None:
    response = respond(services[COND.name], {"n": 6, "seed": 11, "proportions": {"neg": 1, "pos": 2}})
    assert {k: v for k, v in response.items() if k != "rows"} == {
        "model": "tiny-cond",
        "version": 1,
        "seed": 11,
        "num_rows": 6,
    }
    assert_rows_equal(response["rows"], COND.expected_rows(11, np.array([0, 0, 1, 1, 1, 1]), 6))


def test_sample_as_npy(services: dict[str, SynthService]) -> None:
    response = services[COND.name].respond({"n": 6, "seed": 11, "label": "pos", "encoding": "npy"})
    assert response.content_type == "application/x-npy"
    assert response.headers == {"X-Synthserve-Seed": "11", "X-Synthserve-Version": "1"}
    array = np.load(io.BytesIO(response.body), allow_pickle=False)
    assert array.dtype == np.float32 and array.shape == (6, 5)  # four columns and the class index
    expected = COND.expected_rows(11, np.ones(6, dtype=np.int64), 6)
    np.testing.assert_allclose(array[:, 0], expected["x"], rtol=1e-6)
    assert [COLORS[int(c)] for c in array[:, 1]] == expected["color"]
    assert array[:, 2].tolist() == expected["count"]
    assert array[:, 4].tolist() == [1.0] * 6


def test_a_drawn_seed_is_returned_and_replays(services: dict[str, SynthService]) -> None:
    service = services[UNCOND.name]
    first = respond(service, {"n": 4})
    second = respond(service, {"n": 4})
    assert first["seed"] != second["seed"]
    assert respond(service, {"n": 4, "seed": first["seed"]})["rows"] == first["rows"]
    assert_rows_equal(first["rows"], UNCOND.expected_rows(first["seed"], None, 4))


def test_score_response_with_anomaly_flags(services: dict[str, SynthService], tiny_store: Path) -> None:
    service = services[COND.name]
    rows = respond(service, {"n": 50, "seed": 3})["rows"]
    rows["x"][:2] = [40.0, -40.0]  # far outside both classes
    response = respond(service, {"rows": rows, "fpr": 0.02})
    calibration = load_manifest(tiny_store / COND.name / "1").calibration
    assert calibration is not None
    assert response["threshold"] == pytest.approx(calibration.threshold(0.02))
    assert response["threshold_score"] == "log_density" and "anomaly_score" not in response  # a graph without one
    log_p, posterior = COND.expected_log_density(np.asarray(rows["x"]), np.asarray(rows["y"]))
    np.testing.assert_allclose(response["log_density"], log_p, rtol=1e-5)
    np.testing.assert_allclose(response["posterior"]["pos"], posterior[:, 1], atol=1e-5)
    assert response["is_anomaly"] == (log_p < response["threshold"]).tolist()
    assert response["is_anomaly"][:2] == [True, True]
    assert sum(response["is_anomaly"]) < 10


def test_unconditional_scores_have_no_posterior(services: dict[str, SynthService]) -> None:
    service = services[UNCOND.name]
    response = respond(service, {"rows": respond(service, {"n": 3, "seed": 1})["rows"]})
    assert set(response) == {"model", "version", "num_rows", "log_density"}


def test_conditions_keep_the_first_candidates_that_meet_them(services: dict[str, SynthService]) -> None:
    """{"color": value, "count": value, "x": [low, high]}: per class, the first of its candidates (seed
    condition_seed(seed, class)) that meet every condition, as the gRPC server keeps them."""
    body = {
        "n": 30,
        "seed": 4,
        "proportions": {"neg": 1, "pos": 2},
        "conditions": {"color": COLORS[1], "count": 2, "x": [-0.5, 2.8]},
    }
    response = respond(services[COND.name], body)
    rows = response["rows"]
    assert response["num_rows"] == 30 and rows["target"] == ["neg"] * 10 + ["pos"] * 20
    assert set(rows["color"]) == {COLORS[1]} and set(rows["count"]) == {2} and all(-0.5 <= x <= 2.8 for x in rows["x"])
    for class_index, (begin, end) in enumerate(((0, 10), (10, 30))):
        candidates = COND.expected_rows(condition_seed(4, class_index), np.full(4000, class_index), 4000)
        keep = [
            i
            for i in range(4000)
            if candidates["color"][i] == COLORS[1] and candidates["count"][i] == 2 and -0.5 <= candidates["x"][i] <= 2.8
        ][: end - begin]
        np.testing.assert_allclose(rows["x"][begin:end], [candidates["x"][i] for i in keep], rtol=1e-6)
        np.testing.assert_allclose(rows["y"][begin:end], [candidates["y"][i] for i in keep], rtol=1e-6)
    assert respond(services[COND.name], body) == response
    with pytest.raises(RequestError, match=r"conditions\[0\].equals: 'teal' is not a category of 'color'"):
        respond(services[COND.name], {**body, "conditions": {"color": "teal"}})
    with pytest.raises(RequestError, match=r"conditions\['x'\]: a range is \[low, high\]"):
        respond(services[COND.name], {**body, "conditions": {"x": [1, 2, 3]}})
    with pytest.raises(RequestError, match=r"the rarest, 50 <= x <= 60, alone keeps 0.00%"):
        respond(services[COND.name], {**body, "conditions": {"x": [50, 60]}})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"n": 501}, r"n: must be in \[1, 500\]"),
        ({"rows": {"x": [0.0], "color": ["red"], "count": [0], "y": [0.0]}, "fpr": 0.5}, r"fpr must be within"),
        ({"n": 1, "label": "yes"}, "label: unknown class label 'yes'"),
    ],
)
def test_bad_requests(services: dict[str, SynthService], body: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError, match=message):
        respond(services[COND.name], body)


def test_handler_config_from_mapping() -> None:
    assert HandlerConfig.from_mapping({}) == HandlerConfig()
    assert HandlerConfig.from_mapping({"max_rows_per_request": 7}).max_rows_per_request == 7
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_rows'\]"):
        HandlerConfig.from_mapping({"max_rows": 7})
    with pytest.raises(ValueError, match="intra_op_threads must be a positive integer, got 0"):
        HandlerConfig.from_mapping({"intra_op_threads": 0})


SHIPPED_VERSIONS = sorted(p.parent for p in SHIPPED_STORE.glob("*/*/manifest.json") if p.parent.name.isdigit())


@pytest.mark.parametrize("directory", SHIPPED_VERSIONS, ids=lambda d: f"{d.parent.name}-{d.name}")
def test_every_shipped_model_samples_and_scores(directory: Path) -> None:
    service = SynthService(ExportedModel(directory), HandlerConfig())
    schema = service.model.manifest.schema
    rows = respond(service, {"n": 8, "seed": 42})["rows"]
    label_names = [schema.label.name] if schema.label is not None else []
    assert list(rows) == [c.name for c in schema.columns] + label_names
    assert respond(service, {"n": 8, "seed": 42})["rows"] == rows
    if "log_prob" in service.model.manifest.graphs:
        scores = respond(service, {"rows": rows, "seed": 1})
        assert np.isfinite(scores["log_density"]).all()
        assert respond(service, {"rows": rows, "seed": 1}) == scores  # scoring noise, if any, follows the seed
    else:
        with pytest.raises(RequestError, match="has no log_prob graph"):
            service.respond({"rows": rows})
