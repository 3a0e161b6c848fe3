"""uvicorn in a thread on a fixed loopback port, restartable (for SSE reconnect tests).

Example:
    server = ServerThread(create_api_app(pool), free_port())
    server.start()
    httpx.get(server.base_url + "/healthz")
    server.stop()
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


class ServerThread:
    """uvicorn in a thread on a fixed port, so it can be stopped and started again."""

    def __init__(self, app, port: int):
        self.app, self.port = app, port
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="ui-test-server",
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the test server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
            assert not self.thread.is_alive(), "the test server did not stop in time"


@contextlib.contextmanager
def serving_api(dsn: str, name: str, max_size: int = 6) -> Iterator[tuple[ServerThread, Any, Any]]:
    """The whole private API (and the Command Center) on a free loopback port, around a pool
    of `dsn`: yields (server, pool, app) and stops all three.

    Example:
        with serving_api(migrated_db.app_dsn, "vos-ui-it") as (server, pool, app):
            httpx.get(server.base_url + "/healthz")
    """
    from app.db import open_pool
    from app.db.embedded import free_port
    from app.dispatch.api import create_api_app

    pool = open_pool(dsn, min_size=1, max_size=max_size, name=name)
    pool.wait(timeout=30)
    app = create_api_app(pool)
    server = ServerThread(app, free_port())
    server.start()
    try:
        yield server, pool, app
    finally:
        server.stop()
        app.state.ui_hub.stop()
        pool.close()
