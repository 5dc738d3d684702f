"""A stand-in for the Anthropic Messages API, scripted per agent, for running the real Claude Code CLI with no model.

Claude Code is pointed at it with ``ANTHROPIC_BASE_URL`` (see :meth:`MessagesAPI.claude_env`). It answers

- ``POST /v1/messages``: streaming (server-sent events ``message_start``, ``content_block_start``,
  ``content_block_delta`` with ``text_delta`` or ``input_json_delta``, ``content_block_stop``, ``message_delta`` with
  the usage, ``message_stop``) or not (one JSON message), from the script of the agent that asked;
- ``POST /v1/messages/count_tokens``: a rough count;
- anything else (Claude Code's ``HEAD /api/hello`` reachability check, and whatever a later version may ask): a
  harmless answer, logged.

What Claude Code 2.1.328 sends, as seen here: ``HEAD /api/hello`` at start (not with
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``, which :meth:`MessagesAPI.claude_env` sets), then one streamed
``POST /v1/messages?beta=true`` per model turn, offering its built-in tools and, with ``ENABLE_TOOL_SEARCH=false``
(the harness sets it), the MCP tools by name; no title or quota request in ``--print`` mode. It retries a 5xx
itself, asks once more after a blank answer, and on "prompt is too long" first tries a compaction of its own (a
request that offers tools and asks for a summary) when the conversation has more than one exchange.

**Which agent is asking.** The hyperhive harness adds the header ``X-Hyperhive-Agent: <name>`` to every API request
of its Claude sessions (through Claude Code's ``ANTHROPIC_CUSTOM_HEADERS``), so the stand-in needs no guess from the
system prompt; a request without it is scripted under ``None``.

**Scripts.** ``api.script(agent, steps)`` queues steps; each scripted request takes the next one. A request that
offers no tools (a title, a summary, a quota check) is a *side request*: it is answered with a short text and never
advances a script. When an agent's script is exhausted, its requests get the text :data:`EXHAUSTED` (logged with
``exhausted: True``, so a test can tell). A step is a dict:

- ``{"text": "..."}``: a text answer (``end_turn``);
- ``{"tool": NAME, "input": {...}}``: one ``tool_use`` block; ``{"tools": [{"name": ..., "input": ...}, ...]}``:
  several in one answer (``stop_reason`` ``tool_use``); ``text`` may go along, before them;
- ``{"error": STATUS, "message": "...", "error_type": "..."}``: an Anthropic error body with that HTTP status
  (400 ``invalid_request_error`` "prompt is too long: ...", 500 ``api_error``, 529 ``overloaded_error``);
  ``"times": N`` serves it to N requests in a row (Claude Code retries 5xx itself);
- ``{"hang": SECONDS}``: accept the request and answer nothing for that long (``None``: until the stand-in stops);
- ``"usage": {...}`` on any answer: the usage figures reported (``input_tokens``, ``output_tokens``,
  ``cache_read_input_tokens``, ``cache_creation_input_tokens``);
- a callable instead of a dict: called with the request's log entry when a request takes it, it returns the step
  (a script that acts on what came back, e.g. a commit sha from :func:`last_tool_result`);
- ``"delay": SECONDS`` on any answer: wait that long before answering;
- ``"until": "..."``: the step answers every request (not only one) until a request containing that text comes,
  which takes the next step instead (Claude Code makes attempts of its own, e.g. its own compaction when a prompt is
  too long, whose number a test cannot know);
- ``"expect": "..."``: the step is taken only by a request whose system prompt or messages contain that text;
  another request gets :data:`EXHAUSTED`-style ``unexpected`` text and is logged with ``unexpected: True``.

**The log.** Every request is kept (:meth:`MessagesAPI.requests`): agent, path, model, whether streamed, the tool
names offered (``tools``) and their definitions as sent (``tool_definitions``), the system prompt as text
(``system``) and as sent (``system_blocks``: a string or Claude Code's list of text blocks), the messages as sent
(with the ``tool_result`` blocks that came back), the body as received (``raw``) and its size (``bytes``), the step
it got, and the headers. :func:`context_cost` splits a logged request into what its parts cost the model. Message
and tool-use ids are random (``msg_<hex>``, ``toolu_<hex>``), so they are unique across restarts of the stand-in
and of Claude Code.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..harness import AGENT_HEADER
from ..mcp import SERVER_NAME

MODEL = "claude-stand-in"
EXHAUSTED = "(the stand-in model has no script step left for this request)"
SIDE_ANSWER = "hyperhive stand-in"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               529: "overloaded_error"}
PROMPT_TOO_LONG = "prompt is too long: 212345 tokens > 200000 maximum"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def tool_use(_tool: str, /, **arguments: Any) -> dict:
    """A script step that calls one tool, e.g. ``tool_use("Bash", command="git status")``."""
    return {"tool": _tool, "input": arguments}


def hive(_tool: str, /, **arguments: Any) -> dict:
    """A script step that calls one of the hive's own MCP tools by its short name: ``hive("send", to=..., body=...)``."""
    return tool_use(f"mcp__hyperhive__{_tool}", **arguments)


def last_tool_result(request: dict) -> str:
    """The text of the last ``tool_result`` in a logged request: what the model's latest tool call returned."""
    for message in reversed(request.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        for block in reversed(content if isinstance(content, list) else []):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                return text_of(block.get("content"))
    return ""


def text_of(value: Any) -> str:
    """The text of a system prompt or of message content, however Claude Code shaped it."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(text_of(v) for v in value)
    if isinstance(value, dict):
        if value.get("type") == "text":
            return str(value.get("text", ""))
        if value.get("type") == "tool_result":
            return text_of(value.get("content"))
        if "content" in value:
            return text_of(value["content"])
    return ""


def json_bytes(value: Any) -> int:
    """The size of ``value`` as Claude Code serializes it into a request body (``JSON.stringify``: no spaces, no
    escaping of non-ASCII)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _text_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def cli_context(messages: list) -> list[str]:
    """The texts Claude Code puts into a request's messages itself, beside the conversation: the ``system``-role
    messages (its environment, the subagent types, the MCP servers' instructions, the skills, the date) and the
    ``<system-reminder>`` blocks of user messages."""
    out = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks if isinstance(blocks, list) else []:
            if not (isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)):
                continue
            if message.get("role") == "system" or block["text"].lstrip().startswith("<system-reminder>"):
                out.append(block["text"])
    return out


def context_cost(request: dict, *, hive_system: str, hive_instructions: str = "",
                 server: str = SERVER_NAME) -> dict:
    """What one logged ``/v1/messages`` request carries for the model, split by whose it is, in bytes.

    - ``body``: the request body as received;
    - ``hive_tools``, ``builtin_tools``, ``other_mcp_tools``: ``{"count", "bytes", "names"}`` of the tool
      definitions as sent (their JSON): the hive's MCP server's (``mcp__<server>__*``), Claude Code's own, and those
      of any other MCP server;
    - ``system``: the system prompt's text (all its blocks); ``hive_system``: the hive's part of it, ``hive_system``
      (what the harness passed with ``--system-prompt-file``) when a block contains it verbatim, else 0
      (``hive_system_found`` says which); ``cli_system``: the rest, Claude Code's own;
    - ``cli_context``: the text Claude Code adds to the messages itself (:func:`cli_context`);
      ``hive_instructions``: the part of it that is the hive's MCP server instructions, when found verbatim
      (``hive_instructions_found``);
    - ``messages``: the messages as sent (their JSON: the conversation so far, with ``cli_context`` in it).

    Text is counted as UTF-8, tool definitions and messages as the JSON sent; the model is billed in tokens, of
    which a byte count over 4 is only an estimate.
    """
    prefix = f"mcp__{server}__"
    groups: dict[str, dict] = {k: {"count": 0, "bytes": 0, "names": []}
                               for k in ("hive_tools", "builtin_tools", "other_mcp_tools")}
    for tool in request.get("tool_definitions") or []:
        name = str(tool.get("name", "")) if isinstance(tool, dict) else ""
        group = groups["hive_tools" if name.startswith(prefix) else
                       "other_mcp_tools" if name.startswith("mcp__") else "builtin_tools"]
        group["count"] += 1
        group["bytes"] += json_bytes(tool)
        group["names"].append(name)
    blocks = request.get("system_blocks")
    blocks = [{"type": "text", "text": blocks}] if isinstance(blocks, str) else blocks or []
    texts = [b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)]
    system = sum(_text_bytes(t) for t in texts)
    found = bool(hive_system) and any(hive_system in t for t in texts)
    hive = _text_bytes(hive_system) if found else 0
    added = cli_context(request.get("messages") or [])
    instructions_found = bool(hive_instructions) and any(hive_instructions in t for t in added)
    return {"body": request.get("bytes", 0), **groups, "system": system, "hive_system": hive,
            "hive_system_found": found, "cli_system": system - hive,
            "cli_context": sum(_text_bytes(t) for t in added),
            "hive_instructions": _text_bytes(hive_instructions) if instructions_found else 0,
            "hive_instructions_found": instructions_found,
            "messages": json_bytes(request.get("messages") or [])}


class MessagesAPI:
    """The stand-in, on a loopback port, in threads of the calling process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._lock = threading.Condition()
        self._scripts: dict[str | None, deque] = defaultdict(deque)
        self._log: list[dict] = []
        self._stopping = threading.Event()
        api = self

        class Handler(_Handler):
            stand_in = api

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- life -------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "MessagesAPI":
        self._thread = threading.Thread(target=self._server.serve_forever, name="messages-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # hanging answers end
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "MessagesAPI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def claude_env(self, config_dir: str | None = None) -> dict[str, str]:
        """The environment that points Claude Code here and keeps it from calling anywhere else."""
        env = {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "sk-ant-hyperhive-stand-in",
            # no telemetry, error reports, update checks, feedback surveys or other calls home
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_BUG_COMMAND": "1",
            "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
            # Claude Code retries a 5xx itself (10 times by default, with a growing backoff): once is enough to
            # show it, and a script that fails every try then ends the session quickly.
            "CLAUDE_CODE_MAX_RETRIES": "1",
        }
        if config_dir:
            env["CLAUDE_CONFIG_DIR"] = config_dir
        return env

    # --- scripts ----------------------------------------------------------------------------------------

    def script(self, agent: str | None, steps: list[dict]) -> None:
        """Queue ``steps`` for ``agent``'s next scripted requests (after any still queued)."""
        for step in steps:
            if not callable(step):
                _check_step(step)
        with self._lock:
            self._scripts[agent].extend(s if callable(s) else dict(s) for s in steps)

    def reset(self) -> None:
        """Forget every script and the log (a module-wide stand-in between tests)."""
        with self._lock:
            self._scripts.clear()
            self._log.clear()

    def pending(self, agent: str | None) -> int:
        with self._lock:
            return len(self._scripts[agent])

    def _take(self, agent: str | None, request_text: str, entry: dict) -> tuple[dict | None, str]:
        with self._lock:
            queue = self._scripts[agent]
            if not queue:
                return None, "exhausted"
            if callable(queue[0]):
                queue[0] = queue[0](entry)
                _check_step(queue[0])
            step = queue[0]
            until = step.get("until")
            if until is not None:
                if until not in request_text:
                    return step, "scripted"  # it answers every request until one says ``until``
                queue.popleft()
                return self._take(agent, request_text, entry) if queue else (None, "exhausted")
            expect = step.get("expect")
            if expect is not None and expect not in request_text:
                return None, "unexpected"
            times = int(step.get("times", 1))
            if times > 1:
                step["times"] = times - 1
            else:
                queue.popleft()
            return step, "scripted"

    # --- the log ----------------------------------------------------------------------------------------

    def _record(self, entry: dict) -> None:
        entry["at"] = time.time()
        with self._lock:
            entry["seq"] = len(self._log)
            self._log.append(entry)
            self._lock.notify_all()

    def requests(self, agent: Any = ..., *, scripted: bool | None = True) -> list[dict]:
        """Logged ``/v1/messages`` requests, oldest first: of ``agent`` (any when left out), scripted ones only
        unless ``scripted`` is None (all) or False (side requests and other endpoints)."""
        with self._lock:
            out = list(self._log)
        if agent is not ...:
            out = [r for r in out if r["agent"] == agent]
        if scripted is True:
            out = [r for r in out if r["kind"] == "messages" and not r["side"]]
        elif scripted is False:
            out = [r for r in out if r["kind"] != "messages" or r["side"]]
        return out

    def wait_requests(self, agent: Any, count: int, timeout: float = 60, *, answered: bool = True) -> list[dict]:
        """Wait until ``agent`` made ``count`` scripted requests (and, by default, the count-th was answered)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [r for r in self._log if (agent is ... or r["agent"] == agent)
                       and r["kind"] == "messages" and not r["side"]]
                if len(got) >= count and (not answered or got[count - 1].get("answered")):
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {count} request(s) of {agent!r} "
                                         f"to the stand-in Messages API; got {len(got)}")
                self._lock.wait(min(left, 0.5))

    def _answered(self, entry: dict) -> None:
        with self._lock:
            entry["answered"] = True
            self._lock.notify_all()


def _check_step(step: dict) -> None:
    if not isinstance(step, dict):
        raise ValueError(f"a script step must be a dict, not {step!r}")
    kinds = [k for k in ("text", "tool", "tools", "error", "hang") if k in step]
    if not kinds or (len(kinds) > 1 and set(kinds) - {"text", "tool", "tools"}):
        raise ValueError(f"a script step needs one of text, tool, tools, error or hang: {step!r}")
    if "tool" in step and "tools" in step:
        raise ValueError(f"a script step has tool or tools, not both: {step!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stand_in: MessagesAPI

    def log_message(self, *args) -> None:  # the log is MessagesAPI's
        pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        self.raw = self.rfile.read(length) if length else b""
        return self.raw

    def _send(self, status: int, body: dict | bytes, content_type: str = "application/json",
              extra: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", new_id("req"))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _other(self) -> None:
        self._read_body()
        agent = self.headers.get(AGENT_HEADER)
        self.stand_in._record({"kind": "other", "method": self.command, "path": self.path, "agent": agent,
                               "side": True, "headers": dict(self.headers), "answered": True})
        if self.command == "HEAD" or self.path.startswith("/api/hello"):
            self._send(200, b"", "text/plain")
        else:
            self._send(404, {"type": "error", "error": {"type": "not_found_error",
                                                         "message": f"the stand-in does not serve {self.path}"}})

    do_GET = do_HEAD = do_PUT = do_DELETE = _other

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/v1/messages/count_tokens":
            body = self._json()
            if body is None:
                return
            self.stand_in._record({"kind": "count_tokens", "path": self.path, "side": True, "answered": True,
                                   "agent": self.headers.get(AGENT_HEADER), "headers": dict(self.headers)})
            self._send(200, {"input_tokens": max(1, len(json.dumps(body)) // 4)})
            return
        if path != "/v1/messages":
            self._other()
            return
        body = self._json()
        if body is None:
            return
        self._messages(body)

    def _json(self) -> dict | None:
        try:
            body = json.loads(self._read_body() or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                         "message": "the body must be a JSON object"}})
            return None
        return body

    def _messages(self, body: dict) -> None:
        api = self.stand_in
        agent = self.headers.get(AGENT_HEADER)
        tools = [t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)]
        system = text_of(body.get("system"))
        messages = body.get("messages") or []
        entry = {"kind": "messages", "path": self.path, "agent": agent, "model": body.get("model"),
                 "stream": bool(body.get("stream")), "tools": tools, "system": system, "messages": messages,
                 "bytes": len(self.raw), "raw": self.raw, "tool_definitions": body.get("tools") or [],
                 "system_blocks": body.get("system"), "side": not tools, "headers": dict(self.headers),
                 "retry": int(self.headers.get("X-Stainless-Retry-Count") or 0), "answered": False}
        if not tools:
            step, how = {"text": SIDE_ANSWER}, "side"
        else:
            step, how = api._take(agent, system + "\n" + text_of(messages), entry)
            if step is None:
                entry[how] = True
                step = {"text": EXHAUSTED if how == "exhausted" else
                        "(this request was not the one the script expected next)"}
        entry["step"] = step
        api._record(entry)
        try:
            if step.get("delay"):
                api._stopping.wait(float(step["delay"]))
            if "hang" in step:
                api._stopping.wait(step["hang"])
                self.close_connection = True
                return
            if "error" in step:
                status = int(step["error"])
                message = step.get("message") or (PROMPT_TOO_LONG if status == 400 else
                                                  "Overloaded" if status == 529 else "Internal server error")
                self._send(status, {"type": "error", "error": {
                    "type": step.get("error_type") or ERROR_TYPES.get(status, "api_error"), "message": message}},
                    extra={"x-should-retry": "true" if status >= 500 else "false"})
                return
            message = _message(step, body.get("model") or MODEL)
            if body.get("stream"):
                self._stream(message)
            else:
                self._send(200, message)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Claude Code gave up on it (a timeout, a kill)
        finally:
            api._answered(entry)

    def _stream(self, message: dict) -> None:
        content = message["content"]
        start = {**message, "content": [], "stop_reason": None,
                 "usage": {**message["usage"], "output_tokens": 1}}
        events: list[tuple[str, dict]] = [("message_start", {"type": "message_start", "message": start})]
        for index, block in enumerate(content):
            if block["type"] == "text":
                events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": {"type": "text", "text": ""}}))
                text = block["text"]
                for i in range(0, max(len(text), 1), 200):
                    events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                           "delta": {"type": "text_delta",
                                                                     "text": text[i:i + 200]}}))
            else:
                events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": {**block, "input": {}}}))
                partial = json.dumps(block["input"])
                for i in range(0, len(partial), 64):  # in pieces, as the API sends it
                    events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                           "delta": {"type": "input_json_delta",
                                                                     "partial_json": partial[i:i + 64]}}))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                         "usage": message["usage"]}))
        events.append(("message_stop", {"type": "message_stop"}))
        data = b"".join(f"event: {name}\ndata: {json.dumps(event)}\n\n".encode("utf-8") for name, event in events)
        self._send(200, data, "text/event-stream; charset=utf-8", extra={"Cache-Control": "no-cache"})


def _message(step: dict, model: str) -> dict:
    content: list[dict] = []
    if step.get("text"):
        content.append({"type": "text", "text": str(step["text"])})
    calls = step.get("tools") or ([{"name": step["tool"], "input": step.get("input") or {}}] if "tool" in step
                                  else [])
    for call in calls:
        content.append({"type": "tool_use", "id": new_id("toolu"), "name": call.get("name") or call["tool"],
                        "input": call.get("input") or {}})
    if not content:
        content.append({"type": "text", "text": ""})
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 0, **(step.get("usage") or {})}
    return {"id": new_id("msg"), "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None, "usage": usage}


def main(argv: list[str] | None = None) -> int:
    """``python -m hyperhive.testing.messages_api [--port N]``: serve with empty scripts (every answer is
    :data:`EXHAUSTED`), printing each request; for trying Claude Code against it by hand."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hyperhive.testing.messages_api")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    api = MessagesAPI(port=args.port).start()
    print(json.dumps({"url": api.url, "env": api.claude_env()}), flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            log = api.requests(scripted=None)
            for r in log[seen:]:
                print(json.dumps({k: r.get(k) for k in ("seq", "kind", "agent", "path", "model", "tools")}),
                      flush=True)
            seen = len(log)
    except KeyboardInterrupt:
        api.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
