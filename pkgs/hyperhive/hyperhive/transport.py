"""Newline-delimited JSON over Unix stream sockets: the server side (one per identity) and a client.

The socket is the identity: a server is bound to one ``Identity`` and every request that arrives on it is
handled as coming from that identity, whatever the request says.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import socket
import socketserver
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import HiveError

log = logging.getLogger(__name__)

ENVELOPE_BYTES = 4096  # room for the op, the recipient and JSON punctuation around a maximal body


@dataclass(frozen=True)
class Identity:
    name: str  # agent name, the manager's name, or "operator"
    role: str  # "agent" | "manager" | "operator"


Handler = Callable[[Identity, dict], dict]

_current = threading.local()


class Connection:
    """One client connection, for ops that tie state to it (``recv`` leases belong to the connection that took
    them, and are released when it closes without ``ack``)."""

    __slots__ = ("identity", "sock", "leases", "closed", "__weakref__")

    def __init__(self, identity: Identity, sock=None):
        self.identity = identity
        self.sock = sock
        self.leases: set[int] = set()  # message ids this connection leased and has not acknowledged
        self.closed = False


def current_connection() -> Connection | None:
    """The connection of the request this thread is handling (None outside a socket request)."""
    return getattr(_current, "conn", None)


def peer_connected() -> bool:
    """Whether the client of the request this thread is handling is still there.

    A parked ``recv`` asks this so that it gives up when its client hung up, instead of leasing the next
    message to nobody. Only a full close counts: a client that merely shut its writing side (``socat``,
    ``printf ... | nc -U``) still waits for its answer.
    """
    sock = getattr(_current, "sock", None)
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, 0)  # POLLHUP and POLLERR are always reported
    return not any(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, events in poller.poll(0))


def error_response(code: str, message: str) -> dict:
    return {"ok": False, "error": {"code": code, "message": message}}


class _Connection(socketserver.StreamRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        _current.sock = self.request
        conn = _current.conn = Connection(self.server.identity, self.request)
        try:
            self._serve()
        finally:
            conn.closed = True
            _current.sock = _current.conn = None
            if self.server.on_close is not None:
                try:
                    self.server.on_close(conn)
                except Exception:
                    log.exception("cleaning up a closed connection of %s failed", self.server.identity.name)

    def _serve(self) -> None:
        limit = self.server.max_line()
        while not self.server.closing.is_set():
            try:
                line = self.rfile.readline(limit + 1)
            except (ConnectionError, OSError):
                return
            if not line:
                return
            if len(line) > limit and not line.endswith(b"\n"):
                if not self._discard_rest_of_line():
                    return
                response = error_response(
                    "too_large", f"request line exceeds {limit} bytes (maxMessageBytes plus envelope)")
            else:
                response = self.server.decode_and_handle(line)
            try:
                self.wfile.write(json.dumps(response, ensure_ascii=False).encode() + b"\n")
                self.wfile.flush()
            except (ConnectionError, OSError):
                return

    def _discard_rest_of_line(self) -> bool:
        while True:
            chunk = self.rfile.readline(65536)
            if not chunk:
                return False
            if chunk.endswith(b"\n"):
                return True


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, path: str, identity: Identity, handler: Handler, max_line: Callable[[], int],
                 on_close: Callable[[Connection], None] | None = None):
        self.identity = identity
        self.handler = handler
        self.max_line = max_line
        self.on_close = on_close
        self.closing = threading.Event()
        super().__init__(path, _Connection)

    def decode_and_handle(self, line: bytes) -> dict:
        try:
            request = loads_strict(line.decode("utf-8"))
        except UnicodeDecodeError:
            return error_response("bad_request", "request is not valid UTF-8")
        except ValueError as e:
            return error_response("bad_request", f"request is not valid JSON: {e}")
        if not isinstance(request, dict):
            return error_response("bad_request", "request must be a JSON object with an \"op\"")
        try:
            return self.handler(self.identity, request)
        except HiveError as e:
            return e.to_wire()
        except Exception as e:  # a bug must not take the socket down; say so and log it
            log.exception("internal error handling %r for %s", request.get("op"), self.identity.name)
            return error_response("internal", f"internal error: {type(e).__name__}: {e}")


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _int64(text: str) -> int:
    value = int(text)
    if not -2**63 <= value < 2**63:
        raise ValueError(f"{text[:30]} is out of range (integers are 64-bit)")
    return value


def loads_strict(text: str) -> Any:
    """JSON as RFC 8259 has it: Python's NaN, Infinity and overflowing numbers such as 1e999 are refused (as
    wait or lease times they would park a request or hold a message forever), and so are integers beyond 64 bits
    (no id or count is larger, and SQLite holds no larger)."""
    return json.loads(text, parse_constant=_not_json, parse_float=_finite, parse_int=_int64)


class SocketServer:
    """One listening socket bound to one identity, served by a thread per connection."""

    def __init__(self, path: Path, identity: Identity, handler: Handler, max_line: Callable[[], int],
                 mode: int = 0o660, on_close: Callable[[Connection], None] | None = None):
        self.path = Path(path)
        self.identity = identity
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket() or self.path.exists():
            self.path.unlink()
        old_umask = os.umask(0o177)  # never exist with wider permissions than asked, even briefly
        try:
            self._server = _Server(str(self.path), identity, handler, max_line, on_close)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, mode)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"socket-{identity.name}", daemon=True)

    def start(self) -> "SocketServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.closing.set()
        self._server.shutdown()
        self._server.server_close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class Client:
    """A connection to one hive socket; ``call`` sends one request and returns its ``result``."""

    def __init__(self, path: str | Path, timeout: float | None = None):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            self.sock.close()
            raise ConnectionError(
                f"cannot connect to {self.path}: {e.strerror or e} (is `hyperhive serve` running?)") from None
        self.rfile = self.sock.makefile("rb")

    def request(self, request: dict) -> dict:
        self.sock.sendall(json.dumps(request, ensure_ascii=False).encode() + b"\n")
        line = self.rfile.readline()
        if not line:
            raise ConnectionError(f"{self.path}: the service closed the connection")
        return json.loads(line)

    def call(self, op: str, **args: Any) -> Any:
        response = self.request({"op": op, **args})
        if not response.get("ok"):
            err = response.get("error") or {}
            raise HiveError(err.get("code", "internal"), err.get("message", "unknown error"))
        return response.get("result")

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
