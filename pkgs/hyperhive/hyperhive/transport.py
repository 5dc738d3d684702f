"""Newline-delimited JSON over Unix stream sockets: the server side (one per identity) and a client.

The socket is the identity: a server is bound to one ``Identity`` and every request that arrives on it is
handled as coming from that identity, whatever the request says.

Every socket of the process is served by one event loop (``_Loop``), not a thread per connection: it accepts,
reads, splits lines and writes answers. Quick ops (``send``) run on the loop, those of one turn sharing one
transaction; the rest run on worker threads, one request at a time per connection, answered in order.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import math
import os
import queue
import select
import selectors
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

from .errors import HiveError

log = logging.getLogger(__name__)

ENVELOPE_BYTES = 4096  # room for the op, the recipient and JSON punctuation around a maximal body
ESCAPE_FACTOR = 6  # the most JSON escaping makes of a byte of text: "\u0001" is six bytes for one


def line_limit(max_message_bytes: int) -> int:
    """The longest request line (or dashboard request body): a body of ``max_message_bytes`` bytes of UTF-8 however
    its JSON is escaped, plus the envelope. The body's own size is checked where it is read, in UTF-8 bytes."""
    return ESCAPE_FACTOR * max_message_bytes + ENVELOPE_BYTES


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


class _Workers:
    """Threads for the requests that may block (a parked ``recv`` sleeps in its worker, git and builds take their
    time): one is started whenever none is idle, so a parked request never waits for a free worker, and one idle
    for a minute ends."""

    IDLE_SECONDS = 60.0

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a task (a submit takes one of them)

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._tasks.put(task)
                return
        threading.Thread(target=self._run, args=(task,), name="socket-worker", daemon=True).start()

    def _run(self, task: Callable[[], None] | None) -> None:
        while True:
            try:
                task()
            except Exception:
                log.exception("a socket worker task failed")
            task = None
            with self._lock:
                self._idle += 1
            while task is None:
                try:
                    task = self._tasks.get(timeout=self.IDLE_SECONDS)
                except queue.Empty:
                    with self._lock:  # a submit puts under this lock: an empty queue here strands nothing
                        if self._tasks.empty():
                            if self._idle:
                                self._idle -= 1
                            return


class _Conn:
    """The loop's side of one client connection."""

    __slots__ = ("server", "sock", "conn", "buf", "discarding", "out", "sent", "answers", "deferred", "busy", "eof",
                 "closed", "broken", "interest", "last")

    def __init__(self, server: "_Server", sock: socket.socket):
        self.server = server
        self.sock = sock
        self.conn = Connection(server.identity, sock)
        self.buf = bytearray()  # what came in and is not yet a request
        self.discarding = False  # inside an over-long line, skipping to its end
        self.out = bytearray()  # answers not yet written
        self.sent = 0  # how much of out is written
        self.answers: list[dict] = []  # answers of this turn, written once its batch has committed
        self.deferred: dict | None = None  # the request to hand to a worker once this turn's answers are out
        self.busy = False  # a worker has this connection's request
        self.eof = False  # the client will send no more
        self.closed = False
        self.broken = False  # writing failed: the client has gone
        self.interest = 0  # the events registered with the selector
        self.last = time.monotonic()  # last activity, for broker.idleTimeoutSeconds


class _Server:
    """One listening socket's identity, handler and limits, served by the loop."""

    def __init__(self, sock: socket.socket, identity: Identity, handler: Handler, max_line: Callable[[], int],
                 on_close: Callable[[Connection], None] | None, limits: Callable[[], "Limits"] | None,
                 batch: Callable[[], ContextManager] | None, inline: Callable[[Identity, dict], bool] | None):
        self.sock = sock
        self.identity = identity
        self.handler = handler
        self.max_line = max_line
        self.on_close = on_close
        self.limits = limits or (lambda: Limits())
        self.batch = batch
        self.inline = inline
        self.conns: set[_Conn] = set()
        self.paused_until = 0.0  # accept() ran out of descriptors: try again then

    def decode(self, line: bytes) -> tuple[dict | None, dict | None]:
        """The request of one line, or the error answer that says what is wrong with it."""
        try:
            text = line.decode("utf-8")
            request = loads_strict(text)
            check_text(text, request)
        except UnicodeDecodeError:
            return None, error_response("bad_request", "request is not valid UTF-8")
        except ValueError as e:
            return None, error_response("bad_request", f"request is not valid JSON: {e}")
        except RecursionError:
            return None, error_response("bad_request", "request is nested too deeply")
        if not isinstance(request, dict):
            return None, error_response("bad_request", "request must be a JSON object with an \"op\"")
        return request, None

    def call(self, c: _Conn, request: dict) -> dict:
        """Run one request as this socket's identity, in this thread, with its connection current."""
        _current.conn, _current.sock = c.conn, c.sock
        try:
            return self.handler(self.identity, request)
        except HiveError as e:
            return e.to_wire()
        except Exception as e:  # a bug must not take the socket down; say so and log it
            log.exception("internal error handling %r for %s", request.get("op"), self.identity.name)
            return error_response("internal", f"internal error: {type(e).__name__}: {e}")
        finally:
            _current.conn = _current.sock = None


def _too_large(limit: int) -> dict:
    return error_response("too_large", f"request line exceeds {limit} bytes (maxMessageBytes escaped, plus envelope)")


# How long the loop looks for the next request without sleeping after it answered. A client's next request usually
# comes within this, and taking it then saves the wake-up of the loop's thread. It is long enough for the next tool
# call through `hyperhive mcp` (a pipe round trip to Claude Code and back). On a 2-core VM, sequential sends from
# one client went from about 4,000/s to about 6,000/s, and MCP send calls from about 2,500/s to 3,600–4,800/s. It
# costs at most this much CPU after each burst of requests (about 4 % of a core at 100 requests a second that come
# one by one).
_SPIN_SECONDS = 0.0004


class _Loop:
    """The one thread that serves every socket of the process (``selectors``: epoll on Linux).

    Each turn it accepts, reads what came, answers every complete line in order, and writes the answers. Requests
    whose op runs inline (``send``) are handled right here, inside one batch per turn (``SocketServer(batch=...)``:
    the store's group transaction), and answered only once that batch has committed: sends from many connections
    share one commit, and each is answered only when durable. Any other request goes to a worker; its connection
    reads nothing more until the answer is back, so answers keep the order of requests.
    """

    SWEEP_SECONDS = 1.0  # how often idle connections are looked for

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._posted: collections.deque = collections.deque()
        self._again: list[_Conn] = []  # connections a worker has answered: go on with what they sent since
        self.workers = _Workers()
        self.servers: set[_Server] = set()
        self._reading = 0  # connections waiting for a request (registered for reading)
        self._spin_until = 0.0  # look for events without sleeping until then (see _run)
        self.thread = threading.Thread(target=self._run, name="sockets", daemon=True)
        self.thread.start()

    # --- from other threads --------------------------------------------------------------------------------

    def post(self, fn: Callable[[], None]) -> None:
        self._posted.append(fn)
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:  # the pipe is full: the loop is awake anyway
            pass

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the loop and return what it returns (the selector is the loop's alone)."""
        if threading.current_thread() is self.thread:
            return fn()
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run():
            try:
                future.set_result(fn())
            except BaseException as e:
                future.set_exception(e)

        self.post(run)
        return future.result()

    # --- the loop --------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic() + self.SWEEP_SECONDS
        while True:
            now = time.monotonic()
            try:
                # Right after answering, look without sleeping for a while: a client's next request usually comes
                # within that, and is then taken without the cost of waking this thread.
                events = self.sel.select(0 if now < self._spin_until else max(0.0, next_sweep - now))
            except InterruptedError:
                continue
            ready: list[_Conn] = []
            for key, mask in events:
                data = key.data
                if data is None:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                elif type(data) is _Server:
                    self._accept(data)
                else:
                    ready.append(self._on_event(data, mask))
            while self._posted:
                try:
                    self._posted.popleft()()
                except Exception:
                    log.exception("a socket loop task failed")
            if self._again:
                ready += self._again
                self._again = []
            if ready:
                try:
                    self._answer(ready)
                except Exception:  # the loop must outlive any bug
                    log.exception("the socket loop failed to answer a turn")
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + self.SWEEP_SECONDS

    def _on_event(self, c: _Conn, mask: int) -> _Conn:
        if mask & selectors.EVENT_WRITE:
            self._flush(c)
        if mask & selectors.EVENT_READ:
            self._read(c)
        return c

    def _poll_connections(self) -> list[_Conn]:
        """The connections that have something now (no wait); listeners and the wake pipe stay for the loop."""
        return [self._on_event(key.data, mask) for key, mask in self.sel.select(0) if type(key.data) is _Conn]

    def _accept(self, server: _Server) -> None:
        if time.monotonic() < server.paused_until:
            return
        for _ in range(64):
            try:
                sock, _ = server.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors: leave the rest in the backlog for a moment
                log.warning("cannot accept a connection to the socket of %s: %s", server.identity.name,
                            e.strerror or e)
                server.paused_until = time.monotonic() + 0.5
                self._interest_listener(server, 0)
                return
            cap = server.limits().max_connections
            if cap is not None and len(server.conns) >= cap:
                log.warning("refused a connection to the socket of %s: it already has %d "
                            "(broker.maxConnectionsPerAgent)", server.identity.name, cap)
                try:
                    sock.setblocking(False)
                    sock.send(dumps(error_response(
                        "conflict", f"too many connections on this socket ({cap}, broker.maxConnectionsPerAgent); "
                        "close some and retry")) + b"\n")
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            c = _Conn(server, sock)
            server.conns.add(c)
            self._interest(c)

    def _interest_listener(self, server: _Server, events: int) -> None:
        try:
            if events:
                self.sel.register(server.sock, events, server)
            else:
                self.sel.unregister(server.sock)
        except (KeyError, ValueError):
            pass

    def _read(self, c: _Conn) -> None:
        try:
            chunk = c.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            c.eof = True
            return
        c.last = time.monotonic()
        c.buf += chunk

    def _answer(self, ready: list[_Conn]) -> None:
        """Answer what each ready connection sent: inline requests inside one batch, committed before any of
        their answers is written."""
        turn: dict[_Conn, None] = {}  # in order, each once
        batches: dict = {}  # batch factory -> (its open context, the answers given inside it)
        failure: BaseException | None = None

        def take(conns: list[_Conn]) -> None:
            for c in conns:
                if c not in turn and not c.closed:
                    turn[c] = None
                    if not c.busy:
                        self._advance(c, batches)

        try:
            take(ready)
            if batches and self._reading > len(turn):  # others might have sent meanwhile: one commit for them too
                take(self._poll_connections())
        except Exception as e:  # a bug: what was written in this turn is rolled back and said to have failed
            log.exception("the socket loop failed in the middle of a turn")
            failure = e
        for factory, (context, answers) in batches.items():
            try:
                if failure is None:
                    context.__exit__(None, None, None)  # commit
                else:
                    context.__exit__(type(failure), failure, failure.__traceback__)  # roll back
                    raise failure
            except Exception as e:
                self._batch_failed(answers, e)
        if turn:
            self._spin_until = time.monotonic() + _SPIN_SECONDS
        for c in turn:
            if c.answers:
                for answer in c.answers:
                    c.out += dumps(answer) + b"\n"
                c.answers.clear()
                self._flush(c)
            if c.deferred is not None and not c.closed:
                request, c.deferred = c.deferred, None
                self._dispatch(c, request)
            self._settle(c)

    def _advance(self, c: _Conn, batches: dict) -> None:
        server = c.server
        limit = server.max_line()
        while not c.busy:
            newline = c.buf.find(b"\n")
            if newline < 0:
                if len(c.buf) > limit:  # no end of line within the limit: skip the rest of it, then answer
                    c.discarding = True
                    c.buf.clear()
                return
            line = bytes(c.buf[:newline + 1])
            del c.buf[:newline + 1]
            if c.discarding:
                c.discarding = False
                c.answers.append(_too_large(limit))
                continue
            if len(line) > limit + 1:
                c.answers.append(_too_large(limit))
                continue
            request, error = server.decode(line)
            if error is not None:
                c.answers.append(error)
            elif server.inline is not None and server.inline(server.identity, request):
                batch = server.batch
                if batch is not None and batch not in batches:
                    context = batch()
                    context.__enter__()
                    batches[batch] = (context, [])
                answer = server.call(c, request)
                c.answers.append(answer)
                if batch is not None:
                    batches[batch][1].append(answer)
            else:
                c.deferred = request
                c.busy = True

    @staticmethod
    def _batch_failed(answers: list[dict], error: BaseException) -> None:
        """The batch did not commit: nothing its requests wrote is stored, so none of them may say ok."""
        log.error("a batch of socket requests was not committed: %s", error)
        for answer in answers:
            if answer.get("ok"):
                answer.clear()
                answer.update(error_response("internal", f"not stored: the transaction failed ({error}); "
                                                         "send again"))

    def _dispatch(self, c: _Conn, request: dict) -> None:
        def work():
            data = dumps(c.server.call(c, request)) + b"\n"
            # The worker writes the answer itself when nothing is waiting to be written before it (nothing is
            # added to a busy connection's out meanwhile), so a woken recv's answer does not wait for the loop.
            written = 0
            if not c.out and not c.closed:
                try:
                    written = c.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    written = -1
            self.post(lambda: self._finished(c, data[written:] if written >= 0 else None))

        self.workers.submit(work)

    def _finished(self, c: _Conn, rest: bytes | None) -> None:
        """A worker answered (``rest``: what of the answer it could not write; None: the client has gone)."""
        c.busy = False
        c.last = time.monotonic()
        if c.closed:
            self._release(c)  # closed while its request ran: now nothing uses its descriptor
            return
        if rest is None:
            c.broken = True
        else:
            c.out += rest
        self._again.append(c)

    def _flush(self, c: _Conn) -> None:
        """Write what the socket takes now; the rest waits for it to be writable (from an offset: a large answer
        is not copied again after every partial write)."""
        while c.sent < len(c.out):
            try:
                with memoryview(c.out) as view, view[c.sent:] as rest:
                    c.sent += c.sock.send(rest)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                c.broken = True
                break
        c.out.clear()
        c.sent = 0

    def _settle(self, c: _Conn) -> None:
        """Close a connection that is done, or register what it waits for."""
        if c.closed:
            return
        if c.broken or (c.eof and not c.busy and not c.out):
            self._close(c)
        else:
            self._interest(c)

    def _interest(self, c: _Conn) -> None:
        if c.closed:
            want = 0
        elif c.out:
            want = selectors.EVENT_WRITE  # nothing more is read until the answers are taken
        elif c.busy or c.eof:
            want = 0
        else:
            want = selectors.EVENT_READ
        if want == c.interest:
            return
        self._reading += (want == selectors.EVENT_READ) - (c.interest == selectors.EVENT_READ)
        if c.interest == 0:
            self.sel.register(c.sock, want, c)
        elif want == 0:
            self.sel.unregister(c.sock)
        else:
            self.sel.modify(c.sock, want, c)
        c.interest = want

    def _close(self, c: _Conn) -> None:
        if c.closed:
            return
        c.closed = c.conn.closed = True
        if c.interest:
            self._reading -= c.interest == selectors.EVENT_READ
            self.sel.unregister(c.sock)
            c.interest = 0
        if c.busy:  # its worker still holds the descriptor (a parked recv polls it): hang up, close later
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._release(c)

    def _release(self, c: _Conn) -> None:
        c.sock.close()
        server = c.server
        server.conns.discard(c)
        if server.on_close is not None:
            def cleanup():
                try:
                    server.on_close(c.conn)
                except Exception:
                    log.exception("cleaning up a closed connection of %s failed", server.identity.name)

            if c.conn.leases:
                self.workers.submit(cleanup)  # a write: not on the loop
            else:
                cleanup()

    def _sweep(self) -> None:
        """Close connections idle longer than broker.idleTimeoutSeconds (never one that holds a lease: its
        harness is in the middle of a turn) and take accepting up again after running out of descriptors."""
        now = time.monotonic()
        for server in list(self.servers):
            if server.paused_until and now >= server.paused_until:
                server.paused_until = 0.0
                self._interest_listener(server, selectors.EVENT_READ)
            idle = server.limits().idle_timeout_seconds
            if not idle:
                continue
            for c in list(server.conns):
                if not c.busy and not c.closed and not c.out and now - c.last > idle and not c.conn.leases:
                    log.info("closing a connection of %s idle for %gs", server.identity.name, idle)
                    self._close(c)

    # --- servers ---------------------------------------------------------------------------------------

    def add(self, server: _Server) -> None:
        self.servers.add(server)
        self._interest_listener(server, selectors.EVENT_READ)

    def remove(self, server: _Server) -> None:
        self.servers.discard(server)
        self._interest_listener(server, 0)
        server.sock.close()
        for c in list(server.conns):
            self._close(c)


_loop_instance: _Loop | None = None
_loop_lock = threading.Lock()


def _loop() -> _Loop:
    global _loop_instance
    with _loop_lock:
        if _loop_instance is None:
            _loop_instance = _Loop()
        return _loop_instance


def _forget_loop() -> None:
    """In a forked child the loop's thread is gone: its first socket starts a loop of its own."""
    global _loop_instance, _loop_lock
    _loop_instance = None
    _loop_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_loop)


_ENCODER = json.JSONEncoder(ensure_ascii=False)  # made once: json.dumps with options makes one per call


def dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


@dataclass(frozen=True)
class Limits:
    """Per-socket limits against a client that would starve the others (from ``broker.*``)."""

    max_connections: int | None = None
    idle_timeout_seconds: float | None = None


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_not_json)  # made once, as _ENCODER


def loads_strict(text: str) -> Any:
    """JSON as RFC 8259 has it: Python's NaN, Infinity and overflowing numbers such as 1e999 are refused (as
    wait or lease times they would park a request or hold a message forever), and so are integers beyond 64 bits
    (no id or count is larger, and SQLite holds no larger).

    Parsed by the C decoder alone (a hook per number costs more than the parse), then the numbers are checked."""
    value = _DECODER.decode(text)
    _check_numbers(value)
    return value


def check_text(text: str | bytes, value: Any) -> None:
    """Refuse a string of ``value`` (parsed from the JSON ``text``) that holds a lone surrogate (``"\\ud800"``
    unpaired): valid JSON, but no Unicode text, and it would fail later, when stored or written as UTF-8.

    Only an escape brings one (UTF-8 cannot encode it), so only a text with ``\\ud``/``\\uD`` is walked: the common
    request (our clients escape only control characters) costs one scan of its line in C for ``\\u``, no walk."""
    if isinstance(text, bytes):  # (an HTTP body: JSON in UTF-16 or UTF-32 has its escapes in other bytes)
        if b"\\u" in text and (b"\\ud" in text or b"\\uD" in text) \
                or not json.detect_encoding(text).startswith("utf-8"):
            _check_surrogates(value)
    elif "\\u" in text and ("\\ud" in text or "\\uD" in text):
        _check_surrogates(value)


def _check_surrogates(value: Any) -> None:
    kind = type(value)
    if kind is str:
        try:
            value.encode()
        except UnicodeEncodeError as e:
            raise ValueError(f"a string holds a lone surrogate (\\u{ord(value[e.start]):04x} without its pair), "
                             "which is not Unicode text") from None
    elif kind is dict:
        for key, item in value.items():
            _check_surrogates(key)
            _check_surrogates(item)
    elif kind is list:
        for item in value:
            _check_surrogates(item)


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
    """One listening socket bound to one identity, served by the process's socket loop (``_Loop``).

    The socket is bound in a fresh private directory (mode 0700, made by ``mkdtemp`` in the run directory), given
    its mode (and, when the service runs as root, the owner of the directory it is meant for) there, where nobody
    else can reach or swap it, and only then renamed into place. So it is never open wider than ``mode``, and no
    ``chmod`` or ``chown`` can be made to follow a link planted at its path. ``rename`` replaces a stale socket or
    a link planted at the path (it never follows one); a directory there makes this one socket fail
    (``SocketError``), not the service.

    ``inline(identity, request)`` says which requests run on the loop itself (quick ones that never block), all
    those of one turn of the loop inside one ``batch()`` (a context manager: the store's group transaction); every
    other request runs on a worker thread.
    """

    def __init__(self, path: Path, identity: Identity, handler: Handler, max_line: Callable[[], int],
                 mode: int = 0o600, on_close: Callable[[Connection], None] | None = None,
                 limits: Callable[[], Limits] | None = None, staging: Path | None = None,
                 batch: Callable[[], ContextManager] | None = None,
                 inline: Callable[[Identity, dict], bool] | None = None):
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
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)  # never exist with wider permissions than asked, even briefly
            try:
                sock.bind(str(staged))
            finally:
                os.umask(old_umask)
            os.chmod(staged, mode)  # inside our private directory: nothing to follow
            if os.geteuid() == 0 and owner != 0:
                os.chown(staged, owner, -1)  # the container's mapped root reaches its own socket
            sock.listen(128)
            sock.setblocking(False)
            try:
                os.rename(staged, self.path)
            except OSError as e:
                raise SocketError(f"cannot put the socket at {self.path}: {e.strerror or e} "
                                  "(remove what is there)") from None
            self._inode = os.lstat(self.path).st_ino
        except BaseException:
            sock.close()
            raise
        finally:
            try:
                os.unlink(staged)
            except FileNotFoundError:
                pass
            os.rmdir(tmp)
        self._server = _Server(sock, identity, handler, max_line, on_close, limits, batch, inline)
        self._loop = _loop()

    def start(self) -> "SocketServer":
        self._loop.call(lambda: self._loop.add(self._server))
        return self

    def active_connections(self) -> int:
        return len(self._server.conns)

    def close(self) -> None:
        """Stop accepting, hang up every connection of this socket, and remove the socket file."""
        self._loop.call(lambda: self._loop.remove(self._server))
        try:  # only our own socket: what the agent put there since is its business
            if os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def _not_text(char: str) -> str:
    code = ord(char)
    if 0xdc80 <= code <= 0xdcff:  # how surrogateescape keeps an undecodable byte
        return f"the byte 0x{code - 0xdc00:02x}"
    return f"the lone surrogate \\u{code:04x}"


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
        text = json.dumps(request, ensure_ascii=False)
        try:
            data = text.encode()
        except UnicodeEncodeError as e:  # an argv that is not UTF-8 (Python keeps its bytes as lone surrogates)
            raise HiveError("bad_request", f"cannot send text that is not valid UTF-8 ({_not_text(text[e.start])}): "
                                           "give every argument as UTF-8") from None
        self.sock.sendall(data + b"\n")
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
