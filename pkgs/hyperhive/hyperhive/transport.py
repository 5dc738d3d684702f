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
import struct
import tempfile
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


class _Connection(socketserver.BaseRequestHandler):
    """One client connection: lines in, one response line out per request.

    Reads straight from the socket into a buffer (no file object: a poll with a timeout before each read ends an
    idle connection cleanly). A connection that holds a lease is never closed for being idle: its harness is in
    the middle of a turn.
    """

    server: "_Server"

    def handle(self) -> None:
        _current.sock = self.request
        conn = _current.conn = Connection(self.server.identity, self.request)
        try:
            self._serve(conn)
        finally:
            conn.closed = True
            _current.sock = _current.conn = None
            self.server.connection_ended()
            if self.server.on_close is not None:
                try:
                    self.server.on_close(conn)
                except Exception:
                    log.exception("cleaning up a closed connection of %s failed", self.server.identity.name)

    def _serve(self, conn: Connection) -> None:
        sock: socket.socket = self.request
        buf = bytearray()
        discarding = False  # inside an over-long line, skipping to its end
        armed = None  # the idle timeout set on the socket (SO_RCVTIMEO: no poll before every read)
        while not self.server.closing.is_set():
            newline = buf.find(b"\n")
            limit = self.server.max_line()
            if newline < 0:
                if len(buf) > limit:  # no end of line within the limit: skip the rest of it, then answer
                    discarding = True
                    buf.clear()
                idle = self.server.idle_timeout()
                if idle != armed:
                    seconds = idle or 0  # 0: no timeout
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                    struct.pack("ll", int(seconds), int(seconds % 1 * 1e6)))
                    armed = idle
                try:
                    chunk = sock.recv(262144)
                except (BlockingIOError, TimeoutError):  # idle for the whole timeout
                    if conn.leases:
                        continue  # a harness mid-turn: keep its connection (and its lease)
                    log.info("closing a connection of %s idle for %gs", self.server.identity.name, idle)
                    return
                except InterruptedError:
                    continue
                except (ConnectionError, OSError):
                    return
                if not chunk:
                    return
                buf += chunk
                continue
            line = bytes(buf[:newline + 1])
            del buf[:newline + 1]
            if discarding:
                discarding = False
                response = error_response(
                    "too_large", f"request line exceeds {limit} bytes (maxMessageBytes plus envelope)")
            elif len(line) > limit + 1:
                response = error_response(
                    "too_large", f"request line exceeds {limit} bytes (maxMessageBytes plus envelope)")
            else:
                response = self.server.decode_and_handle(line)
            try:
                sock.sendall(dumps(response) + b"\n")
            except (ConnectionError, OSError):
                return


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, path: str, identity: Identity, handler: Handler, max_line: Callable[[], int],
                 on_close: Callable[[Connection], None] | None = None, limits: Callable[[], "Limits"] | None = None):
        self.identity = identity
        self.handler = handler
        self.max_line = max_line
        self.on_close = on_close
        self.limits = limits or (lambda: Limits())
        self.closing = threading.Event()
        self._active = 0
        self._active_lock = threading.Lock()
        super().__init__(path, _Connection)

    def idle_timeout(self) -> float | None:
        return self.limits().idle_timeout_seconds

    def verify_request(self, request, client_address) -> bool:
        """At most ``maxConnections`` connections per socket: one agent cannot take every file descriptor."""
        cap = self.limits().max_connections
        with self._active_lock:
            if cap is None or self._active < cap:
                self._active += 1
                return True
        log.warning("refused a connection to the socket of %s: it already has %d (broker.maxConnectionsPerAgent)",
                    self.identity.name, cap)
        try:
            request.setblocking(False)
            request.send(dumps(error_response(
                "conflict", f"too many connections on this socket ({cap}, broker.maxConnectionsPerAgent); "
                "close some and retry")) + b"\n")
        except OSError:
            pass
        return False

    def connection_ended(self) -> None:
        with self._active_lock:
            self._active -= 1

    def active_connections(self) -> int:
        return self._active

    def decode_and_handle(self, line: bytes) -> dict:
        try:
            request = loads_strict(line.decode("utf-8"))
        except UnicodeDecodeError:
            return error_response("bad_request", "request is not valid UTF-8")
        except ValueError as e:
            return error_response("bad_request", f"request is not valid JSON: {e}")
        except RecursionError:
            return error_response("bad_request", "request is nested too deeply")
        if not isinstance(request, dict):
            return error_response("bad_request", "request must be a JSON object with an \"op\"")
        try:
            return self.handler(self.identity, request)
        except HiveError as e:
            return e.to_wire()
        except Exception as e:  # a bug must not take the socket down; say so and log it
            log.exception("internal error handling %r for %s", request.get("op"), self.identity.name)
            return error_response("internal", f"internal error: {type(e).__name__}: {e}")


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


@dataclass(frozen=True)
class Limits:
    """Per-socket limits against a client that would starve the others (from ``broker.*``)."""

    max_connections: int | None = None
    idle_timeout_seconds: float | None = None


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON number")


def loads_strict(text: str | bytes) -> Any:
    """JSON as RFC 8259 has it: Python's NaN, Infinity and overflowing numbers such as 1e999 are refused (as
    wait or lease times they would park a request or hold a message forever), and so are integers beyond 64 bits
    (no id or count is larger, and SQLite holds no larger).

    Parsed by the C decoder alone (a hook per number costs more than the parse), then the numbers are checked."""
    value = json.loads(text, parse_constant=_not_json)
    _check_numbers(value)
    return value


def _check_numbers(value: Any) -> None:
    kind = type(value)
    if kind is str:
        return
    if kind is dict:
        for item in value.values():
            if type(item) is not str:
                _check_numbers(item)
    elif kind is list:
        for item in value:
            _check_numbers(item)
    elif kind is float:
        if not math.isfinite(value):
            raise ValueError("a number is out of range")
    elif kind is int and not -2**63 <= value < 2**63:
        raise ValueError(f"{str(value)[:30]} is out of range (integers are 64-bit)")


class SocketError(Exception):
    """A socket could not be put in place (its path is taken by something else); costs only that socket."""


def private_dir(path: Path, mode: int = 0o700) -> None:
    """Make ``path`` a directory of ours with ``mode``, never following a link; one owned by someone else (a
    container's mapped root, chowned by the NixOS module) is left as its owner set it."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)  # a link: ELOOP/ENOTDIR
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and st.st_mode & 0o7777 != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


class SocketServer:
    """One listening socket bound to one identity, served by a thread per connection.

    The socket is bound in a fresh private directory (mode 0700, made by ``mkdtemp`` in the run directory), given
    its mode (and, when the service runs as root, the owner of the directory it is meant for) there, where nobody
    else can reach or swap it, and only then renamed into place. So it is never open wider than ``mode``, and no
    ``chmod`` or ``chown`` can be made to follow a link planted at its path. ``rename`` replaces a stale socket or
    a link planted at the path (it never follows one); a directory there makes this one socket fail
    (``SocketError``), not the service.
    """

    def __init__(self, path: Path, identity: Identity, handler: Handler, max_line: Callable[[], int],
                 mode: int = 0o600, on_close: Callable[[Connection], None] | None = None,
                 limits: Callable[[], Limits] | None = None, staging: Path | None = None):
        self.path = Path(path)
        self.identity = identity
        parent = self.path.parent
        try:
            private_dir(parent)
        except OSError as e:
            raise SocketError(f"{parent} is not a directory the service can use: {e.strerror or e}") from None
        owner = os.lstat(parent).st_uid  # checked a real directory just now; its parent is the service's
        # Staged in a directory only the service writes (the run directory): never inside the agent's own.
        tmp = Path(tempfile.mkdtemp(prefix=".sock-", dir=staging or parent))
        staged = tmp / "s"
        old_umask = os.umask(0o177)  # never exist with wider permissions than asked, even briefly
        try:
            server = _Server(str(staged), identity, handler, max_line, on_close, limits)
        finally:
            os.umask(old_umask)
        try:
            os.chmod(staged, mode)  # inside our private directory: nothing to follow
            if os.geteuid() == 0 and owner != 0:
                os.chown(staged, owner, -1)  # the container's mapped root reaches its own socket
            try:
                os.rename(staged, self.path)
            except OSError as e:
                raise SocketError(f"cannot put the socket at {self.path}: {e.strerror or e} "
                                  "(remove what is there; the agent's socket directory is its own)") from None
            self._inode = os.lstat(self.path).st_ino
        except BaseException:
            server.server_close()
            raise
        finally:
            try:
                os.unlink(staged)
            except FileNotFoundError:
                pass
            os.rmdir(tmp)
        server.server_address = str(self.path)
        self._server = server
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"socket-{identity.name}", daemon=True)

    def start(self) -> "SocketServer":
        self._thread.start()
        return self

    def active_connections(self) -> int:
        return self._server.active_connections()

    def close(self) -> None:
        self._server.closing.set()
        self._server.shutdown()
        self._server.server_close()
        try:  # only our own socket: what the agent put there since is its business
            if os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)
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
