"""``hyperhive agent``: the turn loop that runs inside each agent's container.

It parks on ``recv`` over the agent's socket; when messages come it runs one Claude Code turn for the batch (the
wake prompt on stdin, the DESIGN command line), streams Claude's stream-json events to the live view (op
``turn_event``), acknowledges the messages once the turn succeeded, and sends telemetry (op ``stats``). A turn that
fails (``claude`` exits non-zero, hangs past the turn timeout, or says the prompt is too long twice) is reported as
an ``error`` turn event, which the service relays to the manager, and its messages are given back to come again
after a backoff. After each turn the notes file is compacted when it outgrew ``notesCompactBytes``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import re
import select
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from . import compaction
from .config import AGENT_KEYS, ConfigError, _agent, _Reader
from .errors import HiveError
from .manager_git import AGENTS_DIR_ENV
from .mcp import RECV_CAP_SECONDS, SERVER_NAME
from .transport import Client

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/hive/mcp.sock"
DEFAULT_AGENT_CONFIG = "/etc/hyperhive/agent.json"
HARNESS_KEYS = {"name", "role", "manager", "claudeCommand", "operatorPronouns", "stateDir", "agentsDir",
                "hyperhiveCommand"}
DEFAULT_AGENTS_DIR = "/agents"  # where the manager's container mounts <stateDir>/agents on NixOS
EXECUTABLE_ENV = "HYPERHIVE_EXECUTABLE"
PLAIN_PATH = re.compile(r"/[A-Za-z0-9_./+@-]*")
RECV_WAIT_SECONDS = 180
BATCH_MAX = 10
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0
# A received message stays leased this long unless the turn's heartbeat renews it: a harness that dies holds
# nothing for longer (a parked recv of a harness that is gone may still take the next message; it comes again).
LEASE_SECONDS = 120.0
TOO_LONG = "Prompt is too long"
EVENT_MAX_BYTES = 16_000  # a bigger stream-json event reaches the live view as a preview
STDERR_TAIL_BYTES = 8_000
TIMED_OUT_STATUS = 124  # what timeout(1) reports, for the turn.exit_status series
MCP_TOOL_TIMEOUT_MS = (RECV_CAP_SECONDS + 60) * 1000
SESSION_MARKER = ".hyperhive-session"
AGENT_HEADER = "X-Hyperhive-Agent"  # on every model API request of an agent's Claude sessions


class HarnessError(Exception):
    """A problem that stops the harness from starting, with a sentence naming what is wrong."""


# --- the agent's configuration --------------------------------------------------------------------------

@dataclass(frozen=True)
class AgentSettings:
    name: str
    role: str
    manager: str | None
    claude_command: tuple[str, ...] | None
    operator_pronouns: str
    state_dir: Path
    bash_allow: tuple[str, ...]
    model: str | None
    prompt: str
    notes_compact_bytes: int
    turn_timeout_seconds: float
    extra_mcp_servers: dict[str, dict]
    agents_dir: Path = Path(DEFAULT_AGENTS_DIR)
    # The absolute path of the `hyperhive` executable whose `hyperhive git` is the manager's only git.
    hyperhive_command: str | None = None

    @property
    def notes_path(self) -> Path:
        return self.state_dir / "notes.md"

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"


def load_agent_settings(path: str | Path, name: str, state_dir: str | Path | None = None) -> AgentSettings:
    """Read agent.json (the agent's hive.json section plus name, role, manager, ...) and check it."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"{path}: agent config not found (give --agent-config FILE)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: cannot read the agent config: {e}") from None
    except ValueError as e:
        raise HarnessError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: the agent config must be a JSON object")
    problems = []
    if raw.get("name", name) != name:
        problems.append(f'name: the config is for "{raw.get("name")}", but this harness runs as "{name}"')
    role = raw.get("role", "agent")
    if role not in ("agent", "manager"):
        problems.append(f'role: must be "agent" or "manager", not {json.dumps(role)}')
        role = "agent"
    for key in sorted(set(raw) - AGENT_KEYS - HARNESS_KEYS):
        log.warning("%s: ignoring unknown key %s", path, key)
    policy = {k: v for k, v in raw.items() if k in AGENT_KEYS}
    if role == "manager":  # the manager always may send anywhere; these keys mean nothing for it
        policy.pop("allowedRecipients", None)
        policy.pop("privateUsers", None)
    reader = _Reader()
    agent = _agent(reader, policy, "", name, role)
    problems += reader.errors
    command = raw.get("claudeCommand")
    if command is not None and (not isinstance(command, list) or not command
                                or not all(isinstance(c, str) for c in command)):
        problems.append("claudeCommand: must be a non-empty list of strings, or null for `claude` on PATH")
        command = None
    manager = raw.get("manager")
    if manager is not None and not isinstance(manager, str):
        problems.append("manager: must be a string")
        manager = None
    if problems:
        raise HarnessError("\n".join(f"{path}: {p.lstrip(':. ')}" for p in problems))
    agents_dir = raw.get("agentsDir") or DEFAULT_AGENTS_DIR
    if not isinstance(agents_dir, str) or not os.path.isabs(agents_dir):
        raise HarnessError(f"{path}: agentsDir: must be an absolute path")
    hyperhive_command = raw.get("hyperhiveCommand")
    if hyperhive_command is not None and (not isinstance(hyperhive_command, str)
                                          or not os.path.isabs(hyperhive_command)):
        raise HarnessError(f"{path}: hyperhiveCommand: must be an absolute path (of the hyperhive executable), "
                           "or null to use this harness's own")
    if hyperhive_command is None and role == "manager":
        hyperhive_command = own_hyperhive_command()
        if hyperhive_command is None:
            raise HarnessError(f"{path}: hyperhiveCommand: no hyperhive executable beside {sys.executable} nor on "
                               "PATH; name it (the manager runs git only through `hyperhive git`)")
    if hyperhive_command is not None and not PLAIN_PATH.fullmatch(hyperhive_command):
        raise HarnessError(f"{path}: hyperhiveCommand: {hyperhive_command!r} must be a plain path (letters, digits "
                           "and ._+@-/ only): the manager's Bash rule names it as it is typed")
    state = Path(state_dir or raw.get("stateDir") or "/state").resolve()
    return AgentSettings(
        name=name, role=role, manager=manager or (name if role == "manager" else None),
        claude_command=tuple(command) if command else None,
        operator_pronouns=str(raw.get("operatorPronouns") or "they/them"),
        state_dir=state, bash_allow=agent.bash_allow, model=agent.model, prompt=agent.prompt,
        notes_compact_bytes=agent.notes_compact_bytes, turn_timeout_seconds=agent.turn_timeout_seconds,
        extra_mcp_servers={n: s.to_claude() for n, s in agent.extra_mcp_servers},
        agents_dir=Path(os.path.normpath(agents_dir)),
        hyperhive_command=os.path.normpath(hyperhive_command) if hyperhive_command else None,
    )


def own_hyperhive_command() -> str | None:
    """The ``hyperhive`` executable of this installation as an absolute path, what the manager's Bash rule names
    for ``hyperhive git``: the one the service was started as ($HYPERHIVE_EXECUTABLE, set by the CLI), else the
    console script beside the interpreter (a venv), else the one on PATH."""
    for candidate in (os.environ.get(EXECUTABLE_ENV), Path(sys.executable).parent / "hyperhive",
                      shutil.which("hyperhive")):
        if candidate and os.path.isabs(candidate) and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.normpath(candidate)
    return None


def resolve_claude_command(settings: AgentSettings) -> tuple[list[str], bool]:
    """The command to run Claude Code with, and whether it is the scripted stand-in."""
    if settings.claude_command:
        return list(settings.claude_command), False
    from_env = os.environ.get("HYPERHIVE_CLAUDE_COMMAND")
    if from_env:
        try:
            command = json.loads(from_env)
        except ValueError:
            command = None
        if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            raise HarnessError("HYPERHIVE_CLAUDE_COMMAND must be a JSON list of strings, e.g. [\"claude\"]")
        return command, False
    claude = shutil.which("claude")
    if claude:
        return [claude], False
    return [sys.executable, "-P", "-m", "hyperhive.standin"], True


def python_path_env(*writable: Path) -> str:
    """This interpreter's import path, so a child ``python -m hyperhive ...`` finds the same packages -- without
    any directory under ``writable`` (an agent's /state, the manager's agents dir): a ``hyperhive/`` or
    ``json.py`` the agent wrote there would be imported in place of ours."""
    fenced = [os.path.realpath(w) for w in writable]
    out = []
    for p in sys.path:
        if not p or not os.path.isdir(p):
            continue
        real = os.path.realpath(p)
        if any(real == f or real.startswith(f + os.sep) for f in fenced):
            continue
        out.append(p)
    return os.pathsep.join(out)


def writable_dirs(settings: AgentSettings) -> tuple[Path, ...]:
    """Where the agent's model may write files: no import path of ours may lead there."""
    return (settings.state_dir, settings.agents_dir) if settings.is_manager else (settings.state_dir,)


# --- what Claude Code is given ----------------------------------------------------------------------------

# Claude Code would also read settings files of its own: ~/.claude/settings.json and, in its working directory (the
# agent's /state, which the agent edits), .claude/settings.json and .claude/settings.local.json. Their permission
# rules (and hooks) would add to the policy's; none of them is read, so --settings holds every rule there is.
NO_SETTING_SOURCES = ("--setting-sources", "")


def permission_rules(settings: AgentSettings) -> list[str]:
    """Claude Code permission rules from the agent's policy; with ``dontAsk`` anything else is refused.

    In a path rule ``//`` anchors at the filesystem root (``/x`` would be relative to the settings file). Claude
    Code reads its working directory (the agent's /state) without a rule, and nothing outside it: in ``dontAsk``
    mode a Read or Edit elsewhere is refused unless a rule names it. So an agent gets its own /state and nothing
    else; the manager also gets the proposed config repos and the state directories under the agents directory
    (``/agents`` in its container, ``<stateDir>/agents`` under ``hyperhive up``) -- its container mounts that whole
    directory read-write, so a narrower rule would not be a boundary -- and ``<hyperhive> git ...`` (the absolute
    path of the hyperhive executable) to commit there: never git itself, whose options, hooks and repo config can
    start any program (see hyperhive/manager_git.py). The same list is what modules/agent.nix must write into the
    manager's managed settings on NixOS.
    """
    rules = [f"Bash({rule})" for rule in settings.bash_allow]
    rules.append(f"mcp__{SERVER_NAME}__*")
    rules += [f"mcp__{name}__*" for name in settings.extra_mcp_servers]
    # Its own /state is the agent's to write (its notes live there).
    rules.append(f"Edit(/{settings.state_dir.as_posix()}/**)")
    if settings.is_manager:
        agents = settings.agents_dir.as_posix().rstrip("/")
        for tool in ("Read", "Edit"):
            rules += [f"{tool}(/{agents}/*/config/**)", f"{tool}(/{agents}/*/state/**)"]
        rules.append(f"Bash({settings.hyperhive_command} git *)")
    return rules


def permission_deny_rules(settings: AgentSettings) -> list[str]:
    """Claude Code ``permissions.deny`` (deny wins over allow): the manager never reads or writes a config repo's
    ``.git`` (nor a nested one's) with its file tools -- its config, hooks, info and objects are git's, and an
    edited one would run programs or change what hyperhive git does."""
    if not settings.is_manager:
        return []
    agents = settings.agents_dir.as_posix().rstrip("/")
    return [f"{tool}(/{agents}/*/config/{where}.git/**)" for tool in ("Read", "Edit") for where in ("", "**/")]


def claude_settings(rules: list[str], deny: list[str] | None = None) -> dict:
    permissions: dict[str, Any] = {"allow": rules}
    if deny:
        permissions["deny"] = deny
    permissions["defaultMode"] = "dontAsk"
    return {
        "permissions": permissions,
        # recv parks up to RECV_CAP_SECONDS; give tool calls room beyond it.
        "env": {"MCP_TOOL_TIMEOUT": str(MCP_TOOL_TIMEOUT_MS)},
    }


def mcp_config(settings: AgentSettings, socket_path: str) -> dict:
    if SERVER_NAME in settings.extra_mcp_servers:
        raise HarnessError(f'extraMcpServers: the name "{SERVER_NAME}" is taken by the hive\'s own tools')
    servers = {SERVER_NAME: {
        "type": "stdio",
        "command": sys.executable,
        # -P: Claude Code starts it in the agent's /state, which `python -m` would put first on the import path
        "args": ["-P", "-m", "hyperhive", "mcp", "--socket", socket_path],
        "env": {"HYPERHIVE_SOCKET": socket_path, "PYTHONPATH": python_path_env(*writable_dirs(settings)),
                "PYTHONSAFEPATH": "1"},
    }}
    for name, spec in settings.extra_mcp_servers.items():
        servers[name] = {"type": "stdio", **spec}
    return {"mcpServers": servers}


def system_prompt(settings: AgentSettings) -> str:
    template = resources.files("hyperhive").joinpath(
        "prompts", "manager.md" if settings.is_manager else "agent.md").read_text(encoding="utf-8")
    allow = "\n".join(f"- `{rule}`" for rule in settings.bash_allow) or "- (none: you cannot run shell commands)"
    return string.Template(template).safe_substitute(
        name=settings.name, manager=settings.manager or "the manager", pronouns=settings.operator_pronouns,
        notes_path=str(settings.notes_path), state_dir=str(settings.state_dir), bash_allow=allow,
        recv_cap=str(RECV_CAP_SECONDS), prompt=settings.prompt.strip() or "(no standing instructions)",
        agents_dir=settings.agents_dir.as_posix(), hyperhive=settings.hyperhive_command or "hyperhive",
    )


def agent_headers(existing: str | None, name: str) -> str:
    """Claude Code's ``ANTHROPIC_CUSTOM_HEADERS`` (``Name: value`` lines) with ``X-Hyperhive-Agent: <name>``: every
    API request of an agent's sessions says whose it is (for a gateway's accounting, and the stand-in model API)."""
    lines = [line for line in (existing or "").splitlines()
             if line.strip() and line.split(":", 1)[0].strip().lower() != AGENT_HEADER.lower()]
    return "\n".join([*lines, f"{AGENT_HEADER}: {name}"])


def wake_prompt(messages: list[dict], pending: int) -> str:
    """What the model is woken with: who wrote, what, and how much more is waiting."""
    count = f"{len(messages)} new message{'s' if len(messages) != 1 else ''}"
    more = f" ({pending} more pending: call recv to read them)" if pending else ""
    parts = [f"You have {count}{more}."]
    for m in messages:
        reply = f" in reply to your #{m['in_reply_to']}" if m.get("in_reply_to") is not None else ""
        header = f"--- {m.get('kind', 'message')} #{m['id']} from {m['from']}{reply} at {m.get('sent_at', '?')} ---"
        parts.append(f"{header}\n{m['body']}")
        if m.get("data"):
            parts.append(f"(details: {json.dumps(m['data'], ensure_ascii=False)})")
    parts.append("Act on this now. Keep what you must remember in your notes file before you finish.")
    return "\n\n".join(parts) + "\n"


# --- running claude ---------------------------------------------------------------------------------------

@dataclass
class ClaudeRun:
    exit_status: int | None = None
    timed_out: bool = False
    too_long: bool = False
    result_text: str | None = None
    result_is_error: bool = False
    tool_calls: Counter = field(default_factory=Counter)
    sent: Counter = field(default_factory=Counter)
    stderr_tail: str = ""
    duration: float = 0.0
    events: int = 0
    start_error: str | None = None
    # What the CLI's `system`/`init` and `result` events say the session used (stream-json).
    model: str | None = None
    tokens: dict = field(default_factory=dict)
    cost_usd: float = 0.0
    model_usage: dict = field(default_factory=dict)
    num_turns: int | None = None
    duration_api_ms: float | None = None
    started_at: float = 0.0
    # Each API answer's usage as its `assistant` events showed it (by message id): what a session the CLI never
    # summed up (killed at the turn timeout, or crashed before its `result` event) is counted from.
    streamed_usage: dict = field(default_factory=dict)
    got_result: bool = False

    @property
    def ok(self) -> bool:
        return self.start_error is None and not self.timed_out and not self.too_long and self.exit_status == 0

    @property
    def reason(self) -> str:
        if self.start_error:
            return self.start_error
        if self.timed_out:
            return (f"claude did not finish within the turn timeout ({self.duration:.0f}s) and was killed"
                    + ("; its tokens are as its answers streamed them, its cost is unknown"
                       if self.streamed_usage and not self.got_result else ""))
        if self.too_long:
            return "claude said the prompt is too long"
        if self.exit_status != 0:
            tail = self.stderr_tail.strip().splitlines()[-1:] or [self.result_text or ""]
            detail = f": {tail[0][:300]}" if tail[0] else ""
            return f"claude exited with status {self.exit_status}{detail}"
        return "ok"

    @property
    def status(self) -> str:
        """How the session ended, as the turns table says it: ok | timeout | too_long | failed."""
        if self.ok:
            return "ok"
        return "timeout" if self.timed_out else "too_long" if self.too_long else "failed"

    def add_usage(self, other: "ClaudeRun") -> None:
        for key, n in other.tokens.items():
            self.tokens[key] = self.tokens.get(key, 0) + n
        self.cost_usd += other.cost_usd

    def record(self, kind: str, wake: dict | None = None) -> dict:
        """The ``turn_record`` op's ``turn`` for this session."""
        tools = {name: n for name, n in self.tool_calls.items()}
        return {"kind": kind, "started_at": self.started_at, "ended_at": self.started_at + self.duration,
                "status": self.status, "exit_status": self.status_for_stats, "model": self.model,
                "wake": wake or {}, "tokens": dict(self.tokens), "cost_usd": self.cost_usd,
                "num_turns": self.num_turns, "duration_api_ms": self.duration_api_ms,
                "model_usage": self.model_usage, "tools": tools, "error": None if self.ok else self.reason}

    @property
    def status_for_stats(self) -> int:
        if self.timed_out:
            return TIMED_OUT_STATUS
        if self.exit_status is None:
            return 127
        return self.exit_status if self.exit_status >= 0 else 128 - self.exit_status


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # whatever it left behind (its MCP servers) in its process group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prctl():
    """libc's prctl, looked up once (not in a forked child), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _prctl()


def _die_with_harness() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel kill Claude Code when the harness dies.

    Claude Code runs in a session of its own (so that a timeout can kill it with its MCP servers); a harness killed
    by SIGKILL (the OOM killer, ``kill -9``, the local backend giving up on a stop) would otherwise leave it running
    its turn on: sending as the agent while the hive says it crashed, and alongside the turn a restarted harness
    runs for the same messages. (On NixOS the unit's cgroup is killed with it; under ``hyperhive up`` nothing else
    would.) The parent that counts is the thread that starts the process: the turn loop's, which outlives it."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the harness died before the line above: no signal will come
            os._exit(1)

    return preexec


def run_claude(argv: list[str], prompt: str, *, cwd: Path, env: dict, timeout: float,
               on_event: Callable[[dict], None] = lambda e: None, manager: str | None = None,
               on_start: Callable[[subprocess.Popen], None] = lambda p: None) -> ClaudeRun:
    """Run one Claude Code session to completion or timeout, feeding each stream-json event to ``on_event``."""
    run = ClaudeRun(started_at=time.time())
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=str(cwd), env=env, start_new_session=True, preexec_fn=_die_with_harness())
    except OSError as e:
        run.start_error = f"cannot run {argv[0]}: {e.strerror or e}"
        return run
    on_start(proc)
    lines: queue.Queue = queue.Queue()
    stderr_tail: deque = deque()

    def feed_stdin():
        try:
            proc.stdin.write(prompt.encode("utf-8"))
        except OSError:
            pass  # it exited without reading; its exit status tells why
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def read_stdout():
        for raw in proc.stdout:
            lines.put(raw)
        lines.put(None)

    def read_stderr():
        size = 0
        for raw in proc.stderr:
            stderr_tail.append(raw)
            size += len(raw)
            while size > STDERR_TAIL_BYTES and len(stderr_tail) > 1:
                size -= len(stderr_tail.popleft())

    threads = [threading.Thread(target=f, daemon=True) for f in (feed_stdin, read_stdout, read_stderr)]
    for t in threads:
        t.start()
    tools_by_id: dict[str, tuple[str, dict]] = {}
    deadline = started + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                run.timed_out = True
                break
            try:
                raw = lines.get(timeout=remaining)
            except queue.Empty:
                run.timed_out = True
                break
            if raw is None:
                break
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            run.events += 1
            try:
                event = json.loads(text)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                event = {"type": "output", "text": text}
            _account(run, event, tools_by_id, manager)
            if event.get("type") == "output" and TOO_LONG in text:
                run.too_long = True  # plain text output, as Claude Code prints it without stream-json
            on_event(event)
        if run.timed_out:
            _kill_group(proc)
        else:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.timed_out = True
                _kill_group(proc)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        else:
            try:  # its MCP servers, should they linger
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for t in threads:
            t.join(timeout=1)
        for stream in (proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
    run.exit_status = proc.returncode
    run.duration = time.monotonic() - started
    if not run.got_result and run.streamed_usage:
        # No totals from the CLI: the tokens its answers showed still count (a budget in tokens sees them); it
        # states no cost, and it shows an answer's output tokens only as they stood when the answer began.
        run.tokens = {key: sum(u.get(key, 0) for u in run.streamed_usage.values()) for key in USAGE_FIELDS}
    run.stderr_tail = b"".join(stderr_tail).decode("utf-8", errors="replace")
    if TOO_LONG in run.stderr_tail:
        run.too_long = True
    # Only a session that failed on it counts: the phrase in a message or a tool result is not the API's error.
    run.too_long = run.too_long and (run.exit_status != 0 or run.result_is_error)
    return run


def _account(run: ClaudeRun, event: dict, tools_by_id: dict, manager: str | None) -> None:
    """Count tool calls and successful sends from Claude Code's stream-json events."""
    kind = event.get("type")
    message = event.get("message") if isinstance(event.get("message"), dict) else {}
    content = message.get("content") if isinstance(message.get("content"), list) else []
    if kind == "assistant":
        usage = message.get("usage")
        if isinstance(usage, dict) and len(run.streamed_usage) < 10000:
            seen = run.streamed_usage.setdefault(str(message.get("id")), {})
            for key, name in USAGE_FIELDS.items():  # one answer is shown block by block: count it once
                seen[key] = max(seen.get(key, 0), _count(usage.get(name)))
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text" \
                    and str(block.get("text", "")).startswith(TOO_LONG):
                run.too_long = True  # the API's error, shown as the assistant's message
            if isinstance(block, dict) and block.get("type") == "tool_use":
                name = str(block.get("name") or "?")
                run.tool_calls[name] += 1
                tools_by_id[str(block.get("id"))] = (name, block.get("input") or {})
    elif kind == "user":
        for block in content:
            if not (isinstance(block, dict) and block.get("type") == "tool_result"):
                continue
            name, args = tools_by_id.get(str(block.get("tool_use_id")), ("", {}))
            if name == f"mcp__{SERVER_NAME}__send" and not block.get("is_error"):
                to = args.get("to") if isinstance(args, dict) else None
                run.sent["operator" if to == "operator" else "manager" if to == manager else "agent"] += 1
    elif kind == "system" and event.get("subtype") == "init" and isinstance(event.get("model"), str):
        run.model = event["model"][:200]
    elif kind == "result":
        run.got_result = True
        _usage(run, event)
        result = event.get("result")
        run.result_text = result if isinstance(result, str) else run.result_text
        run.result_is_error = bool(event.get("is_error"))
        if run.result_is_error and TOO_LONG in (run.result_text or ""):
            run.too_long = True


USAGE_FIELDS = {"input": "input_tokens", "output": "output_tokens", "cache_read": "cache_read_input_tokens",
                "cache_write": "cache_creation_input_tokens"}


def _count(value) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else 0


def _usage(run: ClaudeRun, event: dict) -> None:
    """Tokens and cost from the CLI's ``result`` event (``usage``, ``total_cost_usd``, ``modelUsage``, ...)."""
    usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
    run.tokens = {key: _count(usage.get(field)) for key, field in USAGE_FIELDS.items()}
    cost = event.get("total_cost_usd")
    run.cost_usd = float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0 else 0.0
    model_usage = event.get("modelUsage")
    if isinstance(model_usage, dict):
        run.model_usage = {str(k)[:200]: v for k, v in list(model_usage.items())[:20] if isinstance(v, dict)}
        if run.model is None and run.model_usage:
            run.model = next(iter(run.model_usage))
    num_turns = event.get("num_turns")
    run.num_turns = _count(num_turns) if num_turns is not None else None
    api_ms = event.get("duration_api_ms")
    run.duration_api_ms = float(api_ms) if isinstance(api_ms, (int, float)) and not isinstance(api_ms, bool) \
        and api_ms >= 0 else None


def wake_of(messages: list[dict], retry: bool) -> dict:
    """What woke a turn: the first message's kind and sender (an operator message, a reminder, an event, another
    agent's message), or a retry of a failed turn."""
    first = messages[0] if messages else {}
    data = first.get("data") if isinstance(first.get("data"), dict) else {}
    if retry:
        kind = "retry"
    elif first.get("kind") == "event":
        kind = "reminder" if data.get("what") == "reminder" else "event"
    elif first.get("from") == "operator":
        kind = "operator"
    else:
        kind = "message"
    return {"kind": kind, "from": str(first.get("from") or "")[:100] or None,
            "message_ids": [m["id"] for m in messages if isinstance(m.get("id"), int)][:1000]}


def tool_stat_key(name: str) -> str:
    prefix = f"mcp__{SERVER_NAME}__"
    short = name[len(prefix):] if name.startswith(prefix) else name
    key = "".join(c if c.isalnum() or c in "_.:/-" else "_" for c in short)[:95]
    return f"tool.{key or '_'}"


def preview_event(event: dict) -> dict:
    """The event as the live view gets it: whole, or a preview when it is too big for one socket line."""
    text = json.dumps(event, ensure_ascii=False)
    if len(text.encode("utf-8")) <= EVENT_MAX_BYTES:
        return event
    return {"type": event.get("type"), "subtype": event.get("subtype"), "truncated": True,
            "preview": text[:4000]}


# --- the harness ------------------------------------------------------------------------------------------

class Disconnected(Exception):
    pass


class Harness:
    def __init__(self, settings: AgentSettings, socket_path: str | Path, *, work_dir: Path | None = None,
                 recv_wait: float = RECV_WAIT_SECONDS, batch_max: int = BATCH_MAX,
                 retry_base: float = RETRY_BASE_SECONDS, lease_seconds: float = LEASE_SECONDS):
        self.settings = settings
        self.socket_path = str(Path(socket_path).resolve())
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=f"hyperhive-{settings.name}-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.recv_wait = recv_wait
        self.batch_max = batch_max
        self.retry_base = retry_base
        self.lease_seconds = lease_seconds
        self.command, self.standin = resolve_claude_command(settings)
        self.client: Client | None = None
        # One connection for everything, the turn's heartbeat included: a lease belongs to the connection that
        # took it, so the heartbeat renews what this connection received and takes it back after a restart.
        self._client_lock = threading.RLock()
        self.failures = 0
        self.last_turn_end: float | None = None
        self.leased: list[int] = []
        # A finished turn's messages whose ack has not reached the service (it was away): acknowledged before the
        # next recv, or the service, which requeues what was leased when it starts, would hand them over again.
        self.unacked: list[int] = []
        self.proc: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.turns = 0
        self.parent = os.getppid()
        self.model = settings.model  # what the next turn runs with; the operator may change it (turn_ready)
        self.over_budget = False

    # --- the broker -------------------------------------------------------------------------------------

    @property
    def compact_timeout(self) -> float:
        return min(self.settings.turn_timeout_seconds, 600)

    def call(self, op: str, timeout: float = 30, **args: Any) -> Any:
        """A broker op over one kept connection, reconnecting once if the service went away. A new connection
        first takes back the running turn's messages (the service requeued them if it restarted)."""
        with self._client_lock:
            for attempt in (1, 2):
                try:
                    if self.client is None:
                        self.client = Client(self.socket_path, timeout=timeout)
                        if self.leased and op != "lease":
                            self.client.sock.settimeout(min(timeout, 30))
                            try:
                                self._took_back(self.client.call("lease", ids=self.leased,
                                                                 seconds=self.lease_seconds))
                            except HiveError as e:
                                log.warning("taking back messages %s failed: %s", self.leased, e.message)
                    self.client.sock.settimeout(timeout)
                    return self.client.call(op, **args)
                except HiveError:
                    raise
                except (ConnectionError, OSError, ValueError) as e:
                    self._drop_client()
                    if attempt == 2:
                        raise Disconnected(str(e)) from None
            raise AssertionError("unreachable")

    def _took_back(self, result: Any) -> None:
        """What a ``lease`` of the turn's messages answered: those another connection holds now (``lost``: handed
        out again while the service was away) stay with it; the next renewal takes them back if it lets go."""
        lost = result.get("lost") if isinstance(result, dict) else None
        if lost:
            log.warning("messages %s of the running turn were handed out again while the hive was away; they "
                        "stay with whoever has them now", lost)

    def link_lost(self) -> bool:
        """Whether the kept connection is known to be gone (the service closed it: a restart), without waiting
        for a request in flight on it."""
        if not self._client_lock.acquire(blocking=False):
            return False  # a request is on it: that one finds out
        try:
            if self.client is None:
                return True
            poller = select.poll()
            poller.register(self.client.sock, select.POLLIN | select.POLLPRI)
            return bool(poller.poll(0))  # an idle connection has nothing to read: readable means hung up
        finally:
            self._client_lock.release()

    def _drop_client(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except OSError:
                pass
            self.client = None

    def quietly(self, op: str, **args: Any) -> Any:
        """An op whose failure must not stop the turn (live view, telemetry): logged, not raised."""
        try:
            return self.call(op, **args)
        except (HiveError, Disconnected) as e:
            log.warning("%s failed: %s", op, e)
            return None

    def publish(self, kind: str, **data: Any) -> None:
        self.quietly("turn_event", event={"type": kind, "data": data})

    def check_identity(self) -> dict:
        me = self.call("whoami")
        if me.get("name") != self.settings.name:
            raise HarnessError(f"{self.socket_path} speaks for {me.get('name')!r}, not for {self.settings.name!r}: "
                               "give the socket of this agent")
        if me.get("role") != self.settings.role:
            log.warning("the broker says %s is a %s; the agent config says %s", self.settings.name,
                        me.get("role"), self.settings.role)
            self.settings = _replace(self.settings, role=me.get("role", self.settings.role))
        if not self.settings.manager:
            agents = self.call("list_agents").get("agents", [])
            manager = next((a["name"] for a in agents if a.get("role") == "manager"), "manager")
            self.settings = _replace(self.settings, manager=manager)
        return me

    # --- files Claude Code is given ---------------------------------------------------------------------

    def write_files(self) -> dict[str, Path]:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)  # a tmp cleaner may have taken it
        files = {
            "settings": self.work_dir / "settings.json",
            "system_prompt": self.work_dir / "system-prompt.md",
            "mcp_config": self.work_dir / "mcp.json",
        }
        _write_json(files["settings"], claude_settings(permission_rules(s), permission_deny_rules(s)))
        _write_text(files["system_prompt"], system_prompt(s))
        _write_json(files["mcp_config"], mcp_config(s, self.socket_path))
        return files

    def claude_argv(self, files: dict[str, Path], *, continue_session: bool) -> list[str]:
        argv = [*self.command, "--print", "--verbose", "--output-format", "stream-json"]
        if self.model:
            argv += ["--model", self.model]
        if continue_session:
            argv.append("--continue")
        argv += ["--settings", str(files["settings"]), "--system-prompt-file", str(files["system_prompt"]),
                 "--mcp-config", str(files["mcp_config"]), "--strict-mcp-config", *NO_SETTING_SOURCES,
                 "--allowedTools", *permission_rules(self.settings)]
        deny = permission_deny_rules(self.settings)
        if deny:
            argv += ["--disallowedTools", *deny]
        return argv

    def claude_env(self) -> dict:
        env = {**os.environ, "HYPERHIVE_SOCKET": self.socket_path, "MCP_TOOL_TIMEOUT": str(MCP_TOOL_TIMEOUT_MS),
               "HYPERHIVE_AGENT": self.settings.name,
               # a `python -m ...` started in /state (an MCP server) never imports what the agent wrote there
               "PYTHONSAFEPATH": "1",
               "ANTHROPIC_CUSTOM_HEADERS": agent_headers(os.environ.get("ANTHROPIC_CUSTOM_HEADERS"),
                                                         self.settings.name),
               # The hive tools are the agent's whole world: offer them to the model at once, not behind a
               # ToolSearch round trip (Claude Code defers MCP tools when this is on).
               "ENABLE_TOOL_SEARCH": os.environ.get("ENABLE_TOOL_SEARCH", "false"),
               # The model the config or the operator names is the model asked for: Claude Code would otherwise
               # quietly replace a retired name with a newer model (and bill for that one).
               "CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP": "1"}
        if self.settings.is_manager:  # where `hyperhive git` finds the config repos
            env[AGENTS_DIR_ENV] = self.settings.agents_dir.as_posix()
        if self.standin:
            env["PYTHONPATH"] = python_path_env(*writable_dirs(self.settings))
        return env

    @property
    def session_marker(self) -> Path:
        return self.settings.state_dir / SESSION_MARKER

    # --- one turn ---------------------------------------------------------------------------------------

    def _run(self, prompt: str, *, continue_session: bool) -> ClaudeRun:
        files = self.write_files()
        return run_claude(
            self.claude_argv(files, continue_session=continue_session), prompt, cwd=self.settings.state_dir,
            env=self.claude_env(), timeout=self.settings.turn_timeout_seconds,
            on_event=lambda e: self.publish("event", event=preview_event(e)), manager=self.settings.manager,
            on_start=self._started)

    def _started(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def run_compaction(self, prompt: str) -> ClaudeRun:
        cwd = self.work_dir / "compaction"  # its own directory: the turns' --continue must not pick it up
        cwd.mkdir(exist_ok=True)
        files = {"settings": self.work_dir / "compact-settings.json",
                 "system_prompt": self.work_dir / "compact-system-prompt.md",
                 "mcp_config": self.work_dir / "compact-mcp.json"}
        _write_json(files["settings"], {"permissions": {"allow": [], "defaultMode": "dontAsk"}})
        _write_text(files["system_prompt"], compaction.SYSTEM_PROMPT)
        _write_json(files["mcp_config"], {"mcpServers": {}})
        argv = [*self.command, "--print", "--verbose", "--output-format", "stream-json"]
        if self.model:
            argv += ["--model", self.model]
        argv += ["--settings", str(files["settings"]), "--system-prompt-file", str(files["system_prompt"]),
                 "--mcp-config", str(files["mcp_config"]), "--strict-mcp-config", *NO_SETTING_SOURCES]
        run = run_claude(argv, prompt, cwd=cwd, env=self.claude_env(), timeout=self.compact_timeout,
                         on_start=self._started)
        self.record(run, "compaction")
        return run

    def record(self, run: ClaudeRun, kind: str, wake: dict | None = None) -> None:
        """Tell the service what a session cost (it adds the deployed tag and the telemetry samples)."""
        if run.start_error is None:
            self.quietly("turn_record", turn=run.record(kind, wake))

    def ready(self, wait: float) -> bool:
        """Whether a turn may start (the budget), waiting up to ``wait`` seconds; takes the model to use."""
        try:
            answer = self.call("turn_ready", timeout=wait + 60, wait_seconds=wait)
        except HiveError as e:
            if e.code == "bad_request" and "unknown op" in e.message:
                return True  # a service without budgets
            raise
        self.model = answer.get("model") or self.settings.model
        if not answer.get("ready", True):
            if not self.over_budget:
                log.warning("not starting a turn: %s", answer.get("reason"))
            self.over_budget = True
            return False
        self.over_budget = False
        return True

    def compact_notes(self, *, force: bool = False) -> compaction.CompactionResult:
        s = self.settings
        size = s.notes_path.stat().st_size if s.notes_path.exists() else 0
        if not force and size <= s.notes_compact_bytes:
            return compaction.CompactionResult("skipped", "within the limit", size, size)
        self.publish("event", event={"type": "hyperhive", "subtype": "compaction_start", "notes_bytes": size})
        result = compaction.compact_notes(s.notes_path, s.notes_compact_bytes, self.run_compaction, force=force)
        self.publish("event", event={"type": "hyperhive", "subtype": "compaction_end", "status": result.status,
                                     "reason": result.reason, "before": result.before, "after": result.after})
        if result.status == "failed":
            log.warning("notes compaction failed, the notes are as they were: %s", result.reason)
        return result

    def heartbeat(self, ids: list[int], stop: threading.Event) -> None:
        """Renew the lease of the turn's messages until ``stop``, on the connection that received them. When the
        service closes that connection (a restart), take them back at once on a new one: the service requeued
        them at its start, and another connection of the agent would be handed them again."""
        interval = max(self.lease_seconds / 4, 0.05)
        due = time.monotonic() + interval
        away = False
        while not stop.wait(max(0.0, min(due - time.monotonic(), 1.0))):
            held = [i for i in ids if i in self.leased]  # not once the turn acknowledged or gave them back
            if not held or time.monotonic() < due and not self.link_lost():
                continue
            due = time.monotonic() + interval
            try:
                self._took_back(self.call("lease", timeout=10, ids=held, seconds=self.lease_seconds))
                away = False
            except HiveError as e:
                log.warning("renewing the lease of %s failed: %s", held, e.message)
            except Disconnected as e:
                # every second until it is back (a restart), then the messages are taken back at once
                (log.debug if away else log.warning)("renewing the lease of %s failed: %s; trying again", held, e)
                away = True
                due = time.monotonic() + min(interval, 1.0)

    def handle(self, messages: list[dict], pending: int) -> bool:
        """One turn for a batch of messages; True when it succeeded and the messages were acknowledged."""
        ids = [m["id"] for m in messages]
        stop = threading.Event()
        beat = threading.Thread(target=self.heartbeat, args=(ids, stop), name="lease-heartbeat", daemon=True)
        beat.start()
        try:
            return self._turn(messages, pending)
        finally:
            stop.set()
            beat.join(timeout=15)

    def _turn(self, messages: list[dict], pending: int) -> bool:
        started = time.time()
        wake = wake_of(messages, retry=self.failures > 0)
        ids = [m["id"] for m in messages]
        self.leased = ids
        self.turns += 1
        self.publish("turn_start", turn=self.turns, messages=[
            {"id": m["id"], "from": m["from"], "kind": m.get("kind"), "body": m["body"][:2000]} for m in messages],
            pending=pending, standin=self.standin)
        prompt = wake_prompt(messages, pending)
        run = self._run(prompt, continue_session=self.session_marker.exists())
        retried = False
        if run.too_long and not run.timed_out:
            # The conversation has outgrown the context: compact the notes (the durable memory) and start afresh.
            self.publish("event", event={"type": "hyperhive", "subtype": "prompt_too_long",
                                         "action": "compacting notes and retrying once in a new conversation"})
            self.compact_notes(force=True)
            first = run
            self.record(first, "turn", wake)
            run = self._run(prompt, continue_session=False)
            retried = True
        self.proc = None
        self.record(run, "turn", wake)  # each session with its own tools (the first one's are in its record)
        if retried:  # the turn's telemetry counts what both sessions did
            run.tool_calls += first.tool_calls
            run.sent += first.sent
        if run.ok:
            self.failures = 0
            _write_text(self.session_marker, f"{time.time()}\n")
            self.leased = []
            self.unacked += ids
            try:
                self.acknowledge()
            except Disconnected as e:
                log.warning("acknowledging messages %s failed (%s); trying again before the next recv", ids, e)
        else:
            self.failures += 1
            backoff = min(self.retry_base * 2 ** (self.failures - 1), RETRY_MAX_SECONDS)
            self.publish("error", reason=run.reason, exit_status=run.status_for_stats, timed_out=run.timed_out,
                         too_long=run.too_long, retried=retried, stderr=run.stderr_tail[-2000:],
                         consecutive_failures=self.failures, retry_in_seconds=backoff, message_ids=ids)
            log.error("turn %d failed: %s; retrying its messages in %gs", self.turns, run.reason, backoff)
            self.quietly("lease", ids=ids, seconds=backoff)  # they come again after the backoff
            self.leased = []
        self.publish("turn_end", turn=self.turns, ok=run.ok, exit_status=run.status_for_stats,
                     duration_s=round(run.duration, 3), tool_calls=sum(run.tool_calls.values()),
                     result=(run.result_text or "")[:2000], retried=retried, model=run.model,
                     tokens=run.tokens, cost_usd=round(run.cost_usd, 6))
        compacted = self.compact_notes() if run.ok else None
        self.send_stats(run, started, depth=len(messages) + pending, compacted=compacted)
        return run.ok

    def acknowledge(self) -> None:
        """Acknowledge what finished turns left unacknowledged; Disconnected when the service is still away."""
        if not self.unacked:
            return
        try:
            self.call("ack", ids=self.unacked)
        except HiveError as e:
            log.warning("the broker refused to acknowledge messages %s: %s", self.unacked, e.message)
        self.unacked = []

    def send_stats(self, run: ClaudeRun, started: float, *, depth: int, compacted=None) -> None:
        now = time.time()
        samples = [
            ("turn.duration_s", now - started),
            ("turn.tool_calls", sum(run.tool_calls.values())),
            ("turn.exit_status", run.status_for_stats),
            ("inbox.depth", depth),
            *((f"sent.{kind}", run.sent.get(kind, 0)) for kind in ("agent", "manager", "operator")),
            *((tool_stat_key(name), n) for name, n in sorted(run.tool_calls.items())),
        ]
        if self.last_turn_end is not None:
            samples.append(("turn.since_last_s", started - self.last_turn_end))
        notes = self.settings.notes_path
        samples.append(("notes.bytes", notes.stat().st_size if notes.exists() else 0))
        if self.standin:
            samples.append(("model.standin", 1))
        self.last_turn_end = now
        self.quietly("stats", samples=[{"key": k, "value": float(v), "ts": now} for k, v in samples])

    # --- the loop ---------------------------------------------------------------------------------------

    def run_forever(self, once: bool = False) -> None:
        delay = 0.5
        announced = False
        while not self.stopping.is_set():
            if os.getppid() != self.parent:
                # Whoever started us (`hyperhive up`, a test) is gone without stopping us: do not linger.
                log.warning("the process that started this harness has gone; stopping")
                break
            try:
                if not announced:
                    self.check_identity()
                    if self.standin:
                        log.warning("`claude` is not installed: %s runs with the scripted stand-in model",
                                    self.settings.name)
                    # the dashboard labels an agent by the latest value: say it either way
                    self.quietly("stats", samples=[{"key": "model.standin", "value": float(self.standin)}])
                    log.info("harness of %s (%s) ready on %s; claude: %s", self.settings.name, self.settings.role,
                             self.socket_path, " ".join(self.command))
                    announced = True
                self.acknowledge()
                if not self.ready(self.recv_wait):
                    continue  # over budget: the messages wait unread; ask again (the service parks the call)
                got = self.call("recv", timeout=self.recv_wait + 60, wait_seconds=self.recv_wait,
                                max=self.batch_max, lease_seconds=self.lease_seconds)
                if got.get("messages") and not self.ready(0):
                    # the budget ran out while waiting (another agent's turn): give them back untouched
                    self.quietly("lease", ids=[m["id"] for m in got["messages"]], seconds=0)
                    continue
                delay = 0.5
            except Disconnected as e:
                log.warning("the hive is not reachable (%s); trying again in %.1fs", e, delay)
                if self.stopping.wait(delay):
                    break
                delay = min(delay * 2, 10)
                continue
            except HiveError as e:  # a refusal (a policy plugin, a service being reconfigured): wait, retry
                log.error("the broker refused %s: %s: %s; trying again in %.1fs",
                          "whoami" if not announced else "recv", e.code, e.message, delay)
                if self.stopping.wait(delay):
                    break
                delay = min(delay * 2, 60)
                continue
            messages = got.get("messages") or []
            if not messages:
                continue
            self.handle(messages, int(got.get("unread") or 0))
            if once:
                break

    def shutdown(self) -> None:
        """Stop a running claude and give back what this harness holds, so it comes again at once."""
        self.stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            _kill_group(proc)
        if self.leased:
            try:
                self.call("lease", timeout=5, ids=self.leased, seconds=0)
            except (HiveError, Disconnected):
                pass
            self.leased = []
        try:
            self.acknowledge()
        except Disconnected:
            log.warning("messages %s of a finished turn were not acknowledged: the hive is away; they will come "
                        "again", self.unacked)
        self._drop_client()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def _replace(settings: AgentSettings, **changes) -> AgentSettings:
    from dataclasses import replace

    return replace(settings, **changes)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_json(path: Path, value: Any) -> None:
    _write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def main(name: str, socket_path: str, agent_config: str, state_dir: str | None, work_dir: str | None,
         once: bool = False, lease_seconds: float = LEASE_SECONDS) -> int:
    try:
        settings = load_agent_settings(agent_config, name, state_dir)
        harness = Harness(settings, socket_path, work_dir=Path(work_dir) if work_dir else None,
                          lease_seconds=lease_seconds)
    except (HarnessError, ConfigError) as e:
        print(f"hyperhive agent: {e}", file=sys.stderr)
        return 2

    class Stop(BaseException):
        pass

    def on_signal(signum, _frame):
        raise Stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        harness.run_forever(once=once)
    except Stop:
        log.info("stopping")
    except HarnessError as e:
        print(f"hyperhive agent: {e}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        harness.shutdown()
    return 0
