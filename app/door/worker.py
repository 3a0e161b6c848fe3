"""One `vos door serve` process: its app, its async pool and its HTTP protocol, from settings.

`serve_door` (app/main.py) hands uvicorn these by name (`app.door.worker:create_app`,
`app.door.worker:DoorProtocol`), because uvicorn's workers (`VOS_DOOR_WORKERS` > 1) are fresh
interpreters that import what they run. Each worker reads the same environment (serve_door
puts the resolved DSN in DATABASE_URL first), so every worker has:
- its own async pool: its share of VOS_DB_POOL_MAX_SIZE (the door's whole connection budget,
  split over the workers), with the bounds of `Settings.db_pool_options()`;
- its own group commit (app/door/app.py `GroupCommit`) with `inflight(workers)` transactions
  at a time, so that about two are in flight across all workers;
- the door's deadlines and connection cap (app/door/protocol.py). The cap counts the
  connections of the process that accepted them, so with N workers up to N × cap are open.

Example:
    uvicorn.run("app.door.worker:create_app", factory=True,
                http="app.door.worker:DoorProtocol", workers=2)
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator

from app import jsonlog
from app.door.app import DoorApp, create_door_app
from app.door.pool import open_async_pool
from app.door.protocol import door_protocol
from app.settings import Settings

log = logging.getLogger("vos.door")

settings = Settings()

DoorProtocol = door_protocol(
    header_timeout=settings.door_header_timeout_seconds,
    body_timeout=settings.door_body_timeout_seconds,
    max_connections=settings.door_max_connections,
)


def pool_size(total: int, workers: int) -> int:
    """Each worker's connections: its share of the door's budget, at least 2.

    Example:
        >>> pool_size(16, 2), pool_size(10, 1), pool_size(3, 4)
        (8, 10, 2)
    """
    return max(2, math.ceil(total / workers))


def inflight(workers: int) -> int:
    """Each worker's group-commit transactions in flight: about two across the door.

    Why two: notifying transactions commit one at a time (migration 0307), so one can run its
    inserts while the other waits for its commit; more only split the callbacks that arrive
    together into smaller transactions (issue #19's benchmark, 2 workers: 4 in flight each
    gave 1.4 callbacks per transaction and 1.1 ms of door + Postgres CPU per callback, 1 each
    gave 3.5-7.7 and 0.5-0.8 ms).

    Example:
        >>> inflight(1), inflight(2), inflight(8)
        (2, 1, 1)
    """
    return max(1, 2 // workers)


def create_app() -> DoorApp:
    """The door of this worker process, its pool opened and closed with the app's lifespan."""
    jsonlog.configure()
    size = pool_size(settings.db_pool_max_size, settings.door_workers)
    pool = open_async_pool(
        settings.database_url.get_secret_value() if settings.database_url else "",
        min_size=size, max_size=size,  # opened up front: no SCRAM handshakes under load
        name="vos-door", **settings.db_pool_options(),
    )
    app = create_door_app(
        pool, settings.door_keys(), max_body=settings.door_max_body_bytes,
        tolerance=settings.door_tolerance_seconds, max_depth=settings.door_max_json_depth,
        max_inflight=inflight(settings.door_workers),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: DoorApp) -> AsyncIterator[None]:
        await pool.open(wait=False)  # returns at once even if Postgres is down (503s then)
        try:
            yield
        finally:
            await pool.close()

    app.lifespan_context = lifespan
    return app
