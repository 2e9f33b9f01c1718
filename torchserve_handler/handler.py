"""The TorchServe entry point: the archive holds this file at its root, and TorchServe imports it as `handler`.

TorchServe needs exactly one class in this module; it calls `initialize` once per worker and `handle` with a
batch of requests. Each request gets its own status: bad input answers 400 with the message, never a 500 for
the whole batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import synthserve.contract
from synthserve.contract import RequestError
from torchserve_handler.codec import decode_body
from torchserve_handler.model import ExportedModel
from torchserve_handler.service import HandlerConfig, Response, SynthService

__all__ = ["SynthHandler"]

logger = logging.getLogger(__name__)


class SynthHandler:
    """Serves `{"n": ...}` (sample) and `{"rows": ...}` (score) JSON bodies for one exported model."""

    def __init__(self) -> None:
        self.service: SynthService | None = None

    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        # model-config.yaml is this worker's configuration (its `main()`): parse it here, once.
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        config = HandlerConfig.from_mapping(yaml_config.get("handler") or {})
        model = ExportedModel(model_dir, intra_op_threads=config.intra_op_threads)
        self.service = SynthService(model, config)
        # Where the contract came from shows that the archive's own copy is in use (the .mar is self-contained).
        logger.info(
            "synthserve handler: %s version %d from %s, contract %s",
            model.name,
            model.version,
            model_dir,
            Path(synthserve.contract.__file__).parent,
        )

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        if self.service is None:
            raise RuntimeError("handle() before initialize()")
        bodies = []
        for index, item in enumerate(data):
            body = item.get("body") if item.get("body") is not None else item.get("data")
            try:
                response = self.service.respond(decode_body(body))
            except RequestError as exc:
                context.set_response_status(code=400, phrase=str(exc), idx=index)
                response = Response.json_body({"error": str(exc)})
            context.set_response_content_type(index, response.content_type)
            for key, value in response.headers.items():
                context.set_response_header(index, key, value)
            bodies.append(response.body)
        return bodies
