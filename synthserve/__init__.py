"""synthserve: synthetic tabular data from deep generative models, served over gRPC."""

__all__ = ["__version__"]

__version__ = "0.1.0"
