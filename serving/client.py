"""Python client: pandas DataFrames with the training data's column names, dtypes and category labels.

The wire format is columnar (one buffer per column, category codes, class indices); the client fetches each
model version's schema once (GetModel) and converts both ways (`serving.model_description`). A version's schema
never changes, so it is cached by (model, version).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import pandas as pd

from serving.client_requests import (
    sampling_attrs,
    sampling_options,
    set_condition,
    set_feature_conditions,
    table_pieces,
)
from serving.client_scores import score_frame
from serving.model_description import ColumnInfo, ModelDescription
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.strategies import STRATEGY_ENUMS
from serving.tls import ClientTls
from synthserve.contract import close_matches

# The description types are re-exported: `models()` and `describe()` return them.
__all__ = ["ColumnInfo", "ModelDescription", "SynthClient"]

# GetModel tries for the version a response came from. Behind round_robin each call goes to the next server,
# so during a rolling update a server without that version answers NOT_FOUND and a retry reaches one with it.
_DESCRIBE_ATTEMPTS = 8


class SynthClient:
    """A synchronous client for one server; safe to share between threads."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float | None = None,
        tls: grpc.ChannelCredentials | ClientTls | None = None,
        token: str | None = None,
        max_message_bytes: int = 256 * 1024 * 1024,
        request_bytes: int = 16 * 1024 * 1024,
        lb_policy: str | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """`tls`: credentials, or a `ClientTls` naming PEM files (mTLS with a client certificate).
        `lb_policy`: e.g. "round_robin" to spread calls over every address a `dns:///` target resolves to
        (a Kubernetes headless Service); `channel_options` are passed to grpc as they are, last.
        `request_bytes`: `score` and `encode` send tables in requests of about this size (the server's default
        message limit is 32 MiB); the values are those of one request (rows carry their `start_row`)."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if lb_policy is not None:
            options.append(("grpc.lb_policy_name", lb_policy))
        if isinstance(tls, ClientTls):
            options.extend(tls.channel_options())
            tls = tls.credentials()
        options.extend(channel_options)
        self._channel = (
            grpc.secure_channel(target, tls, options=options) if tls else grpc.insecure_channel(target, options=options)
        )
        self._stub = pb_grpc.SynthesizerStub(self._channel)
        self._timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._descriptions: dict[tuple[str, int], ModelDescription] = {}
        self._request_bytes = request_bytes

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SynthClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:
        return method(request, timeout=self._timeout_s, metadata=self._metadata)

    def models(self) -> list[ModelDescription]:
        response = self._call(self._stub.ListModels, pb.ListModelsRequest())
        return [ModelDescription.from_proto(info) for info in response.models]

    def describe(self, model: str, version: int | None = None) -> ModelDescription:
        key = (model, version or 0)
        if key not in self._descriptions:
            response = self._call(self._stub.GetModel, pb.GetModelRequest(model=model, version=version or 0))
            description = ModelDescription.from_proto(response.model)
            self._descriptions[key] = description
            self._descriptions.setdefault((model, description.version), description)
        return self._descriptions[key]

    def _describe_served(self, model: str, version: int) -> ModelDescription:
        """The description of the version a response was computed by, which the server that answers GetModel
        may not have loaded (a rolling update behind round_robin): NOT_FOUND is retried on the next server."""
        for _ in range(_DESCRIBE_ATTEMPTS - 1):
            try:
                return self.describe(model, version)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        return self.describe(model, version)

    def sample(
        self,
        model: str,
        n: int,
        *,
        label: Any = None,
        proportions: Mapping[Any, float] | None = None,
        seed: int | None = None,
        version: int | None = None,
        temperature: float | None = None,
        best_of: int | None = None,
        guidance: float | None = None,
        conditions: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """n rows; `frame.attrs` holds the seed, version and sampling options that reproduce them.

        `temperature` (0, 4] scales the model's normal noise; `best_of` k keeps, per row, the one of k candidates
        with the highest class margin for its class (nearest its class's training rows relative to the others');
        `guidance` w in [0, 10] is the classifier-free guidance weight of a diffusion model (1: plain conditional)
        (docs/serving.md). `conditions`: {column: value}
        (a category label or whole number) or {column: (low, high)}: only rows that meet all of them."""
        request = pb.SampleRequest(
            model=model,
            version=version or 0,
            num_rows=n,
            seed=seed,
            sampling=sampling_options(temperature, best_of, guidance),
        )
        set_condition(request, label, proportions)
        set_feature_conditions(request, conditions)
        response = self._call(self._stub.Sample, request)
        frame = self._describe_served(model, response.version).to_frame(response.rows)
        frame.attrs.update(seed=response.seed, version=response.version, **sampling_attrs(response.sampling))
        return frame

    def sample_stream(
        self,
        model: str,
        n: int,
        *,
        label: Any = None,
        proportions: Mapping[Any, float] | None = None,
        seed: int | None = None,
        version: int | None = None,
        chunk_rows: int | None = None,
        temperature: float | None = None,
        best_of: int | None = None,
        guidance: float | None = None,
        first_row: int = 0,
        stop_row: int | None = None,
        conditions: Mapping[str, Any] | None = None,
    ) -> Iterator[pd.DataFrame]:
        """The same rows as `sample`, in chunks; each frame's attrs hold seed, version, options and start_row.

        `first_row` / `stop_row`: only rows [first_row, stop_row) of the n-row request (a partition: partitions of
        one seeded request concatenate to its whole stream)."""
        request = pb.SampleStreamRequest(
            model=model,
            version=version or 0,
            num_rows=n,
            seed=seed,
            chunk_rows=chunk_rows or 0,
            sampling=sampling_options(temperature, best_of, guidance),
            first_row=first_row,
            stop_row=stop_row or 0,
        )
        set_condition(request, label, proportions)
        set_feature_conditions(request, conditions)
        for response in self._call(self._stub.SampleStream, request):
            frame = self._describe_served(model, response.version).to_frame(response.rows)
            frame.attrs.update(
                seed=response.seed,
                version=response.version,
                start_row=response.start_row,
                **sampling_attrs(response.sampling),
            )
            yield frame

    def balance(
        self,
        df: pd.DataFrame,
        label_column: str,
        model: str,
        *,
        strategy: str = "match_majority",
        ratio: float | None = None,
        counts: Mapping[Any, int] | None = None,
        seed: int | None = None,
        version: int | None = None,
        temperature: float | None = None,
        best_of: int | None = None,
        guidance: float | None = None,
        conditions: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """The synthetic rows that bring `df`'s classes to the strategy's counts, label in `label_column`
        (only rows that meet `conditions`, as in `sample`).

        `best_of` left out takes the server's balance default (`--balance-best-of`); attrs say what was used."""
        if strategy not in STRATEGY_ENUMS:
            raise ValueError(f"strategy must be one of {list(STRATEGY_ENUMS)}, got {strategy!r}")
        if label_column not in df.columns:
            raise ValueError(f"label_column {label_column!r}: no such column{close_matches(label_column, df.columns)}")
        class_counts = {str(k): int(v) for k, v in df[label_column].value_counts().items()}
        request = pb.BalanceRequest(
            model=model,
            version=version or 0,
            class_counts=class_counts,
            strategy=STRATEGY_ENUMS[strategy],
            target_ratio=ratio or 0.0,
            explicit_counts={str(k): int(v) for k, v in (counts or {}).items()},
            seed=seed,
            sampling=sampling_options(temperature, best_of, guidance),
        )
        set_feature_conditions(request, conditions)
        frames = []
        response_seed = response_version = None
        options: dict[str, Any] = {}
        for response in self._call(self._stub.Balance, request):
            frames.append(self._describe_served(model, response.version).to_frame(response.rows))
            response_seed, response_version = response.seed, response.version
            options = sampling_attrs(response.sampling)
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        described = self.describe(model) if response_version is None else self._describe_served(model, response_version)
        label = described.label
        if label is not None and label != label_column and label in frame.columns:
            frame = frame.rename(columns={label: label_column})
        frame.attrs.update(seed=response_seed, version=response_version, **options)
        return frame

    def score(
        self,
        model: str,
        df: pd.DataFrame,
        *,
        fpr: float | None = None,
        version: int | None = None,
        seed: int | None = None,
        class_log_density: bool = False,
    ) -> pd.DataFrame:
        """Per row: log_density, log_density_<class> (when asked), posterior_<class>, anomaly_score (models that
        serve one) and is_anomaly (with fpr); `serving.client_scores.score_frame` says what `attrs` holds."""
        description = self.describe(model, version)
        conditional = description.label is not None
        responses = [
            self._call(
                self._stub.ScoreDensity,
                pb.ScoreDensityRequest(
                    model=model,
                    version=version or 0,
                    rows=table,
                    include_class_log_density=class_log_density and conditional,
                    include_posteriors=conditional,
                    fpr=fpr,
                    seed=seed,
                    start_row=start,
                ),
            )
            for start, table in table_pieces(description, df, self._request_bytes, with_labels=False)
        ]

        return score_frame(responses, description.classes, df.index, fpr)

    def encode(
        self, model: str, df: pd.DataFrame, *, version: int | None = None, seed: int | None = None
    ) -> np.ndarray:
        """Latent vectors `[len(df), latent_dim]`; conditional models read the label column from `df`."""
        description = self.describe(model, version)
        latents = [
            np.frombuffer(response.latent, dtype="<f4").reshape(response.num_rows, response.latent_dim)
            for response in (
                self._call(
                    self._stub.Encode,
                    pb.EncodeRequest(model=model, version=version or 0, rows=table, seed=seed, start_row=start),
                )
                for start, table in table_pieces(description, df, self._request_bytes, with_labels=True)
            )
        ]
        return latents[0] if len(latents) == 1 else np.concatenate(latents)
