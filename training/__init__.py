"""Offline half of synthserve: data -> conditional generative model -> exported artifact in the model store."""

__all__: list[str] = []
