"""Request -> response for one model, apart from TorchServe so it can be driven and tested on its own."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from synthserve.contract import LOG_DENSITY, anomaly_threshold
from torchserve_handler.codec import (
    ScoreRequest,
    array_from_rows,
    columns_from_rows,
    npy_bytes,
    parse_request,
    rows_from_columns,
)
from torchserve_handler.model import ExportedModel

__all__ = ["HandlerConfig", "Response", "SynthService"]


@dataclass(frozen=True)
class HandlerConfig:
    """The `handler:` section of the archive's model-config.yaml."""

    # JSON rows take about 20 bytes a value: 10,000 rows of the 30-column breast-cancer flow are 6.2 MB, just
    # within TorchServe's default max_response_size (6.5 MB). Wider models or more rows need a larger one.
    max_rows_per_request: int = 10_000
    intra_op_threads: int = 1
    # Candidate rows one request with feature conditions may draw, as the gRPC server's max_condition_candidates.
    max_condition_candidates: int = 1_000_000

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> HandlerConfig:
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ValueError(f"handler config: unknown key(s) {unknown}; known: {names}")
        config = cls(**raw)
        for name in names:
            value = getattr(config, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"handler config: {name} must be a positive integer, got {value!r}")
        return config


@dataclass(frozen=True)
class Response:
    """A finished HTTP answer, whatever the encoding: body, content type and extra headers."""

    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json_body(cls, payload: Mapping[str, Any]) -> Response:
        return cls(json.dumps(payload).encode(), "application/json")


class SynthService:
    """Samples and scores with the gRPC server's seed semantics."""

    def __init__(self, model: ExportedModel, config: HandlerConfig) -> None:
        self.model = model
        self.config = config

    def respond(self, body: Mapping[str, Any]) -> Response:
        request = parse_request(body, self.config.max_rows_per_request)
        if isinstance(request, ScoreRequest):
            return Response.json_body(self.score(request))
        seed = secrets.randbits(64) if request.seed is None else request.seed
        if request.conditions:
            rows, labels = self.model.sample_conditioned(
                request.n_rows,
                seed,
                request.label,
                request.proportions,
                request.conditions,
                request.sampling,
                self.config.max_condition_candidates,
            )
        else:
            labels = self.model.plan_labels(request.n_rows, request.label, request.proportions)
            rows = self.model.sample(request.n_rows, seed, labels, request.sampling)
        schema = self.model.manifest.schema
        if request.encoding == "npy":
            # Headers carry what the JSON body would: the seed that reproduces the rows, and the version.
            headers = {"X-Synthserve-Seed": str(seed), "X-Synthserve-Version": str(self.model.version)}
            return Response(npy_bytes(array_from_rows(schema, rows, labels)), "application/x-npy", headers)
        return Response.json_body(
            {
                "model": self.model.name,
                "version": self.model.version,
                "seed": seed,
                "num_rows": request.n_rows,
                "rows": columns_from_rows(schema, rows, labels),
            }
        )

    def score(self, request: ScoreRequest) -> dict[str, Any]:
        manifest = self.model.manifest
        threshold = None if request.fpr is None else anomaly_threshold(manifest, request.fpr)
        rows = rows_from_columns(manifest.schema, request.columns, self.config.max_rows_per_request)
        scores = self.model.score(rows, request.seed)
        response: dict[str, Any] = {
            "model": self.model.name,
            "version": self.model.version,
            "num_rows": len(rows),
            "log_density": scores.log_density.astype(float).tolist(),
        }
        label = manifest.schema.label
        if label is not None:
            response["posterior"] = {
                str(c): scores.posteriors[:, i].astype(float).tolist() for i, c in enumerate(label.classes)
            }
        if scores.anomaly_score is not None:
            response["anomaly_score"] = scores.anomaly_score.astype(float).tolist()
        if threshold is not None:
            response["threshold"] = threshold.value
            response["threshold_score"] = "log_density" if threshold.score == LOG_DENSITY else threshold.score
            response["is_anomaly"] = scores.is_anomaly(threshold).tolist()
        return response
