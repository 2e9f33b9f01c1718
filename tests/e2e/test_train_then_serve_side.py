"""End to end across the boundary: `synthserve train` in a subprocess, then the artifact used the way the
serving side uses it: in a fresh process with only the contract, numpy and ONNX Runtime (torch blocked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CONSUMER = r"""
import json, sys
sys.modules["torch"] = None  # the serving side never imports torch
import numpy as np
import onnxruntime as ort
from synthserve.contract import draw_noise, load_manifest

directory = sys.argv[1]
manifest = load_manifest(directory)
out = {}
for graph, spec in manifest.graphs.items():
    session = ort.InferenceSession(f"{directory}/{spec.file}", providers=["CPUExecutionProvider"])
    feeds, stream = {}, 0
    for t in spec.inputs:
        if t.role == "noise":
            feeds[t.name] = draw_noise(0, stream, 0, 16, t.row_shape, t.distribution)
            stream += 1
        elif t.role == "label":
            feeds[t.name] = np.arange(16, dtype=np.int64) % len(manifest.schema.label.classes)
        else:
            feeds[t.name] = np.asarray(out["sample"], dtype=np.float32)
    result = session.run(None, feeds)
    out[graph] = result[0].tolist()
print(json.dumps({"torch_loaded": sys.modules.get("torch") is not None, **out}))
"""


def test_train_in_one_process_use_in_another(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, 300),
            "channel": rng.choice(["web", "shop"], 300),
            "fraud": rng.random(300) < 0.2,
        }
    )
    frame.to_csv(tmp_path / "tx.csv", index=False)
    synthserve = Path(sys.executable).parent / "synthserve"
    train = [str(synthserve), "train", "--data", str(tmp_path / "tx.csv"), "--model", "vae", "--name", "tx"]
    train += ["--label", "fraud", "--model-store", str(tmp_path / "store"), "--epochs", "3", "--threads", "1"]
    done = subprocess.run(train, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    version = Path(done.stdout.strip().splitlines()[-1])
    assert version == tmp_path / "store" / "tx" / "1"
    used = subprocess.run(
        [sys.executable, "-c", CONSUMER, str(version)], capture_output=True, text=True, timeout=120, check=False
    )
    assert used.returncode == 0, used.stderr[-3000:]
    result = json.loads(used.stdout)
    assert result["torch_loaded"] is False
    rows = np.asarray(result["sample"])
    assert rows.shape == (16, 2) and set(rows[:, 1]) <= {0.0, 1.0} and (rows[:, 0] > 0).all()
    assert np.isfinite(result["log_prob"]).all() and np.asarray(result["encode"]).shape[0] == 16
