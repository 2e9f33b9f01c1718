"""The `synthserve` console script: routes each subcommand to the package that owns it.

Imports happen per subcommand, so `synthserve serve` never imports torch and `synthserve train`
never imports grpc; `training` and `serving` stay unaware of each other.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

__all__ = ["COMMANDS", "main"]

# subcommand -> module exposing `main(argv: list[str]) -> int`; argv starts with the subcommand.
COMMANDS: dict[str, str] = {
    "train": "training.cli",
    "evaluate": "training.cli",
    "serve": "serving.cli",
    "models": "serving.cli",
    "sample": "serving.cli",
    "balance": "serving.cli",
    "score": "serving.cli",
    "encode": "serving.cli",
    "bulk": "serving.cli",
    "torchserve-archive": "torchserve_handler.archive",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        print(f"usage: synthserve COMMAND [options]\ncommands: {names}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    try:
        return int(module.main(argv))
    except BrokenPipeError:
        # The reader went away (`synthserve sample ... | head`): stop quietly, as other Unix tools do. Python
        # would flush stdout again at exit and complain, so stdout is pointed at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
