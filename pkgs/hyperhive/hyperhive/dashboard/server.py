"""Serving the dashboard: werkzeug's threaded server in a daemon thread of the service process.

The server is bounded, so that no HTTP client (before any token is checked) can starve the dashboard or take the
broker down with it (both live in one process and share its file descriptors):

- a connection has ``HEADER_TIMEOUT`` seconds to send its request line and headers, however slowly it drips them;
- at most ``MAX_PENDING`` connections may be waiting for their headers at once: a new one evicts the oldest of
  them (a real browser sends its headers at once, so only a slow client loses);
- at most ``MAX_CONNECTIONS`` connections in all (requests being served and event streams included); beyond
  that, new ones are closed at once;
- a request that is being served waits at most ``IO_TIMEOUT`` seconds for any one read or write.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict

from werkzeug.serving import WSGIRequestHandler, make_server

from . import create_app
from .security import DashboardStartError, Guard

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0
IO_TIMEOUT = 60.0
MAX_PENDING = 64
MAX_CONNECTIONS = 256


class _Watch:
    """The connections still sending their request headers, oldest first, with their deadlines."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: OrderedDict[socket.socket, float] = OrderedDict()
        self.members: set[socket.socket] = set()
        self.stopping = threading.Event()

    def admit(self, sock: socket.socket) -> bool:
        with self.lock:
            if len(self.members) >= MAX_CONNECTIONS:
                return False
            self.members.add(sock)
            if len(self.pending) >= MAX_PENDING:
                oldest, _ = self.pending.popitem(last=False)
                _hang_up(oldest)
            self.pending[sock] = time.monotonic() + HEADER_TIMEOUT
        return True

    def arm(self, sock: socket.socket) -> None:
        with self.lock:
            if sock not in self.members:
                return
            self.pending[sock] = time.monotonic() + HEADER_TIMEOUT
            self.pending.move_to_end(sock)

    def disarm(self, sock: socket.socket) -> None:
        with self.lock:
            self.pending.pop(sock, None)

    def closed(self, sock: socket.socket) -> None:
        with self.lock:
            self.pending.pop(sock, None)
            self.members.discard(sock)

    def reap(self) -> None:
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            with self.lock:
                late = [s for s, deadline in self.pending.items() if deadline <= now]
                for s in late:
                    del self.pending[s]
            for s in late:
                _hang_up(s)


def _hang_up(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # the handler's blocked read returns; it closes the socket itself
    except OSError:
        pass


class _Handler(WSGIRequestHandler):
    timeout = IO_TIMEOUT  # StreamRequestHandler sets it on the socket: no read or write blocks for longer

    def handle_one_request(self) -> None:
        self.server.watch.arm(self.connection)  # the next request's headers (keep-alive) have a deadline too
        super().handle_one_request()

    def run_wsgi(self) -> None:
        self.server.watch.disarm(self.connection)  # headers in: the request is served
        super().run_wsgi()


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
            self.server = make_server(dashboard.host, dashboard.port, self.app, threaded=True,
                                      request_handler=_Handler)
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
        self.server.request_queue_size = 128
        watch = self.server.watch = _Watch()
        server = self.server

        def verify_request(request, client_address) -> bool:
            if watch.admit(request):
                return True
            log.warning("dashboard: refused a connection from %s: %d open (the most it serves)",
                        client_address, MAX_CONNECTIONS)
            return False

        def shutdown_request(request) -> None:
            # called once for every accepted connection, after its handler or when it was refused
            watch.closed(request)
            type(server).shutdown_request(server, request)

        server.verify_request = verify_request
        server.shutdown_request = shutdown_request
        self.listen = dashboard.listen
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="dashboard", daemon=True)
        self._reaper = threading.Thread(target=watch.reap, name="dashboard-reaper", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def start(self) -> "DashboardServer":
        self._thread.start()
        self._reaper.start()
        log.info("dashboard on %s", self.url)
        return self

    def stop(self) -> None:
        self.app.extensions["stopping"].set()  # ends the event streams
        self.server.watch.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
