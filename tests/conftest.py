"""Groups for `make test`'s two pytest-xdist workers (`--dist loadgroup`): a module's tests stay on one worker, so
its module-scoped fixtures are built once, and every module that uses the session's trained models
(`trained_store`, ~100 s to train) joins one group, so only one worker trains them."""

from __future__ import annotations

import pytest

TRAINED_STORE_GROUP = "trained_store"


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    sharing = {_module(item) for item in items if "trained_store" in getattr(item, "fixturenames", ())}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(TRAINED_STORE_GROUP if _module(item) in sharing else _module(item)))
