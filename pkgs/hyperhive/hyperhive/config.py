"""Load and validate the hive configuration (``hive.json`` from Nix, ``hive.toml`` by hand).

One loader for both formats; every error names the file and the key path, e.g.
``hive.toml: agents.bob.allowedRecipients[2]: unknown agent "carl"``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,7}[a-z0-9])?$")  # modules/lib.nix namePattern: why
MAX_SOCKET_PATH_BYTES = 107  # sun_path holds 108 bytes with the closing NUL (unix(7))
# Names the service speaks as or records under itself: "system" sends events, "operator" is the human, "hive"
# holds host-wide telemetry (approvals.queue): an agent named so would forge them or overwrite their series.
RESERVED_NAMES = frozenset({"manager", "operator", "system", "hive"})
SCHEMA_VERSION = 1
DEFAULT_STATE_DIR = "/var/lib/hyperhive"
DEFAULT_RUN_DIR = "/run/hyperhive"


class ConfigError(Exception):
    """A configuration that cannot be used; ``errors`` holds one sentence per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__("\n".join(f"{source}: {e}" for e in errors))


@dataclass(frozen=True)
class McpServer:
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def to_claude(self) -> dict:
        return {"command": self.command, "args": list(self.args), "env": dict(self.env)}


@dataclass(frozen=True)
class Budget:
    """A daily limit (UTC day) in dollars and/or tokens; None is no limit."""

    daily_usd: float | None = None
    daily_tokens: int | None = None

    @property
    def limited(self) -> bool:
        return self.daily_usd is not None or self.daily_tokens is not None

    def to_json(self) -> dict:
        return {"dailyUsd": self.daily_usd, "dailyTokens": self.daily_tokens}


@dataclass(frozen=True)
class AgentConfig:
    name: str
    allowed_recipients: tuple[str, ...] | None = None
    bash_allow: tuple[str, ...] = ()
    private_users: bool = True
    model: str | None = None
    prompt: str = ""
    notes_compact_bytes: int = 65536
    turn_timeout_seconds: int = 1800
    extra_mcp_servers: tuple[tuple[str, McpServer], ...] = ()
    budget: Budget = Budget()
    role: str = "agent"

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"

    def to_json(self) -> dict:
        return {
            "allowedRecipients": None if self.allowed_recipients is None else list(self.allowed_recipients),
            "bashAllow": list(self.bash_allow),
            "privateUsers": self.private_users,
            "model": self.model,
            "prompt": self.prompt,
            "notesCompactBytes": self.notes_compact_bytes,
            "turnTimeoutSeconds": self.turn_timeout_seconds,
            "extraMcpServers": {n: s.to_claude() for n, s in self.extra_mcp_servers},
            "budget": self.budget.to_json(),
        }


@dataclass(frozen=True)
class DashboardConfig:
    listen: str = "127.0.0.1:8080"
    token_file: str | None = None
    session_max_age_seconds: int = 43200  # a login lasts 12 hours

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class BrokerConfig:
    max_message_bytes: int = 65536
    recv_max_wait_seconds: float = 180
    lease_seconds: float = 600
    max_connections_per_agent: int = 32
    idle_timeout_seconds: float = 900


@dataclass(frozen=True)
class LimitsConfig:
    """Quotas that keep one agent (or the manager) from flooding the others and the operator.

    ``max_unacked_per_sender``: messages one sender may have waiting, unacknowledged, in one recipient's inbox
    (per pair, so a flooder fills only its own share and never blocks another sender; the operator's inbox counts
    what the operator has not marked read). ``max_pending_questions``: pending questions per asker.
    ``max_pending_approvals``: pending approvals per requester. ``max_pending_reminders``: reminders an agent has
    set and that are not yet due. ``max_drafts``: two-step spawns being prepared (each one a repo the page lists).
    The operator and ``system`` are not limited.
    """

    max_unacked_per_sender: int = 100
    max_pending_questions: int = 20
    max_pending_approvals: int = 20
    max_pending_reminders: int = 50
    max_drafts: int = 10


@dataclass(frozen=True)
class RetentionConfig:
    failed_max_age_days: float = 14
    denied_max_age_days: float = 14
    drop_intermediate_tags: bool = True


@dataclass(frozen=True)
class Config:
    source: str
    state_dir: Path
    run_dir: Path
    manager: str
    backend: str
    dashboard: DashboardConfig
    broker: BrokerConfig
    retention: RetentionConfig
    agents: dict[str, AgentConfig]
    manager_settings: AgentConfig
    limits: LimitsConfig = LimitsConfig()
    operator_pronouns: str = "they/them"
    claude_command: tuple[str, ...] | None = None
    budget: Budget = Budget()  # the whole hive's daily limit
    version: int = SCHEMA_VERSION

    def agent(self, name: str) -> AgentConfig | None:
        if name == self.manager:
            return self.manager_settings
        return self.agents.get(name)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "hive.db"

    @property
    def host_socket(self) -> Path:
        return self.run_dir / "host.sock"

    @property
    def dashboard_token_file(self) -> str | None:
        """The file of the dashboard's token: ``dashboard.tokenFile``; with none, under the nixos-container backend,
        ``<stateDir>/dashboard.token``, which the service makes (dashboard/security.py: its containers share the
        host's network, so a token is never left out there)."""
        if self.dashboard.token_file or self.backend != "nixos-container":
            return self.dashboard.token_file
        return str(self.state_dir / "dashboard.token")

    def agent_socket(self, name: str) -> Path:
        return agent_socket_path(self.run_dir, name, self.manager)

    def to_json(self) -> dict:
        """The config in hive.json form (what ``hyperhive init`` writes as TOML)."""
        manager = self.manager_settings.to_json()
        for key in ("allowedRecipients", "privateUsers"):
            manager.pop(key)
        return {
            "version": self.version,
            "stateDir": str(self.state_dir),
            "runDir": str(self.run_dir),
            "manager": self.manager,
            "backend": self.backend,
            "operatorPronouns": self.operator_pronouns,
            "dashboard": {"listen": self.dashboard.listen, "tokenFile": self.dashboard.token_file,
                          "sessionMaxAgeSeconds": self.dashboard.session_max_age_seconds},
            "broker": {
                "maxMessageBytes": self.broker.max_message_bytes,
                "recvMaxWaitSeconds": self.broker.recv_max_wait_seconds,
                "leaseSeconds": self.broker.lease_seconds,
                "maxConnectionsPerAgent": self.broker.max_connections_per_agent,
                "idleTimeoutSeconds": self.broker.idle_timeout_seconds,
            },
            "limits": {
                "maxUnackedPerSender": self.limits.max_unacked_per_sender,
                "maxPendingQuestions": self.limits.max_pending_questions,
                "maxPendingApprovals": self.limits.max_pending_approvals,
                "maxPendingReminders": self.limits.max_pending_reminders,
                "maxDrafts": self.limits.max_drafts,
            },
            "retention": {
                "failedMaxAgeDays": self.retention.failed_max_age_days,
                "deniedMaxAgeDays": self.retention.denied_max_age_days,
                "dropIntermediateTags": self.retention.drop_intermediate_tags,
            },
            "harness": {"claudeCommand": None if self.claude_command is None else list(self.claude_command)},
            "budget": self.budget.to_json(),
            "managerSettings": manager,
            "agents": {name: a.to_json() for name, a in self.agents.items()},
        }


def check_name(name: Any) -> str | None:
    """Why ``name`` cannot name an agent, or None when it can."""
    if not isinstance(name, str):
        return f"an agent name must be a string, not {type(name).__name__}"
    if not NAME_RE.match(name):
        return (
            f'invalid agent name "{name}": use 1 to 9 characters, a lowercase letter first, '
            "then lowercase letters, digits or '-', and a letter or digit last (the name is its container's host name)"
        )
    if name in RESERVED_NAMES:
        return f'"{name}" is reserved and cannot name an agent'
    return None


class _Reader:
    """Walks a raw mapping, collecting every error with its key path instead of stopping at the first."""

    def __init__(self):
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def table(self, raw: dict, path: str, known: set[str]) -> dict:
        if not isinstance(raw, dict):
            self.error(path, f"must be a table/object, not {_kind(raw)}")
            return {}
        for key in raw:
            if key not in known:
                self.error(_join(path, key), f"unknown key (known: {', '.join(sorted(known))})")
        return raw

    def get(self, raw: dict, path: str, key: str, kind, default, *, nullable=False, check=None):
        full = _join(path, key)
        if key not in raw:
            return default
        value = raw[key]
        if value is None and nullable:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            self.error(full, f"must be {_names(kinds)}, not a boolean")
            return default
        if not isinstance(value, kinds):
            self.error(full, f"must be {_names(kinds)}{' or null' if nullable else ''}, not {_kind(value)}")
            return default
        if check:
            problem = check(value)
            if problem:
                self.error(full, problem)
                return default
        return value

    def str_list(self, raw: dict, path: str, key: str, default, *, nullable=False):
        value = self.get(raw, path, key, list, default, nullable=nullable)
        if value is None or value is default:
            return value
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.error(f"{_join(path, key)}[{i}]", f"must be a string, not {_kind(item)}")
            else:
                out.append(item)
        return tuple(out)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def _names(kinds) -> str:
    words = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list",
             dict: "a table"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def _positive(value) -> str | None:
    return None if value > 0 else f"must be positive, got {value}"


# The longest broker times (modules/lib.nix maxSeconds, which the NixOS options declare too): a parked recv of more
# than a day, or a lease of more than a week, helps nobody, and inf or 1e12 would overflow the service's waits.
MAX_RECV_WAIT_SECONDS = 86400
MAX_LEASE_SECONDS = 604800


def _seconds_up_to(limit: int):
    return lambda value: _positive(value) or (None if value <= limit else f"must be at most {limit}, got {value}")


def _days(value) -> str | None:
    # (negative: every failed or denied tag would be dropped at once, however new)
    return None if 0 <= value < math.inf else f"must be 0 or more days, got {value}"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (where only this machine can connect)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        return f'must be "HOST:PORT" with a port from 0 (any free port) to 65535, got "{value}"'
    return None


AGENT_KEYS = {"allowedRecipients", "bashAllow", "privateUsers", "model", "prompt", "notesCompactBytes",
              "turnTimeoutSeconds", "extraMcpServers", "budget"}
MANAGER_KEYS = AGENT_KEYS - {"allowedRecipients", "privateUsers"}
TOP_KEYS = {"version", "stateDir", "runDir", "manager", "backend", "dashboard", "broker", "retention", "agents",
            "managerSettings", "operatorPronouns", "harness", "limits", "budget"}
BACKENDS = ("nixos-container", "local")


def _agent(r: _Reader, raw: dict, path: str, name: str, role: str) -> AgentConfig:
    raw = r.table(raw, path, AGENT_KEYS if role == "agent" else MANAGER_KEYS)
    servers = []
    mcp = r.get(raw, path, "extraMcpServers", dict, {})
    for sname, spec in mcp.items():
        spath = f"{path}.extraMcpServers.{sname}"
        if sname == "hyperhive":
            r.error(spath, 'the name "hyperhive" is taken by the hive\'s own tools')
            continue
        spec = r.table(spec, spath, {"command", "args", "env", "type"})
        command = r.get(spec, spath, "command", str, None)
        if command is None:
            r.error(spath, "needs a \"command\"")
            continue
        args = r.str_list(spec, spath, "args", ())
        env = r.get(spec, spath, "env", dict, {})
        for k, v in env.items():
            if not isinstance(v, str):
                r.error(f"{spath}.env.{k}", f"must be a string, not {_kind(v)}")
        servers.append((sname, McpServer(command, tuple(args), tuple(sorted((k, v) for k, v in env.items()
                                                                             if isinstance(v, str))))))
    return AgentConfig(
        name=name,
        role=role,
        allowed_recipients=r.str_list(raw, path, "allowedRecipients", None, nullable=True),
        bash_allow=r.str_list(raw, path, "bashAllow", ()),
        private_users=r.get(raw, path, "privateUsers", bool, True),
        model=r.get(raw, path, "model", str, None, nullable=True),
        prompt=r.get(raw, path, "prompt", str, ""),
        notes_compact_bytes=r.get(raw, path, "notesCompactBytes", int, 65536, check=_positive),
        turn_timeout_seconds=r.get(raw, path, "turnTimeoutSeconds", int, 1800, check=_positive),
        extra_mcp_servers=tuple(servers),
        budget=_budget(r, raw, path),
    )


def _non_negative(value) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"


def _budget(r: "_Reader", raw: dict, path: str) -> Budget:
    """``budget = {dailyUsd, dailyTokens}`` under ``path`` (each null or absent for no limit)."""
    full = _join(path, "budget")
    b = r.table(r.get(raw, path, "budget", dict, {}, nullable=True) or {}, full, {"dailyUsd", "dailyTokens"})
    return Budget(
        daily_usd=r.get(b, full, "dailyUsd", (int, float), None, nullable=True, check=_non_negative),
        daily_tokens=r.get(b, full, "dailyTokens", int, None, nullable=True, check=_non_negative),
    )


def _directories(r: "_Reader", raw: dict, base_dir: Path | None) -> tuple[Path, Path]:
    """``stateDir`` and ``runDir``, relative ones taken relative to ``base_dir``; ``runDir`` defaults to
    ``<stateDir>/run`` when stateDir is set."""
    def directory(key, default):
        value = r.get(raw, "", key, str, default, check=lambda v: None if v else "must not be empty")
        p = Path(value)
        if not p.is_absolute():
            p = (base_dir or Path.cwd()) / p
        return p.resolve()

    state_dir = directory("stateDir", DEFAULT_STATE_DIR)
    return state_dir, directory("runDir", DEFAULT_RUN_DIR if "stateDir" not in raw else str(state_dir / "run"))


def parse_config(raw: Any, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate a raw mapping; relative ``stateDir``/``runDir`` are taken relative to ``base_dir``."""
    r = _Reader()
    raw = r.table(raw, "", TOP_KEYS)
    version = r.get(raw, "", "version", int, SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        r.error("version", f"unsupported version {version} (this hyperhive reads version {SCHEMA_VERSION})")
    manager = r.get(raw, "", "manager", str, "manager", check=_manager_name)
    backend = r.get(raw, "", "backend", str, "nixos-container",
                    check=lambda v: None if v in BACKENDS else f'unknown backend "{v}" (known: {", ".join(BACKENDS)})')

    state_dir, run_dir = _directories(r, raw, base_dir)

    d = r.table(r.get(raw, "", "dashboard", dict, {}), "dashboard", {"listen", "tokenFile", "sessionMaxAgeSeconds"})
    dashboard = DashboardConfig(
        listen=r.get(d, "dashboard", "listen", str, "127.0.0.1:8080", check=_listen),
        token_file=r.get(d, "dashboard", "tokenFile", str, None, nullable=True),
        session_max_age_seconds=r.get(d, "dashboard", "sessionMaxAgeSeconds", int, 43200, check=_positive),
    )
    if dashboard.token_file and not Path(dashboard.token_file).is_absolute():
        dashboard = replace(dashboard, token_file=str((base_dir or Path.cwd()) / dashboard.token_file))
    if not dashboard.token_file and not is_loopback_host(dashboard.host):
        r.error("dashboard.listen", f'"{dashboard.listen}" is not a loopback address and dashboard.tokenFile is '
                "not set: the dashboard would be open to the network without a token (set "
                "dashboard.tokenFile, or listen on 127.0.0.1)")
    b = r.table(r.get(raw, "", "broker", dict, {}), "broker", {"maxMessageBytes", "recvMaxWaitSeconds",
                                                               "leaseSeconds", "maxConnectionsPerAgent",
                                                               "idleTimeoutSeconds"})
    broker = BrokerConfig(
        max_message_bytes=r.get(b, "broker", "maxMessageBytes", int, 65536, check=_positive),
        recv_max_wait_seconds=r.get(b, "broker", "recvMaxWaitSeconds", (int, float), 180,
                                    check=_seconds_up_to(MAX_RECV_WAIT_SECONDS)),
        lease_seconds=r.get(b, "broker", "leaseSeconds", (int, float), 600, check=_seconds_up_to(MAX_LEASE_SECONDS)),
        max_connections_per_agent=r.get(b, "broker", "maxConnectionsPerAgent", int, 32, check=_positive),
        idle_timeout_seconds=r.get(b, "broker", "idleTimeoutSeconds", (int, float), 900, check=_positive),
    )
    lim = r.table(r.get(raw, "", "limits", dict, {}), "limits",
                  {"maxUnackedPerSender", "maxPendingQuestions", "maxPendingApprovals", "maxPendingReminders",
                   "maxDrafts"})
    limits = LimitsConfig(
        max_unacked_per_sender=r.get(lim, "limits", "maxUnackedPerSender", int, 100, check=_positive),
        max_pending_questions=r.get(lim, "limits", "maxPendingQuestions", int, 20, check=_positive),
        max_pending_approvals=r.get(lim, "limits", "maxPendingApprovals", int, 20, check=_positive),
        max_pending_reminders=r.get(lim, "limits", "maxPendingReminders", int, 50, check=_positive),
        max_drafts=r.get(lim, "limits", "maxDrafts", int, 10, check=_positive),
    )
    t = r.table(r.get(raw, "", "retention", dict, {}), "retention",
                {"failedMaxAgeDays", "deniedMaxAgeDays", "dropIntermediateTags"})
    retention = RetentionConfig(
        failed_max_age_days=r.get(t, "retention", "failedMaxAgeDays", (int, float), 14, check=_days),
        denied_max_age_days=r.get(t, "retention", "deniedMaxAgeDays", (int, float), 14, check=_days),
        drop_intermediate_tags=r.get(t, "retention", "dropIntermediateTags", bool, True),
    )
    h = r.table(r.get(raw, "", "harness", dict, {}), "harness", {"claudeCommand"})
    claude_command = r.str_list(h, "harness", "claudeCommand", None, nullable=True)
    if claude_command is not None and not claude_command:
        r.error("harness.claudeCommand", "must name a command (or be null for `claude` on PATH)")
        claude_command = None

    agents: dict[str, AgentConfig] = {}
    raw_agents = r.get(raw, "", "agents", dict, {})
    for name, spec in raw_agents.items():
        problem = check_name(name)
        if problem is None and name == manager:
            problem = f'"{name}" is the manager\'s name and cannot name an agent too'
        if problem:
            r.error(f"agents.{name}", problem)
            continue
        agents[name] = _agent(r, spec, f"agents.{name}", name, "agent")
    manager_settings = _agent(r, r.get(raw, "", "managerSettings", dict, {}), "managerSettings", manager, "manager")

    known = set(agents) | {manager, "operator"}
    for name, agent in agents.items():
        for i, to in enumerate(agent.allowed_recipients or ()):
            if to not in known:
                r.error(f"agents.{name}.allowedRecipients[{i}]", f'unknown agent "{to}"')

    for name in (manager, *sorted(agents)):
        problem = socket_too_long(run_dir, name, manager, "runDir" not in raw)
        if problem:
            r.error("runDir", problem)
            break
    if r.errors:
        raise ConfigError(source, r.errors)
    return Config(
        source=source, state_dir=state_dir, run_dir=run_dir, manager=manager, backend=backend,
        dashboard=dashboard, broker=broker, retention=retention, agents=agents,
        manager_settings=manager_settings, limits=limits,
        operator_pronouns=r.get(raw, "", "operatorPronouns", str, "they/them"),
        claude_command=claude_command, version=version, budget=_budget(r, raw, ""),
    )


def agent_socket_path(run_dir: Path, name: str, manager: str) -> Path:
    if name == manager:
        return run_dir / "manager" / "mcp.sock"
    return run_dir / "agents" / name / "mcp.sock"


def socket_too_long(run_dir: Path, name: str, manager: str, default_run_dir: bool = False) -> str | None:
    """Why ``name``'s socket cannot be made under ``run_dir`` (a Unix socket path has at most 107 bytes), if so."""
    path = agent_socket_path(run_dir, name, manager)
    if len(bytes(path)) <= MAX_SOCKET_PATH_BYTES:
        return None
    room = MAX_SOCKET_PATH_BYTES - (len(bytes(path)) - len(bytes(run_dir)))
    return (f"{run_dir} is too long for the socket of {name} ({path}: {len(bytes(path))} bytes; a Unix socket path "
            f"may have at most {MAX_SOCKET_PATH_BYTES}): set runDir to a directory of at most {room} bytes"
            + (" (it defaults to <stateDir>/run)" if default_run_dir else ""))


def _manager_name(value: str) -> str | None:
    if not NAME_RE.match(value):
        return f'invalid manager name "{value}"'
    if value in RESERVED_NAMES - {"manager"}:
        return f'"{value}" is reserved (the service uses it for itself) and cannot name the manager'
    return None


def load_config(path: str | Path) -> Config:
    """Read ``hive.json`` or ``hive.toml`` (by extension; JSON otherwise) and validate it."""
    path = Path(path)
    return parse_config(_read(path), str(path), base_dir=path.parent.resolve())


def host_socket_of(path: str | Path) -> Path | None:
    """Where the host socket of the hive of ``path`` is, from its stateDir and runDir alone: for the operator's
    verbs while the file does not validate or does not even parse (the running service keeps its last good config
    meanwhile). None when even those cannot be read."""
    path = Path(path)
    try:
        raw = _read(path)
    except ConfigError:
        raw = _directory_lines(path)
    if not isinstance(raw, dict):
        return None
    r = _Reader()
    _state_dir, run_dir = _directories(r, raw, path.parent.resolve())
    return None if r.errors else run_dir / "host.sock"


_DIRECTORY_LINE = re.compile(r"""\s*["']?(stateDir|runDir)["']?\s*=""")


def _directory_lines(path: Path) -> dict | None:
    """``stateDir`` and ``runDir`` of a hive.toml that does not parse, each read from its own line among the top-level
    keys (those before the first table): a syntax error elsewhere leaves the running service's socket found. None
    when they cannot be read so (a hive.json, or the error is on one of those lines)."""
    if path.suffix != ".toml":
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    raw: dict = {}
    for line in lines:
        if line.lstrip().startswith("["):
            break
        if _DIRECTORY_LINE.match(line):
            try:
                raw.update(tomllib.loads(line))
            except tomllib.TOMLDecodeError:
                return None
    return raw


def _read(path: Path) -> Any:
    """The parsed content of a config file (TOML by extension, else JSON); a ConfigError naming what is wrong."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, [f"cannot read: {e}"]) from None
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [f"not valid TOML: {e}"]) from None
    except json.JSONDecodeError as e:
        raise ConfigError(source, [f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"]) from None
    return raw


def example_config() -> dict:
    """What ``hyperhive init`` writes: a manager and two agents, run locally."""
    return {
        "version": SCHEMA_VERSION,
        "stateDir": "state",
        "manager": "manager",
        "backend": "local",
        "operatorPronouns": "they/them",
        "dashboard": {"listen": "127.0.0.1:8080"},
        "broker": {"maxMessageBytes": 65536, "recvMaxWaitSeconds": 180, "leaseSeconds": 600},
        "retention": {"failedMaxAgeDays": 14, "deniedMaxAgeDays": 14, "dropIntermediateTags": True},
        "managerSettings": {
            "prompt": "You run this hive: greet new agents, route work, and propose config changes for review.",
            "bashAllow": ["git *"],
        },
        "agents": {
            "alice": {
                "allowedRecipients": ["bob", "manager", "operator"],
                "bashAllow": ["git *", "ls *"],
                "prompt": "You maintain the docs. Ask bob when you need facts about the code.",
            },
            "bob": {
                "allowedRecipients": None,
                "bashAllow": ["git *"],
                "prompt": "You maintain the code. Answer questions from alice.",
            },
        },
    }
