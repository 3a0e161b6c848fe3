"""Fixtures shared by the integration tests that need a real Docker engine."""

from __future__ import annotations

import pytest

from stack.engine import start_dockerd, stop_dockerd
from stack.images import ensure_local_base


@pytest.fixture(scope="module")
def base_image():
    """A running engine (started here when none runs: no init system) and the local base
    image (`debootstrap | docker import`, no pulls); the engine stops with the module if this
    fixture started it."""
    try:
        started = start_dockerd()
    except RuntimeError as error:
        pytest.fail(str(error))
    try:
        yield ensure_local_base()
    finally:
        stop_dockerd(started)
