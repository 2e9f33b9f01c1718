"""Parity failures are loud: float32 rounding passes, a drift of a relative 1e-5 or a non-finite density fails."""

from __future__ import annotations

import numpy as np
import pytest

from training.parity import PARITY_ROUNDING_FACTOR, ExportError, compare
from training.rounding import EagerOutput


def _measured(graph: str, eager: np.ndarray, rng: np.random.Generator) -> EagerOutput:
    """`eager` with what float32 rounding does to it: float64 reference half an ulp away, nudged copies ~1 ulp."""
    exact = eager.astype(np.float64)
    reference = exact * (1 + 2.0**-24 * rng.uniform(-1, 1, eager.shape))
    nudged = [exact * (1 + 2.0**-23 * rng.normal(size=eager.shape)) for _ in range(4)]
    return EagerOutput.measure(graph, eager, reference, nudged)


def test_parity_failure_is_loud() -> None:
    """Float32 rounding passes; a drift of 1e-5 (a tenth of the former fixed limit) fails, with advice."""
    rng = np.random.default_rng(0)
    eager = rng.normal(size=(1024, 3)).astype(np.float32)
    discrete = np.array([False, False, True])
    eager[:, 2] = np.floor(eager[:, 2])
    measured = _measured("sample", eager, rng)
    assert compare("sample", "rows", measured, eager.copy(), discrete, "ONNX")["rounding_ratio"] == 0.0
    rounded = (eager.astype(np.float64) * (1 + 2.0**-23 * rng.normal(size=eager.shape))).astype(np.float32)
    rounded[:, 2] = eager[:, 2]
    assert compare("sample", "rows", measured, rounded, discrete, "ONNX")["rounding_ratio"] < PARITY_ROUNDING_FACTOR
    drifted = eager.copy()
    drifted[:, 0] *= 1 + 1e-5
    advice = "Retry with --onnx-exporter torchscript."
    with pytest.raises(ExportError, match=r"sample\.rows at batch 1024: \d+\.\dx the float32 rounding .*\. Retry"):
        compare("sample", "rows", measured, drifted, discrete, "ONNX", advice)
    one_row = _measured("sample", eager[:1], rng)  # small batches pool the columns: one row is no statistic
    with pytest.raises(ExportError, match=r"at batch 1: .*, RMS over the columns\)"):
        compare("sample", "rows", one_row, drifted[:1], discrete, "ONNX")
    flipped = eager.copy()
    flipped[:20, 2] += 1  # 2% of the rows flip a discrete value: more than rounding explains
    with pytest.raises(ExportError, match=r"discrete values or gaps differ in 20 of 1024 rows \(limit 0\.01"):
        compare("sample", "rows", measured, flipped, discrete, "ONNX")
    # In a batch of 7, one flipped row is what a single value on a boundary gives; two are not.
    seven = _measured("sample", eager[:7], rng)
    one_flip, two_flips = eager[:7].copy(), eager[:7].copy()
    one_flip[0, 2] += 1
    two_flips[:2, 2] += 1
    assert compare("sample", "rows", seven, one_flip, discrete, "ONNX")["discrete_flips"] == 1 / 7
    with pytest.raises(ExportError, match=r"discrete values or gaps differ in 2 of 7 rows"):
        compare("sample", "rows", seven, two_flips, discrete, "ONNX")
    rare = eager.copy()
    rare[:3, 2] += 1
    rare[3, 0] = np.nan  # a gap where eager has a value: one more flipped row
    assert compare("sample", "rows", measured, rare, discrete, "ONNX")["discrete_flips"] == 4 / 1024


def test_non_finite_density_is_loud() -> None:
    rng = np.random.default_rng(1)
    eager = rng.normal(-5.0, 1.0, size=64).astype(np.float32)
    actual = eager.copy()
    actual[7] = -np.inf
    with pytest.raises(ExportError, match=r"log_prob\.log_prob: non-finite values where eager has finite ones"):
        compare("log_prob", "log_prob", _measured("log_prob", eager, rng), actual, np.zeros(0, bool), "ONNX")
