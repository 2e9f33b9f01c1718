"""A quality run's progress on disk, so a run of several hours can stop and go on later (`--resume`).

The records of every finished fold are saved after each fold (`records.partial.csv`); `run.json` beside them
holds what the run measures (its settings and the commit of the code) and the wall and CPU time of each sitting.
A resumed run keeps the finished folds only if it measures the same thing with the same code, and its report
gives the time of all sittings together.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["PARTIAL_FILE", "RUN_FILE", "Progress", "ResumeError", "code_commit", "read_records"]

PARTIAL_FILE = "records.partial.csv"
RUN_FILE = "run.json"


class ResumeError(ValueError):
    """The output directory holds a run that this one cannot continue (the message says why and what to do)."""


def code_commit(root: Path) -> str | None:
    """The commit of the code that runs, with '+changes' when the tree differs from it; None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+changes" if dirty else commit


@dataclass
class Progress:
    """What a run measures, the time spent in earlier sittings, and the records of the folds they finished."""

    out: Path
    settings: dict[str, Any]
    commit: str | None
    sittings: list[dict[str, Any]] = field(default_factory=list)  # the earlier ones
    records: pd.DataFrame | None = None  # theirs
    current: dict[str, Any] | None = None  # this sitting, once it has saved
    started: str = field(default_factory=lambda: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @classmethod
    def start(cls, out: Path, settings: dict[str, Any], commit: str | None, resume: bool) -> Progress:
        """A new run, or with `resume` the unfinished one under `out` (which must measure the same thing with the
        same code)."""
        partial = out / PARTIAL_FILE
        if not partial.exists():
            return cls(out, settings, commit)
        if not resume:
            raise ResumeError(
                f"--out {out} holds an unfinished run ({PARTIAL_FILE}): pass --resume to continue it, "
                "or name another --out"
            )
        run_file = out / RUN_FILE
        if not run_file.exists():
            raise ResumeError(f"--resume: {run_file} is missing, so what {partial} measured is unknown")
        earlier = json.loads(run_file.read_text())
        changed = sorted(k for k in {*settings, *earlier["settings"]} if settings.get(k) != earlier["settings"].get(k))
        if changed:
            detail = "; ".join(f"{k}: {earlier['settings'].get(k)!r} then, {settings.get(k)!r} now" for k in changed)
            raise ResumeError(f"--resume: the unfinished run under {out} measured other settings ({detail})")
        if commit is None or earlier["commit"] != commit or commit.endswith("+changes"):
            raise ResumeError(
                f"--resume: the unfinished run under {out} ran code {earlier['commit']}, this is {commit}; resume "
                "from a clean checkout of that commit (e.g. `git worktree add DIR COMMIT`)"
            )
        return cls(out, settings, commit, list(earlier["sittings"]), read_records(partial))

    def finished_folds(self) -> set[tuple[str, int]]:
        """(dataset, fold) of every fold the earlier sittings finished."""
        if self.records is None:
            return set()
        return {(str(d), int(f)) for d, f in zip(self.records["dataset"], self.records["fold"])}

    def save(self, wall_s: float, cpu_s: float, folds: int) -> None:
        """Writes `run.json` with this sitting's time and folds so far (the caller saves the records beside it).
        CPU time counts finished processes: with several jobs, the workers' share arrives when the sitting ends."""
        self.current = {"started": self.started, "wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1), "folds": folds}
        document = {"settings": self.settings, "commit": self.commit, "sittings": self._all()}
        (self.out / RUN_FILE).write_text(json.dumps(document, indent=1) + "\n")

    def _all(self) -> list[dict[str, Any]]:
        return [*self.sittings, *([self.current] if self.current is not None else [])]

    def totals(self) -> tuple[float, float, int]:
        """Wall seconds, CPU seconds and the number of sittings, all sittings together."""
        sittings = self._all()
        return sum(s["wall_s"] for s in sittings), sum(s["cpu_s"] for s in sittings), len(sittings)


def read_records(path: Path) -> pd.DataFrame:
    """Records as `to_csv` wrote them: empty text stays empty (not NaN), an empty value is NaN."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["fold"] = frame["fold"].astype(int)
    frame["value"] = frame["value"].replace("", "nan").astype(float)
    return frame
