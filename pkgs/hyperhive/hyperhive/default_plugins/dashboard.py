"""Built-in: the operator's dashboard, served by the service on ``dashboard.listen``."""

from __future__ import annotations

import logging

from ..hookspecs import hookimpl

log = logging.getLogger(__name__)

EXTENSION = "dashboard"


@hookimpl
def hive_started(hive):
    from ..dashboard.server import DashboardServer

    server = DashboardServer(hive).start()
    hive.extensions[EXTENSION] = server
    hive.extensions["dashboard_url"] = server.url  # printed in the service's ready line


@hookimpl
def hive_stopping(hive):
    server = hive.extensions.pop(EXTENSION, None)
    if server is not None:
        server.stop()


@hookimpl
def config_changed(hive, old, new):
    cache = hive.extensions.get("dashboard_overview")
    if cache is not None:
        cache.invalidate()  # agents may have come or gone
    if old.dashboard.listen != new.dashboard.listen:
        log.warning("dashboard.listen changed to %s; it takes effect when the service restarts",
                    new.dashboard.listen)
