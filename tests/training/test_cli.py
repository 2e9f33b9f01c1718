"""Through the CLI and ONNX Runtime: artifacts, parity, determinism, valid categories, units, versions."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synthserve.contract import draw_noise, load_manifest
from tests.training.mixed_data import FAMILIES, make_mixed_frame
from training.cli import main as cli_main
from training.data import MIN_ROWS, decode_rows, encode_rows
from training.evaluate import CALIBRATION_FPR
from training.exported import ExportedModel, feeds_for
from training.parity import PARITY_ROUNDING_FACTOR

CAPABILITIES = {
    "flow": ("sample", "log_prob", "encode"),
    "vae": ("sample", "log_prob", "encode"),
    "gan": ("sample", "encode"),
    "autoregressive": ("sample", "log_prob", "encode"),
    "diffusion": ("sample", "sample_guided"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_manifest_and_files(trained_store: Path, family: str) -> None:
    directory = trained_store / f"mixed-{family}" / "1"
    manifest = load_manifest(directory)
    assert manifest.family == family and manifest.capabilities == CAPABILITIES[family]
    assert [c.name for c in manifest.schema.columns] == ["height_cm", "visits", "colour", "member", "discount"]
    assert manifest.schema.label is not None and manifest.schema.label.classes == ("no", "yes")
    listed = set(manifest.files)
    assert {f"{g}.onnx" for g in manifest.capabilities} | {"model.pt", "report.json"} <= listed
    assert "checkpoint.pt" not in listed and (directory / "checkpoint.pt").exists()
    for name, digest in manifest.files.items():
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest
    parity = manifest.metrics["export_parity"]
    assert parity["worst_rounding_ratio"] <= parity["rounding_factor_limit"] == PARITY_ROUNDING_FACTOR
    assert 0.0 <= manifest.metrics["c2st_auc"] <= 1.0
    assert "density_note" in manifest.training
    if "log_prob" in manifest.capabilities:
        assert manifest.calibration is not None and manifest.calibration.fpr[:4] == (0.001, 0.005, 0.01, 0.05)
        assert np.isfinite(manifest.metrics["heldout_nll"])
    report = json.loads((directory / "report.json").read_text())
    assert "c2st_auc" in report["metrics"] and report["history"]["validation_loss"]
    checkpoint = torch.load(directory / "checkpoint.pt", weights_only=True)
    assert checkpoint["family"] == family


@pytest.mark.parametrize("family", FAMILIES)
def test_same_noise_same_rows_whatever_the_batching(trained_store: Path, family: str) -> None:
    model = ExportedModel(trained_store / f"mixed-{family}" / "1")
    labels = np.array([0, 1] * 600, dtype=np.int64)
    whole = model.sample(labels, seed=11)
    again = model.sample(labels, seed=11)
    assert np.array_equal(whole, again)
    # Rows 1000..1009 drawn on their own (start_row = 1000) equal those rows of the large request.
    spec = model.manifest.graphs["sample"]
    feeds = feeds_for(spec, seed=11, start_row=1000, n_rows=10, label=labels[1000:1010])
    part = model.sessions["sample"].run(["rows"], feeds)[0]
    np.testing.assert_allclose(part, whole[1000:1010], rtol=1e-5, atol=1e-4)
    assert not np.array_equal(model.sample(labels, seed=12), whole)


@pytest.mark.parametrize("family", FAMILIES)
def test_categories_valid_and_units_round_trip(trained_store: Path, family: str) -> None:
    model = ExportedModel(trained_store / f"mixed-{family}" / "1")
    schema = model.manifest.schema
    rows = model.sample(np.repeat([0, 1], 500), seed=3)
    frame = decode_rows(rows, schema)
    assert list(frame.columns) == ["height_cm", "visits", "colour", "member", "discount"]
    original = make_mixed_frame()
    assert set(frame["colour"]) <= {"red", "green", "blue"} and frame["member"].dtype == bool
    assert frame["visits"].dtype == np.int64 and frame["height_cm"].dtype == np.float64
    np.testing.assert_array_equal(rows[:, 1], np.round(rows[:, 1]))  # integers come back whole
    np.testing.assert_array_equal(rows[:, 2], np.round(rows[:, 2]))
    assert rows[:, 2].min() >= 0 and rows[:, 2].max() <= 2
    zeros = float((frame["discount"] == 0.0).mean())  # the point mass (half the training rows) comes back exactly
    assert zeros > 0.1, f"{family}: {zeros:.2f} of rows at the point mass"
    # Original units: the synthetic mean height lies near the real one (cm, not standardized).
    assert abs(frame["height_cm"].mean() - original["height_cm"].mean()) < 15
    # The frame round-trips to the same codes, and to the graph's values up to the learned 2 decimals.
    encoded = encode_rows(frame, schema)
    np.testing.assert_array_equal(encoded[:, :4], rows[:, :4])
    np.testing.assert_allclose(encoded[:, 4], rows[:, 4], rtol=0, atol=0.005 + 1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_torchscript_matches_onnx(trained_store: Path, family: str) -> None:
    directory = trained_store / f"mixed-{family}" / "1"
    manifest = load_manifest(directory)
    scripted = torch.jit.load(str(directory / "model.pt"))
    model = ExportedModel(directory)
    labels = np.array([0, 1, 1, 0, 1], dtype=np.int64)
    feeds = feeds_for(manifest.graphs["sample"], seed=5, start_row=0, n_rows=5, label=labels)
    ordered = [torch.from_numpy(feeds[t.name]) for t in manifest.graphs["sample"].inputs]
    (rows,) = scripted.sample(*ordered)
    np.testing.assert_allclose(rows.numpy(), model.sample(labels, seed=5), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("family", ["flow", "vae", "autoregressive"])
def test_density_outputs_are_consistent(trained_store: Path, family: str) -> None:
    model = ExportedModel(trained_store / f"mixed-{family}" / "1")
    rows = encode_rows(make_mixed_frame(200, seed=1).drop(columns="outcome"), model.manifest.schema)
    log_prob, cond, posterior = model.log_prob(rows)
    priors = np.log(np.asarray(model.manifest.schema.label.priors))  # type: ignore[union-attr]
    expected = np.logaddexp(cond[:, 0] + priors[0], cond[:, 1] + priors[1])
    np.testing.assert_allclose(log_prob, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(posterior.sum(1), 1.0, atol=1e-5)
    # Scores with seed 0 are reproducible (the VAE's importance noise is drawn like the server's).
    assert np.array_equal(model.log_prob(rows)[0], log_prob)


def test_flow_inverse_round_trip(trained_store: Path) -> None:
    """encode then sample recovers the rows: continuous columns to float precision (within the training range,
    where sampled rows stay), discrete ones exactly."""
    model = ExportedModel(trained_store / "mixed-flow" / "1")
    frame = make_mixed_frame(300, seed=2)
    rows = encode_rows(frame.drop(columns="outcome"), model.manifest.schema)
    labels = (frame["outcome"] == "yes").to_numpy().astype(np.int64)
    latent = model.encode(rows, labels)
    back = model.sessions["sample"].run(["rows"], {"z": latent, "label": labels})[0]
    height = model.manifest.schema.columns[0]
    np.testing.assert_allclose(back[:, 0], np.clip(rows[:, 0], height.min, height.max), rtol=1e-4)
    assert (back[:, 1:4] == rows[:, 1:4]).mean() > 0.995
    discount = model.manifest.schema.columns[4]
    np.testing.assert_allclose(back[:, 4], np.clip(rows[:, 4], discount.min, discount.max), rtol=1e-4)
    assert (back[rows[:, 4] == 0.0, 4] == 0.0).all()  # the point mass comes back exactly


def test_retraining_makes_the_next_version_and_evaluate_leaves_it_untouched(
    tmp_path: Path, mixed_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A relative --data path is stored absolute, so `evaluate` works from another directory; evaluations go to
    their own files and never rewrite the published manifest or the files its checksums list."""
    data = tmp_path / "data" / "mixed.csv"
    data.parent.mkdir()
    shutil.copy(mixed_csv, data)
    monkeypatch.chdir(data.parent)
    store = tmp_path / "store"
    argv = ["train", "--data", data.name, "--model", "gan", "--name", "again", "--label", "outcome"]
    argv += ["--model-store", str(store), "--epochs", "1", "--threads", "1", "--no-progress", "--accept-weak-model"]
    assert cli_main(argv) == 0 and cli_main(argv) == 0
    assert sorted(p.name for p in (store / "again").iterdir()) == ["1", "2"]
    version = store / "again" / "2"
    manifest = load_manifest(version)
    assert manifest.version == 2 and manifest.training["data"] == str(data.resolve())
    published = {p.name: p.read_bytes() for p in version.iterdir() if p.is_file()}
    assert set(manifest.files) | {"manifest.json"} <= set(published)
    capsys.readouterr()

    monkeypatch.chdir(tmp_path)
    assert cli_main(["evaluate", "--model-store", "store", "--name", "again"]) == 0
    assert cli_main(["evaluate", "--model-store", "store", "--name", "again", "--version", "2"]) == 0
    records = [Path(line) for line in capsys.readouterr().out.split()]
    assert len(records) == 2 and records[0] != records[1]
    for record_path in records:
        assert record_path.parent == Path("store") / "again" / "2"
        assert record_path.name.startswith("evaluation-") and record_path.suffix == ".json"
        record = json.loads(record_path.read_text())
        assert record["manifest_sha256"] == hashlib.sha256(published["manifest.json"]).hexdigest()
        assert 0.0 <= record["metrics"]["c2st_auc"] <= 1.0 and record["data"] == str(data.resolve())
        assert (record_path.parent / record["report"]).is_file()
    assert {name: (version / name).read_bytes() for name in published} == published
    assert not [p for p in version.iterdir() if p.name.startswith(".")]  # no staging left behind

    def refused(argv: list[str]) -> str:
        assert cli_main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "Traceback" not in captured.err
        (line,) = captured.err.strip().splitlines()
        return line

    evaluate = ["evaluate", "--model-store", "store", "--name"]
    assert refused([*evaluate, "missing"]) == "error: --name 'missing': no such model in store"
    assert refused([*evaluate, "again", "--version", "9"]) == (
        "error: --version 9: 'again' has no such version (published: 1, 2)"
    )
    data.rename(data.with_name("moved.csv"))
    assert refused([*evaluate, "again"]) == (
        f"error: training.data '{data.resolve()}' of {Path('store/again/2/manifest.json')}: no such file "
        "(the data this version was trained on has moved or gone)"
    )
    (version / "manifest.json").write_text("{")
    assert "not valid JSON" in refused([*evaluate, "again"])


def test_unconditional_model_has_no_label_input(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    make_mixed_frame(200).drop(columns="outcome").to_csv(path, index=False)
    argv = ["train", "--data", str(path), "--model", "vae", "--name", "plain", "--model-store", str(tmp_path)]
    assert cli_main([*argv, "--epochs", "2", "--threads", "1", "--no-progress"]) == 0
    model = ExportedModel(tmp_path / "plain" / "1")
    assert model.manifest.schema.label is None
    assert all(t.role != "label" for g in model.manifest.graphs.values() for t in g.inputs)
    rows = model.sample(np.zeros(20, dtype=np.int64), seed=0)
    log_prob, cond, posterior = model.log_prob(rows)
    assert cond.shape == (20, 1) and np.allclose(posterior, 1.0) and np.allclose(log_prob, cond[:, 0])


def test_bad_arguments_are_refused(tmp_path: Path, mixed_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--data", str(mixed_csv), "--model", "flow", "--model-store", str(tmp_path)]
    assert cli_main([*base, "--name", "x", "--epochs", "0"]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    assert cli_main([*base, "--name", "x", "--label", "missing"]) == 2
    assert "no such column" in capsys.readouterr().err
    assert cli_main([*base, "--name", "../escape"]) == 2


def _bad_tables(directory: Path) -> dict[str, Path]:
    frame = make_mixed_frame()
    tables = {
        "ten_rows": frame.head(10),
        "continuous_label": frame.assign(income=np.random.default_rng(0).normal(5e4, 1e4, len(frame))),
    }
    paths = {}
    for name, table in tables.items():
        paths[name] = directory / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    return paths


@pytest.mark.parametrize(
    ("data", "label", "field"),
    [
        ("nope.csv", "outcome", "--data 'nope.csv'"),
        ("ten_rows", "outcome", "--data '"),
        ("continuous_label", "income", "--label 'income'"),
        ("mixed", "Outcome", "--label 'Outcome'"),
    ],
)
def test_bad_training_data_is_one_line_naming_the_field(
    tmp_path: Path, mixed_csv: Path, capsys: pytest.CaptureFixture[str], data: str, label: str, field: str
) -> None:
    paths = {**_bad_tables(tmp_path), "mixed": mixed_csv}
    source = str(paths.get(data, data))
    argv = ["train", "--data", source, "--label", label, "--model", "vae", "--name", "bad"]
    assert cli_main([*argv, "--model-store", str(tmp_path / "store"), "--epochs", "1", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"error: {field}") and len(line) < 400, line
    if data == "mixed":
        assert "'outcome'" in line  # the close match
    assert not (tmp_path / "store" / "bad").exists() or not list((tmp_path / "store" / "bad").iterdir())


def test_an_empty_column_with_impute_does_not_crash_after_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty_column.csv"
    make_mixed_frame().assign(empty=np.nan).to_csv(path, index=False)
    argv = ["train", "--data", str(path), "--label", "outcome", "--impute", "--model", "vae", "--name", "gaps"]
    argv += ["--model-store", str(tmp_path), "--epochs", "1", "--threads", "1", "--no-progress", "--no-plots"]
    code = cli_main([*argv, "--onnx-exporter", "torchscript"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code == 2:  # refused up front, naming the column
        (line,) = captured.err.strip().splitlines()
        assert line.startswith("error: ") and "'empty'" in line
    else:  # or left out (with a note) and the rest published
        assert code == 0
        assert "empty" not in [c.name for c in load_manifest(tmp_path / "gaps" / "1").schema.columns]


def test_data_errors_raised_after_export_are_one_line_and_publish_nothing(
    tmp_path: Path, mixed_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import training.evaluate
    from training.errors import DataError

    def failing_evaluation(*args: object, **kwargs: object) -> None:
        raise DataError("column 'height_cm': held-out rows cannot be evaluated")

    monkeypatch.setattr(training.evaluate, "evaluate_version", failing_evaluation)
    argv = ["train", "--data", str(mixed_csv), "--label", "outcome", "--model", "vae", "--name", "late"]
    argv += ["--model-store", str(tmp_path), "--epochs", "1", "--threads", "1", "--no-progress", "--no-plots"]
    assert cli_main([*argv, "--onnx-exporter", "torchscript"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == ["error: column 'height_cm': held-out rows cannot be evaluated"]
    assert list((tmp_path / "late").iterdir()) == []  # the staging directory is gone, no version published


def test_noise_draws_match_the_contract() -> None:
    """The helper feeds exactly draw_noise(seed, stream j, start_row) to each noise input."""
    from synthserve.contract import GraphSpec, TensorSpec

    spec = GraphSpec(
        "g.onnx",
        (
            TensorSpec("z", "float32", (None, 4), "noise", "normal"),
            TensorSpec("label", "int64", (None,), "label"),
            TensorSpec("u", "float32", (None, 3), "noise", "uniform"),
        ),
        (TensorSpec("rows", "float32", (None, 2), "output"),),
    )
    feeds = feeds_for(spec, seed=9, start_row=5, n_rows=2, label=np.array([0, 1]))
    np.testing.assert_array_equal(feeds["z"], draw_noise(9, 0, 5, 2, (4,), "normal"))
    np.testing.assert_array_equal(feeds["u"], draw_noise(9, 1, 5, 2, (3,), "uniform"))
    assert pd.Series(feeds["label"]).tolist() == [0, 1]


def test_all_categorical_table(tmp_path: Path) -> None:
    """No scalar column at all: the graphs must not carry zero-width tensors (ONNX Runtime refuses them)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"piece": rng.choice(list("abc"), 300), "rank": rng.integers(1, 5, 300)})
    frame["won"] = rng.random(300) < 0.3
    frame.to_csv(tmp_path / "cat.csv", index=False)
    argv = ["train", "--data", str(tmp_path / "cat.csv"), "--model", "vae", "--name", "cat", "--label", "won"]
    assert cli_main([*argv, "--model-store", str(tmp_path), "--epochs", "2", "--threads", "1", "--no-progress"]) == 0
    model = ExportedModel(tmp_path / "cat" / "1")
    rows = model.sample(np.array([0, 1] * 50), seed=0)
    assert set(rows[:, 0]) <= {0.0, 1.0, 2.0} and set(rows[:, 1]) <= {0.0, 1.0, 2.0, 3.0}
    assert np.isfinite(model.log_prob(rows)[0]).all()


def test_a_table_of_mostly_constant_columns_trains_and_calibrates(tmp_path: Path) -> None:
    """Like network logs: most columns one value throughout (whole numbers written as floats), a few varying.
    Training publishes with finite calibration, generated rows keep the constants, and a row far outside the
    training rows is flagged."""
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({f"flag{i}": np.zeros(n) for i in range(6)} | {"ones": np.ones(n), "port": 80.0})
    frame["bytes"] = rng.lognormal(6.0, 1.0, n).round(2)
    frame["count"] = rng.poisson(3, n).astype(float)
    frame["rate"] = rng.choice([0.0, 0.5, 1.0], n)
    frame.to_csv(tmp_path / "log.csv", index=False)
    argv = ["train", "--data", str(tmp_path / "log.csv"), "--model", "autoregressive", "--name", "log"]
    argv += ["--model-store", str(tmp_path), "--epochs", "3", "--threads", "1", "--no-progress", "--no-plots"]
    assert cli_main(argv) == 0
    version = tmp_path / "log" / "1"
    manifest = load_manifest(version)
    calibration = manifest.calibration
    assert calibration is not None and calibration.anomaly_score_quantiles is not None
    assert np.isfinite(calibration.log_prob_quantiles).all() and np.isfinite(calibration.anomaly_score_quantiles).all()
    model = ExportedModel(version)
    generated = decode_rows(model.sample(np.zeros(200, dtype=np.int64), seed=1), manifest.schema)
    assert (generated["port"] == 80.0).all() and (generated["flag0"] == 0.0).all() and (generated["ones"] == 1).all()
    far = frame.iloc[:1].assign(bytes=1e7)
    scores = model.scores(encode_rows(pd.concat([frame.iloc[:50], far]), manifest.schema))
    assert np.isfinite(scores.log_density[:-1]).all() and scores.anomaly_score is not None
    assert scores.anomaly_score[-1] > calibration.anomaly_score_threshold(CALIBRATION_FPR[0])


@pytest.mark.parametrize("label", [None, "outcome"])
def test_a_table_of_the_minimum_rows_trains_and_publishes(tmp_path: Path, label: str | None) -> None:
    """MIN_ROWS rows hold out 4: the quality gate's two-sample test runs on them (it used 5 folds and failed)."""
    frame = make_mixed_frame(MIN_ROWS, seed=3)
    path = tmp_path / "smallest.csv"
    (frame if label else frame.drop(columns="outcome")).to_csv(path, index=False)
    argv = ["train", "--data", str(path), "--model", "autoregressive", "--name", "smallest"]
    argv += ["--model-store", str(tmp_path), "--epochs", "2", "--threads", "1", "--no-progress", "--no-plots"]
    argv += ["--onnx-exporter", "torchscript", "--accept-weak-model"]
    if label:
        argv += ["--label", label]
    assert cli_main(argv) == 0
    report = json.loads((tmp_path / "smallest" / "1" / "report.json").read_text())
    assert report["metrics"]["n_heldout"] == 4 and report["metrics"]["c2st_auc"] == 0.5
