"""The Command Center: duty board, live feed, org chart and cost tracker (served at /ui by the
private API process, on the mesh address only; never by the door).

Example:
    from app.ui import mount_ui
    mount_ui(app, pool)
"""

from app.ui.routes import mount_ui

__all__ = ["mount_ui"]
