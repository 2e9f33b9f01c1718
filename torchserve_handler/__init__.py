"""Serve an exported synthserve model with TorchServe: a `.mar` builder and the handler inside it.

The handler reads the same artifact (ONNX graphs + manifest.json) as the synthserve gRPC server and
draws noise with the same `synthserve.contract.draw_noise` rule, so one seed gives the same rows from both.
This package imports neither `serving` nor `training`; the archive ships it with the contract modules.
"""

__all__: list[str] = []
