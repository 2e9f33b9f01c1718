"""The contract between `training` (which writes model stores) and `serving` (which reads them).

Both sides import this package; it imports nothing but numpy and the standard library, so the
one-way rule (training never imports serving and vice versa) holds while the format has one definition.
"""

from synthserve.contract.files import (
    FileCheckError,
    model_versions,
    sha256_file,
    verify_files,
    version_directories,
    version_number,
)
from synthserve.contract.labels import largest_remainder
from synthserve.contract.levels import OTHER_LABEL, label_key, level_codes
from synthserve.contract.manifest import (
    FORMAT_VERSION,
    Calibration,
    Column,
    GraphSpec,
    LabelSpec,
    Manifest,
    ManifestError,
    Schema,
    TensorSpec,
    check_file_name,
    load_manifest,
)
from synthserve.contract.noise import draw_noise, noise_row_width
from synthserve.contract.quoting import close_matches, shown
from synthserve.contract.sampling import (
    BALANCE_SAMPLING,
    MAX_BEST_OF,
    MAX_TEMPERATURE,
    PLAIN_SAMPLING,
    SCORING_STREAM_OFFSET,
    SamplingOptions,
    best_candidates,
    has_class_posterior,
    noise_feeds,
    sample_rows,
)
from synthserve.contract.values import (
    MISSING_CODE,
    accept_column,
    finish_rows,
    from_datetime64,
    row_bytes,
    table_overhead_bytes,
    to_datetime64,
    wire_dtype,
)

__all__ = [
    "BALANCE_SAMPLING",
    "FORMAT_VERSION",
    "MAX_BEST_OF",
    "MAX_TEMPERATURE",
    "MISSING_CODE",
    "OTHER_LABEL",
    "PLAIN_SAMPLING",
    "SCORING_STREAM_OFFSET",
    "Calibration",
    "Column",
    "FileCheckError",
    "GraphSpec",
    "LabelSpec",
    "Manifest",
    "ManifestError",
    "SamplingOptions",
    "Schema",
    "TensorSpec",
    "accept_column",
    "best_candidates",
    "check_file_name",
    "close_matches",
    "draw_noise",
    "finish_rows",
    "from_datetime64",
    "has_class_posterior",
    "label_key",
    "largest_remainder",
    "level_codes",
    "load_manifest",
    "model_versions",
    "noise_feeds",
    "noise_row_width",
    "row_bytes",
    "sample_rows",
    "sha256_file",
    "shown",
    "table_overhead_bytes",
    "to_datetime64",
    "verify_files",
    "version_directories",
    "version_number",
    "wire_dtype",
]
