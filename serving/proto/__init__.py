"""Generated protobuf and gRPC modules for protos/synthserve/v1 (regenerate with `python -m serving.protogen`)."""
