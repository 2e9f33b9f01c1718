"""The committed model store: complete, verifiable, small, and good enough to classify its own digits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from synthserve.contract import load_manifest, version_directories
from training.checkpoint import CHECKPOINT_FILE
from training.exported import ExportedModel
from training.models import FAMILIES
from training.shipped import SHIPPED

STORE = Path(__file__).resolve().parents[2] / "model_store"
# What git ships (training checkpoints are git-ignored): 15 models, five families on three tables, 32 MiB.
MAX_STORE_BYTES = 40 * 1024 * 1024
# 6 MiB: the 64-column digits flow ships 4.6 MiB since its graphs carry 0/1 permutation matrices (64 x 64 per
# layer, folded to float32 by the exporter) and the segment grids, which make its graphs 2-3x faster; the digits
# autoregressive flow 5.3 MiB (five MADE layers of 128 hidden units, held by each of its three graphs and model.pt).
MAX_VERSION_BYTES = 6 * 1024 * 1024
MIN_DIGIT_ACCURACY = 0.90


def _bytes(path: Path, *, shipped_only: bool = False) -> int:
    """Bytes under `path`; `shipped_only` leaves out the git-ignored training checkpoints."""
    files = (p for p in path.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files if not (shipped_only and p.name == CHECKPOINT_FILE))


def test_store_fits_the_size_budget() -> None:
    shipped = _bytes(STORE, shipped_only=True)
    assert shipped < MAX_STORE_BYTES, (
        f"model_store/ ships {shipped / 2**20:.1f} MiB (limit {MAX_STORE_BYTES >> 20} MiB)"
    )
    for model in STORE.iterdir():
        for _, version in version_directories(model):
            size = _bytes(version, shipped_only=True)
            assert size < MAX_VERSION_BYTES, (
                f"{version} ships {size / 2**20:.1f} MiB (limit {MAX_VERSION_BYTES >> 20} MiB)"
            )


@pytest.mark.parametrize("name", [m.name for m in SHIPPED])
def test_shipped_model_is_complete_and_verifiable(name: str) -> None:
    assert sorted(p.name for p in (STORE / name).iterdir()) == ["1"], "regenerate the store, do not accumulate"
    manifest = load_manifest(STORE / name / "1")
    assert manifest.name == name and manifest.version == 1 and manifest.training["seed"] == 0
    for file, digest in manifest.files.items():
        assert hashlib.sha256((STORE / name / "1" / file).read_bytes()).hexdigest() == digest, file
    assert manifest.metrics["export_parity"]["worst_relative_rms"] < 1e-4


@pytest.fixture(scope="module")
def digit_classifier() -> SVC:
    digits = load_digits()
    return SVC(gamma=0.001).fit(digits.data, digits.target)


@pytest.mark.parametrize("family", FAMILIES)
def test_conditional_digits_are_the_requested_class(family: str, digit_classifier: SVC) -> None:
    """Samples of class c (100 per class, server noise rule, seed 0) are classified as c by an SVM on real digits."""
    model = ExportedModel(STORE / f"digits-{family}" / "1")
    requested = np.repeat(np.arange(10), 100)
    images = model.sample(requested, seed=0)
    accuracy = float((digit_classifier.predict(images) == requested).mean())
    assert accuracy >= MIN_DIGIT_ACCURACY, f"digits-{family}: {accuracy:.3f}"
