"""Manifest round-trip and the errors a reader gives for manifests it cannot use."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from synthserve.contract.manifest import (
    FORMAT_VERSION,
    Calibration,
    Column,
    GraphSpec,
    LabelSpec,
    Manifest,
    ManifestError,
    Schema,
    TensorSpec,
)
from synthserve.contract.manifest_reader import load_manifest


def make_manifest() -> Manifest:
    rows = TensorSpec("rows", "float32", (None, 2), "rows")
    label = TensorSpec("label", "int64", (None,), "label")
    return Manifest(
        name="toy",
        version=3,
        family="flow",
        schema=Schema(
            columns=(
                Column("x", "continuous", "float64", min=-1.0, max=2.0),
                Column("color", "categorical", "object", categories=("red", "blue")),
            ),
            label=LabelSpec("y", "int64", (0, 1), (0.9, 0.1)),
        ),
        graphs={
            "sample": GraphSpec(
                "sample.onnx",
                (TensorSpec("z", "float32", (None, 2), "noise", "normal"), label),
                (TensorSpec("rows", "float32", (None, 2), "output"),),
            ),
            "log_prob": GraphSpec(
                "log_prob.onnx",
                (rows,),
                (
                    TensorSpec("log_prob", "float32", (None,), "output"),
                    TensorSpec("log_prob_cond", "float32", (None, 2), "output"),
                    TensorSpec("posterior", "float32", (None, 2), "output"),
                ),
            ),
        },
        created_at="2026-11-21T00:00:00Z",
        synthserve_version="0.1.0",
        calibration=Calibration((0.001, 0.01, 0.1), (-9.0, -6.0, -3.0), 500),
        files={"sample.onnx": "ab" * 32, "log_prob.onnx": "cd" * 32},
    )


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    return path


def test_round_trip(tmp_path: Path) -> None:
    manifest = make_manifest()
    gridded = dataclasses.replace(manifest.schema.columns[0], decimals=3, step=5)  # multiples of 0.005 from min
    manifest = dataclasses.replace(
        manifest, schema=dataclasses.replace(manifest.schema, columns=(gridded, *manifest.schema.columns[1:]))
    )
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    loaded = load_manifest(tmp_path)
    assert loaded == manifest
    assert loaded.capabilities == ("sample", "log_prob")
    assert loaded.schema.n_classes == 2
    assert loaded.graphs["sample"].noise_inputs[0].row_shape == (2,)
    assert json.loads(manifest.to_json())["capabilities"] == ["sample", "log_prob"]


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    data = make_manifest().to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ManifestError, match=r"format_version 2 is not supported"):
        load_manifest(write(tmp_path, data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("schema"), "missing field schema"),
        (lambda d: d["schema"]["columns"][1].pop("categories"), r"columns\[1\]\.categories"),
        (lambda d: d["schema"]["columns"][0].update(kind="date"), r"columns\[0\]\.kind"),
        (lambda d: d["graphs"]["sample"]["inputs"][0].update(distribution="cauchy"), "distribution"),
        (lambda d: d["graphs"]["sample"]["inputs"][0].update(shape=[4, 2]), "dynamic batch first"),
        (lambda d: d["graphs"].pop("sample"), "graphs.sample"),
        (lambda d: d.update(capabilities=["sample", "encode"]), "capabilities"),
        (lambda d: d.update(version=0), "positive integer"),
        (lambda d: d["schema"]["columns"][0].update(step=0), r"columns\[0\]\.step must be an integer in \[1, "),
        (lambda d: d["schema"]["columns"][0].update(step="5"), r"columns\[0\]\.step must be an integer"),
        (lambda d: d["schema"]["columns"][0].update(step=5), r"columns\[0\]\.step 5: a grid needs"),
        (lambda d: d["calibration"].update(fpr=[0.1, 0.01, 0.001]), "increasing"),
        (lambda d: d["calibration"].update(anomaly_score_quantiles=[1.0]), "anomaly_score_quantiles must be as long"),
    ],
)
def test_malformed_manifests_name_the_field(tmp_path: Path, edit: Any, message: str) -> None:
    data = copy.deepcopy(make_manifest().to_dict())
    edit(data)
    with pytest.raises(ManifestError, match=message):
        load_manifest(write(tmp_path, data))


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_calibration_threshold_interpolates_in_log_fpr() -> None:
    calibration = make_manifest().calibration
    assert calibration is not None
    assert calibration.threshold(0.01) == -6.0
    assert calibration.threshold(0.001 * 10**0.5) == pytest.approx(-7.5)
    with pytest.raises(ValueError, match=r"fpr must be within \[0.001, 0.1\]"):
        calibration.threshold(0.5)
