"""``hyperhive mcp``: the hive's tools for Claude Code, as an MCP server on stdio.

The protocol part is small and kept here: JSON-RPC 2.0, one message per line (the MCP stdio transport), the
``initialize`` handshake with protocol version negotiation, ``ping``, ``tools/list``, ``tools/call``,
``notifications/cancelled`` and progress notifications. Each tool call is forwarded to the broker over the agent's
Unix socket, which is the agent's identity; the broker's answer comes back as the tool result, and a refusal as a
result with ``isError: true`` carrying the broker's sentence, so the model can act on it.

Tool calls run on their own threads, so a parked ``recv`` never blocks a ``ping`` or a cancellation.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from .errors import HiveError
from .transport import Client

log = logging.getLogger(__name__)

SERVER_NAME = "hyperhive"
# Newest first; an initialize naming one of these gets it back, any other gets the newest.
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_PROTOCOL_VERSION = PROTOCOL_VERSIONS[0]
STRUCTURED_CONTENT_SINCE = "2025-06-18"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# Claude Code (like the MCP TypeScript SDK it builds on) gives up on a tool call after about a minute without an
# answer; one recv call therefore parks at most this long, and says so in its description.
RECV_CAP_SECONDS = 50
KEEPALIVE_SECONDS = 10
BROKER_TIMEOUT_SECONDS = RECV_CAP_SECONDS + 30
# Held only between the broker's answer and our ack; should this process die in between (or the broker answer a
# recv whose caller is gone), the messages come again this soon.
RECV_LEASE_SECONDS = 30


class ToolFailed(Exception):
    """Raised by a tool handler: reported to the model as a result with ``isError: true``."""


@dataclass
class ToolContext:
    """What a tool handler gets: the broker, who it speaks for, and a way to report progress."""

    socket_path: str
    name: str
    role: str
    _progress: Callable[[str], None] = field(default=lambda message: None, repr=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def call(self, op: str, timeout: float = BROKER_TIMEOUT_SECONDS, **args: Any) -> Any:
        """One broker op; a refusal raises ``ToolFailed`` with the broker's message."""
        try:
            with Client(self.socket_path, timeout=timeout) as client:
                return client.call(op, **args)
        except HiveError as e:
            raise ToolFailed(f"{e.code}: {e.message}") from None
        except (ConnectionError, OSError, ValueError) as e:
            raise ToolFailed(f"the hive did not answer: {e}") from None

    def progress(self, message: str) -> None:
        self._progress(message)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        # A broker call in flight is left to finish (cutting it could lose what it did); its answer is dropped.
        self._cancelled.set()


@dataclass(frozen=True)
class Tool:
    """One MCP tool. ``handler(ctx, arguments)`` returns a JSON-able result or raises ``ToolFailed``.

    Plugins add tools through the ``harness_tools(role)`` hook by returning a list of these.
    """

    name: str
    description: str
    input_schema: dict
    handler: Callable[[ToolContext, dict], Any]
    roles: frozenset = frozenset({"agent", "manager"})

    def to_mcp(self) -> dict:
        return {"name": self.name, "description": self.description, "inputSchema": self.input_schema}


def schema(properties: dict | None = None, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties or {}, "required": list(required),
            "additionalProperties": False}


_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "array": (list,),
          "object": (dict,)}


def check_arguments(tool: Tool, arguments: dict) -> None:
    """Check ``arguments`` against the tool's (flat) input schema; a sentence naming the problem otherwise."""
    spec = tool.input_schema
    props = spec.get("properties", {})
    for name in spec.get("required", ()):
        if name not in arguments:
            raise ToolFailed(f'missing argument "{name}" ({tool.name} takes: {", ".join(props) or "nothing"})')
    for name, value in arguments.items():
        if name not in props:
            if spec.get("additionalProperties", True) is False:
                raise ToolFailed(f'unknown argument "{name}" ({tool.name} takes: {", ".join(props) or "nothing"})')
            continue
        prop = props[name]
        kind = prop.get("type")
        if kind is None or (value is None and "null" in (kind if isinstance(kind, list) else [kind])):
            continue
        kinds = [k for k in (kind if isinstance(kind, list) else [kind]) if k != "null"]
        ok = any(isinstance(value, _TYPES[k]) and not (isinstance(value, bool) and k != "boolean") for k in kinds)
        if not ok:
            raise ToolFailed(f'argument "{name}" must be {" or ".join(kinds)}, not {type(value).__name__}')
        if kinds == ["array"] and prop.get("items", {}).get("type") == "string" \
                and not all(isinstance(v, str) for v in value):
            raise ToolFailed(f'argument "{name}" must be a list of strings')
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in prop and value < prop["minimum"]:
                raise ToolFailed(f'argument "{name}" must be at least {prop["minimum"]}, got {value}')
            if "maximum" in prop and value > prop["maximum"]:
                raise ToolFailed(f'argument "{name}" must be at most {prop["maximum"]}, got {value}')


# --- the hive's tools --------------------------------------------------------------------------------------

def _send(ctx, args):
    result = ctx.call("send", to=args["to"], body=args["body"])
    return {**result, "note": f"stored; {args['to']} will get it"}


def _recv(ctx, args):
    wait = min(float(args.get("wait_seconds") or 0), RECV_CAP_SECONDS)
    limit = int(args.get("max") or 10)
    if wait > 0:
        ctx.progress(f"waiting up to {wait:g}s for a message")
    result = ctx.call("recv", wait_seconds=wait, max=limit, lease_seconds=RECV_LEASE_SECONDS)
    ids = [m["id"] for m in result.get("messages", [])]
    if ids and ctx.cancelled:
        ctx.call("lease", ids=ids, seconds=0)  # nobody will read them: give them back at once
    elif ids:
        ctx.call("ack", ids=ids)  # the model has them now: they must not come again
    return result


def _ask(ctx, args):
    result = ctx.call("ask_operator", **{k: v for k, v in args.items() if v is not None})
    return {**result, "note": "the operator's answer will come to you as an event (use recv)"}


def _forward(op: str, *keys: str):
    def handler(ctx, args):
        return ctx.call(op, **{k: args[k] for k in keys if k in args})
    return handler


NAME = {"type": "string", "description": "An agent's name."}

BUILTIN_TOOLS: tuple[Tool, ...] = (
    Tool("send",
         "Send a message to another agent, the manager, or the operator (the human running the hive). The message "
         "is stored durably before this returns; the recipient reads it with recv. Your policy may restrict whom "
         "you can send to: a refusal names the recipients you may use.",
         schema({"to": {"type": "string", "description": 'Recipient: an agent name, the manager\'s name, or '
                                                         '"operator".'},
                 "body": {"type": "string", "description": "The message text."}}, ("to", "body")),
         _send),
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
         _recv),
    Tool("ask_operator",
         "Ask the operator (the human) a question. Returns at once with the question's id; the answer arrives "
         "later as an event in your inbox (recv). Give options to offer choices (the operator may still answer "
         "in free text); multi allows choosing several; ttl_seconds makes it expire unanswered.",
         schema({"question": {"type": "string"},
                 "options": {"type": "array", "items": {"type": "string"}},
                 "multi": {"type": "boolean"},
                 "ttl_seconds": {"type": "number", "minimum": 1}}, ("question",)),
         _ask),
    Tool("list_agents", "List the manager and every agent of the hive with its state (running, stopped, ...).",
         schema(), _forward("list_agents")),
    Tool("request_spawn",
         "Ask the operator to approve a new agent NAME created from the default template. Returns the approval id "
         "at once; the outcome arrives as an event.",
         schema({"name": NAME}, ("name",)), _forward("request_spawn", "name"), frozenset({"manager"})),
    Tool("request_spawn_draft",
         "Prepare a new agent in two steps: create its config repo (a flake with agent.nix, shown to you under "
         "config_path) and state dir without starting anything. Edit and commit in config_path, then call "
         "request_spawn_commit.",
         schema({"name": NAME}, ("name",)), _forward("request_spawn_draft", "name"), frozenset({"manager"})),
    Tool("request_spawn_commit",
         "Queue the operator's approval to spawn a drafted agent from COMMIT of its config repo. The operator sees "
         "the diff; the outcome arrives as an event.",
         schema({"name": NAME, "commit": {"type": "string", "description": "A commit sha in the draft's repo."}},
                ("name", "commit")),
         _forward("request_spawn_commit", "name", "commit"), frozenset({"manager"})),
    Tool("request_apply_commit",
         "Propose COMMIT of AGENT's config repo for deployment. Nothing is built until the operator approves; the "
         "outcome (deployed, failed with the build error, or denied with a note) arrives as an event.",
         schema({"agent": NAME, "commit": {"type": "string", "description": "A commit sha in the agent's repo."}},
                ("agent", "commit")),
         _forward("request_apply_commit", "agent", "commit"), frozenset({"manager"})),
    Tool("kill", "Stop agent NAME's container now (no approval needed; never yourself).",
         schema({"name": NAME}, ("name",)), _forward("kill", "name"), frozenset({"manager"})),
    Tool("start", "Start agent NAME's container (no approval needed).",
         schema({"name": NAME}, ("name",)), _forward("start", "name"), frozenset({"manager"})),
    Tool("restart", "Restart agent NAME's container (no approval needed; never yourself).",
         schema({"name": NAME}, ("name",)), _forward("restart", "name"), frozenset({"manager"})),
    Tool("update", "Bring agent NAME's running container up to its deployed configuration (no approval needed).",
         schema({"name": NAME}, ("name",)), _forward("update", "name"), frozenset({"manager"})),
)


def plugin_tools(role: str) -> list[Tool]:
    """Extra tools from plugins registered through the ``hyperhive`` entry-point group."""
    import pluggy

    from . import hookspecs

    pm = pluggy.PluginManager("hyperhive")
    pm.add_hookspecs(hookspecs)
    try:
        pm.load_setuptools_entrypoints("hyperhive")
        offered = pm.hook.harness_tools(role=role)
    except Exception:  # a broken plugin must not take the hive's own tools away
        log.exception("a hyperhive plugin failed to offer its tools; offering only the built-in ones")
        return []
    out = []
    for tools in offered:
        for tool in tools or ():
            if isinstance(tool, Tool):
                out.append(tool)
            else:
                log.warning("a harness_tools hook returned %r, not a hyperhive.mcp.Tool; ignored", tool)
    return out


# --- the JSON-RPC server -----------------------------------------------------------------------------------

class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hyperhive")
    except PackageNotFoundError:
        return "0"


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class McpServer:
    def __init__(self, socket_path: str, stdin: TextIO | None = None, stdout: TextIO | None = None,
                 extra_tools: Callable[[str], list[Tool]] = plugin_tools):
        self.socket_path = str(socket_path)
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self._extra_tools = extra_tools
        self._write_lock = threading.Lock()
        self._calls: dict[Any, ToolContext] = {}
        self._calls_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.protocol_version: str | None = None
        self.initialized = False
        self.identity: dict | None = None
        self._tools: dict[str, Tool] | None = None

    # --- output -----------------------------------------------------------------------------------------

    def _write(self, message: dict) -> None:
        line = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        with self._write_lock:
            try:
                self.stdout.write(line + "\n")
                self.stdout.flush()
            except (OSError, ValueError):  # the client has gone; nobody is left to tell
                pass

    def _result(self, request_id, result: dict) -> None:
        self._write({"jsonrpc": "2.0", "id": request_id, "result": result})

    def _error(self, request_id, code: int, message: str) -> None:
        self._write({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})

    # --- identity and tools -----------------------------------------------------------------------------

    def whoami(self) -> dict:
        if self.identity is None:
            try:
                with Client(self.socket_path, timeout=10) as client:
                    self.identity = client.call("whoami")
            except (ConnectionError, OSError, HiveError) as e:
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

    # --- the loop ---------------------------------------------------------------------------------------

    def serve(self) -> None:
        for line in self.stdin:
            if line.strip():
                self.handle_line(line)
        # stdin closed: the client is gone. Give calls in flight a moment (a send may be storing), no more.
        for t in list(self._threads):
            t.join(timeout=2)

    def handle_line(self, line: str) -> None:
        try:
            message = json.loads(line)
        except ValueError as e:
            self._error(None, PARSE_ERROR, f"parse error: not valid JSON ({e})")
            return
        if isinstance(message, list):
            self._error(None, INVALID_REQUEST, "invalid request: batches are not supported; send one message per "
                                               "line")
            return
        self.handle(message)

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
            self._error(request_id, e.code, e.message)
        except Exception as e:  # a bug answers the request instead of killing the server
            log.exception("internal error in %s", method)
            self._error(request_id, INTERNAL_ERROR, f"internal error: {type(e).__name__}: {e}")

    def _notification(self, method: str, params: dict) -> None:
        if method == "notifications/initialized":
            self.initialized = True
        elif method == "notifications/cancelled":
            with self._calls_lock:
                ctx = self._calls.get(params.get("requestId"))
            if ctx is not None:
                ctx.cancel()
        # other notifications (progress, roots changed, ...) need nothing from us

    def _request(self, request_id, method: str, params: dict) -> None:
        if method == "initialize":
            self._initialize(request_id, params)
            return
        if method == "ping":
            self._result(request_id, {})
            return
        if self.protocol_version is None:
            raise RpcError(INVALID_REQUEST, f'invalid request: "{method}" before "initialize"')
        if method == "tools/list":
            self._result(request_id, {"tools": [t.to_mcp() for t in self.tools().values()]})
        elif method == "tools/call":
            self._tools_call(request_id, params)
        else:
            raise RpcError(METHOD_NOT_FOUND, f'method not found: "{method}" (this server offers tools only)')

    def _initialize(self, request_id, params: dict) -> None:
        if self.protocol_version is not None:
            raise RpcError(INVALID_REQUEST, "invalid request: already initialized")
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise RpcError(INVALID_PARAMS, 'invalid params: initialize needs "protocolVersion" (a string)')
        version = requested if requested in PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION
        self.protocol_version = version
        self._result(request_id, {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": SERVER_NAME, "version": _package_version()},
            "instructions": "The hive's tools: send and recv messages, ask the operator, list agents. recv without "
                            "wait_seconds peeks; with it, it waits for the next message.",
        })

    def _tools_call(self, request_id, params: dict) -> None:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, 'invalid params: tools/call needs "name" (a string)')
        tools = self.tools()
        tool = tools.get(name)
        if tool is None:
            raise RpcError(INVALID_PARAMS, f'unknown tool "{name}" (known: {", ".join(tools)})')
        arguments = params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, 'invalid params: "arguments" must be an object')
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        token = meta.get("progressToken")
        ident = self.whoami()
        ctx = ToolContext(self.socket_path, ident["name"], ident["role"])
        with self._calls_lock:
            self._calls[request_id] = ctx
        thread = threading.Thread(target=self._run_tool, args=(request_id, tool, arguments, ctx, token),
                                  name=f"tool-{name}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _run_tool(self, request_id, tool: Tool, arguments: dict, ctx: ToolContext, token) -> None:
        done = threading.Event()
        if _valid_id(token):
            counter = [0]

            def progress(message: str) -> None:
                if done.is_set():
                    return
                counter[0] += 1
                self._write({"jsonrpc": "2.0", "method": "notifications/progress",
                             "params": {"progressToken": token, "progress": counter[0], "message": message}})

            ctx._progress = progress

            def keepalive() -> None:
                waited = 0
                while not done.wait(KEEPALIVE_SECONDS):
                    waited += KEEPALIVE_SECONDS
                    progress(f"still working ({waited}s)")

            threading.Thread(target=keepalive, daemon=True).start()
        try:
            check_arguments(tool, arguments)
            value = tool.handler(ctx, arguments)
            is_error = False
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
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1)
        result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": is_error}
        if isinstance(value, dict) and not is_error and self.protocol_version >= STRUCTURED_CONTENT_SINCE:
            result["structuredContent"] = value
        self._result(request_id, result)


def run(socket_path: str) -> int:
    # Text streams with the newline the transport wants, whatever the locale says.
    stdin = open(sys.stdin.fileno(), "r", encoding="utf-8", newline="\n", closefd=False)
    stdout = open(sys.stdout.fileno(), "w", encoding="utf-8", newline="\n", closefd=False)
    McpServer(socket_path, stdin, stdout).serve()
    return 0
