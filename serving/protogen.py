"""Regenerates `serving/proto/` from `protos/` with grpcio-tools: `python -m serving.protogen`.

The generated modules are committed so that serving needs no code generator at run time;
tests/serving/test_protogen.py regenerates into a temporary directory and compares.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

__all__ = ["PROTO_FILES", "PROTO_ROOT", "generate", "main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_FILES = ("synthserve/v1/synthesizer.proto",)
OUTPUT_DIR = Path(__file__).resolve().parent / "proto"
# protoc writes `synthserve/v1/x_pb2.py`; the committed copies live flat in serving/proto/ with imports fixed.
_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(output_dir: Path) -> list[Path]:
    """Runs protoc on PROTO_FILES and writes the flattened modules into `output_dir`."""
    import grpc_tools
    from grpc_tools import protoc  # dev-only dependency

    include = Path(grpc_tools.__file__).parent / "_proto"
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTO_FILES,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        output_dir.mkdir(parents=True, exist_ok=True)
        for proto in PROTO_FILES:
            stem = Path(proto).stem
            package = ".".join(Path(proto).parent.parts)
            for suffix in _GENERATED_SUFFIXES:
                source = Path(tmp) / Path(proto).parent / f"{stem}{suffix}"
                text = source.read_text()
                text = text.replace(f"from {package} import {stem}_pb2", f"from serving.proto import {stem}_pb2")
                target = output_dir / source.name
                target.write_text(text)
                written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    output = Path(argv[0]) if argv else OUTPUT_DIR
    for path in generate(output):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
