"""A small mixed-type table shared by the training tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["FAMILIES", "make_mixed_frame"]

FAMILIES = ("flow", "vae", "gan", "autoregressive", "diffusion")


def make_mixed_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Continuous (one with a point mass), integer, string-categorical and boolean columns with a binary string
    label."""
    rng = np.random.default_rng(seed)
    label = rng.choice(["yes", "no"], size=n, p=[0.3, 0.7])
    shift = np.where(label == "yes", 3.0, 0.0)
    extra = np.random.default_rng(seed + 1)  # its own stream: the other columns stay as they were
    discount = np.where(extra.random(n) < 0.5, 0.0, np.round(extra.lognormal(1.0, 0.5, n), 2))  # a point mass at 0
    return pd.DataFrame(
        {
            "height_cm": rng.normal(170.0 + 5 * shift, 8.0, n),
            "visits": rng.poisson(20 + 4 * shift).astype(np.int64),
            "colour": rng.choice(["red", "green", "blue"], size=n),
            "member": rng.random(n) < 0.4,
            "discount": discount,
            "outcome": label,
        }
    )
