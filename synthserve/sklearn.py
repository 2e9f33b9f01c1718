"""imbalanced-learn resamplers that add synthetic rows from synthserve's generative models.

- `SynthResampler(family="flow")` trains a model of `family` on the rows of each `fit_resample` (in-process, in
  torch: needs the `train` extra), so inside `imblearn.pipeline.Pipeline` + `cross_validate` every fold's model
  sees that fold's training rows and nothing else.
- `ServedResampler(target, model)` asks a running server's `Balance` (EXPLICIT_COUNTS) for the rows of a model
  trained beforehand (needs the `serve` extra): no training in `fit`, the same rows every time for a seed.

Both follow imbalanced-learn's over-sampler API: `fit_resample(X, y)` returns the original rows followed by the
new ones, `sampling_strategy` as imbalanced-learn's ("auto", "minority", a ratio, a dict class -> target
count, a callable), `get_params` / `set_params` / `clone`. DataFrames keep their column names and dtypes (whole
numbers stay whole, categories stay labels, dates stay dates); NumPy arrays keep their dtype. `random_state`
(an int) fixes training and sampling; None draws them fresh.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from imblearn.over_sampling.base import BaseOverSampler
from imblearn.utils import check_target_type
from sklearn.utils._param_validation import Interval, StrOptions

__all__ = ["ServedResampler", "SynthResampler"]

# The families `synthserve train --model` accepts (training.models.FAMILIES; not imported here, so the served
# resampler needs no torch). tests/test_sklearn.py checks the two agree.
FAMILIES = ("vae", "gan", "flow", "autoregressive", "diffusion")
_ARRAY_DTYPE = "synthserve_array_dtype"  # frame.attrs key: the dtype of a NumPy X, to give back an array


class _SynthOverSampler(BaseOverSampler):
    """What both resamplers share: X kept as a DataFrame (not cast to one float array), counts per class from
    `sampling_strategy_`, the original rows followed by the generated ones in X's own types."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **BaseOverSampler._parameter_constraints,
        "random_state": [Interval(Integral, 0, 2**63 - 1, closed="both"), None],
    }

    def _check_X_y(self, X: Any, y: Any, accept_sparse: Any = None) -> tuple[pd.DataFrame, np.ndarray, bool]:
        y, binarize_y = check_target_type(y, indicate_one_vs_all=True)
        if hasattr(X, "tocsr"):
            raise TypeError(f"{type(self).__name__} takes dense rows (a DataFrame or an array), not a sparse matrix")
        if isinstance(X, pd.DataFrame):
            sparse = [c for c in X.columns if isinstance(X[c].dtype, pd.SparseDtype)]
            frame = X.reset_index(drop=True)
            if sparse:  # pandas sparse columns train as their dense values; the output gets X's dtypes back
                frame = frame.astype({c: X[c].dtype.subtype for c in sparse})
            if all(isinstance(c, str) for c in X.columns):
                self.feature_names_in_ = np.asarray(X.columns, dtype=object)
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            array = np.asarray(X)
            if array.ndim != 2:
                raise ValueError(f"X must be 2-dimensional (rows x features), got shape {array.shape}")
            frame = pd.DataFrame(array, columns=[f"x{j}" for j in range(array.shape[1])])
            frame.attrs[_ARRAY_DTYPE] = array.dtype
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        y = np.asarray(y)
        if len(frame) != len(y):
            raise ValueError(f"X has {len(frame)} rows but y has {len(y)} labels")
        if frame.shape[1] == 0:
            raise ValueError("X has no feature columns")
        self.n_features_in_ = frame.shape[1]
        return frame, y, binarize_y

    def _seed(self) -> int:
        return secrets.randbits(63) if self.random_state is None else int(self.random_state)

    def _fit_resample(self, X: pd.DataFrame, y: np.ndarray) -> tuple[Any, np.ndarray]:
        counts = {key: int(n) for key, n in self.sampling_strategy_.items() if n > 0}
        if counts:
            new_rows, new_labels = self._generate(X, y, counts, self._seed())
            new_rows.columns = X.columns
            rows = pd.concat([X, new_rows.astype(X.dtypes.to_dict(), errors="ignore")], ignore_index=True)
            labels = np.concatenate([y, new_labels])
        else:
            rows, labels = X, y
        dtype = X.attrs.get(_ARRAY_DTYPE)
        return (rows.to_numpy(dtype=dtype) if dtype is not None else rows), labels

    def _generate(
        self, X: pd.DataFrame, y: np.ndarray, counts: dict[Any, int], seed: int
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """`counts[key]` new rows of each class key (a value of y): rows in X's column order, labels in y's dtype."""
        raise NotImplementedError

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = True  # gaps are modelled and reproduced (docs/training.md)
        tags.input_tags.string = False
        return tags


def _class_index(classes: tuple[Any, ...], key: Any) -> int:
    """The model's index of class `key` (a value of y), by value or else by its text."""
    value = key.item() if isinstance(key, np.generic) else key
    for index, known in enumerate(classes):
        if known == value or str(known) == str(value):
            return index
    raise ValueError(f"class {value!r} of y is not among the model's classes {list(classes)}")


class SynthResampler(_SynthOverSampler):
    """Over-samples with a model of `family` trained on the rows of each `fit_resample`.

    family: vae | gan | flow | autoregressive | diffusion. epochs: the training's maximum (None: the family's
    default, with early stopping). options: the family's config fields (as `synthserve train --option`, e.g.
    {"coupling": "spline"}). random_state: an int fixes the model and the rows.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **_SynthOverSampler._parameter_constraints,
        "family": [StrOptions(set(FAMILIES))],
        "epochs": [Interval(Integral, 1, None, closed="left"), None],
        "options": [dict, None],
    }

    def __init__(
        self,
        sampling_strategy: Any = "auto",
        *,
        family: str = "flow",
        epochs: int | None = None,
        options: dict[str, Any] | None = None,
        random_state: int | None = None,
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.family = family
        self.epochs = epochs
        self.options = options
        self.random_state = random_state

    def _generate(
        self, X: pd.DataFrame, y: np.ndarray, counts: dict[Any, int], seed: int
    ) -> tuple[pd.DataFrame, np.ndarray]:
        from training.in_process import train_table

        sampler = train_table(X, pd.Series(y), self.family, seed=seed % 2**31, epochs=self.epochs, options=self.options)
        kept = [c.name for c in sampler.schema.columns]
        missing = [str(c) for c in X.columns if str(c) not in kept]
        if missing:
            raise ValueError(
                f"column {missing[0]!r} of X was left out of the model (see the note above: an identifier or an "
                "unusable column); the resampler generates every column: drop it from X first"
            )
        keys = list(counts)
        codes = np.repeat([_class_index(sampler.classes, key) for key in keys], [counts[key] for key in keys])
        rows = sampler.sample(codes, seed)
        return rows[[str(c) for c in X.columns]], np.repeat(np.asarray(keys, dtype=y.dtype), list(counts.values()))


class ServedResampler(_SynthOverSampler):
    """Over-samples with a served model: `Balance` with EXPLICIT_COUNTS on the server at `target`.

    model: the served model's name (version: None for the latest). X's columns are the model's: by name for a
    DataFrame, in the model's column order for an array. temperature / best_of: the Balance sampling options
    (None: the server's Balance defaults). token: the bearer token, when the server requires one.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **_SynthOverSampler._parameter_constraints,
        "target": [str],
        "model": [str],
        "version": [Interval(Integral, 1, None, closed="left"), None],
        "temperature": [Interval(Real, 0, None, closed="neither"), None],
        "best_of": [Interval(Integral, 1, None, closed="left"), None],
        "token": [str, None],
        "timeout_s": [Interval(Real, 0, None, closed="neither"), None],
    }

    def __init__(
        self,
        target: str = "localhost:50051",
        model: str = "",
        *,
        sampling_strategy: Any = "auto",
        version: int | None = None,
        temperature: float | None = None,
        best_of: int | None = None,
        token: str | None = None,
        timeout_s: float | None = 60.0,
        random_state: int | None = None,
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.target = target
        self.model = model
        self.version = version
        self.temperature = temperature
        self.best_of = best_of
        self.token = token
        self.timeout_s = timeout_s
        self.random_state = random_state

    def _generate(
        self, X: pd.DataFrame, y: np.ndarray, counts: dict[Any, int], seed: int
    ) -> tuple[pd.DataFrame, np.ndarray]:
        from serving.client import SynthClient

        with SynthClient(self.target, timeout_s=self.timeout_s, token=self.token) as client:
            described = {m.name: m for m in client.models()}
            if self.model not in described:
                raise ValueError(f"model {self.model!r} is not served at {self.target} (served: {sorted(described)})")
            info = described[self.model]
            if info.label is None:
                raise ValueError(f"model {self.model!r} is unconditional: Balance needs a class-conditional model")
            names = [c.name for c in info.columns]
            X = _as_model_columns(X, names, self.model)
            label = info.label
            explicit = {str(key): n for key, n in counts.items()}
            generated = client.balance(
                pd.DataFrame({label: y}),
                label,
                self.model,
                strategy="explicit_counts",
                counts=explicit,
                seed=seed % 2**64,
                version=self.version,
                temperature=self.temperature,
                best_of=self.best_of,
            )
        by_text: Mapping[str, Any] = {str(key): key for key in counts}
        labels = np.asarray([by_text[str(v)] for v in generated[label]], dtype=y.dtype)
        return generated[list(X.columns)], labels


def _as_model_columns(X: pd.DataFrame, names: list[str], model: str) -> pd.DataFrame:
    """X with the model's column names: its own when they match, else (an array's x0, x1, ...) in model order."""
    if set(map(str, X.columns)) == set(names):
        return X
    if _ARRAY_DTYPE in X.attrs and X.shape[1] == len(names):
        return X.set_axis(names, axis=1)
    missing = sorted(set(names) - set(map(str, X.columns)))
    raise ValueError(
        f"X's columns are not model {model!r}'s: missing {missing[:5]}{' ...' if len(missing) > 5 else ''} "
        f"(an array must have the model's {len(names)} columns in its order)"
    )
