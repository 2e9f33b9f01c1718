"""Online serving: exported artifacts -> batched ONNX Runtime inference -> gRPC. Never imports torch or training."""
