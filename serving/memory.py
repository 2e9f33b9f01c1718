"""Returning freed memory to the operating system.

glibc keeps memory freed by a burst (20,000 idle streams, a million-row response) in its heaps, so the
process's RSS stays at the burst's peak long after. `trim_forever` asks glibc to release it (`malloc_trim`)
every `interval_s` while the server runs; on other C libraries it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging

__all__ = ["trim_forever", "trim_now"]

_log = logging.getLogger(__name__)


def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def trim_now() -> bool:
    """Releases free heap memory to the OS; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


async def trim_forever(interval_s: float) -> None:
    """Trims every `interval_s` (in a worker thread: a trim of a large heap takes milliseconds)."""
    if _TRIM is None:
        _log.info("malloc_trim is not available: freed memory stays with the process")
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        await loop.run_in_executor(None, trim_now)
