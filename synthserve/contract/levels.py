"""Category and class labels -> their codes, the one rule every reader of callers' labels uses.

Labels compare as text, so 1, 1.0 (what a CSV gives an integer column with gaps) and "1" (what JSON callers often
send) are one label. A value that is not a level counts as OTHER_LABEL when the column has that level (training
gathers a many-level column's rare values into it); otherwise it is refused, naming the field and the nearest
labels. The training data reader, the Python client (`synthserve.contract.frames`) and the TorchServe handler
all call `level_codes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from synthserve.contract.quoting import close_matches

__all__ = ["OTHER_LABEL", "label_key", "level_codes"]

OTHER_LABEL = "(other)"


def label_key(value: Any) -> str:
    """The text a label compares by."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def level_codes(
    values: Sequence[Any], labels: Sequence[Any], where: str, missing: Sequence[bool] | None = None
) -> np.ndarray:
    """Codes (float64, index into `labels`) of `values`; NaN where `missing`. ValueError starting with `where`."""
    lookup = {label_key(label): float(index) for index, label in enumerate(labels)}
    gaps = [False] * len(values) if missing is None else list(missing)
    keys = [None if gap else label_key(v) for v, gap in zip(values, gaps)]
    unknown = sorted({k for k in keys if k is not None and k not in lookup})
    if unknown and OTHER_LABEL in lookup:
        keys = [OTHER_LABEL if k is not None and k not in lookup else k for k in keys]
        unknown = []
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        known = [str(label) for label in labels]
        hint = f" (known: {known[:10]}{' ...' if len(known) > 10 else ''})"
        raise ValueError(f"{where}: unknown value(s) {shown}{more}{close_matches(unknown[0], known) or hint}")
    return np.fromiter((np.nan if k is None else lookup[k] for k in keys), dtype=np.float64, count=len(keys))
