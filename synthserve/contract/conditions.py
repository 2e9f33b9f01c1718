"""Conditions on feature values: which rows a conditioned request keeps, drawn from which candidates.

A request may carry conditions (all must hold) besides its class: equality on a categorical column (a category
label, compared as text like every label, `synthserve.contract.levels`) or an integer column (a whole number),
and closed ranges [low, high] on integer and continuous columns, and on categorical columns whose labels are
numbers (a small whole-number column that training kept as categories: the labels within the range). They are
tested on the served values (`finish_rows`: clipped and rounded), so a row meets `age == 30` exactly when the
caller receives 30.

Rows stay a function of (model version, seed, request): the rows of class c are the first n_c candidates, in
candidate order, that meet every condition, where candidate i of class c is row i of the plain request of class
c under the seed `condition_seed(seed, c)`. How the candidates are computed (blocks, batches) changes nothing.
The work is bounded: a request may draw at most a budget of candidates; past it the request fails, naming the
condition that keeps the fewest candidates.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthserve.contract.errors import RequestError, UnsupportedRequest
from synthserve.contract.labels import LabelRuns
from synthserve.contract.levels import label_key
from synthserve.contract.manifest import Column, GraphSpec, Manifest, Schema
from synthserve.contract.quoting import close_matches, shown
from synthserve.contract.sampling import RunGraph, SamplingOptions, sample_rows
from synthserve.contract.values import finish_rows

__all__ = [
    "CONDITION_SPAWN_KEY",
    "MAX_CONDITIONS",
    "CandidateSearch",
    "ConditionedRows",
    "FeatureCondition",
    "RareCondition",
    "condition_seed",
    "resolve_conditions",
    "sample_conditioned_rows",
    "shorthand_conditions",
]

MAX_CONDITIONS = 32
MIN_BLOCK = 64  # candidates computed at least at a time
# The SeedSequence spawn key of a class's candidates, apart from the noise streams' keys (small integers).
CONDITION_SPAWN_KEY = 2**32 - 1


class RareCondition(UnsupportedRequest):
    """The candidate budget ran out before enough rows met the conditions (FAILED_PRECONDITION)."""


@dataclass(frozen=True)
class FeatureCondition:
    """One test on column `index` (schema order): the value is one of `allowed` (category codes or a whole
    number), or low <= value <= high. `text` describes it for messages."""

    index: int
    text: str
    allowed: tuple[float, ...] | None = None
    low: float = -math.inf
    high: float = math.inf

    def mask(self, values: np.ndarray) -> np.ndarray:
        """Served values of the column (codes or numbers, NaN / -1 for gaps) -> which meet the test."""
        values = np.asarray(values, dtype=np.float64)
        if self.allowed is not None:
            return np.isin(values, self.allowed)
        return (values >= self.low) & (values <= self.high)  # a gap (NaN) meets no range


def condition_seed(seed: int, class_index: int) -> int:
    """The seed of class `class_index`'s candidates under a conditioned request's `seed`."""
    sequence = np.random.SeedSequence(seed, spawn_key=(CONDITION_SPAWN_KEY, class_index))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise RequestError(f"{where}: expected a number, got {shown(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise RequestError(f"{where}: expected a finite number, got {number}")
    return number


def _equality(column: Column, value: Any, where: str) -> tuple[float, str]:
    if column.kind == "categorical":
        assert column.categories is not None
        keys = [label_key(c) for c in column.categories]
        key = label_key(value)
        if key not in keys:
            known = [str(c) for c in column.categories]
            hint = close_matches(key, known) or f" (categories: {known[:10]}{' ...' if len(known) > 10 else ''})"
            raise RequestError(f"{where}: {shown(value)} is not a category of {column.name!r}{hint}")
        return float(keys.index(key)), f"{column.name} == {key}"
    if column.kind == "integer":
        if isinstance(value, str):  # "3" from a command line or a form: the number it spells
            try:
                value = float(value)
            except ValueError:
                raise RequestError(f"{where}: expected a whole number, got {shown(value)}") from None
        number = _number(value, where)
        if not number.is_integer():
            raise RequestError(f"{where}: {column.name!r} holds whole numbers, got {number}")
        return number, f"{column.name} == {int(number)}"
    raise RequestError(
        f"{where}: equality applies to categorical and integer columns; {column.name!r} is {column.kind}: give a range"
    )


def _range(column: Column, low: Any, high: Any, where: str) -> tuple[float, float, str]:
    low_value, high_value = _number(low, f"{where}.low"), _number(high, f"{where}.high")
    if low_value > high_value:
        raise RequestError(f"{where}: low {low_value:g} is above high {high_value:g}")
    return low_value, high_value, f"{low_value:g} <= {column.name} <= {high_value:g}"


def _category_range(column: Column, index: int, low: float, high: float, text: str, where: str) -> FeatureCondition:
    """A range on a categorical column whose labels are numbers (a small whole-number column kept as categories):
    the codes of the labels within it."""
    assert column.categories is not None
    numbers = []
    for label in column.categories:
        try:
            numbers.append(float(label))
        except (TypeError, ValueError):
            numbers.append(math.nan)
    if all(math.isnan(n) for n in numbers):
        raise RequestError(f"{where}: {column.name!r} is categorical with labels that are not numbers: give a category")
    codes = tuple(float(code) for code, n in enumerate(numbers) if low <= n <= high)
    return FeatureCondition(index, text, allowed=codes)


def shorthand_conditions(raw: Any, field: str = "conditions") -> tuple[dict[str, Any], ...]:
    """{column: value} (equality) or {column: [low, high]} (a closed range), as the Python client and the
    TorchServe handler take them -> the mappings `resolve_conditions` checks; RequestError naming the column."""
    if not isinstance(raw, Mapping):
        raise RequestError(f"{field}: must be an object mapping column names to a value or [low, high], got {raw!r}")
    conditions: list[dict[str, Any]] = []
    for column, test in raw.items():
        if isinstance(test, list | tuple):
            if len(test) != 2:
                raise RequestError(f"{field}[{column!r}]: a range is [low, high], got {test!r}")
            conditions.append({"column": column, "low": test[0], "high": test[1]})
        elif isinstance(test, Mapping) or test is None:
            raise RequestError(f"{field}[{column!r}]: must be a value or [low, high], got {test!r}")
        else:
            conditions.append({"column": column, "equals": test})
    return tuple(conditions)


def resolve_conditions(
    manifest: Manifest, conditions: Sequence[Mapping[str, Any]], field: str = "conditions"
) -> tuple[FeatureCondition, ...]:
    """Callers' conditions, each {"column": name, "equals": value} or {"column": name, "low": a, "high": b},
    checked against the model's schema; RequestError naming `field[i]` and what is wrong."""
    if len(conditions) > MAX_CONDITIONS:
        raise RequestError(f"{field}: {len(conditions)} conditions, at most {MAX_CONDITIONS}")
    schema = manifest.schema
    if schema.image_shape is not None and conditions:
        raise UnsupportedRequest(f"{field}: model {manifest.name!r} generates images; pixels take no conditions")
    names = [c.name for c in schema.columns]
    resolved = []
    for i, condition in enumerate(conditions):
        where = f"{field}[{i}]"
        name = condition.get("column")
        if name not in names:
            raise RequestError(
                f"{where}.column: no column {shown(name)} in model {manifest.name!r}{close_matches(str(name), names)}"
            )
        index = names.index(name)
        column = schema.columns[index]
        if column.datetime_unit is not None:
            raise RequestError(f"{where}: {name!r} is a datetime column; conditions on dates are not supported")
        if "equals" in condition:
            equals, text = _equality(column, condition["equals"], f"{where}.equals")
            resolved.append(FeatureCondition(index, text, allowed=(equals,)))
        elif "low" in condition or "high" in condition:
            low, high, text = _range(column, condition.get("low"), condition.get("high"), f"{where}.range")
            if column.kind == "categorical":
                resolved.append(_category_range(column, index, low, high, text, f"{where}.range"))
            else:
                resolved.append(FeatureCondition(index, text, low=low, high=high))
        else:
            raise RequestError(f"{where}: give equals or range")
    return tuple(resolved)


@dataclass
class CandidateSearch:
    """The rows of one class that meet the conditions: candidates are added in candidate order, block by block,
    until `needed` rows are found; past `budget` candidates, RareCondition naming the condition to widen.

    `next_block` sizes blocks from the acceptance seen so far (at least MIN_BLOCK, at most `max_block`), which
    changes the work done, never the rows."""

    schema: Schema
    conditions: tuple[FeatureCondition, ...]
    needed: int
    budget: int
    max_block: int
    what: str  # "of class 'yes'", for messages
    drawn: int = 0
    found: int = 0

    def __post_init__(self) -> None:
        self._passes = np.zeros(len(self.conditions), dtype=np.int64)
        self._parts: list[np.ndarray] = []

    @property
    def done(self) -> bool:
        return self.found >= self.needed

    def next_block(self) -> int:
        """Candidates to compute next; RareCondition when the budget is spent first."""
        left = self.budget - self.drawn
        if left <= 0:
            raise self._rare()
        missing = self.needed - self.found
        rate = max(self.found, 1) / self.drawn if self.drawn else 0.5
        return int(min(left, self.max_block, max(MIN_BLOCK, math.ceil(1.25 * missing / rate))))

    def add(self, rows: np.ndarray) -> None:
        """The next candidates' graph rows (float32 [n, D]), tested on their served values (`finish_rows`)."""
        columns = finish_rows(self.schema, rows)
        keep = np.ones(len(rows), dtype=bool)
        for j, condition in enumerate(self.conditions):
            passes = condition.mask(columns[condition.index])
            self._passes[j] += int(passes.sum())
            keep &= passes
        chosen = rows[keep][: self.needed - self.found]
        self._parts.append(chosen)
        self.found += len(chosen)
        self.drawn += len(rows)

    def rows(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.empty((0, 0), np.float32)

    def _rare(self) -> RareCondition:
        share, text = min((p / max(self.drawn, 1), c.text) for p, c in zip(self._passes, self.conditions))
        return RareCondition(
            f"conditions: {self.found} of {self.drawn} candidate rows {self.what} met them, {self.needed} needed, "
            f"within the budget of {self.budget} candidates (max_condition_candidates); the rarest, {text}, "
            f"alone keeps {share:.2%} of the candidates: widen it or ask for fewer rows"
        )


class ConditionedRows:
    """A conditioned request's searches, one per class in order, sharing one candidate budget; the caller computes
    each search's candidate blocks (the gRPC server over its batchers, `sample_conditioned_rows` in one pass):

        for class_index, seed, search in request.searches():
            while not search.done:
                size = search.next_block()
                search.add(<rows [search.drawn, search.drawn + size) of class_index's plain request under seed>)
        rows, labels = request.result()
    """

    def __init__(
        self,
        schema: Schema,
        seed: int,
        runs: LabelRuns | None,
        n_rows: int,
        conditions: tuple[FeatureCondition, ...],
        budget: int,
        max_block: int,
    ) -> None:
        self._schema, self._seed, self._conditions = schema, seed, conditions
        self._budget, self._max_block = budget, max_block
        self._classes: list[tuple[int | None, int]] = (
            [(None, n_rows)] if runs is None else [(c, n) for c, n in zip(runs.classes, runs.counts) if n > 0]
        )
        self._rows: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def searches(self) -> Iterator[tuple[int | None, int, CandidateSearch]]:
        """(class index or None, the class's candidate seed, its search), each run to completion before the next."""
        spent = 0
        for class_index, needed in self._classes:
            label = self._schema.label
            what = "drawn" if class_index is None or label is None else f"of class {str(label.classes[class_index])!r}"
            search = CandidateSearch(
                self._schema, self._conditions, needed, self._budget - spent, self._max_block, what
            )
            yield class_index, condition_seed(self._seed, 0 if class_index is None else class_index), search
            spent += search.drawn
            self._rows.append(search.rows())
            if class_index is not None:
                self._labels.append(np.full(needed, class_index, dtype=np.int64))

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows (float32 graph rows, class by class) and class indices (None for an unconditional model)."""
        return np.concatenate(self._rows), (np.concatenate(self._labels) if self._labels else None)


def sample_conditioned_rows(
    graphs: Mapping[str, GraphSpec],
    run: RunGraph,
    schema: Schema,
    seed: int,
    runs: LabelRuns | None,
    n_rows: int,
    conditions: tuple[FeatureCondition, ...],
    options: SamplingOptions,
    budget: int,
    max_block: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A conditioned request's rows and class indices, computed in one process (the TorchServe handler; the gRPC
    server runs the same searches over its batchers)."""
    request = ConditionedRows(schema, seed, runs, n_rows, conditions, budget, max_block)
    for class_index, class_seed, search in request.searches():
        while not search.done:
            size = search.next_block()
            labels = None if class_index is None else np.full(size, class_index, dtype=np.int64)
            search.add(sample_rows(graphs, run, class_seed, labels, size, options, start_row=search.drawn))
    return request.result()
