"""The Dockerfile: hadolint finds nothing, and the images are what the manifests and the Makefile expect."""

from __future__ import annotations

import re
import subprocess

import pytest

from .manifests import find, render
from .tools import REPO, require_tool

DOCKERFILE = REPO / "Dockerfile"
# Rules ignored on purpose, each with its reason in a comment above the ignore.
DOCUMENTED_IGNORES = {"DL3006", "DL3008"}


def _stages() -> dict[str, list[str]]:
    """Stage name -> its instructions, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, flags=re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1), [])
        current.append(line)
    return stages


def _arg_default(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert match, f"no default for ARG {name}"
    return match.group(1)


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [require_tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_ignores_are_documented() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"# hadolint ignore=(\S+)", line)
        if match:
            assert set(match.group(1).split(",")) <= DOCUMENTED_IGNORES, line
            reason = lines[number - 1]
            assert reason.startswith("#") and "hadolint" not in reason, f"line {number + 1}: no reason above"


def test_serving_image_is_the_default_target_and_runs_unprivileged() -> None:
    stages = _stages()
    assert list(stages)[-1] == "serve"
    serve = stages["serve"]
    assert "USER 65532:65532" in serve
    assert "EXPOSE 50051 9400" in serve
    assert any(line.startswith("COPY model_store /models") for line in serve)
    assert serve[-1].startswith("CMD")
    assert all(f'"{arg}"' in serve[-1] for arg in ("--model-store", "/models", "--host", "0.0.0.0"))


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_serving_image_installs_no_torch(variant: str) -> None:
    install = " ".join(_stages()[f"venv-{variant}"])
    extra = "serve" if variant == "cpu" else "gpu"
    assert f"[{extra}]" in install
    assert "torch" not in install and "[train]" not in install


def test_gpu_variant_runs_on_the_cuda_runtime() -> None:
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-cudnn-runtime-ubuntu[\d.]+", _arg_default("CUDA_RUNTIME_IMAGE"))
    assert _arg_default("VARIANT") == "cpu"
    assert "FROM ${CUDA_RUNTIME_IMAGE} AS runtime-gpu" in _stages()["runtime-gpu"]


def test_training_image_pins_torch_before_the_project() -> None:
    makefile_torch = re.search(r"^TORCH_VERSION \?= (\S+)$", (REPO / "Makefile").read_text(), flags=re.MULTILINE)
    assert makefile_torch and _arg_default("TORCH_VERSION") == makefile_torch.group(1)
    train = " ".join(_stages()["train"])
    assert train.index('"torch==${TORCH_VERSION}"') < train.index("[train]")
    assert "USER 65532:65532" in _stages()["train"]
    assert 'ENTRYPOINT ["synthserve", "train"]' in _stages()["train"]


@pytest.mark.parametrize("kustomization", ["k8s/overlays/cpu", "k8s/training"])
def test_manifests_run_the_image_user_and_ports(kustomization: str) -> None:
    for workload in find(render(kustomization), "Deployment") + find(render(kustomization), "Job"):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 65532
        for container in pod["containers"]:
            assert {port["containerPort"] for port in container.get("ports", [])} <= {50051, 9400}


def test_build_context_holds_what_the_build_copies() -> None:
    """.dockerignore is an allow-list: everything the wheel and the model store need, nothing else."""
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert patterns[0] == "*"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert {"pyproject.toml", "README.md", "model_store"} <= allowed
    packages = re.search(r"include = \[(.*?)\]", (REPO / "pyproject.toml").read_text())
    assert packages
    for package in re.findall(r'"(\w+)\*"', packages.group(1)):
        assert package in allowed, f"package {package} is not in the build context"
    assert "model_store/**/checkpoint.pt" in patterns
