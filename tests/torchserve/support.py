"""Test helpers: where the shipped model lives, and JSON over HTTP with the status kept."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SHIPPED_MODEL", "SHIPPED_STORE", "assert_rows_equal", "post", "post_json", "shipped_available"]

SHIPPED_STORE = Path(__file__).resolve().parents[2] / "model_store"
SHIPPED_MODEL = "breast-cancer-flow"


def shipped_available() -> bool:
    return (SHIPPED_STORE / SHIPPED_MODEL / "1" / "manifest.json").is_file()


def post(url: str, body: object, timeout_s: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """POST a JSON body; returns (HTTP status, headers with lower-case names, raw body), errors included."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def post_json(url: str, body: object, timeout_s: float = 30.0) -> tuple[int, Any]:
    """POST a JSON body; returns (HTTP status, decoded JSON body), errors included."""
    status, _, raw = post(url, body, timeout_s)
    return status, json.loads(raw or b"null")


def assert_rows_equal(actual: dict[str, list[Any]], expected: dict[str, list[Any]]) -> None:
    """Same columns; float columns equal within float32 rounding, all others exactly."""
    assert list(actual) == list(expected)
    for name, values in expected.items():
        if values and isinstance(values[0], float):
            np.testing.assert_allclose(actual[name], values, rtol=1e-6, atol=1e-6, err_msg=name)
        else:
            assert actual[name] == values, name
