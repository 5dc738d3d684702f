"""``hyperhive mcp``: the hive's tools for Claude Code, as an MCP server on stdio.

The protocol part is small and kept here: JSON-RPC 2.0, one message per line (the MCP stdio transport), and both
protocol eras of the specification (modelcontextprotocol/modelcontextprotocol, ``schema/<revision>/schema.ts``):

- legacy (2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25): the ``initialize`` handshake negotiates one version for
  the process; then ``ping``, ``tools/list``, ``tools/call``; a process that agreed on 2025-03-26 (the one
  revision with JSON-RPC batches) answers a batch with one array of responses, the others refuse one;
- modern (2026-07-28, "Versioning and Compatibility"): no handshake; every request names its protocol version and
  client capabilities in ``_meta`` and is served on its own; ``server/discover`` says what the server speaks;
  results carry ``resultType`` and the server's identity in ``_meta``. A dual-era server serves both on one
  process, chosen per request: modern ``_meta`` means modern, anything else follows the handshake.

Each tool call is forwarded to the broker over the agent's Unix socket, which is the agent's identity; the broker's
answer comes back as the tool result, and a refusal as a result with ``isError: true`` carrying the broker's
sentence, so the model can act on it. Ordinary calls share one kept broker connection (reopened when the broker
restarts); a call that must not wait for another (a parked ``recv``) takes a second one from the same small pool.

Delivery through ``recv`` is at least once: what the broker leased is acknowledged only after the result carrying
it was written to stdout; a cancelled call (``notifications/cancelled``) cuts its broker connection at once, which
ends the broker's wait, and whatever it had leased is given back.

Tool calls run on their own threads, so a parked ``recv`` never blocks a ``ping`` or a cancellation.
"""

from __future__ import annotations

import functools
import json
import logging
import select
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable

from .transport import Client, loads_strict

log = logging.getLogger(__name__)

SERVER_NAME = "hyperhive"

# Versions reached through the initialize handshake, oldest first (schema/2024-11-05 .. schema/2025-11-25).
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
# Versions served statelessly, version and capabilities in each request's _meta (schema/2026-07-28).
MODERN_VERSIONS = ("2026-07-28",)
KNOWN_VERSIONS = HANDSHAKE_VERSIONS + MODERN_VERSIONS
LATEST_HANDSHAKE_VERSION = HANDSHAKE_VERSIONS[-1]
# Kept for callers of the first release: the newest version an initialize can get.
LATEST_PROTOCOL_VERSION = LATEST_HANDSHAKE_VERSION
PROTOCOL_VERSIONS = tuple(reversed(HANDSHAKE_VERSIONS))

META_VERSION = "io.modelcontextprotocol/protocolVersion"  # 2026-07-28 RequestMetaObject
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"  # 2026-07-28 ResultMetaObject

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNSUPPORTED_PROTOCOL_VERSION = -32022  # 2026-07-28 schema.ts UNSUPPORTED_PROTOCOL_VERSION
# The one revision with JSON-RPC batches (2025-03-26 basic/index: implementations "MUST support receiving" them;
# 2025-06-18 removed them again).
BATCH_VERSIONS = ("2025-03-26",)


def since(version: str, first: str) -> bool:
    """Whether protocol ``version`` has what revision ``first`` introduced (versions are a set, not dates)."""
    return KNOWN_VERSIONS.index(version) >= KNOWN_VERSIONS.index(first)


# Claude Code (like the MCP TypeScript SDK it builds on) gives up on a tool call after about a minute without an
# answer; one recv call therefore parks at most this long, and says so in its description.
RECV_CAP_SECONDS = 50
KEEPALIVE_SECONDS = 10
BROKER_TIMEOUT_SECONDS = RECV_CAP_SECONDS + 30
# A backstop only: a lease belongs to the broker connection that took it and ends when that connection closes. Held
# between the broker's answer and our ack (or give-back); should this process hang in between, they come again.
RECV_LEASE_SECONDS = 30
IDLE_CONNECTIONS = 4  # broker connections kept open for reuse (ordinarily one is enough)
IDLE_REUSE_SECONDS = 300  # a connection idle longer is replaced rather than reused
MAX_CALLS_IN_FLIGHT = 64  # tool calls served at once (parked recvs included); more wait for a free worker


class ToolFailed(Exception):
    """Raised by a tool handler: reported to the model as a result with ``isError: true``."""


class Cancelled(Exception):
    """The client cancelled the call: nothing is written for it."""


# --- the broker connection --------------------------------------------------------------------------------

class BrokerGone(ToolFailed):
    """The broker could not be reached, or the connection broke; ``sent`` says whether the request went out."""

    def __init__(self, message: str, sent: bool):
        super().__init__(message)
        self.sent = sent


def _idle_socket_ok(sock: socket.socket) -> bool:
    """An idle connection has nothing to read; readable, hung up or in error means the broker closed it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


class Connection:
    """One broker connection from the pool, held by one caller at a time."""

    def __init__(self, pool: "BrokerPool", client: Client):
        self.pool = pool
        self.client = client
        self.broken = False

    def call(self, op: str, timeout: float = BROKER_TIMEOUT_SECONDS, **args: Any) -> Any:
        """One broker op; a refusal raises ``ToolFailed`` with the broker's sentence, a broken link ``BrokerGone``."""
        sock = self.client.sock
        request = {"op": op, **args}
        try:
            line = json.dumps(request, ensure_ascii=False).encode() + b"\n"
        except UnicodeEncodeError:  # a lone surrogate (valid JSON, no UTF-8): escaped, the broker refuses it naming it
            line = json.dumps(request).encode() + b"\n"
        try:
            sock.settimeout(timeout)
            sock.sendall(line)
        except OSError as e:
            self._break()
            raise BrokerGone(f"the hive at {self.pool.path} closed the connection ({e})", sent=False) from None
        try:
            raw = self.client.rfile.readline()
            if not raw:
                raise ConnectionError("the connection was closed")
            response = json.loads(raw)
        except (OSError, ValueError) as e:
            self._break()
            what = "did not answer in time" if isinstance(e, TimeoutError) else f"broke off ({e})"
            raise BrokerGone(f"the hive at {self.pool.path} {what} during {op}", sent=True) from None
        if not isinstance(response, dict) or not response.get("ok"):
            err = (response.get("error") if isinstance(response, dict) else None) or {}
            raise ToolFailed(f"{err.get('code', 'internal')}: {err.get('message', 'unknown error')}")
        return response.get("result")

    def interrupt(self) -> None:
        """From another thread: cut the connection, so that a parked request ends now (the broker sees it go)."""
        self.broken = True
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _break(self) -> None:
        self.broken = True

    def release(self) -> None:
        """Back to the pool, or closed when it broke (closing gives back whatever it still leases)."""
        self.pool._give(self)

    def close(self) -> None:
        self.broken = True
        self.pool._give(self)


class BrokerPool:
    """Broker connections of one ``hyperhive mcp`` process: reused, and reopened when the broker restarts."""

    def __init__(self, path: str):
        self.path = path
        self._idle: list[tuple[Client, float]] = []  # with the time each was last given back
        self._lock = threading.Lock()

    def take(self) -> Connection:
        now = time.monotonic()
        with self._lock:
            while self._idle:
                client, since_ = self._idle.pop()
                # Not one the broker closed (a restart), nor one idle so long that the broker's idle timeout
                # (broker.idleTimeoutSeconds, 900 s by default) could close it under the request about to go out.
                if now - since_ < IDLE_REUSE_SECONDS and _idle_socket_ok(client.sock):
                    return Connection(self, client)
                client.close()  # open a fresh one below
        try:
            client = Client(self.path, timeout=BROKER_TIMEOUT_SECONDS)
        except (ConnectionError, OSError) as e:
            raise BrokerGone(f"the hive is not reachable at {self.path}: {e}", sent=False) from None
        return Connection(self, client)

    def _give(self, conn: Connection) -> None:
        if not conn.broken:
            with self._lock:
                if len(self._idle) < IDLE_CONNECTIONS:
                    self._idle.append((conn.client, time.monotonic()))
                    return
        try:
            conn.client.close()
        except OSError:
            pass

    def call(self, op: str, timeout: float = BROKER_TIMEOUT_SECONDS, retry: bool = False, **args: Any) -> Any:
        """One op on a pooled connection. A request that never went out is tried once more on a fresh one, and so
        is one that went out when ``retry`` says the op may safely run twice."""
        for attempt in (1, 2):
            conn = self.take()
            try:
                result = conn.call(op, timeout=timeout, **args)
            except BrokerGone as e:
                conn.release()
                if attempt == 2 or (e.sent and not retry):
                    raise
                continue
            except BaseException:
                conn.release()
                raise
            conn.release()
            return result
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client, _ in idle:
            client.close()


# --- tools -------------------------------------------------------------------------------------------------

@dataclass
class ToolContext:
    """What a tool handler gets: the broker, who it speaks for, and a way to report progress."""

    socket_path: str
    name: str
    role: str
    pool: BrokerPool | None = field(default=None, repr=False)
    _progress: Callable[[str], None] = field(default=lambda message: None, repr=False)
    _cancelled: bool = field(default=False, repr=False)
    _interruptible: set = field(default_factory=set, repr=False)
    _settle: list = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    batch: "_Batch | None" = field(default=None, repr=False)  # the JSON-RPC batch the call came in, if any

    def __post_init__(self):
        if self.pool is None:
            self.pool = BrokerPool(self.socket_path)

    def call(self, op: str, timeout: float = BROKER_TIMEOUT_SECONDS, **args: Any) -> Any:
        """One broker op; a refusal raises ``ToolFailed`` with the broker's message."""
        return self.pool.call(op, timeout=timeout, retry=op in IDEMPOTENT_OPS, **args)

    def connection(self) -> Connection:
        """A broker connection of this call's own (for ops that must share one, such as recv and its ack)."""
        return self.pool.take()

    def interruptible(self, conn: Connection, op: str, timeout: float, **args: Any) -> Any:
        """``conn.call`` that a cancellation of this tool call cuts short (raising ``Cancelled``)."""
        with self._lock:
            if self._cancelled:
                raise Cancelled()
            self._interruptible.add(conn)
        try:
            return conn.call(op, timeout=timeout, **args)
        except BrokerGone:
            if self.cancelled:
                raise Cancelled() from None
            raise
        finally:
            with self._lock:
                self._interruptible.discard(conn)

    def on_settled(self, callback: Callable[[bool], None]) -> None:
        """``callback(written)`` runs once the result was written to the client (True) or will never be."""
        self._settle.append(callback)

    def settle(self, written: bool) -> None:
        callbacks, self._settle = self._settle, []
        for callback in callbacks:
            try:
                callback(written)
            except Exception:
                log.exception("settling a tool call failed")

    def progress(self, message: str) -> None:
        self._progress(message)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        # A plain broker call in flight is left to finish (cutting a send could leave the model unsure whether it
        # was stored); its answer is dropped. A parked recv is cut at once: its broker wait ends with it.
        with self._lock:
            self._cancelled = True
            waiting = list(self._interruptible)
        for conn in waiting:
            conn.interrupt()


# Ops that can run twice without a second effect: retried once after a broken connection.
IDEMPOTENT_OPS = frozenset({"whoami", "status", "list_agents", "ack", "lease"})


@dataclass(frozen=True)
class Tool:
    """One MCP tool. ``handler(ctx, arguments)`` returns a JSON-able result or raises ``ToolFailed``.

    Plugins add tools through the ``harness_tools(role)`` hook by returning a list of these. ``annotations`` are
    the MCP ToolAnnotations hints (``readOnlyHint`` ...); ``output_schema`` describes the dict the handler returns.
    """

    name: str
    description: str
    input_schema: dict
    handler: Callable[[ToolContext, dict], Any]
    roles: frozenset = frozenset({"agent", "manager"})
    title: str | None = None
    annotations: dict | None = None
    output_schema: dict | None = None
    # True (or a function of the arguments saying so) when a call never parks: it is then run on the thread that
    # reads stdin, which spares a thread hand-off per call; anything that may wait runs on a worker.
    quick: bool | Callable[[dict], bool] = False

    def is_quick(self, arguments: dict) -> bool:
        return self.quick(arguments) if callable(self.quick) else bool(self.quick)

    def to_mcp(self, version: str = LATEST_HANDSHAKE_VERSION) -> dict:
        """The Tool object of protocol ``version``: annotations since 2025-03-26, title and outputSchema since
        2025-06-18 (each revision's schema.ts, ``interface Tool``)."""
        out: dict[str, Any] = {"name": self.name}
        if self.title and since(version, "2025-06-18"):
            out["title"] = self.title
        out["description"] = self.description
        out["inputSchema"] = self.input_schema
        if self.output_schema and since(version, "2025-06-18"):
            out["outputSchema"] = self.output_schema
        if since(version, "2025-03-26"):
            annotations = {**({"title": self.title} if self.title else {}), **(self.annotations or {})}
            if annotations:
                out["annotations"] = annotations
        return out


def schema(properties: dict | None = None, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties or {}, "required": list(required),
            "additionalProperties": False}


def _kind_of(value: Any, kind: str) -> bool:
    """JSON Schema 2020-12 type membership (Validation, 6.1.1): an integer is a number with a zero fractional part
    (so 5.0 is one), and a boolean is neither."""
    if isinstance(value, bool):
        return kind == "boolean"
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float))
    return isinstance(value, {"string": str, "array": list, "object": dict, "null": type(None)}.get(kind, ()))


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return f"the number {value:g}"
    return {str: "a string", int: "an integer", list: "an array", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)


def check_arguments(tool: Tool, arguments: dict) -> dict:
    """Check ``arguments`` against the tool's (flat) input schema and return them with integers as ``int``; a
    sentence naming the problem otherwise."""
    spec = tool.input_schema
    props = spec.get("properties", {})
    takes = ", ".join(props) or "nothing"
    for name in spec.get("required", ()):
        if name not in arguments:
            raise ToolFailed(f'missing argument "{name}" ({tool.name} takes: {takes})')
    out = dict(arguments)
    for name, value in arguments.items():
        if name not in props:
            if spec.get("additionalProperties", True) is False:
                raise ToolFailed(f'unknown argument "{name}" ({tool.name} takes: {takes})')
            continue
        prop = props[name]
        kind = prop.get("type")
        if kind is None:
            continue
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_kind_of(value, k) for k in kinds):
            raise ToolFailed(f'argument "{name}" must be {" or ".join(kinds)}, not {_describe(value)}')
        if value is None:
            continue
        if "integer" in kinds and isinstance(value, float):
            out[name] = value = int(value)
        if isinstance(value, list) and isinstance(prop.get("items"), dict) and "type" in prop["items"]:
            item = prop["items"]["type"]
            if not all(_kind_of(v, item) for v in value):
                raise ToolFailed(f'argument "{name}" must be a list of {item}s')
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in prop and value < prop["minimum"]:
                raise ToolFailed(f'argument "{name}" must be at least {prop["minimum"]}, got {value}')
            if "maximum" in prop and value > prop["maximum"]:
                raise ToolFailed(f'argument "{name}" must be at most {prop["maximum"]}, got {value}')
    return out


# --- the hive's tools --------------------------------------------------------------------------------------

def _send(ctx, args):
    extra = {"in_reply_to": args["in_reply_to"]} if args.get("in_reply_to") is not None else {}
    result = ctx.call("send", to=args["to"], body=args["body"], **extra)
    return {**result, "note": f"stored; {args['to']} will get it"}


def _recv(ctx, args):
    wait = min(float(args.get("wait_seconds") or 0), RECV_CAP_SECONDS)
    limit = int(args.get("max") or 10)
    if wait > 0:
        ctx.progress(f"waiting up to {wait:g}s for a message")
    conn = ctx.connection()  # its own: a parked recv must not hold up other calls, and a cancel cuts only it
    try:
        result = ctx.interruptible(conn, "recv", timeout=wait + 30, wait_seconds=wait, max=limit,
                                   lease_seconds=RECV_LEASE_SECONDS)
    except BaseException:
        conn.close()  # whatever it leased goes back with the connection
        raise
    ids = [m["id"] for m in result.get("messages", [])]
    if not ids:
        conn.release()
        return result

    def settle(written: bool) -> None:
        # Acknowledged only once the model has them in a written result; otherwise given back at once.
        try:
            if written:
                conn.call("ack", timeout=30, ids=ids)
            else:
                conn.call("lease", timeout=30, ids=ids, seconds=0)
        except ToolFailed as e:
            log.warning("recv: could not %s messages %s: %s", "ack" if written else "give back", ids, e)
            conn.close()  # closing the connection that leased them gives them back
            return
        conn.release()

    ctx.on_settled(settle)
    return result


def _ask(ctx, args):
    result = ctx.call("ask_operator", **{k: v for k, v in args.items() if v is not None})
    return {**result, "note": "the operator's answer will come to you as an event (use recv)"}


def _forward(op: str, *keys: str):
    def handler(ctx, args):
        return ctx.call(op, **{k: args[k] for k in keys if args.get(k) is not None})
    return handler


def _object(properties: dict, required: tuple[str, ...] = ()) -> dict:
    """An output schema: the fields named, others allowed (the broker may add fields)."""
    return {"type": "object", "properties": properties, "required": list(required)}


NAME = {"type": "string", "description": "An agent's name."}
REASON = {"type": "string", "description": "Why: shown to the operator next to the diff."}
APPROVAL = _object({"approval_id": {"type": "integer"}}, ("approval_id",))
STATE = _object({"name": {"type": "string"}, "state": {"type": "string"}}, ("state",))
MESSAGE = _object({"id": {"type": "integer"}, "from": {"type": "string"}, "to": {"type": "string"},
                   "kind": {"type": "string", "enum": ["message", "event"]}, "body": {"type": "string"},
                   "sent_at": {"type": "string"}, "data": {"type": "object"},
                   "in_reply_to": {"type": "integer", "description": "The id of the message this one answers."}},
                  ("id", "from", "to", "kind", "body", "sent_at"))

READ_ONLY = {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False}
ADDS = {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False, "openWorldHint": False}
STOPS = {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True, "openWorldHint": False}
MANAGER = frozenset({"manager"})

BUILTIN_TOOLS: tuple[Tool, ...] = (
    Tool("send",
         "Send a message to another agent, the manager, or the operator (the human running the hive). The message "
         "is stored durably before this returns; the recipient reads it with recv. Your policy may restrict whom "
         "you can send to: a refusal names the recipients you may use.",
         schema({"to": {"type": "string", "description": 'Recipient: an agent name, the manager\'s name, or '
                                                         '"operator".'},
                 "body": {"type": "string", "minLength": 1, "description": "The message text."},
                 "in_reply_to": {"type": "integer", "description": "Optional: the id of the message from `to` "
                                                                  "that this answers (recv shows it); they see it."}},
                ("to", "body")),
         _send, title="Send a message", annotations=ADDS, quick=True,
         output_schema=_object({"id": {"type": "integer"}, "note": {"type": "string"}}, ("id",))),
    Tool("recv",
         "Read messages and events waiting for you, oldest first. Omit wait_seconds (or pass 0) to peek: it returns "
         "at once, possibly with nothing. A positive wait_seconds parks until a message arrives or the wait ends, "
         f"at most {RECV_CAP_SECONDS} seconds per call (call again to keep waiting). What this returns counts as "
         "read: it will not be delivered again. 'unread' says how many more are waiting.",
         schema({"wait_seconds": {"type": "number", "minimum": 0,
                                  "description": f"0 or omitted: peek. Positive: wait up to this many seconds "
                                                 f"(capped at {RECV_CAP_SECONDS})."},
                 "max": {"type": "integer", "minimum": 1, "maximum": 100,
                         "description": "At most this many messages (default 10)."}}),
         # Not read-only: what it returns is marked read.
         _recv, title="Read messages", annotations={**ADDS, "destructiveHint": True},
         quick=lambda args: not args.get("wait_seconds"),
         output_schema=_object({"messages": {"type": "array", "items": MESSAGE}, "unread": {"type": "integer"}},
                               ("messages", "unread"))),
    Tool("ask_operator",
         "Ask the operator (the human) a question. Returns at once with the question's id; the answer arrives "
         "later as an event in your inbox (recv). Give options to offer choices (the operator may still answer "
         "in free text); multi allows choosing several; ttl_seconds makes it expire unanswered.",
         schema({"question": {"type": "string"},
                 "options": {"type": "array", "items": {"type": "string"}},
                 "multi": {"type": "boolean"},
                 "ttl_seconds": {"type": "number", "minimum": 1}}, ("question",)),
         _ask, title="Ask the operator", annotations=ADDS, quick=True,
         output_schema=_object({"id": {"type": "integer"}, "note": {"type": "string"}}, ("id",))),
    Tool("list_agents", "List the manager and every agent of the hive with its state (running, stopped, ...).",
         schema(), _forward("list_agents"), title="List agents", annotations=READ_ONLY, quick=True,
         output_schema=_object({"agents": {"type": "array", "items": _object(
             {"name": {"type": "string"}, "state": {"type": "string"}}, ("name", "state"))}}, ("agents",))),
    Tool("request_spawn",
         "Ask the operator to approve a new agent NAME created from the default template. Returns the approval id "
         "at once; the outcome arrives as an event.",
         schema({"name": NAME}, ("name",)), _forward("request_spawn", "name"), MANAGER,
         title="Request a new agent", annotations=ADDS, output_schema=APPROVAL),
    Tool("request_spawn_draft",
         "Prepare a new agent in two steps: create its config repo (a flake with agent.nix, shown to you under "
         "config_path) and state dir without starting anything. Edit and commit in config_path, then call "
         "request_spawn_commit.",
         schema({"name": NAME}, ("name",)), _forward("request_spawn_draft", "name"), MANAGER,
         title="Draft a new agent", annotations=ADDS,
         output_schema=_object({"name": {"type": "string"}, "config_path": {"type": "string"},
                                "state_path": {"type": "string"}}, ("name", "config_path"))),
    Tool("request_spawn_commit",
         "Queue the operator's approval to spawn a drafted agent from COMMIT of its config repo. The operator sees "
         "the diff (and your reason); the outcome arrives as an event.",
         schema({"name": NAME, "commit": {"type": "string", "description": "A commit sha in the draft's repo."},
                 "reason": REASON}, ("name", "commit")),
         _forward("request_spawn_commit", "name", "commit", "reason"), MANAGER,
         title="Propose a drafted agent", annotations=ADDS, output_schema=APPROVAL),
    Tool("request_apply_commit",
         "Propose COMMIT of AGENT's config repo for deployment. Nothing is built until the operator approves; the "
         "outcome (deployed, failed with the build error, or denied with a note) arrives as an event.",
         schema({"agent": NAME, "commit": {"type": "string", "description": "A commit sha in the agent's repo."},
                 "reason": REASON}, ("agent", "commit")),
         _forward("request_apply_commit", "agent", "commit", "reason"), MANAGER,
         title="Propose a config change", annotations=ADDS, output_schema=APPROVAL),
    Tool("kill", "Stop agent NAME's container now (no approval needed; never yourself).",
         schema({"name": NAME}, ("name",)), _forward("kill", "name"), MANAGER,
         title="Stop an agent", annotations=STOPS, output_schema=STATE),
    Tool("start", "Start agent NAME's container (no approval needed).",
         schema({"name": NAME}, ("name",)), _forward("start", "name"), MANAGER,
         title="Start an agent", annotations={**STOPS, "destructiveHint": False}, output_schema=STATE),
    Tool("restart", "Restart agent NAME's container (no approval needed; never yourself).",
         schema({"name": NAME}, ("name",)), _forward("restart", "name"), MANAGER,
         title="Restart an agent", annotations={**STOPS, "idempotentHint": False}, output_schema=STATE),
    Tool("update", "Bring agent NAME's running container up to its deployed configuration (no approval needed).",
         schema({"name": NAME}, ("name",)), _forward("update", "name"), MANAGER,
         title="Update an agent", annotations=STOPS, output_schema=STATE),
)

INSTRUCTIONS = {
    "agent": "You are an agent of a hive; these tools are how you reach the others. recv without wait_seconds "
             "peeks at your inbox; with it, it waits for the next message (up to {cap} s a call). send stores a "
             "message for another agent, the manager or the operator (your policy may limit whom). ask_operator "
             "asks the human; the answer comes later as an event in your inbox.",
    "manager": "You are the hive's manager; these tools are how you reach the agents and the operator. recv "
               "without wait_seconds peeks at your inbox; with it, it waits (up to {cap} s a call). To change an "
               "agent, edit and commit in its config repo, then request_apply_commit (with a reason); to add one, "
               "request_spawn_draft, edit and commit the draft, then request_spawn_commit. Nothing is built until "
               "the operator approves; the outcome comes to you as an event. kill, start, restart and update act "
               "at once.",
}
GENERIC_INSTRUCTIONS = ("The hive's tools: send and recv messages, ask the operator, list agents. recv without "
                        "wait_seconds peeks; with it, it waits for the next message.")


def plugin_tools(role: str) -> list[Tool]:
    """Extra tools from plugins: the built-in ones (reminders, logs) and those of the ``hyperhive`` entry-point
    group."""
    from .plugins import TOOL_PLUGINS, make_plugin_manager

    try:
        offered = make_plugin_manager(True, TOOL_PLUGINS).hook.harness_tools(role=role)
    except Exception:  # a broken plugin must not take the hive's own tools away
        log.exception("a hyperhive plugin failed to offer its tools; offering only the built-in ones")
        return []
    out = []
    for tools in reversed(offered):  # pluggy answers last-registered first: keep the built-ins first
        for tool in tools or ():
            if isinstance(tool, Tool):
                out.append(tool)
            else:
                log.warning("a harness_tools hook returned %r, not a hyperhive.mcp.Tool; ignored", tool)
    return out


# --- the JSON-RPC server -----------------------------------------------------------------------------------

class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@functools.lru_cache(maxsize=1)
def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hyperhive")
    except PackageNotFoundError:
        return "0"


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def encode(message: dict) -> bytes:
    """One stdio line. Text the broker handed us may hold lone surrogates (JSON allows ``\\ud800``), which UTF-8
    cannot carry: those are written as JSON escapes. Raises TypeError/ValueError for what JSON cannot hold."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = json.dumps(message, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode()
    return data + b"\n"


class _Batch:
    """The responses to one JSON-RPC batch, written together as one array once every request of it is answered
    (JSON-RPC 2.0, "Batch"); a batch of notifications alone gets nothing. A tool call's answer waits here for the
    others: it counts as written (for recv's acknowledgement) only when the array was."""

    def __init__(self, server: "McpServer"):
        self.server = server
        self._lock = threading.Lock()
        self._parts: list[bytes] = []
        self._open = 0  # answers still to come from tool calls on workers
        self._sealed = False
        self._settle: list[Callable[[bool], None]] = []

    def add(self, data: bytes) -> None:
        """An answer given while the batch is read (an error, a ping, tools/list, ...)."""
        with self._lock:
            self._parts.append(data.rstrip(b"\n"))

    def expect(self) -> None:
        with self._lock:
            self._open += 1

    def deliver(self, data: bytes | None, settle: Callable[[bool], None] | None = None) -> None:
        """A tool call's answer, or None when it has none (cancelled); ``settle(written)`` runs once the array
        was written, or will never be."""
        with self._lock:
            if data is not None:
                self._parts.append(data.rstrip(b"\n"))
            if settle is not None:
                self._settle.append(settle)
            self._open -= 1
            ready = self._sealed and self._open == 0
        if ready:
            self._flush()

    def seal(self) -> None:
        """Every element was read: write the array when nothing is left to wait for."""
        with self._lock:
            self._sealed = True
            ready = self._open == 0
        if ready:
            self._flush()

    def _flush(self) -> None:
        written = bool(self._parts) and self.server._send(b"[" + b",".join(self._parts) + b"]\n")
        for settle in self._settle:
            settle(written)


@dataclass
class Era:
    """How one request is to be answered: its protocol version and whether it came statelessly (2026-07-28)."""

    version: str
    modern: bool


class McpServer:
    def __init__(self, socket_path: str, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None,
                 extra_tools: Callable[[str], list[Tool]] = plugin_tools):
        self.socket_path = str(socket_path)
        self.stdin = stdin if stdin is not None else sys.stdin.buffer
        self.stdout = stdout if stdout is not None else sys.stdout.buffer
        self.pool = BrokerPool(self.socket_path)
        self._extra_tools = extra_tools
        self._write_lock = threading.Lock()
        self._calls: dict[Any, ToolContext] = {}
        self._calls_lock = threading.Lock()
        # Tool calls run on worker threads (kept, not one started per call), so that a parked recv never blocks
        # the reading of the next request, a ping or a cancellation.
        self._workers = ThreadPoolExecutor(max_workers=MAX_CALLS_IN_FLIGHT, thread_name_prefix="tool")
        self._running: set = set()
        self.protocol_version: str | None = None  # negotiated by initialize (legacy era)
        self.initialized = False
        self.identity: dict | None = None
        self._tools: dict[str, Tool] | None = None
        self._reading = threading.local()  # .batch: the batch being read on this (the stdin) thread

    # --- output -----------------------------------------------------------------------------------------

    def _write(self, message: dict, ctx: ToolContext | None = None) -> bool:
        """Write one message; False when it was not written (cancelled call, or the client has gone). Encoding
        errors propagate to the caller, which answers something else."""
        return self._send(encode(message), ctx)

    def _send(self, data: bytes, ctx: ToolContext | None = None) -> bool:
        with self._write_lock:
            if ctx is not None and ctx.cancelled:
                return False  # checked under the lock that cancel() is marked under: no answer after a cancel
            try:
                self.stdout.write(data)
                self.stdout.flush()
            except (OSError, ValueError):  # the client has gone; nobody is left to tell
                return False
        return True

    def _response(self, request_id, result: dict, era: Era | None) -> dict:
        if era is not None and era.modern:
            # 2026-07-28 schema.ts: Result.resultType is required; ResultMetaObject carries serverInfo.
            result = {**result, "resultType": "complete",
                      "_meta": {**result.get("_meta", {}), META_SERVER_INFO: self._server_info()}}
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def _result(self, request_id, result: dict, era: Era | None = None) -> bool:
        try:
            data = encode(self._response(request_id, result, era))
        except (TypeError, ValueError) as e:
            log.error("the result of request %r cannot be encoded: %s", request_id, e)
            self._error(request_id, INTERNAL_ERROR, f"internal error: the result could not be encoded as JSON ({e})")
            return False
        return self._respond(data)

    def _error(self, request_id, code: int, message: str, data: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self._respond(encode({"jsonrpc": "2.0", "id": request_id, "error": error}))

    def _respond(self, data: bytes) -> bool:
        """A response given on the stdin thread: into the batch being read, if any, else written."""
        batch = getattr(self._reading, "batch", None)
        if batch is not None:
            batch.add(data)
            return True
        return self._send(data)

    def _server_info(self) -> dict:
        return {"name": SERVER_NAME, "version": _package_version()}

    # --- identity and tools -----------------------------------------------------------------------------

    def whoami(self) -> dict:
        if self.identity is None:
            try:
                self.identity = self.pool.call("whoami", timeout=10, retry=True)
            except ToolFailed as e:
                raise RpcError(INTERNAL_ERROR, f"cannot reach the hive at {self.socket_path}: {e}") from None
        return self.identity

    def tools(self) -> dict[str, Tool]:
        if self._tools is None:
            role = self.whoami()["role"]
            tools = {t.name: t for t in BUILTIN_TOOLS if role in t.roles}
            for tool in self._extra_tools(role):
                if role not in tool.roles:
                    continue
                if tool.name in tools:
                    log.warning("a plugin's tool %r is shadowed by the built-in one of that name", tool.name)
                    continue
                tools[tool.name] = tool
            self._tools = tools
        return self._tools

    def instructions(self) -> str:
        try:
            role = self.whoami()["role"]
        except RpcError:
            return GENERIC_INSTRUCTIONS  # the broker is not up yet: still answer, the tools will say more
        return INSTRUCTIONS.get(role, GENERIC_INSTRUCTIONS).format(cap=RECV_CAP_SECONDS)

    # --- the loop ---------------------------------------------------------------------------------------

    def serve(self) -> None:
        for line in self.stdin:
            if line.strip():
                self.handle_line(line)
        # stdin closed: the client is gone. Give calls in flight a moment (a send may be storing), no more; then
        # cut what still waits (a parked recv would hold the process until its wait ran out, while the client
        # waits for the exit). What a cut recv had leased goes back to the inbox with its broker connection.
        with self._calls_lock:
            running = list(self._running)
        _, still = futures_wait(running, timeout=2)
        if still:
            with self._calls_lock:
                contexts = list(self._calls.values())
            for ctx in contexts:
                ctx.cancel()
            futures_wait(still, timeout=2)
        self._workers.shutdown(wait=False, cancel_futures=True)
        self.pool.close()

    def handle_line(self, line: bytes | str) -> None:
        try:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
        except UnicodeDecodeError as e:
            self._error(None, PARSE_ERROR, f"parse error: the line is not valid UTF-8 ({e})")
            return
        try:
            message = loads_strict(text)
        except ValueError as e:
            self._error(None, PARSE_ERROR, f"parse error: not valid JSON ({e})")
            return
        except RecursionError:  # the server must outlive it: the model would lose the hive's tools
            self._error(None, PARSE_ERROR, "parse error: the message is nested too deeply")
            return
        if isinstance(message, list):
            self._batch(message)
            return
        self.handle(message)

    def _batch(self, items: list) -> None:
        if self.protocol_version not in BATCH_VERSIONS:
            agreed = (f"protocol {self.protocol_version} has none" if self.protocol_version
                      else "there is none before initialize")
            self._error(None, INVALID_REQUEST, f"invalid request: batches are not supported ({agreed}; only "
                                               f"{', '.join(BATCH_VERSIONS)} has them); send one message per line")
            return
        if not items:
            self._error(None, INVALID_REQUEST, "invalid request: an empty batch")
            return
        batch = _Batch(self)
        self._reading.batch = batch
        try:
            for item in items:
                if isinstance(item, dict) and item.get("method") == "initialize":
                    # 2025-03-26 lifecycle: "The initialize request MUST NOT be part of a JSON-RPC batch"
                    request_id = item.get("id")
                    self._error(request_id if _valid_id(request_id) else None, INVALID_REQUEST,
                                "invalid request: initialize must not be part of a batch")
                    continue
                self.handle(item)
        finally:
            self._reading.batch = None
        batch.seal()

    def handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            self._error(None, INVALID_REQUEST, "invalid request: a message must be a JSON object")
            return
        has_id = "id" in message
        request_id = message.get("id")
        if has_id and not _valid_id(request_id):
            self._error(None, INVALID_REQUEST, "invalid request: id must be a string or an integer")
            return
        if message.get("jsonrpc") != "2.0":
            if has_id:
                self._error(request_id, INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
            return
        method = message.get("method")
        if method is None and ("result" in message or "error" in message):
            return  # a response to a request we never send; nothing to do
        if not isinstance(method, str):
            self._error(request_id if has_id else None, INVALID_REQUEST,
                        'invalid request: "method" must be a string')
            return
        params = message.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            if has_id:
                self._error(request_id, INVALID_PARAMS, 'invalid params: "params" must be an object')
            return
        if not has_id:
            self._notification(method, params)
            return
        try:
            self._request(request_id, method, params)
        except RpcError as e:
            self._error(request_id, e.code, e.message, e.data)
        except Exception as e:  # a bug answers the request instead of killing the server
            log.exception("internal error in %s", method)
            self._error(request_id, INTERNAL_ERROR, f"internal error: {type(e).__name__}: {e}")

    def _notification(self, method: str, params: dict) -> None:
        if method == "notifications/initialized":
            self.initialized = True
        elif method == "notifications/cancelled":
            request_id = params.get("requestId")
            if not _valid_id(request_id):
                return  # malformed: ignored, as the cancellation pattern asks
            with self._calls_lock:
                ctx = self._calls.get(request_id)
            if ctx is not None:
                with self._write_lock:  # so that no answer is written after this point
                    ctx.cancel()
        # other notifications (progress, roots changed, ...) need nothing from us

    def _era(self, method: str, params: dict) -> Era | None:
        """The request's era: modern when its ``_meta`` names a protocol version (2026-07-28 basic/index, "Per-
        request protocol fields"), legacy once initialized, None before the handshake."""
        meta = params.get("_meta")
        if isinstance(meta, dict) and META_VERSION in meta:
            version = meta[META_VERSION]
            if not isinstance(version, str):
                raise RpcError(INVALID_PARAMS, f'invalid params: _meta["{META_VERSION}"] must be a string')
            if version not in MODERN_VERSIONS:
                raise RpcError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                               {"supported": self._supported_versions(), "requested": version})
            if not isinstance(meta.get(META_CAPABILITIES), dict):
                raise RpcError(INVALID_PARAMS, f'invalid params: _meta["{META_CAPABILITIES}"] (an object) is '
                                               f'required with protocol version {version}')
            return Era(version, modern=True)
        if method == "server/discover":
            raise RpcError(INVALID_PARAMS, f'invalid params: server/discover needs _meta with "{META_VERSION}" and '
                                           f'"{META_CAPABILITIES}"')
        if self.protocol_version is None:
            return None
        return Era(self.protocol_version, modern=False)

    @staticmethod
    def _supported_versions() -> list[str]:
        return list(reversed(KNOWN_VERSIONS))

    def _request(self, request_id, method: str, params: dict) -> None:
        if method == "initialize":
            self._initialize(request_id, params)
            return
        era = self._era(method, params)
        if method == "ping" and (era is None or not era.modern):
            self._result(request_id, {})  # legacy only: 2026-07-28 removed ping
            return
        if era is None:
            raise RpcError(INVALID_REQUEST, f'invalid request: "{method}" before "initialize" (or send '
                                            f'"{META_VERSION}" and "{META_CAPABILITIES}" in _meta, protocol '
                                            f'{MODERN_VERSIONS[-1]})')
        if method == "server/discover" and era.modern:
            # 2026-07-28 schema.ts DiscoverResult (a CacheableResult).
            self._result(request_id, {"supportedVersions": self._supported_versions(),
                                      "capabilities": {"tools": {"listChanged": False}},
                                      "instructions": self.instructions(),
                                      "ttlMs": 3_600_000, "cacheScope": "private"}, era)
        elif method == "tools/list":
            tools = [t.to_mcp(era.version) for t in self.tools().values()]
            # 2026-07-28: ListToolsResult is a CacheableResult; the list is fixed for the life of this process.
            extra = {"ttlMs": 3_600_000, "cacheScope": "private"} if era.modern else {}
            self._result(request_id, {"tools": tools, **extra}, era)
        elif method == "tools/call":
            self._tools_call(request_id, params, era)
        else:
            raise RpcError(METHOD_NOT_FOUND, f'method not found: "{method}" (this server offers tools only)')

    def _initialize(self, request_id, params: dict) -> None:
        if self.protocol_version is not None:
            raise RpcError(INVALID_REQUEST, "invalid request: already initialized")
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise RpcError(INVALID_PARAMS, 'invalid params: initialize needs "protocolVersion" (a string)')
        # Lifecycle, version negotiation (2025-11-25): the requested version when supported, else our latest. A
        # modern version is not reached by a handshake, so it too gets the latest handshake version.
        version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE_VERSION
        self.protocol_version = version
        self._result(request_id, {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": self._server_info(),
            "instructions": self.instructions(),
        })

    def _tools_call(self, request_id, params: dict, era: Era) -> None:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, 'invalid params: tools/call needs "name" (a string)')
        arguments = params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, 'invalid params: "arguments" must be an object')
        try:
            tools = self.tools()
        except RpcError as e:  # no broker: the model gets a tool error it can read, not a protocol failure
            self._result(request_id, {"content": [{"type": "text", "text": e.message}], "isError": True}, era)
            return
        tool = tools.get(name)
        if tool is None:
            raise RpcError(INVALID_PARAMS, f'unknown tool "{name}" (known: {", ".join(tools)})')
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        token = meta.get("progressToken")
        ident = self.whoami()
        ctx = ToolContext(self.socket_path, ident["name"], ident["role"], pool=self.pool,
                          batch=getattr(self._reading, "batch", None))
        with self._calls_lock:
            self._calls[request_id] = ctx
        if ctx.batch is not None:
            ctx.batch.expect()  # answered on a worker: the batch's other elements are read meanwhile
        elif tool.is_quick(arguments):
            self._run_tool(request_id, tool, arguments, ctx, None, era)
            return
        future = self._workers.submit(self._run_tool, request_id, tool, arguments, ctx, token, era)
        with self._calls_lock:
            self._running.add(future)
        future.add_done_callback(self._done)

    def _done(self, future) -> None:
        with self._calls_lock:
            self._running.discard(future)

    def _run_tool(self, request_id, tool: Tool, arguments: dict, ctx: ToolContext, token, era: Era) -> None:
        done = threading.Event()
        if _valid_id(token):
            counter = [0]

            def progress(message: str) -> None:
                if done.is_set():
                    return
                counter[0] += 1
                params = {"progressToken": token, "progress": counter[0]}
                if since(era.version, "2025-03-26"):  # ProgressNotification.message arrived in 2025-03-26
                    params["message"] = message
                self._write({"jsonrpc": "2.0", "method": "notifications/progress", "params": params}, ctx)

            ctx._progress = progress

            def keepalive() -> None:
                waited = 0
                while not done.wait(KEEPALIVE_SECONDS):
                    waited += KEEPALIVE_SECONDS
                    progress(f"still working ({waited}s)")

            threading.Thread(target=keepalive, daemon=True).start()
        written = False
        delivered = False
        try:
            try:
                value = tool.handler(ctx, check_arguments(tool, arguments))
                is_error = False
            except Cancelled:
                return
            except ToolFailed as e:
                value, is_error = str(e), True
            except Exception as e:
                log.exception("tool %s failed", tool.name)
                value, is_error = f"internal error in {tool.name}: {type(e).__name__}: {e}", True
            finally:
                done.set()
                with self._calls_lock:
                    self._calls.pop(request_id, None)
            if ctx.cancelled:
                return  # the client asked us not to answer
            delivered = True
            written = self._tool_result(request_id, value, is_error, ctx, era)
        finally:
            if ctx.batch is None:
                ctx.settle(written)
            elif not delivered:
                ctx.batch.deliver(None)
                ctx.settle(False)

    def _tool_result(self, request_id, value: Any, is_error: bool, ctx: ToolContext, era: Era) -> bool:
        try:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1,
                                                                   allow_nan=False)
            result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": is_error}
            if isinstance(value, dict) and not is_error and since(era.version, "2025-06-18"):
                result["structuredContent"] = value
            data = encode(self._response(request_id, result, era))
        except (TypeError, ValueError) as e:
            log.error("tool %r returned what JSON cannot hold: %s", request_id, e)
            result = {"content": [{"type": "text", "text": f"internal error: the tool's result could not be "
                                                            f"encoded as JSON ({e})"}], "isError": True}
            data = encode(self._response(request_id, result, era))
        if ctx.batch is None:
            return self._send(data, ctx)
        with self._write_lock:  # as _send: no answer once a cancel was taken
            cancelled = ctx.cancelled
        if cancelled:
            ctx.batch.deliver(None)
            ctx.settle(False)
        else:
            # Settled when the array is written (or not), on whichever thread writes it: a worker does not wait
            # for the batch's other calls (they may need the workers).
            ctx.batch.deliver(data, ctx.settle)
        return False


def run(socket_path: str) -> int:
    McpServer(socket_path, sys.stdin.buffer, sys.stdout.buffer).serve()
    return 0
