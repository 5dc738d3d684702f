"""Serving the dashboard: werkzeug's threaded server in a daemon thread of the service process."""

from __future__ import annotations

import logging
import threading

from werkzeug.serving import make_server

from . import create_app
from .security import DashboardStartError, Guard

log = logging.getLogger(__name__)


class DashboardServer:
    def __init__(self, hive):
        self.hive = hive
        access_log = logging.getLogger("werkzeug")
        if access_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
            access_log.setLevel(logging.WARNING)  # one line per request (and per live refresh) only at -vv
        guard = Guard(hive)  # refuses an unsafe setup before anything listens
        self.app = create_app(hive, guard)
        dashboard = hive.config.dashboard
        where = f" (in {hive.config_path})" if getattr(hive, "config_path", None) else ""
        try:
            self.server = make_server(dashboard.host, dashboard.port, self.app, threaded=True)
        except OSError as e:
            raise DashboardStartError(
                f"cannot serve the dashboard on dashboard.listen = {dashboard.listen}{where}: {e.strerror or e}; "
                "set dashboard.listen to a free address and port") from None
        except SystemExit:
            # werkzeug prints "Address already in use" and exits instead of raising when the port is taken
            raise DashboardStartError(
                f"cannot serve the dashboard on dashboard.listen = {dashboard.listen}{where}: the address is in "
                "use (another program, or another hive); set dashboard.listen to a free port") from None
        self.server.daemon_threads = True
        self.listen = dashboard.listen
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="dashboard", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def start(self) -> "DashboardServer":
        self._thread.start()
        log.info("dashboard on %s", self.url)
        return self

    def stop(self) -> None:
        self.app.extensions["stopping"].set()  # ends the event streams
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
