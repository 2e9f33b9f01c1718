"""The training rows a log_prob graph holds: per-class quotas, distances against brute force, the class margin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synthserve.contract import CLASS_MARGIN, GRAPH_OUTPUTS, Column, Schema, load_manifest, named_outputs
from training.anomaly import ANOMALY_NEIGHBORS, nearest_distance
from training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from training.exported import ExportedModel, feeds_for
from training.graphs import run_graph
from training.neighbors import (
    MARGIN_EPSILON,
    MAX_REFERENCE_ROWS,
    ONEHOT_MAX_LEVELS,
    Neighbors,
    fit_neighbors,
)

SCHEMA = Schema(
    (
        Column("a", "continuous", "float64"),
        Column("c", "categorical", "object", categories=("x", "y", "z")),
        Column("b", "integer", "int64"),
    ),
    None,
)


def rows_of(n: int, seed: int) -> np.ndarray:
    """n rows of SCHEMA in graph units: a normal, a 3-level code and a count."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(5.0, 2.0, n), rng.integers(0, 3, n), rng.poisson(30, n)], axis=1).astype(np.float32)


def neighbors_of(
    rows: np.ndarray, labels: np.ndarray | None = None, schema: Schema = SCHEMA, seed: int = 0
) -> Neighbors:
    labels = np.zeros(len(rows), dtype=np.int64) if labels is None else labels
    return Neighbors(fit_neighbors(schema, rows, labels, int(labels.max(initial=0)) + 1, seed))


def brute_force_squared(reference: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[N, R] squared distances on SCHEMA: numeric columns standardized on the reference rows, a gap at the mean,
    a differing code adding 1."""
    mean, std = reference[:, [0, 2]].mean(0), reference[:, [0, 2]].std(0)
    ref, x = (reference[:, [0, 2]] - mean) / std, (rows[:, [0, 2]] - mean) / std
    x = np.where(np.isnan(x), 0.0, x)
    return ((x[:, None, :] - ref[None, :, :]) ** 2).sum(-1) + (rows[:, None, 1] != reference[None, :, 1])


def brute_force_distance(reference: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.sqrt(brute_force_squared(reference, rows)), axis=1)[:, :k].mean(1)


def test_the_distance_is_the_mean_distance_to_the_nearest_training_rows() -> None:
    train, queries = rows_of(300, 0), rows_of(40, 1)
    queries[0, 0] = np.nan
    queries[1, 0] = 500.0  # far out
    with torch.no_grad():
        served = nearest_distance(neighbors_of(train), torch.from_numpy(queries)).numpy()
    expected = brute_force_distance(train.astype(np.float64), queries.astype(np.float64), ANOMALY_NEIGHBORS)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-3)
    assert served[1] > 100 * np.median(served)


@pytest.mark.parametrize("counts", [(2, 298), (150, 150), (1, 3, 296)])
def test_the_nearest_rows_of_any_class_are_pooled_from_each_class_s_nearest(counts: tuple[int, ...]) -> None:
    """Distances are measured class by class; the k nearest of all, among them a class of fewer than k rows, are
    those of a brute force over every row."""
    train, queries = rows_of(300, 0), rows_of(40, 1)
    labels = np.repeat(np.arange(len(counts)), counts)
    neighbors = neighbors_of(train, labels)
    with torch.no_grad():
        served = nearest_distance(neighbors, torch.from_numpy(queries)).numpy()
        nearest = neighbors.nearest(torch.from_numpy(queries), ANOMALY_NEIGHBORS)
    assert [None if block is None else block.shape[1] for block in nearest] == [min(n, 8) for n in counts]
    expected = brute_force_distance(train.astype(np.float64), queries.astype(np.float64), ANOMALY_NEIGHBORS)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-3)


def test_near_a_training_row_far_out_the_distance_is_measured_not_lost_to_cancellation() -> None:
    """Far from the centre |x|^2 - 2 x.r + |r|^2 is a difference of large terms, off by their rounding (here about
    ten times the squared distance itself): the nearest rows' distances are measured term by term, so a repeat of a
    training row is at 0 and a row a hair away at its true distance."""
    train = rows_of(300, 0)
    train[7, 0] = 605.0  # some 17 standard deviations out
    queries = np.stack([train[7], train[7] + np.float32([0.1, 0, 0])])
    with torch.no_grad():
        (nearest,) = neighbors_of(train).nearest(torch.from_numpy(queries), 1)
    expected = brute_force_squared(train.astype(np.float64), queries.astype(np.float64)).min(1)
    assert expected[0] == 0.0 and nearest[0].min() == 0.0
    np.testing.assert_allclose(nearest[1].min(), expected[1], rtol=1e-2)


def test_the_class_margin_compares_the_nearest_row_of_the_class_with_that_of_any_other() -> None:
    train, queries = rows_of(300, 0), rows_of(40, 1)
    labels = np.repeat([0, 1, 2], [30, 70, 200])
    queries[0] = train[5]  # repeats a class-0 training row: distance 0 to its class
    neighbors = neighbors_of(train, labels)
    with torch.no_grad():
        margin = neighbors.class_margin(neighbors.nearest(torch.from_numpy(queries), 1)).numpy()
    # fit_neighbors groups the reference rows by class; the brute force measures on the same (all) rows.
    distance = np.sqrt(brute_force_squared(train.astype(np.float64), queries.astype(np.float64)))
    nearest = np.stack([distance[:, labels == c].min(1) for c in range(3)], axis=1)
    other = np.stack([np.delete(nearest, c, axis=1).min(1) for c in range(3)], axis=1)
    expected = np.log(other + MARGIN_EPSILON) - np.log(nearest + MARGIN_EPSILON)
    # Exact near the training rows too: a repeat's distance is 0, not the rounding of |x|^2 - 2 x.r + |r|^2.
    np.testing.assert_allclose(margin, expected, rtol=1e-3, atol=2e-3)
    assert margin[0, 0] == pytest.approx(np.log(other[0, 0] + MARGIN_EPSILON) - np.log(MARGIN_EPSILON), abs=1e-4)
    # Where one class is nearest, its margin is positive and every other class's is minus that class's gap.
    assert (margin.max(axis=1) >= 0).all() and ((margin > 0).sum(axis=1) <= 1).all()


def test_a_class_without_training_rows_is_far_from_every_row() -> None:
    train = rows_of(60, 0)
    schema = Schema(SCHEMA.columns, None)
    neighbors = Neighbors(fit_neighbors(schema, train, np.repeat([0, 2], 30), 3, seed=0))
    assert list(neighbors.params.class_counts) == [30, 0, 30]
    with torch.no_grad():
        margin = neighbors.class_margin(neighbors.nearest(torch.from_numpy(rows_of(10, 1)), 1)).numpy()
    assert np.isfinite(margin).all() and (margin[:, 1] < -5).all()


def test_reference_rows_are_capped_and_drawn_from_the_seed() -> None:
    train = rows_of(MAX_REFERENCE_ROWS + 500, 0)
    first, again = neighbors_of(train, seed=3), neighbors_of(train, seed=3)
    assert first.params.reference.shape == (MAX_REFERENCE_ROWS, 3)
    np.testing.assert_array_equal(first.params.reference, again.params.reference)


@pytest.mark.parametrize(
    ("counts", "kept"),
    [
        ((100, 10_000), (100, MAX_REFERENCE_ROWS - 100)),  # the minority keeps every row
        ((3_000, 3_000), (MAX_REFERENCE_ROWS // 2, MAX_REFERENCE_ROWS // 2)),
        ((10, 2_000, 5_000), (10, 2_000, MAX_REFERENCE_ROWS - 2_010)),
        ((5, 7), (5, 7)),
    ],
)
def test_small_classes_keep_all_their_rows_and_large_ones_share_the_rest(
    counts: tuple[int, ...], kept: tuple[int, ...]
) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    neighbors = neighbors_of(rows_of(len(labels), 0), labels)
    assert tuple(neighbors.params.class_counts) == kept
    assert len(neighbors.params.reference) == sum(kept)


@pytest.mark.parametrize("levels", [3, ONEHOT_MAX_LEVELS + 1])  # one-hot in the product / compared code by code
def test_an_all_categorical_table_counts_differing_codes(levels: int) -> None:
    schema = Schema((Column("c", "categorical", "object", categories=tuple(range(levels))),), None)
    train = np.array([[0.0]] * 20 + [[1.0]] * 20, dtype=np.float32)
    with torch.no_grad():
        distance = nearest_distance(neighbors_of(train, schema=schema), torch.tensor([[0.0], [2.0], [levels + 5.0]]))
    np.testing.assert_allclose(distance.numpy(), [0.0, 1.0, 1.0], atol=1e-6)  # a code never seen differs from all


def test_a_many_level_category_is_compared_as_a_small_one_is() -> None:
    rng = np.random.default_rng(0)
    train, queries = rows_of(200, 0), rows_of(30, 1)
    for rows in (train, queries):
        rows[:, 1] = rng.integers(0, 3, len(rows))
    labels = (train[:, 0] > 5).astype(np.int64)
    distances, margins = [], []
    for levels in (3, ONEHOT_MAX_LEVELS + 1):
        column = Column("c", "categorical", "int64", categories=tuple(range(levels)))
        neighbors = neighbors_of(train, labels, Schema((SCHEMA.columns[0], column, SCHEMA.columns[2]), None))
        with torch.no_grad():
            nearest = neighbors.nearest(torch.from_numpy(queries), ANOMALY_NEIGHBORS)
            distances.append(neighbors.mean_nearest(nearest, ANOMALY_NEIGHBORS).numpy())
            margins.append(neighbors.class_margin(nearest).numpy())
    np.testing.assert_allclose(distances[0], distances[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(margins[0], margins[1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("family", ["flow", "vae", "autoregressive"])
def test_the_published_log_prob_graph_serves_the_class_margin(trained_store: Path, family: str) -> None:
    """Through the CLI-trained version: the ONNX margin equals the checkpoint's eager one, and the training rows it
    holds are nearest their own class (distance 0) unless a row of another class repeats them."""
    version = trained_store / f"mixed-{family}" / "1"
    spec = load_manifest(version).graphs["log_prob"]
    assert spec.has_output(CLASS_MARGIN)
    model = load_checkpoint(version / CHECKPOINT_FILE)
    assert model.neighbors is not None
    params = model.neighbors.params
    own = np.repeat(np.arange(len(params.class_counts)), params.class_counts)
    rows = np.vstack([params.reference, ExportedModel(version).sample(np.zeros(50, dtype=np.int64), seed=3)])
    session = ExportedModel(version).sessions["log_prob"]
    feeds = feeds_for(spec, seed=0, start_row=0, n_rows=len(rows), rows=rows)
    served = named_outputs(spec, session.run([t.name for t in spec.outputs], feeds))[CLASS_MARGIN]
    inputs = tuple(torch.from_numpy(feeds[t.name]) for t in spec.inputs)
    with torch.no_grad():
        eager = dict(zip(GRAPH_OUTPUTS["log_prob"], run_graph(model, "log_prob", inputs), strict=True))
    np.testing.assert_allclose(served, eager[CLASS_MARGIN].numpy(), rtol=1e-3, atol=1e-3)
    at_own_class = served[np.arange(len(own)), own]
    assert np.mean(at_own_class > 0) > 0.95
