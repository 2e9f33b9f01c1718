"""The quality benchmark: its protocol pieces on known inputs, the ONNX adapter against the contract, and the
`--quick` command end to end (that it runs and writes finite figures, not that it meets the issue's targets)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper
from threadpoolctl import threadpool_limits

from benchmarks.quality import _parse_families, _parse_sampling
from benchmarks.quality_lib import runner
from benchmarks.quality_lib.baselines import iforest_scores, knn_distance_scores, random_oversample, smote
from benchmarks.quality_lib.data import DEV_DATASETS, Standardizer, all_datasets, load_folds
from benchmarks.quality_lib.generator import OnnxModel, TrainConfig, write_training_csv
from benchmarks.quality_lib.metrics import anomaly_auroc, c2st_auc, dcr_ratio, g_mean, utility_scores
from benchmarks.quality_lib.report import per_dataset, summary_tables
from benchmarks.quality_lib.runner import sampling_method
from synthserve.contract import (
    Column,
    GraphSpec,
    LabelSpec,
    Manifest,
    SamplingOptions,
    Schema,
    TensorSpec,
    draw_noise,
)

REPO = Path(__file__).resolve().parents[2]

# --quick --families flow makes 6 `synthserve train` calls of ~18 CPU seconds each (mostly ONNX export):
# ~60 s on 2 idle cores, 4-5 minutes on a machine shared with other jobs. The limit stays below pytest's 600 s.
QUICK_TIMEOUT_S = 540


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One OpenMP thread, as the benchmark's workers use: HistGradientBoosting crawls when cores are shared."""
    with threadpool_limits(1):
        yield


# --- data --------------------------------------------------------------------------------------------------------


def test_dev_datasets_are_keel_datasets() -> None:
    assert len(DEV_DATASETS) == 20
    assert len(all_datasets()) == 100
    assert set(DEV_DATASETS) <= set(all_datasets())


@pytest.mark.parametrize(("split", "n_folds"), [("keel", 2), ("raw5", 5)])
@pytest.mark.parametrize("name", ["abalone19", "cleveland-0_vs_4", "car-good"])
def test_folds_partition_the_data_with_the_minority_as_positive(split: str, n_folds: int, name: str) -> None:
    folds = load_folds(name, split)
    assert len(folds) == n_folds
    y_all = np.concatenate([f.y_test for f in folds])
    assert 0 < y_all.mean() < 0.5  # 1 = the minority, whatever the file's label encoding (abalone19 is inverted)
    for fold in folds:
        assert np.isfinite(fold.x_train).all() and np.isfinite(fold.x_test).all()  # cleveland's <null> imputed
        assert fold.x_train.shape[1] == fold.x_test.shape[1] == len(fold.integer_columns)
        assert fold.n_minority >= 1 and set(np.unique(fold.y_test)) == {0, 1}
    if split == "raw5":
        assert sum(len(f.y_test) for f in folds) == sum(len(f.y_train) for f in folds) / 4


def test_standardizer_uses_training_statistics_and_keeps_constant_columns_finite() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    std = Standardizer.fit(x)
    np.testing.assert_allclose(std(x), [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(std(np.array([[5.0, 6.0]])), [[3.0, 1.0]])


# --- metrics and baselines ---------------------------------------------------------------------------------------


def test_g_mean_is_zero_when_the_minority_is_never_found() -> None:
    y = np.array([0, 0, 0, 1, 1])
    assert g_mean(y, np.zeros(5, dtype=int)) == 0.0
    assert g_mean(y, np.array([0, 0, 1, 1, 0])) == pytest.approx(np.sqrt(2 / 3 * 1 / 2))


def test_utility_scores_cover_the_four_classifiers_and_separate_separable_data() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (80, 2)), rng.normal(6, 1, (20, 2))])
    y = np.concatenate([np.zeros(80, dtype=int), np.ones(20, dtype=int)])
    scores = utility_scores(x, y, x, y)
    assert set(scores) == {"knn", "tree", "logreg", "hgb"}
    assert all(s["auroc"] > 0.99 and s["gmean"] > 0.95 and s["f1"] > 0.95 for s in scores.values())


def test_c2st_tells_shifted_data_from_real_but_not_fresh_draws() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 3))
    assert c2st_auc(rng.normal(size=(300, 3)), real) < 0.6
    assert c2st_auc(rng.normal(2.0, 1.0, size=(300, 3)), real) > 0.95


def test_dcr_ratio_exposes_copies() -> None:
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(200, 3)), rng.normal(size=(100, 3))
    assert dcr_ratio(train[:50], train, test) == 0.0
    assert 0.7 < dcr_ratio(rng.normal(size=(100, 3)), train, test) < 1.4


@pytest.mark.parametrize("resampler", [random_oversample, smote])
@pytest.mark.parametrize("n_minority", [2, 4, 12])
def test_resamplers_balance_the_classes_with_minority_like_rows(resampler, n_minority: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 1, (60, 2)), rng.normal(10, 1, (n_minority, 2))])
    y = np.concatenate([np.zeros(60, dtype=int), np.ones(n_minority, dtype=int)])
    added = resampler(x, y, 0)
    assert added.shape == (60 - n_minority, 2)
    minority = x[y == 1]
    # SMOTE interpolates between minority rows, random oversampling copies them: both stay in their hull.
    assert (added >= minority.min(axis=0) - 1e-9).all() and (added <= minority.max(axis=0) + 1e-9).all()


@pytest.mark.parametrize("scorer", [iforest_scores, knn_distance_scores])
def test_anomaly_baselines_rank_outliers_first(scorer) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(200, 2))
    test = np.vstack([rng.normal(size=(50, 2)), rng.normal(8, 1, (5, 2))])
    y = np.concatenate([np.zeros(50, dtype=int), np.ones(5, dtype=int)])
    assert anomaly_auroc(y, scorer(normal, test)) == 1.0


def test_anomaly_auroc_ranks_non_finite_scores_as_score_density_flags_them() -> None:
    """NaN and +inf are flagged by `Scores.is_anomaly` at any threshold: the most anomalous, tied; -inf the least."""
    y = np.array([0, 0, 1, 1])
    assert anomaly_auroc(y, np.array([0.0, 1.0, np.inf, np.nan])) == 1.0
    assert anomaly_auroc(y, np.array([np.nan, 0.0, 1.0, 2.0])) == 0.5  # a normal row above both anomalies
    assert anomaly_auroc(y, np.array([np.nan, 0.0, np.inf, 2.0])) == 0.625  # the NaN and inf tie: half a pair
    assert anomaly_auroc(y, np.array([-np.inf, 0.0, 1.0, 2.0])) == 1.0
    assert anomaly_auroc(y, np.array([np.nan, np.nan, np.nan, np.nan])) == 0.5


# --- report ------------------------------------------------------------------------------------------------------


def test_summary_counts_wins_ties_losses_against_smote_per_dataset() -> None:
    rows = []
    for d, (smote_g, flow_g) in enumerate([(0.5, 0.7), (0.6, 0.6), (0.7, 0.5), (0.4, 0.9)]):
        for method, g in (("smote", smote_g), ("flow", flow_g)):
            for fold in (0, 1):
                for clf in ("knn", "tree"):
                    for metric, v in (("auroc", 0.8), ("gmean", g), ("f1", 0.5)):
                        rows.append([f"d{d}", fold, method, clf, metric, v, ""])
    rows.append(["d0", 1, "flow", "", "error", np.nan, "boom"])
    records = pd.DataFrame(rows, columns=["dataset", "fold", "method", "classifier", "metric", "value", "note"])
    table = per_dataset(records)
    assert table.loc[(table.dataset == "d0") & (table.method == "flow"), "failed_folds"].item() == 1
    utility = summary_tables(table)["utility"].set_index("method")
    assert utility.loc["flow", "gmean"] == pytest.approx(0.675)
    assert utility.loc["flow", "gmean W/T/L vs SMOTE"] == "2/1/1"
    assert utility.loc["flow", "auroc W/T/L vs SMOTE"] == "0/4/0"


# --- the ONNX adapter, against a hand-built model that follows docs/model_store.md ------------------------------


def _tensor(name: str, dtype: str, shape: tuple[int | None, ...], role: str, dist: str | None = None) -> TensorSpec:
    return TensorSpec(name, dtype, shape, role, dist)


def _fake_model(version_dir: Path) -> None:
    """Graph columns (x1, x0, x2); x0 categorical with labels 10/20/30.
    sample: rows = [z0 + 100 * label, label (a code), z1]; log_prob: sum(rows) + e; posterior of class 1:
    sigmoid(rows[:, 0]); log_prob_cond = log posterior + log_prob - log prior, as Bayes' rule has it."""
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    sample = helper.make_graph(
        [
            helper.make_node("Cast", ["label"], ["labf"], to=f32),
            helper.make_node("Unsqueeze", ["labf", "one"], ["lab2"]),
            helper.make_node("Split", ["z"], ["z0", "z1"], axis=1),
            helper.make_node("Mul", ["lab2", "hundred"], ["shift"]),
            helper.make_node("Add", ["z0", "shift"], ["c0"]),
            helper.make_node("Concat", ["c0", "lab2", "z1"], ["rows"], axis=1),
        ],
        "sample",
        [helper.make_tensor_value_info("z", f32, [None, 2]), helper.make_tensor_value_info("label", i64, [None])],
        [helper.make_tensor_value_info("rows", f32, [None, 3])],
        [helper.make_tensor("one", i64, [1], [1]), helper.make_tensor("hundred", f32, [], [100.0])],
    )
    log_prob = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["rows", "one"], ["total"], keepdims=1),
            helper.make_node("Add", ["total", "e"], ["lp2"]),
            helper.make_node("Squeeze", ["lp2", "one"], ["log_prob"]),
            helper.make_node("Gather", ["rows", "first"], ["col0"], axis=1),
            helper.make_node("Sigmoid", ["col0"], ["p1"]),
            helper.make_node("Sub", ["unit", "p1"], ["p0"]),
            helper.make_node("Concat", ["p0", "p1"], ["posterior"], axis=1),
            helper.make_node("Log", ["posterior"], ["log_posterior"]),
            helper.make_node("Add", ["log_posterior", "lp2"], ["log_joint"]),
            helper.make_node("Sub", ["log_joint", "log_priors"], ["log_prob_cond"]),
        ],
        "log_prob",
        [helper.make_tensor_value_info("rows", f32, [None, 3]), helper.make_tensor_value_info("e", f32, [None, 1])],
        [
            helper.make_tensor_value_info("log_prob", f32, [None]),
            helper.make_tensor_value_info("log_prob_cond", f32, [None, 2]),
            helper.make_tensor_value_info("posterior", f32, [None, 2]),
        ],
        [
            helper.make_tensor("log_priors", f32, [2], np.log([0.9, 0.1]).tolist()),
            helper.make_tensor("one", i64, [1], [1]),
            helper.make_tensor("first", i64, [1], [0]),
            helper.make_tensor("unit", f32, [], [1.0]),
        ],
    )
    version_dir.mkdir(parents=True)
    for graph in (sample, log_prob):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        onnx.save(model, version_dir / f"{graph.name}.onnx")
    manifest = Manifest(
        name="fake",
        version=1,
        family="flow",
        schema=Schema(
            (
                Column("x1", "continuous", "float64", min=-5.0, max=5.0),
                Column("x0", "categorical", "int64", categories=(10, 20, 30)),
                Column("x2", "continuous", "float64", min=-5.0, max=5.0),
            ),
            LabelSpec("label", "object", ("majority", "minority"), (0.9, 0.1)),
        ),
        graphs={
            "sample": GraphSpec(
                "sample.onnx",
                (_tensor("z", "float32", (None, 2), "noise", "normal"), _tensor("label", "int64", (None,), "label")),
                (_tensor("rows", "float32", (None, 3), "output"),),
            ),
            "log_prob": GraphSpec(
                "log_prob.onnx",
                (_tensor("rows", "float32", (None, 3), "rows"), _tensor("e", "float32", (None, 1), "noise", "normal")),
                (
                    _tensor("log_prob", "float32", (None,), "output"),
                    _tensor("log_prob_cond", "float32", (None, 2), "output"),
                    _tensor("posterior", "float32", (None, 2), "output"),
                ),
            ),
        },
        created_at="2026-11-21T00:00:00Z",
        synthserve_version="0.1.0",
    )
    (version_dir / "manifest.json").write_text(manifest.to_json())


def test_adapter_samples_with_contract_noise_and_decodes_to_benchmark_columns(tmp_path: Path) -> None:
    _fake_model(tmp_path / "1")
    model = OnnxModel(tmp_path / "1")
    rows = model.sample(4, seed=7, label="minority")
    z = draw_noise(7, stream=0, start_row=0, n_rows=4, row_shape=(2,), distribution="normal")
    np.testing.assert_allclose(rows[:, 0], 20.0)  # x0: code 1 -> category label 20
    np.testing.assert_allclose(rows[:, 1], z[:, 0] + 100.0, rtol=1e-6)  # x1: shifted by the minority index
    np.testing.assert_allclose(rows[:, 2], z[:, 1], rtol=1e-6)
    np.testing.assert_allclose(model.sample(4, seed=7, label="majority")[:, 0], 10.0)
    with pytest.raises(ValueError, match=r"label: unknown class label 'other' \(classes: \['majority', 'minority'\]\)"):
        model.sample(1, seed=0, label="other")


def test_adapter_samples_with_the_servers_temperature_and_best_of_k(tmp_path: Path) -> None:
    """Row i is the candidate among noise rows 3i..3i+2 (scaled by T = 0.5) with the highest p(majority | x), i.e.
    the lowest x1 = 0.5 z0 for this graph (posterior(minority) = sigmoid(x1))."""
    _fake_model(tmp_path / "1")
    rows = OnnxModel(tmp_path / "1").sample(5, seed=3, label="majority", options=SamplingOptions(0.5, 3))
    z = draw_noise(3, stream=0, start_row=0, n_rows=15, row_shape=(2,), distribution="normal").reshape(5, 3, 2)
    winners = z[np.arange(5), z[:, :, 0].argmin(axis=1)]
    np.testing.assert_allclose(rows[:, 1], 0.5 * winners[:, 0], rtol=1e-6)
    np.testing.assert_allclose(rows[:, 2], 0.5 * winners[:, 1], rtol=1e-6)


def test_adapter_scores_with_graph_codes_and_seed_zero_noise(tmp_path: Path) -> None:
    _fake_model(tmp_path / "1")
    x = np.array([[30.0, 1.0, 2.0], [24.0, -1.0, 0.5]])  # x0 = 24 is unseen: nearest category 20, code 1
    e = draw_noise(0, stream=0, start_row=0, n_rows=2, row_shape=(1,), distribution="normal")[:, 0]
    np.testing.assert_allclose(
        OnnxModel(tmp_path / "1").scores(x).log_density, np.array([2.0 + 1.0 + 2.0, 1.0 - 1.0 + 0.5]) + e, rtol=1e-6
    )


def test_adapter_reads_the_posterior_of_the_named_class(tmp_path: Path) -> None:
    _fake_model(tmp_path / "1")
    x = np.array([[10.0, 0.0, 0.0], [10.0, 2.0, 0.0]])  # benchmark column x1 is graph column 0
    model = OnnxModel(tmp_path / "1")
    posteriors = model.scores(x).posteriors
    minority, majority = posteriors[:, model.class_index("minority")], posteriors[:, model.class_index("majority")]
    np.testing.assert_allclose(minority, 1 / (1 + np.exp([-0.0, -2.0])), rtol=1e-6)
    np.testing.assert_allclose(majority, 1 / (1 + np.exp([0.0, 2.0])), rtol=1e-6)


def test_training_csv_keeps_codes_as_integers(tmp_path: Path) -> None:
    x = np.array([[1.0, 0.25], [2.0, 0.5]])
    write_training_csv(tmp_path / "f.csv", x, np.array([0, 1]), (True, False))
    frame = pd.read_csv(tmp_path / "f.csv")
    assert list(frame.columns) == ["x0", "x1", "label"]
    assert frame["x0"].dtype == np.int64 and frame["label"].tolist() == ["majority", "minority"]


# --- the command --------------------------------------------------------------------------------------------------


def _run_quick(out: Path, families: str) -> pd.DataFrame:
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "quality.py"),
        "--quick",
        "--families",
        families,
        "--out",
        str(out),
    ]
    # Own process group: on a timeout the pool workers and `synthserve train` children die with the command.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=QUICK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"--quick --families {families} took more than {QUICK_TIMEOUT_S} s")
    assert proc.returncode == 0, stderr[-3000:]
    assert (out / "results.md").read_text().count("| smote |") == 1
    assert (out / "gmean_vs_smote.png").stat().st_size > 0
    table = pd.read_csv(out / "per_dataset.csv")
    assert {"dataset", "method", "auroc", "gmean", "f1", "anomaly_auroc"} <= set(table.columns)
    assert len(table["dataset"].unique()) == 3
    return table


def test_quick_baselines_run_end_to_end(tmp_path: Path) -> None:
    table = _run_quick(tmp_path, "none")
    utility = table[table.method.isin(["none", "ros", "smote"])]
    assert len(utility) == 9 and np.isfinite(utility[["auroc", "gmean", "f1"]].to_numpy()).all()
    anomaly = table[table.method.isin(["iforest", "knn"])]
    assert len(anomaly) == 6 and np.isfinite(anomaly["anomaly_auroc"]).all()


@pytest.mark.skipif(importlib.util.find_spec("training.cli") is None, reason="the training package has no CLI yet")
def test_quick_flow_runs_end_to_end_through_the_exported_graphs(tmp_path: Path) -> None:
    table = _run_quick(tmp_path, "flow")
    flow = table[table.method == "flow"]
    assert len(flow) == 3 and (flow["failed_folds"] == 0).all(), (tmp_path / "records.csv").read_text()[-3000:]
    columns = ["auroc", "gmean", "f1", "anomaly_auroc", "c2st_auc", "dcr_ratio", "train_cpu_s", "anomaly_train_cpu_s"]
    assert np.isfinite(flow[columns].to_numpy()).all()


@pytest.mark.parametrize("failing", ["balance", "anomaly"])
def test_a_failed_part_of_a_family_keeps_the_other_part_s_figures(
    failing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A density that fails to train on the majority rows (or a conditional model that fails) costs its own
    figures only: the fold keeps the other part's, and one `error` record says which part failed."""
    fold = load_folds("glass1", "raw5")[0]
    family = TrainConfig("autoregressive", "synthserve")

    def balance(*args: object) -> tuple[list[dict[str, object]], bool]:
        if failing == "balance":
            raise RuntimeError("synthserve train exited 1: parity failed")
        return [runner._record(fold, family.method, "gmean", 0.8)], True

    def anomaly(*args: object) -> list[dict[str, object]]:
        if failing == "anomaly":
            raise RuntimeError("synthserve train exited 1: parity failed")
        return [runner._record(fold, family.method, "anomaly_auroc", 0.9)]

    monkeypatch.setattr(runner, "_balance_records", balance)
    monkeypatch.setattr(runner, "_anomaly_records", anomaly)
    config = runner.RunConfig("raw5", (family,))
    records = runner._family_records(fold, family, config, Standardizer.fit(fold.x_train), tmp_path)
    kept = {"balance": "anomaly_auroc", "anomaly": "gmean"}[failing]
    assert [r["metric"] for r in records] == ([kept, "error"] if failing == "anomaly" else ["error", kept])
    (error,) = [r for r in records if r["metric"] == "error"]
    assert str(error["note"]).startswith(f"{failing}: synthserve train exited 1")


def test_sampling_options_parse_with_an_optional_guidance_and_name_their_method() -> None:
    options = _parse_sampling("1:1,1:5,1:1:2")
    assert options == (SamplingOptions(), SamplingOptions(1.0, 5), SamplingOptions(1.0, 1, 2.0))
    assert [sampling_method("diffusion", o) for o in options] == [
        "diffusion",
        "diffusion(T=1,k=5)",
        "diffusion(T=1,k=1,w=2)",
    ]
    for bad in ("1:1:2:3", "1:1:-1", "1"):
        with pytest.raises(SystemExit, match="--sampling: expected TEMPERATURE:BEST_OF"):
            _parse_sampling(bad)


def test_families_take_training_options_that_name_their_method() -> None:
    parsed = _parse_families("flow,flow:coupling=spline;spline_bins=12,diffusion")
    assert parsed == (("flow", ()), ("flow", ("coupling=spline", "spline_bins=12")), ("diffusion", ()))
    methods = [TrainConfig(f, "synthserve", options=o).method for f, o in parsed]
    assert methods == ["flow", "flow[coupling=spline;spline_bins=12]", "diffusion"]
    with pytest.raises(SystemExit, match="not among"):
        _parse_families("flow,splines")
