"""Hypothesis strategies for malformed and extreme Synthesizer requests, each with the field it breaks.

Every strategy yields a `Case`: one request in which (at most) one field is broken, the word the error must
name (`field`), and whether the request may legitimately succeed (`may_succeed`, e.g. an absurd but valid
seed). Bulk bytes (row buffers) come from numpy under a drawn seed, so Hypothesis draws only small choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from serving.proto import synthesizer_pb2 as pb
from tests.serving.fixture_store import CATEGORIES, CLASSES

__all__ = ["LIMITS", "Case", "cases"]

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class Limits:
    max_rows_per_request: int = 4096
    max_rows_per_stream: int = 16_384
    max_message_bytes: int = 48 * 1024


LIMITS = Limits()


@dataclass(frozen=True)
class Case:
    method: str  # Synthesizer RPC name
    request: Any
    field: str  # a word the error message must contain
    may_succeed: bool = False
    oversized: bool = False  # beyond max_message_bytes: gRPC itself refuses it (RESOURCE_EXHAUSTED)


_extreme_ints = st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, *INT64])
_small_rows = st.integers(1, 64)
_seeds = st.one_of(st.none(), st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**63, 2**64 - 1]))
_nasty_floats = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 1e308, -1e308, 5e-324, -1.0]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_unknown_names = st.one_of(
    st.sampled_from(["", "broken", "future", "GAUSS", "gauss ", "../gauss", "gauss/1", "\x00", "ünïcødé"]),
    st.text(max_size=40),
)
_labels = st.one_of(
    st.sampled_from(CLASSES), st.sampled_from(["", "NEG", "0", "1", "none", "pos\x00"]), st.text(max_size=12)
)


def _sample_base(method: str, num_rows: int, seed: int | None) -> Any:
    request_type = pb.SampleRequest if method == "Sample" else pb.SampleStreamRequest
    return request_type(model="gauss", version=1, num_rows=num_rows, seed=seed)


@st.composite
def _sample_case(draw: st.DrawFn, method: str) -> Case:
    limit = LIMITS.max_rows_per_request if method == "Sample" else LIMITS.max_rows_per_stream
    request = _sample_base(method, draw(_small_rows), draw(_seeds))
    defect = draw(
        st.sampled_from(
            ["model", "version", "num_rows", "label", "proportions", "seed", "chunk_rows", "sampling", "oversized"]
        )
    )
    if defect == "model":
        request.model = draw(_unknown_names)
        return Case(method, request, "model")
    if defect == "version":
        request.version = draw(
            st.one_of(st.integers(*INT32), st.sampled_from([-1, 3, *INT32])).filter(lambda v: v not in (0, 1, 2))
        )
        return Case(method, request, "version")
    if defect == "num_rows":
        request.num_rows = draw(st.one_of(_extreme_ints, st.integers(*INT64), st.sampled_from([limit, limit + 1])))
        return Case(method, request, "num_rows", may_succeed=1 <= request.num_rows <= limit)
    if defect == "label":
        request.label = draw(_labels)
        return Case(method, request, "label", may_succeed=request.label in CLASSES)
    if defect == "proportions":
        keys = st.one_of(st.sampled_from(CLASSES), _labels)
        weights = draw(st.dictionaries(keys, st.one_of(_nasty_floats, st.floats(0, 10)), max_size=4))
        request.proportions.weights.update(weights)
        request.proportions.SetInParent()
        return Case(method, request, "proportions", may_succeed=True)
    if defect == "seed":
        request.seed = draw(st.sampled_from([0, 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]))
        return Case(method, request, "seed", may_succeed=True)
    if defect == "sampling":
        temperature = draw(st.one_of(st.none(), _nasty_floats, st.floats(0, 5)))
        best_of = draw(st.one_of(st.none(), st.sampled_from([0, 1, 2, 64, 65, 2**31, 2**32 - 1]), st.integers(0, 100)))
        if temperature is not None:
            request.sampling.temperature = temperature
        if best_of is not None:
            request.sampling.best_of = best_of
        request.sampling.SetInParent()
        valid = (temperature is None or 0 < temperature <= 4) and (best_of is None or 1 <= best_of <= 64)
        return Case(method, request, "sampling", may_succeed=valid)
    if defect == "chunk_rows" and method == "SampleStream":
        request.chunk_rows = draw(st.one_of(_extreme_ints, st.integers(*INT64)))
        return Case(method, request, "chunk_rows", may_succeed=request.chunk_rows >= 0)
    # oversized (and chunk_rows for the unary Sample, which has none): a label of more than max_message_bytes
    request.label = "x" * draw(st.integers(LIMITS.max_message_bytes + 1, 2 * LIMITS.max_message_bytes))
    return Case(method, request, "larger than max", oversized=True)


@st.composite
def _balance_case(draw: st.DrawFn) -> Case:
    request = pb.BalanceRequest(
        model="gauss",
        version=1,
        strategy=pb.BALANCE_STRATEGY_MATCH_MAJORITY,
        seed=draw(_seeds),
        chunk_rows=16,
        target_ratio=0.5,  # valid, so a drawn TARGET_RATIO strategy is a valid request
    )
    request.class_counts.update({"neg": draw(st.integers(0, 40)), "pos": draw(st.integers(0, 40))})
    defect = draw(st.sampled_from(["model", "strategy", "target_ratio", "class_counts", "explicit_counts"]))
    counts = st.one_of(_extreme_ints, st.integers(*INT64), st.integers(0, 50))
    if defect == "model":
        request.model = draw(st.one_of(_unknown_names, st.just("gauss-gan")))
        return Case("Balance", request, "model", may_succeed=request.model == "gauss-gan")
    if defect == "strategy":
        # Out-of-range numbers are legal on the wire: proto3 enums are open.
        request.strategy = draw(st.one_of(st.sampled_from([0, 4, -1, 99]), st.integers(*INT32)))  # type: ignore[assignment]
        return Case("Balance", request, "strategy", may_succeed=request.strategy in (1, 2, 3))
    if defect == "target_ratio":
        request.strategy = pb.BALANCE_STRATEGY_TARGET_RATIO
        request.target_ratio = draw(st.one_of(_nasty_floats, st.floats(0, 2)))
        return Case("Balance", request, "target_ratio", may_succeed=True)
    if defect == "class_counts":
        request.class_counts.clear()
        request.class_counts.update(
            draw(st.dictionaries(st.one_of(st.sampled_from(CLASSES), _labels), counts, max_size=4))
        )
        # Huge caller counts are legitimate; the rows they would need are refused by the stream limit.
        return Case("Balance", request, "class_counts|max_rows_per_stream", may_succeed=True)
    request.strategy = pb.BALANCE_STRATEGY_EXPLICIT_COUNTS
    request.explicit_counts.update(
        draw(st.dictionaries(st.one_of(st.sampled_from(CLASSES), _labels), counts, max_size=4))
    )
    return Case("Balance", request, "explicit_counts|max_rows_per_stream", may_succeed=True)


_WIRE: dict[int, str] = {
    pb.VALUE_TYPE_FLOAT32: "<f4",
    pb.VALUE_TYPE_FLOAT64: "<f8",
    pb.VALUE_TYPE_INT32: "<i4",
    pb.VALUE_TYPE_INT64: "<i8",
}


def _table(n_rows: int, data_seed: int, value_type: int, labelled: bool) -> pb.Table:
    generator = np.random.default_rng(data_seed)
    table = pb.Table(num_rows=n_rows)
    for name in ("x0", "x1"):
        values = generator.normal(size=n_rows) * 3
        table.columns.add(name=name, value_type=value_type, values=values.astype(_WIRE[value_type]).tobytes())
    codes = generator.integers(0, len(CATEGORIES), size=n_rows)
    table.columns.add(name="cat", value_type=value_type, values=codes.astype(_WIRE[value_type]).tobytes())
    if labelled:
        table.labels = generator.integers(0, len(CLASSES), size=n_rows).astype("<i4").tobytes()
    return table


@st.composite
def _rows_case(draw: st.DrawFn, method: str) -> Case:
    value_type = draw(st.sampled_from(list(_WIRE)))
    n_rows = draw(_small_rows)
    table = _table(n_rows, draw(st.integers(0, 2**32)), value_type, labelled=method == "Encode")
    if method == "ScoreDensity":
        request: Any = pb.ScoreDensityRequest(model="gauss", version=1, rows=table, include_posteriors=True)
    else:
        request = pb.EncodeRequest(model="gauss", version=1, rows=table)
    defects = ["model", "version", "num_rows", "missing", "duplicate", "unknown", "value_type", "values", "nan"]
    defects += ["category", "labels", "oversized"] + (["fpr"] if method == "ScoreDensity" else [])
    defect = draw(st.sampled_from(defects))
    rows = request.rows
    column = draw(st.integers(0, 2))
    if defect == "model":
        request.model = draw(st.one_of(_unknown_names, st.just("gauss-gan")))
        field = "log_prob" if method == "ScoreDensity" else "encode"
        return Case(method, request, "model" if request.model != "gauss-gan" else field)
    if defect == "version":
        request.version = draw(st.integers(*INT32).filter(lambda v: v not in (0, 1, 2)))
        return Case(method, request, "version")
    if defect == "num_rows":
        rows.num_rows = draw(st.one_of(_extreme_ints, st.integers(*INT64), st.integers(0, 2 * n_rows)))
        return Case(method, request, "num_rows|values|labels", may_succeed=rows.num_rows == n_rows)
    if defect == "missing":
        del rows.columns[column]
        return Case(method, request, "missing column")
    if defect == "duplicate":
        rows.columns.add().CopyFrom(rows.columns[column])
        return Case(method, request, "appears twice")
    if defect == "unknown":
        name = draw(st.text(max_size=10).filter(lambda t: t not in ("x0", "x1", "cat")))
        rows.columns.add(name=name, value_type=value_type, values=rows.columns[0].values)
        return Case(method, request, "unknown column")
    if defect == "value_type":
        rows.columns[column].value_type = draw(st.sampled_from([0, 5, 99, -3, 2**31 - 1]))
        return Case(method, request, "value_type")
    if defect == "values":
        cut = draw(st.integers(1, 16))
        values = rows.columns[column].values
        rows.columns[column].values = values[:-cut] if draw(st.booleans()) else values + b"\x01" * cut
        return Case(method, request, "values")
    if defect == "nan":
        target = rows.columns[draw(st.integers(0, 1))]
        target.value_type = pb.VALUE_TYPE_FLOAT64
        values = np.random.default_rng(n_rows).normal(size=n_rows)
        # NaN is a missing value (accepted); these are not.
        values[draw(st.integers(0, n_rows - 1))] = draw(st.sampled_from([float("inf"), -float("inf"), 1e300, -1e39]))
        target.values = values.astype("<f8").tobytes()
        return Case(method, request, "infinite or beyond float32's range")
    if defect == "category":
        codes = np.zeros(n_rows)
        # -1 is a missing category (accepted); these are not codes.
        codes[draw(st.integers(0, n_rows - 1))] = draw(st.sampled_from([-2.0, 3.0, 0.5, 2.999, 1e300, -1e300]))
        rows.columns[2].value_type = pb.VALUE_TYPE_FLOAT64
        rows.columns[2].values = codes.astype("<f8").tobytes()
        return Case(method, request, "category code")
    if defect == "labels":
        choice = draw(st.sampled_from(["short", "long", "range", "drop"]))
        labels = np.frombuffer(rows.labels, "<i4").copy() if rows.labels else np.zeros(n_rows, "<i4")
        if choice == "range":
            labels[0] = draw(st.sampled_from([-1, 2, 2**31 - 1, -(2**31)]))
        data = labels.tobytes()
        rows.labels = {"short": data[:-1], "long": data + b"\x00", "range": data, "drop": b""}[choice]
        # ScoreDensity scores p(x) over every class and ignores labels; Encode of the conditional gauss needs them.
        return Case(method, request, "labels", may_succeed=method == "ScoreDensity")
    if defect == "fpr":
        request.fpr = draw(st.one_of(_nasty_floats, st.floats(0, 1)))
        return Case(method, request, "fpr", may_succeed=True)
    big = draw(st.integers(LIMITS.max_message_bytes // 8 + 1, LIMITS.max_message_bytes // 4))
    request.rows.CopyFrom(_table(big, 0, pb.VALUE_TYPE_FLOAT64, labelled=method == "Encode"))
    return Case(method, request, "larger than max", oversized=True)


@st.composite
def _get_model_case(draw: st.DrawFn) -> Case:
    if draw(st.booleans()):
        return Case("GetModel", pb.GetModelRequest(model=draw(_unknown_names)), "model")
    version = draw(st.integers(*INT32))
    request = pb.GetModelRequest(model="gauss", version=version)
    return Case("GetModel", request, "version", may_succeed=version in (0, 1, 2))


def cases() -> st.SearchStrategy[Case]:
    """One malformed or extreme request for any RPC (ListModels takes no fields and is sent as it is)."""
    return st.one_of(
        _sample_case("Sample"),
        _sample_case("SampleStream"),
        _balance_case(),
        _rows_case("ScoreDensity"),
        _rows_case("Encode"),
        _get_model_case(),
        st.just(Case("ListModels", pb.ListModelsRequest(), "", may_succeed=True)),
    )
