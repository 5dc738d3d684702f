#!/usr/bin/env python3
"""A stand-in for the ``claude`` executable in tests: the real command line, the real MCP servers, a script.

It parses Claude Code's command line the way the real CLI does (unknown options are refused, ``--print`` with
``--output-format stream-json`` needs ``--verbose``, variadic ``--allowedTools``/``--mcp-config``), reads the
settings, system prompt and MCP config files, starts every MCP server of ``--mcp-config`` over stdio exactly as
Claude Code would (``command`` + ``args``, ``env`` over its own environment), runs ``initialize`` and
``tools/list``, then performs the steps of a script, printing stream-json events like Claude Code does. Tool
calls honour the permission rules (``permissions.allow`` of the settings plus ``--allowedTools``, with
``defaultMode``): what is not allowed is denied, as ``dontAsk`` does. Like Claude Code it also merges the settings
files of its sources (``user``: ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``/settings.json; ``project`` and ``local``:
the working directory's ``.claude/settings.json`` and ``.claude/settings.local.json``), all of them unless
``--setting-sources`` names which (``""``: none).

Environment:
- ``FAKE_CLAUDE_SCRIPT``: a JSON file: a list of steps, or ``{"rules": [{"when": {...}, "steps": [...]}, ...],
  "default": [...]}``; ``when`` may hold ``prompt_contains``, ``run`` (the nth invocation, from 1),
  ``continue`` (bool) and ``agent`` (``$HYPERHIVE_AGENT``, set by the harness). The first rule that matches picks
  the steps.
- ``FAKE_CLAUDE_LOG``: a directory (``{agent}`` in it becomes the agent's name); each invocation writes
  ``run-NNN.json`` (argv, cwd, prompt, the files it was given, the tools it saw, the calls it made, its exit),
  first when it starts and again when it ends.

Steps: ``{"tool": NAME, "args": {...}, "server": "hyperhive"}``, ``{"reply": TEXT}`` (send TEXT to whoever wrote
the first message of the prompt), ``{"bash": CMD}``, ``{"write": PATH, "content": TEXT}``, ``{"append": PATH,
"content": TEXT}``, ``{"say": TEXT}``, ``{"result": TEXT}``, ``{"sleep": SECONDS}``, ``{"exit": N, "stderr":
TEXT}``, ``{"too_long": true}``, ``{"hang": true}`` (or ``"ignore_term"``), ``{"print": LINE}``.
"""

import time

STARTED = time.time()  # first of all: the harness benchmark measures from a send to here

import fnmatch  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402

VERSION = "2.0.0 (Claude Code)"
MODEL = "claude-sonnet-4-5-20250929"
BUILTIN_TOOLS = ["Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "NotebookEdit", "WebFetch", "TodoWrite",
                 "WebSearch", "BashOutput", "KillShell"]

# Claude Code's options (a subset, spelled as the real CLI spells them): how many values each takes.
# 0: a flag; 1: one value; "?": an optional value; "+": one or more values (commander's variadic options).
OPTIONS = {
    "-p": 0, "--print": 0, "--verbose": 0, "-c": 0, "--continue": 0, "--strict-mcp-config": 0,
    "--dangerously-skip-permissions": 0, "--include-partial-messages": 0, "-v": 0, "--version": 0,
    "--output-format": 1, "--input-format": 1, "--model": 1, "--fallback-model": 1, "--settings": 1,
    "--system-prompt": 1, "--system-prompt-file": 1, "--append-system-prompt": 1, "--permission-mode": 1,
    "--max-turns": 1, "--session-id": 1, "--setting-sources": 1,
    "-r": "?", "--resume": "?", "-d": "?", "--debug": "?",
    "--mcp-config": "+", "--allowedTools": "+", "--allowed-tools": "+", "--disallowedTools": "+",
    "--disallowed-tools": "+", "--add-dir": "+",
}
ALIASES = {"-p": "--print", "-c": "--continue", "-r": "--resume", "-d": "--debug", "-v": "--version",
           "--allowed-tools": "--allowedTools", "--disallowed-tools": "--disallowedTools"}
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")

AGENT = os.environ.get("HYPERHIVE_AGENT", "")
LOG_DIR = (os.environ.get("FAKE_CLAUDE_LOG") or "").replace("{agent}", AGENT or "unknown") or None
SESSION = str(uuid.uuid4())
out_lock = threading.Lock()
record: dict = {"started": STARTED, "argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(), "calls": [],
                "events": 0}
record_path = None


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr, flush=True)
    finish(code)


def finish(code: int) -> None:
    record["exit"] = code
    record["ended"] = time.time()
    save()
    for server in list(servers.values()):
        server.close()
    sys.stdout.flush()
    os._exit(code)


def claim_record() -> None:
    global record_path
    if not LOG_DIR:
        return
    os.makedirs(LOG_DIR, exist_ok=True)
    n = 1
    while True:
        path = os.path.join(LOG_DIR, f"run-{n:03d}.json")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            n += 1
            continue
        os.close(fd)
        record["n"] = n
        record_path = path
        return


def save() -> None:
    if record_path:
        tmp = record_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, record_path)


def emit(event: dict) -> None:
    event.setdefault("session_id", SESSION)
    event.setdefault("uuid", str(uuid.uuid4()))
    record["events"] += 1
    with out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


# --- the command line ---------------------------------------------------------------------------------------

def parse(argv: list) -> tuple:
    opts: dict = {}
    positional = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional += argv[i + 1:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            i += 1
            continue
        name, eq, inline = arg.partition("=")
        if name not in OPTIONS:
            fail(f"error: unknown option '{name}'")
        arity = OPTIONS[name]
        key = ALIASES.get(name, name)
        i += 1
        if arity == 0:
            if eq:
                fail(f"error: option '{name}' does not take a value")
            opts[key] = True
        elif arity == 1:
            if eq:
                opts[key] = inline
            elif i < len(argv):
                opts[key] = argv[i]
                i += 1
            else:
                fail(f"error: option '{name} <value>' argument missing")
        elif arity == "?":
            if eq:
                opts[key] = inline
            elif i < len(argv) and not argv[i].startswith("-"):
                opts[key] = argv[i]
                i += 1
            else:
                opts[key] = True
        else:
            values = [inline] if eq else []
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            if not values:
                fail(f"error: option '{name} <values...>' argument missing")
            opts.setdefault(key, []).extend(values)
    if len(positional) > 1:
        fail(f"error: too many arguments. Expected 1 argument but got {len(positional)}.")
    return opts, positional


SETTING_SOURCES = ("user", "project", "local")


def setting_source_files(sources) -> list:
    """The settings files Claude Code reads besides ``--settings``: every source, or those ``sources`` names."""
    if sources is None:
        names = list(SETTING_SOURCES)
    else:
        names = [n.strip() for n in sources.split(",") if n.strip()]
        for n in names:
            if n not in SETTING_SOURCES:
                fail(f"Error: Invalid setting source: {n}. Valid options are: {', '.join(SETTING_SOURCES)}")
    config_dir = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.expanduser("~/.claude")
    where = {"user": os.path.join(config_dir, "settings.json"),
             "project": os.path.join(os.getcwd(), ".claude", "settings.json"),
             "local": os.path.join(os.getcwd(), ".claude", "settings.local.json")}
    return [where[n] for n in names]


def merge_setting_sources(flag_settings: dict, sources) -> dict:
    """The flag's settings with the permission rules of the settings files merged in, as Claude Code merges them."""
    merged = dict(flag_settings)
    perms = dict(merged.get("permissions") or {})
    for path in setting_source_files(sources):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        record.setdefault("setting_files", []).append(path)
        for key in ("allow", "deny"):
            extra = (data.get("permissions") or {}).get(key) or []
            if extra:
                perms[key] = list(perms.get(key) or []) + [r for r in extra if r not in (perms.get(key) or [])]
        if "defaultMode" in (data.get("permissions") or {}) and "defaultMode" not in perms:
            perms["defaultMode"] = data["permissions"]["defaultMode"]
    if perms:
        merged["permissions"] = perms
    return merged


def load_json_arg(value: str, what: str):
    if value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError as e:
            fail(f"Error: Invalid {what} JSON: {e}")
    try:
        with open(value) as f:
            text = f.read()
    except OSError:
        fail(f"Error: {what} file not found: {value}")
    record.setdefault("files", {})[value] = text
    try:
        return json.loads(text)
    except ValueError as e:
        fail(f"Error: Invalid {what} file {value}: {e}")


# --- MCP servers over stdio -----------------------------------------------------------------------------------

class Server:
    def __init__(self, name: str, spec: dict):
        self.name = name
        self.next_id = 0
        self.tools = []
        self.status = "failed"
        self.error = None
        env = {**os.environ, **(spec.get("env") or {})}
        try:
            self.proc = subprocess.Popen([spec["command"], *spec.get("args", [])], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                         text=True, encoding="utf-8", bufsize=1)
        except OSError as e:
            self.proc = None
            self.error = str(e)

    def request(self, method: str, params: dict, timeout: float = 30, on_notification=None) -> dict:
        self.next_id += 1
        rid = self.next_id
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise ConnectionError(f"MCP server {self.name} closed its stdout")
            msg = json.loads(line)
            if msg.get("id") == rid and ("result" in msg or "error" in msg):
                return msg
            if on_notification and "method" in msg:
                on_notification(msg)

    def notify(self, method: str, params: dict | None = None) -> None:
        msg = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def start(self) -> None:
        if self.proc is None:
            return
        try:
            init = self.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                               "clientInfo": {"name": "claude-code", "version": VERSION}})
            if "error" in init:
                self.error = init["error"]
                return
            self.protocol = init["result"]["protocolVersion"]
            self.notify("notifications/initialized")
            listed = self.request("tools/list", {})
            if "error" in listed:
                self.error = listed["error"]
                return
            self.tools = listed["result"]["tools"]
            self.status = "connected"
        except (ConnectionError, OSError, ValueError, KeyError) as e:
            self.error = str(e)

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()


servers: dict = {}


# --- permissions ----------------------------------------------------------------------------------------------

def bash_rule_matches(pattern: str, command: str) -> bool:
    if pattern.endswith(":*"):
        prefix = pattern[:-2]
        return command == prefix or command.startswith(prefix + " ")
    if pattern.endswith(" *") and command == pattern[:-2]:
        return True
    return fnmatch.fnmatchcase(command, pattern)


def path_rule_matches(pattern: str, path: str, cwd: str) -> bool:
    if pattern.startswith("//"):
        pattern = pattern[1:]
    elif pattern.startswith("~/"):
        pattern = os.path.expanduser(pattern)
    elif not pattern.startswith("/"):
        pattern = os.path.join(cwd, pattern)
    return fnmatch.fnmatchcase(os.path.abspath(path), pattern.replace("**", "*"))


class Permissions:
    def __init__(self, settings: dict, allowed: list, mode: str):
        perms = settings.get("permissions") or {}
        self.rules = list(perms.get("allow") or []) + list(allowed)
        self.deny = list(perms.get("deny") or [])
        self.mode = mode or perms.get("defaultMode") or "default"

    def _rules_for(self, tool: str, rules: list) -> list:
        out = []
        for rule in rules:
            name, paren, rest = rule.partition("(")
            if name == tool:
                out.append(rest[:-1] if paren else None)
        return out

    def allows_mcp(self, full_name: str) -> bool:
        if self.mode == "bypassPermissions":
            return True
        _, server, _tool = full_name.split("__", 2)
        for rule in self.rules:
            if rule in (f"mcp__{server}", full_name) or (rule.endswith("*") and rule.startswith(f"mcp__{server}__")
                                                          and fnmatch.fnmatchcase(full_name, rule)):
                return True
        return False

    def allows_bash(self, command: str) -> bool:
        if self.mode == "bypassPermissions":
            return True
        parts = [p.strip() for p in re.split(r"&&|\|\||;|\|", command) if p.strip()]
        patterns = self._rules_for("Bash", self.rules)
        if None in patterns:
            return True
        return all(any(bash_rule_matches(p, part) for p in patterns) for part in parts)

    def allows_edit(self, path: str, cwd: str) -> bool:
        if self.mode in ("bypassPermissions", "acceptEdits"):
            return True
        patterns = self._rules_for("Edit", self.rules)
        return None in patterns or any(path_rule_matches(p, path, cwd) for p in patterns)


def denied(tool: str) -> str:
    return f"Claude requested permissions to use {tool}, but you haven't granted it yet."


# --- the steps --------------------------------------------------------------------------------------------------

class Conversation:
    def __init__(self, perms: Permissions, prompt: str):
        self.perms = perms
        self.prompt = prompt
        self.result = "done"
        self.turns = 0
        self.progress_token = 0

    def assistant(self, content: list) -> None:
        self.turns += 1
        emit({"type": "assistant", "parent_tool_use_id": None, "message": {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": MODEL,
            "content": content, "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5}}})

    def tool(self, name: str, tool_input: dict, run) -> dict:
        use_id = f"toolu_{uuid.uuid4().hex[:24]}"
        self.assistant([{"type": "tool_use", "id": use_id, "name": name, "input": tool_input}])
        text, is_error, extra = run()
        block = {"tool_use_id": use_id, "type": "tool_result", "content": [{"type": "text", "text": text}]}
        if is_error:
            block["is_error"] = True
        emit({"type": "user", "parent_tool_use_id": None, "message": {"role": "user", "content": [block]}})
        call = {"tool": name, "input": tool_input, "text": text, "is_error": is_error, **extra}
        record["calls"].append(call)
        save()
        return call

    def mcp(self, server_name: str, tool: str, args: dict) -> dict:
        full = f"mcp__{server_name}__{tool}"

        def run():
            server = servers.get(server_name)
            if server is None or server.status != "connected" or tool not in {t["name"] for t in server.tools}:
                return f"Error: No such tool available: {full}", True, {}
            if not self.perms.allows_mcp(full):
                return denied(full), True, {"denied": True}
            self.progress_token += 1
            progress = []
            msg = server.request("tools/call", {"name": tool, "arguments": args,
                                                "_meta": {"progressToken": self.progress_token}},
                                 on_notification=lambda n: progress.append(n))
            extra = {"progress": len(progress)}
            if "error" in msg:
                return f"MCP error {msg['error']['code']}: {msg['error']['message']}", True, \
                    {**extra, "rpc_error": msg["error"]}
            result = msg["result"]
            text = "\n".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")
            return text, bool(result.get("isError")), {**extra, "structured": result.get("structuredContent")}

        return self.tool(full, args, run)

    def bash(self, command: str) -> dict:
        def run():
            if not self.perms.allows_bash(command):
                return denied("Bash"), True, {"denied": True}
            done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
            return (done.stdout + done.stderr).strip(), done.returncode != 0, {"exit": done.returncode}
        return self.tool("Bash", {"command": command}, run)

    def edit(self, path: str, content: str, append: bool) -> dict:
        full = os.path.abspath(path)

        def run():
            if not self.perms.allows_edit(full, os.getcwd()):
                return denied("Write" if not append else "Edit"), True, {"denied": True}
            if not append:  # Write creates the directories it needs, as Claude Code's does
                os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "a" if append else "w") as f:
                f.write(content)
            return f"The file {full} has been updated.", False, {}
        if append:
            return self.tool("Edit", {"file_path": full, "old_string": "", "new_string": content}, run)
        return self.tool("Write", {"file_path": full, "content": content}, run)

    def step(self, step: dict) -> None:
        if "tool" in step:
            self.mcp(step.get("server", "hyperhive"), step["tool"], step.get("args", {}))
        elif "reply" in step:
            found = re.search(r"#\d+ from (\S+) at", self.prompt)
            if not found:
                fail("fake claude: a reply step needs a message in the prompt")
            self.mcp("hyperhive", "send", {"to": found.group(1), "body": step["reply"]})
        elif "bash" in step:
            self.bash(step["bash"])
        elif "write" in step:
            self.edit(step["write"], step.get("content", ""), append=False)
        elif "append" in step:
            self.edit(step["append"], step.get("content", ""), append=True)
        elif "say" in step:
            self.assistant([{"type": "text", "text": step["say"]}])
            self.result = step["say"]
        elif "result" in step:
            self.result = step["result"]
        elif "sleep" in step:
            time.sleep(step["sleep"])
        elif "print" in step:
            with out_lock:
                sys.stdout.write(step["print"] + "\n")
                sys.stdout.flush()
        elif "too_long" in step:
            self.assistant([{"type": "text", "text": "Prompt is too long"}])
            emit({"type": "result", "subtype": "success", "is_error": True, "duration_ms": 5, "num_turns": 1,
                  "result": "Prompt is too long", "total_cost_usd": 0, "usage": {}})
            finish(1)
        elif "exit" in step:
            if step.get("stderr"):
                print(step["stderr"], file=sys.stderr, flush=True)
            finish(int(step["exit"]))
        elif "hang" in step:
            record["hung"] = True
            save()
            if step["hang"] == "ignore_term":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            while True:
                time.sleep(3600)
        else:
            fail(f"fake claude: unknown step {json.dumps(step)}")


def pick_steps(script, prompt: str, n: int, continuing: bool) -> list:
    if isinstance(script, list):
        return script
    for rule in script.get("rules", []):
        when = rule.get("when", {})
        if "prompt_contains" in when and when["prompt_contains"] not in prompt:
            continue
        if "run" in when and when["run"] != n:
            continue
        if "continue" in when and when["continue"] != continuing:
            continue
        if "agent" in when and when["agent"] != AGENT:
            continue
        return rule["steps"]
    return script.get("default", [{"say": "ok"}])


def main() -> None:
    claim_record()
    signal.signal(signal.SIGTERM, lambda *_: finish(143))
    opts, positional = parse(sys.argv[1:])
    if opts.get("--version"):
        print(VERSION)
        finish(0)
    if not opts.get("--print"):
        fail("fake claude: only --print (non-interactive) mode is supported")
    fmt = opts.get("--output-format", "text")
    if fmt not in ("text", "json", "stream-json"):
        fail(f"error: option '--output-format <format>' argument '{fmt}' is invalid. "
             "Allowed choices are text, json, stream-json.")
    if fmt == "stream-json" and not opts.get("--verbose"):
        fail("Error: When using --print, --output-format=stream-json requires --verbose")
    mode = opts.get("--permission-mode")
    if mode is not None and mode not in PERMISSION_MODES:
        fail(f"error: option '--permission-mode <mode>' argument '{mode}' is invalid. "
             f"Allowed choices are {', '.join(PERMISSION_MODES)}.")
    if opts.get("--system-prompt") and opts.get("--system-prompt-file"):
        fail("Error: Cannot use both --system-prompt and --system-prompt-file. Please use only one.")
    if opts.get("--continue") and opts.get("--resume"):
        fail("Error: --continue and --resume cannot be used together")
    system_prompt = opts.get("--system-prompt")
    if opts.get("--system-prompt-file"):
        path = opts["--system-prompt-file"]
        try:
            with open(path) as f:
                system_prompt = f.read()
        except OSError:
            fail(f"Error: System prompt file not found: {os.path.abspath(path)}")
    settings = load_json_arg(opts["--settings"], "settings") if "--settings" in opts else {}
    settings = merge_setting_sources(settings, opts.get("--setting-sources"))
    mcp_servers: dict = {}
    for value in opts.get("--mcp-config", []):
        config = load_json_arg(value, "MCP config")
        if not isinstance(config, dict) or not isinstance(config.get("mcpServers"), dict):
            fail(f"Error: Invalid MCP configuration in {value}: mcpServers: Expected object")
        for name, spec in config["mcpServers"].items():
            if spec.get("type", "stdio") != "stdio" or not isinstance(spec.get("command"), str):
                fail(f"Error: Invalid MCP configuration in {value}: mcpServers.{name}: needs a command")
            mcp_servers[name] = spec
    prompt = positional[0] if positional else ""
    if not sys.stdin.isatty():
        prompt = (prompt + "\n" + sys.stdin.read()).strip() if prompt else sys.stdin.read()
    if not prompt.strip():
        fail("Error: Input must be provided either through stdin or as a prompt argument when using --print")
    record.update(prompt=prompt, settings=settings, system_prompt=system_prompt, mcp_config=mcp_servers,
                  continue_=bool(opts.get("--continue")), model=opts.get("--model"),
                  allowed_tools=opts.get("--allowedTools", []),
                  env={k: os.environ.get(k) for k in ("HYPERHIVE_SOCKET", "MCP_TOOL_TIMEOUT", "HYPERHIVE_AGENT")})
    save()

    for name, spec in mcp_servers.items():
        servers[name] = Server(name, spec)
    threads = [threading.Thread(target=s.start) for s in servers.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record["tools"] = {name: [t["name"] for t in s.tools] for name, s in servers.items()}
    record["tool_specs"] = {name: s.tools for name, s in servers.items()}
    record["server_status"] = {name: {"status": s.status, "error": s.error, "pid": s.proc and s.proc.pid}
                               for name, s in servers.items()}
    save()
    emit({"type": "system", "subtype": "init", "cwd": os.getcwd(), "model": opts.get("--model") or MODEL,
          "permissionMode": mode or (settings.get("permissions") or {}).get("defaultMode", "default"),
          "tools": BUILTIN_TOOLS + [f"mcp__{n}__{t['name']}" for n, s in servers.items() for t in s.tools],
          "mcp_servers": [{"name": n, "status": s.status} for n, s in servers.items()],
          "apiKeySource": "none", "claude_code_version": VERSION.split()[0]})

    script_path = os.environ.get("FAKE_CLAUDE_SCRIPT")
    script = [{"say": "ok"}]
    if script_path:
        with open(script_path) as f:
            script = json.load(f)
    conversation = Conversation(Permissions(settings, opts.get("--allowedTools", []), mode), prompt)
    for step in pick_steps(script, prompt, record.get("n", 1), bool(opts.get("--continue"))):
        conversation.step(step)
    emit({"type": "result", "subtype": "success", "is_error": False, "duration_ms": int((time.time() - STARTED)
                                                                                          * 1000),
          "duration_api_ms": 0, "num_turns": max(conversation.turns, 1), "result": conversation.result,
          "total_cost_usd": 0, "usage": {"input_tokens": 10, "output_tokens": 5}, "permission_denials": []})
    finish(0)


if __name__ == "__main__":
    main()
