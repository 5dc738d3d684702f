"""The ``hyperhive serve`` process: the store, the broker on its sockets, the plugins, and the config watcher."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import sqlalchemy.exc
from sqlalchemy import select

from . import store as db
from .broker import Broker
from .errors import StartError
from .events import EventBus
from .config import AgentConfig, Config, ConfigError, _agent, _Reader, load_config
from .plugins import make_plugin_manager
from .store import NewerSchema, Store
from .transport import Identity, Limits, SocketError, SocketServer, line_limit, private_dir

log = logging.getLogger(__name__)


LOCK_FILE = "service.lock"


def _socket_problem(e: Exception, path: Path) -> str:
    """Why the socket at ``path`` could not be made, naming it."""
    return str(e) if isinstance(e, SocketError) else f"{path}: {getattr(e, 'strerror', None) or e}"


def claim(directory: Path, what: str) -> int | None:
    """Make ``directory`` this process's alone, for as long as it runs: an exclusive ``flock`` on
    ``<directory>/service.lock`` (the kernel drops it when the process ends, ``kill -9`` included), which holds
    the holder's pid. ``what`` says what the holder does with it. A second service on the same hive would take
    over its sockets and then remove them, and put back in the queue the messages its agents had leased; it stops
    here instead. Returns the lock's file descriptor, or None on a filesystem that has no such locks (logged)."""
    path = directory / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:  # a link or a directory in its place: never followed
        raise StartError(f"cannot open the service's lock {path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StartError(
                f"another hyperhive service{f' (pid {holder})' if holder.isdigit() else ''} {what}: it holds "
                f"{path}; stop it first (one service per state directory and per run directory)") from None
        log.warning("cannot lock %s (%s): nothing keeps a second service off it", path, e.strerror or e)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class Hive:
    """One running hive. Everything the sockets, the dashboard and the plugins need hangs off this object."""

    def __init__(self, config: Config, config_path: Path | None = None, *, load_entry_points: bool = True,
                 run_agents: bool = True):
        self.config = config
        # False for `serve --no-agents`: the broker alone, agents run elsewhere (debugging, broker tests)
        self.run_agents = run_agents
        self.config_path = Path(config_path) if config_path else None
        self.config_errors: list[str] = []  # the last refused reload, for the dashboard
        self._reload_lock = threading.Lock()
        self._refused_digest: str | None = None
        self.started_at = time.time()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self._locks = [claim(config.state_dir, "runs this hive")]  # before anything of the hive is touched
        try:
            self.store = Store(config.db_path)
        except NewerSchema as e:
            raise StartError(str(e)) from None
        except (sqlalchemy.exc.DatabaseError, sqlite3.DatabaseError) as e:  # not SQLite, or damaged
            reason = getattr(e, "orig", None) or e
            raise StartError(f"cannot open the hive's database {config.db_path}: {reason}. It is left as it is: "
                             "restore it from a backup, or move it away to start the hive with an empty one") from None
        self.pm = make_plugin_manager(load_entry_points)
        self.bus = EventBus()
        self.broker = Broker(self)
        for ops in self.pm.hook.broker_ops(hive=self):
            self.broker.register(ops)
        self.sockets: dict[str, SocketServer] = {}
        self.socket_errors: dict[str, str] = {}  # agent -> why its socket could not be opened (retried on sync)
        self._sockets_lock = threading.RLock()
        self._observer = None
        self._config_digest = _digest(self.config_path)
        self.stopped = threading.Event()
        self.extensions: dict[str, Any] = {}  # per-plugin state, keyed by plugin name
        self._spawned_cache: dict[str, AgentConfig] | None = None
        self._recipients: tuple | None = None

    # --- who is in the hive ----------------------------------------------------------------------------

    def spawned_agents(self, states: tuple[str, ...] = ("active",), fresh: bool = False) -> dict[str, AgentConfig]:
        """Agents created at run time (not declared in the config), by state, with their own policy.

        The active ones are cached (every send asks); ``agents_changed()`` or ``fresh=True`` reloads them.
        """
        if states == ("active",) and not fresh and self._spawned_cache is not None:
            return self._spawned_cache
        result = self._load_spawned(states)
        if states == ("active",):
            self._spawned_cache = result
        return result

    def agents_changed(self) -> None:
        """Call after writing the agents table: drops the cache and opens or closes sockets."""
        self.sync_sockets()  # reloads the spawned agents itself

    def _load_spawned(self, states: tuple[str, ...]) -> dict[str, AgentConfig]:
        a = db.agents
        with self.store.read() as conn:
            rows = conn.execute(select(a).where(a.c.state.in_(states), a.c.origin == "spawned")).all()
        out = {}
        for row in rows:
            if row.name in self.config.agents:
                continue
            policy = db.loads_json(row.policy, {})
            try:
                out[row.name] = _agent(_Reader(), policy if isinstance(policy, dict) else {},
                                       f"agents.{row.name}", row.name, "agent")
            except Exception:  # a stored policy that no longer parses still leaves the agent reachable
                log.warning("stored policy of %s does not parse; using defaults", row.name)
                out[row.name] = AgentConfig(name=row.name)
        return out

    def agent_configs(self) -> dict[str, AgentConfig]:
        """Every live agent (declared and spawned), the manager excluded."""
        return {**self.spawned_agents(), **self.config.agents}

    def agent_config(self, name: str) -> AgentConfig | None:
        if name == self.config.manager:
            return self.config.manager_settings
        return self.config.agents.get(name) or self.spawned_agents().get(name)

    def recipients(self, fresh: bool = False) -> frozenset[str]:
        """Every name a message can go to (asked on every send: kept until the agents or the config change)."""
        spawned, config = self.spawned_agents(fresh=fresh), self.config
        cached = self._recipients
        if cached is None or cached[0] is not spawned or cached[1] is not config:
            cached = self._recipients = (spawned, config, frozenset(spawned) | set(config.agents)
                                         | {config.manager, "operator"})
        return cached[2]

    def agent_state(self, name: str) -> str:
        backend = self.extensions.get("backend")
        if backend is not None:
            try:
                return backend.state(name)
            except Exception as e:
                log.warning("backend could not tell the state of %s: %s", name, e)
                return "unknown"
        return "running" if name in self.sockets else "stopped"

    def agent_list(self) -> list[dict]:
        names = [self.config.manager] + sorted(self.agent_configs())
        return [{"name": n, "state": self.agent_state(n),
                 "role": "manager" if n == self.config.manager else "agent"} for n in names]

    def notify(self, agent: str, body: str, **data: Any) -> None:
        """An event about ``agent``: the manager hears every one, the agent those about itself."""
        data.setdefault("agent", agent)
        self.broker.event(self.config.manager, body, **data)
        if agent != self.config.manager and agent in self.agent_configs():
            self.broker.event(agent, body, **data)

    # --- sockets ---------------------------------------------------------------------------------------

    def _max_line(self) -> int:
        return line_limit(self.config.broker.max_message_bytes)

    def _agent_limits(self) -> Limits:
        b = self.config.broker
        return Limits(max_connections=b.max_connections_per_agent, idle_timeout_seconds=b.idle_timeout_seconds)

    def _operator_limits(self) -> Limits:
        # host.sock is root's alone; its cap only bounds a runaway script, never an agent
        return Limits(max_connections=OPERATOR_MAX_CONNECTIONS,
                      idle_timeout_seconds=self.config.broker.idle_timeout_seconds)

    def sync_sockets(self) -> None:
        """Open a socket for every agent that has none, close those of agents that are gone.

        A socket that cannot be put in place (the agent left a directory at its path) costs only that agent: it
        is logged, shown in ``socket_errors`` (the dashboard's errors), and tried again on the next sync.
        """
        with self._sockets_lock:
            self._spawned_cache = None
            wanted = {self.config.manager: "manager", **{n: "agent" for n in self.agent_configs()}}
            for name in list(self.sockets):
                if name not in wanted and name != "operator":
                    self.sockets.pop(name).close()
            for name in list(self.socket_errors):
                if name not in wanted:
                    del self.socket_errors[name]
            run_dir = self.config.run_dir
            for name, role in wanted.items():
                if name in self.sockets:
                    continue
                path = self.config.agent_socket(name)
                try:
                    if path.parent.parent != run_dir:
                        private_dir(path.parent.parent)  # <runDir>/agents
                    self.sockets[name] = self._socket(path, Identity(name, role), self._agent_limits)
                    self.socket_errors.pop(name, None)
                except (SocketError, OSError) as e:
                    message = _socket_problem(e, path)
                    if self.socket_errors.get(name) != message:
                        log.error("no socket for %s: %s", name, message)
                    self.socket_errors[name] = message
            if "operator" not in self.sockets:
                try:
                    self.sockets["operator"] = self._socket(self.config.host_socket,
                                                            Identity("operator", "operator"), self._operator_limits)
                except (SocketError, OSError) as e:  # no operator, no service: say why, not a traceback
                    raise StartError(f"no host socket: {_socket_problem(e, self.config.host_socket)}") from None

    def _socket(self, path: Path, identity: Identity, limits) -> SocketServer:
        """A started socket of the broker for ``identity`` (staged in the run directory)."""
        return SocketServer(path, identity, self.broker.handle, self._max_line, mode=0o600,
                            on_close=self.broker.release, limits=limits, staging=self.config.run_dir,
                            batch=self.store.group, inline=self.broker.runs_inline).start()

    # --- life cycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        requeued = self.broker.requeue_leased()
        if requeued:
            log.info("requeued %d message(s) leased before the last stop", requeued)
        raise_open_files_limit()
        self.config.run_dir.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self.config.run_dir)  # 0700: other local users reach no socket through it
        if self.config.run_dir.resolve() != self.config.state_dir.resolve():  # (one lock file serves both)
            self._locks.append(claim(self.config.run_dir, "has its sockets in this run directory"))
        self.sync_sockets()
        self.pm.hook.hive_started(hive=self)
        if self.config_path:
            self._watch_config()
        log.info("hive up: %d agent(s), host socket %s", len(self.agent_configs()), self.config.host_socket)

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        try:
            self.pm.hook.hive_stopping(hive=self)
        finally:
            self.broker.close()
            with self._sockets_lock:
                for server in self.sockets.values():
                    server.close()
                self.sockets.clear()
            self.store.close()
            for fd in self._locks:  # the directories are free for the next service
                if fd is not None:
                    os.close(fd)
            self._locks.clear()

    # --- config reload ---------------------------------------------------------------------------------

    def reload_config(self) -> bool:
        """Load the config file again; a valid one takes effect, an invalid one is refused and logged."""
        if not self.config_path:
            return False
        # One reload at a time, and one log line per new content of the file: an editor's save fires several
        # file events, and a refused file is not refused again until it changes.
        with self._reload_lock:
            digest = _digest(self.config_path)
            if digest == self._config_digest or digest == self._refused_digest:
                return False
            try:
                new = load_config(self.config_path)
            except ConfigError as e:
                # A file caught half-written (an editor truncates, then writes) is not a refusal: when the file
                # changes within a moment, the next file event reads it whole.
                time.sleep(SETTLE_SECONDS)
                if _digest(self.config_path) != digest:
                    return False
                self._refused_digest = digest
                self.config_errors = e.errors
                log.error("refused the new config %s, the old one stays in force:\n%s", self.config_path, e)
                return False
            fixed = [f"{k} changed; restart the service to move it" for k in ("state_dir", "run_dir")
                     if getattr(new, k) != getattr(self.config, k)]
            if new.manager != self.config.manager:
                # The running manager's harness serves the old name's socket: renamed here, it would be orphaned,
                # out of reach of `hyperhive kill` under either name.
                fixed.append(f'manager renamed from "{self.config.manager}" to "{new.manager}"; restart the '
                             "service to rename it")
            if fixed:
                self._refused_digest = digest
                self.config_errors = fixed
                log.error("refused the new config %s, the old one stays in force: %s", self.config_path,
                          "; ".join(self.config_errors))
                return False
            old, self.config = self.config, new
            self._config_digest = digest
            self._refused_digest = None
            self.config_errors = []
            self.sync_sockets()
            self.pm.hook.config_changed(hive=self, old=old, new=new)
            # at warning level, as a refusal is logged at error: the default log level shows both
            log.warning("config reloaded from %s", self.config_path)
            return True

    def _watch_config(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        hive = self
        target = self.config_path

        class OnChange(FileSystemEventHandler):
            def on_any_event(self, event):
                # Only what changes the file: reading it (as the reload below does) makes "opened" and
                # "closed_no_write" events, and reacting to those would read it again, forever.
                if event.event_type not in CHANGE_EVENTS:
                    return
                paths = {getattr(event, "src_path", None), getattr(event, "dest_path", None)}
                if any(p and Path(os.fsdecode(p)).name == target.name for p in paths):
                    # editors write in several steps; let the file settle before reading it
                    time.sleep(0.05)
                    hive.reload_config()

        self._observer = Observer()
        self._observer.schedule(OnChange(), str(target.parent), recursive=False)
        self._observer.daemon = True
        self._observer.start()


CHANGE_EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})  # watchdog's event_type
SETTLE_SECONDS = 0.3  # how long a config file that fails to load must stay unchanged to be refused


OPERATOR_MAX_CONNECTIONS = 256


def raise_open_files_limit() -> None:
    """Raise the soft limit of open files to the hard one: every agent connection is a descriptor, and the
    default soft limit (1024) is what one agent's idle connections used to exhaust."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.debug("open files limit raised from %d to %d", soft, target)
    except (ImportError, ValueError, OSError) as e:
        log.warning("could not raise the open files limit: %s", e)


def _digest(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def print_ready_line(hive: Hive) -> None:
    """What `hyperhive serve` prints once its sockets are up: one JSON line, for supervisors and tests."""
    print(json.dumps({"ready": True, "host_socket": str(hive.config.host_socket),
                      "dashboard": hive.extensions.get("dashboard_url")}), flush=True)


def serve(config_path: Path, *, config: Config | None = None, run_agents: bool = True,
          on_ready: Callable[[Hive], None] = print_ready_line,
          on_stopping: Callable[[], None] | None = None) -> int:
    """Run the service until SIGTERM or SIGINT; SIGHUP reloads the config."""
    hive = Hive(config or load_config(config_path), config_path, run_agents=run_agents)
    done = threading.Event()

    def on_signal(signum, _frame):
        if signum == signal.SIGHUP:
            threading.Thread(target=hive.reload_config, daemon=True).start()
        else:
            done.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    hive.start()
    on_ready(hive)
    try:
        while not done.wait(0.5):
            pass
    finally:
        if on_stopping:
            on_stopping()
        hive.stop()
    return 0
