"""One JSON object per log line, on stdout (the app writes no files).

Fixed key order, `event` first and `src` second, so a fail2ban filter can match the source
address with a plain regex: `^\\{"event": "door_reject", "src": "<HOST>"`.

Example:
    >>> import io, logging
    >>> stream = io.StringIO(); logger = logging.getLogger("doc"); logger.propagate = False
    >>> logger.addHandler(logging.StreamHandler(stream)); logger.setLevel(logging.INFO)
    >>> emit(logger, "door_reject", src="203.0.113.9", reason="bad_signature")
    >>> stream.getvalue().startswith('{"event": "door_reject", "src": "203.0.113.9"')
    True
"""

from __future__ import annotations

import json
import logging
import sys
import time


def emit(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: object
) -> None:
    """Log one JSON line: event, the given fields in order, then a UTC timestamp."""
    record = {"event": event, **fields, "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    logger.log(level, json.dumps(record, default=str))


def configure(level: int = logging.INFO) -> None:
    """Send the app's loggers (`vos.*`) to stdout, message only (the lines are JSON already)."""
    logger = logging.getLogger("vos")
    if not any(getattr(h, "_vos", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._vos = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
