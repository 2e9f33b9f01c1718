from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValueType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_TYPE_UNSPECIFIED: _ClassVar[ValueType]
    VALUE_TYPE_FLOAT32: _ClassVar[ValueType]
    VALUE_TYPE_FLOAT64: _ClassVar[ValueType]
    VALUE_TYPE_INT32: _ClassVar[ValueType]
    VALUE_TYPE_INT64: _ClassVar[ValueType]

class ColumnKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLUMN_KIND_UNSPECIFIED: _ClassVar[ColumnKind]
    COLUMN_KIND_CONTINUOUS: _ClassVar[ColumnKind]
    COLUMN_KIND_INTEGER: _ClassVar[ColumnKind]
    COLUMN_KIND_CATEGORICAL: _ClassVar[ColumnKind]

class BalanceStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BALANCE_STRATEGY_UNSPECIFIED: _ClassVar[BalanceStrategy]
    BALANCE_STRATEGY_MATCH_MAJORITY: _ClassVar[BalanceStrategy]
    BALANCE_STRATEGY_TARGET_RATIO: _ClassVar[BalanceStrategy]
    BALANCE_STRATEGY_EXPLICIT_COUNTS: _ClassVar[BalanceStrategy]

class AnomalyScoreKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANOMALY_SCORE_KIND_UNSPECIFIED: _ClassVar[AnomalyScoreKind]
    ANOMALY_SCORE_KIND_LOG_DENSITY: _ClassVar[AnomalyScoreKind]
    ANOMALY_SCORE_KIND_ANOMALY_SCORE: _ClassVar[AnomalyScoreKind]
VALUE_TYPE_UNSPECIFIED: ValueType
VALUE_TYPE_FLOAT32: ValueType
VALUE_TYPE_FLOAT64: ValueType
VALUE_TYPE_INT32: ValueType
VALUE_TYPE_INT64: ValueType
COLUMN_KIND_UNSPECIFIED: ColumnKind
COLUMN_KIND_CONTINUOUS: ColumnKind
COLUMN_KIND_INTEGER: ColumnKind
COLUMN_KIND_CATEGORICAL: ColumnKind
BALANCE_STRATEGY_UNSPECIFIED: BalanceStrategy
BALANCE_STRATEGY_MATCH_MAJORITY: BalanceStrategy
BALANCE_STRATEGY_TARGET_RATIO: BalanceStrategy
BALANCE_STRATEGY_EXPLICIT_COUNTS: BalanceStrategy
ANOMALY_SCORE_KIND_UNSPECIFIED: AnomalyScoreKind
ANOMALY_SCORE_KIND_LOG_DENSITY: AnomalyScoreKind
ANOMALY_SCORE_KIND_ANOMALY_SCORE: AnomalyScoreKind

class Column(_message.Message):
    __slots__ = ("name", "value_type", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_type: ValueType
    values: bytes
    def __init__(self, name: _Optional[str] = ..., value_type: _Optional[_Union[ValueType, str]] = ..., values: _Optional[bytes] = ...) -> None: ...

class Table(_message.Message):
    __slots__ = ("num_rows", "columns", "labels")
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    num_rows: int
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    labels: bytes
    def __init__(self, num_rows: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., labels: _Optional[bytes] = ...) -> None: ...

class ColumnSpec(_message.Message):
    __slots__ = ("name", "kind", "dtype", "categories", "min", "max", "decimals", "missing_rate", "datetime_unit", "datetime_origin", "datetime_format", "step")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    DECIMALS_FIELD_NUMBER: _ClassVar[int]
    MISSING_RATE_FIELD_NUMBER: _ClassVar[int]
    DATETIME_UNIT_FIELD_NUMBER: _ClassVar[int]
    DATETIME_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    DATETIME_FORMAT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ColumnKind
    dtype: str
    categories: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    min: float
    max: float
    decimals: int
    missing_rate: float
    datetime_unit: str
    datetime_origin: str
    datetime_format: str
    step: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ColumnKind, str]] = ..., dtype: _Optional[str] = ..., categories: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., decimals: _Optional[int] = ..., missing_rate: _Optional[float] = ..., datetime_unit: _Optional[str] = ..., datetime_origin: _Optional[str] = ..., datetime_format: _Optional[str] = ..., step: _Optional[int] = ...) -> None: ...

class LabelSpec(_message.Message):
    __slots__ = ("name", "dtype", "classes", "priors")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    PRIORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    classes: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    priors: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., priors: _Optional[_Iterable[float]] = ...) -> None: ...

class Schema(_message.Message):
    __slots__ = ("columns", "label", "image_shape")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[ColumnSpec]
    label: LabelSpec
    image_shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, columns: _Optional[_Iterable[_Union[ColumnSpec, _Mapping]]] = ..., label: _Optional[_Union[LabelSpec, _Mapping]] = ..., image_shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Calibration(_message.Message):
    __slots__ = ("fpr", "log_prob_quantiles", "num_heldout", "anomaly_score_quantiles")
    FPR_FIELD_NUMBER: _ClassVar[int]
    LOG_PROB_QUANTILES_FIELD_NUMBER: _ClassVar[int]
    NUM_HELDOUT_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_SCORE_QUANTILES_FIELD_NUMBER: _ClassVar[int]
    fpr: _containers.RepeatedScalarFieldContainer[float]
    log_prob_quantiles: _containers.RepeatedScalarFieldContainer[float]
    num_heldout: int
    anomaly_score_quantiles: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, fpr: _Optional[_Iterable[float]] = ..., log_prob_quantiles: _Optional[_Iterable[float]] = ..., num_heldout: _Optional[int] = ..., anomaly_score_quantiles: _Optional[_Iterable[float]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "versions", "family", "schema", "capabilities", "calibration", "metrics", "created_at", "latent_dim")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    family: str
    schema: Schema
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    calibration: Calibration
    metrics: _struct_pb2.Struct
    created_at: str
    latent_dim: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., versions: _Optional[_Iterable[int]] = ..., family: _Optional[str] = ..., schema: _Optional[_Union[Schema, _Mapping]] = ..., capabilities: _Optional[_Iterable[str]] = ..., calibration: _Optional[_Union[Calibration, _Mapping]] = ..., metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[str] = ..., latent_dim: _Optional[int] = ...) -> None: ...

class ClassProportions(_message.Message):
    __slots__ = ("weights",)
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.ScalarMap[str, float]
    def __init__(self, weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SamplingOptions(_message.Message):
    __slots__ = ("temperature", "best_of", "guidance")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    BEST_OF_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    best_of: int
    guidance: float
    def __init__(self, temperature: _Optional[float] = ..., best_of: _Optional[int] = ..., guidance: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class FeatureCondition(_message.Message):
    __slots__ = ("column", "equals", "range")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    EQUALS_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    column: str
    equals: _struct_pb2.Value
    range: ValueRange
    def __init__(self, column: _Optional[str] = ..., equals: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., range: _Optional[_Union[ValueRange, _Mapping]] = ...) -> None: ...

class ValueRange(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("model", "version", "num_rows", "label", "proportions", "seed", "sampling", "conditions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROPORTIONS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    num_rows: int
    label: str
    proportions: ClassProportions
    seed: int
    sampling: SamplingOptions
    conditions: _containers.RepeatedCompositeFieldContainer[FeatureCondition]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., num_rows: _Optional[int] = ..., label: _Optional[str] = ..., proportions: _Optional[_Union[ClassProportions, _Mapping]] = ..., seed: _Optional[int] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., conditions: _Optional[_Iterable[_Union[FeatureCondition, _Mapping]]] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("version", "seed", "rows", "sampling")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    version: int
    seed: int
    rows: Table
    sampling: SamplingOptions
    def __init__(self, version: _Optional[int] = ..., seed: _Optional[int] = ..., rows: _Optional[_Union[Table, _Mapping]] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ...) -> None: ...

class SampleStreamRequest(_message.Message):
    __slots__ = ("model", "version", "num_rows", "label", "proportions", "seed", "chunk_rows", "sampling", "first_row", "stop_row", "conditions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROPORTIONS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ROWS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    FIRST_ROW_FIELD_NUMBER: _ClassVar[int]
    STOP_ROW_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    num_rows: int
    label: str
    proportions: ClassProportions
    seed: int
    chunk_rows: int
    sampling: SamplingOptions
    first_row: int
    stop_row: int
    conditions: _containers.RepeatedCompositeFieldContainer[FeatureCondition]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., num_rows: _Optional[int] = ..., label: _Optional[str] = ..., proportions: _Optional[_Union[ClassProportions, _Mapping]] = ..., seed: _Optional[int] = ..., chunk_rows: _Optional[int] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., first_row: _Optional[int] = ..., stop_row: _Optional[int] = ..., conditions: _Optional[_Iterable[_Union[FeatureCondition, _Mapping]]] = ...) -> None: ...

class SampleStreamResponse(_message.Message):
    __slots__ = ("version", "seed", "start_row", "rows", "sampling")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    START_ROW_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    version: int
    seed: int
    start_row: int
    rows: Table
    sampling: SamplingOptions
    def __init__(self, version: _Optional[int] = ..., seed: _Optional[int] = ..., start_row: _Optional[int] = ..., rows: _Optional[_Union[Table, _Mapping]] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ...) -> None: ...

class BalanceRequest(_message.Message):
    __slots__ = ("model", "version", "class_counts", "strategy", "target_ratio", "explicit_counts", "seed", "chunk_rows", "sampling", "conditions")
    class ClassCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ExplicitCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLASS_COUNTS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TARGET_RATIO_FIELD_NUMBER: _ClassVar[int]
    EXPLICIT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ROWS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    class_counts: _containers.ScalarMap[str, int]
    strategy: BalanceStrategy
    target_ratio: float
    explicit_counts: _containers.ScalarMap[str, int]
    seed: int
    chunk_rows: int
    sampling: SamplingOptions
    conditions: _containers.RepeatedCompositeFieldContainer[FeatureCondition]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., class_counts: _Optional[_Mapping[str, int]] = ..., strategy: _Optional[_Union[BalanceStrategy, str]] = ..., target_ratio: _Optional[float] = ..., explicit_counts: _Optional[_Mapping[str, int]] = ..., seed: _Optional[int] = ..., chunk_rows: _Optional[int] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., conditions: _Optional[_Iterable[_Union[FeatureCondition, _Mapping]]] = ...) -> None: ...

class BalanceResponse(_message.Message):
    __slots__ = ("version", "seed", "start_row", "rows", "sampling")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    START_ROW_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    version: int
    seed: int
    start_row: int
    rows: Table
    sampling: SamplingOptions
    def __init__(self, version: _Optional[int] = ..., seed: _Optional[int] = ..., start_row: _Optional[int] = ..., rows: _Optional[_Union[Table, _Mapping]] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ...) -> None: ...

class ScoreDensityRequest(_message.Message):
    __slots__ = ("model", "version", "rows", "include_class_log_density", "include_posteriors", "fpr", "seed", "start_row")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CLASS_LOG_DENSITY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_POSTERIORS_FIELD_NUMBER: _ClassVar[int]
    FPR_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    START_ROW_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    rows: Table
    include_class_log_density: bool
    include_posteriors: bool
    fpr: float
    seed: int
    start_row: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., rows: _Optional[_Union[Table, _Mapping]] = ..., include_class_log_density: _Optional[bool] = ..., include_posteriors: _Optional[bool] = ..., fpr: _Optional[float] = ..., seed: _Optional[int] = ..., start_row: _Optional[int] = ...) -> None: ...

class ScoreDensityResponse(_message.Message):
    __slots__ = ("version", "num_rows", "num_classes", "log_density", "class_log_density", "posteriors", "is_anomaly", "threshold", "anomaly_score", "threshold_score")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    LOG_DENSITY_FIELD_NUMBER: _ClassVar[int]
    CLASS_LOG_DENSITY_FIELD_NUMBER: _ClassVar[int]
    POSTERIORS_FIELD_NUMBER: _ClassVar[int]
    IS_ANOMALY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SCORE_FIELD_NUMBER: _ClassVar[int]
    version: int
    num_rows: int
    num_classes: int
    log_density: bytes
    class_log_density: bytes
    posteriors: bytes
    is_anomaly: bytes
    threshold: float
    anomaly_score: bytes
    threshold_score: AnomalyScoreKind
    def __init__(self, version: _Optional[int] = ..., num_rows: _Optional[int] = ..., num_classes: _Optional[int] = ..., log_density: _Optional[bytes] = ..., class_log_density: _Optional[bytes] = ..., posteriors: _Optional[bytes] = ..., is_anomaly: _Optional[bytes] = ..., threshold: _Optional[float] = ..., anomaly_score: _Optional[bytes] = ..., threshold_score: _Optional[_Union[AnomalyScoreKind, str]] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("model", "version", "rows", "seed", "start_row")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    START_ROW_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    rows: Table
    seed: int
    start_row: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., rows: _Optional[_Union[Table, _Mapping]] = ..., seed: _Optional[int] = ..., start_row: _Optional[int] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("version", "num_rows", "latent_dim", "latent")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    version: int
    num_rows: int
    latent_dim: int
    latent: bytes
    def __init__(self, version: _Optional[int] = ..., num_rows: _Optional[int] = ..., latent_dim: _Optional[int] = ..., latent: _Optional[bytes] = ...) -> None: ...
