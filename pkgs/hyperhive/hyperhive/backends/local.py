"""The ``local`` backend: every agent is a process of this machine (``hyperhive up``, tests).

Each runs ``python -m hyperhive agent --name N --socket S --agent-config <stateDir>/agents/<n>/agent.json
--state-dir <state>`` in its state directory, with ``HYPERHIVE_SOCKET`` and ``HYPERHIVE_DEPLOYED_SHA`` (the applied
commit it runs) in its environment. ``HYPERHIVE_AGENT_COMMAND`` replaces ``python -m hyperhive agent`` (tests).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading

from .. import repos
from .base import Backend, BuildError, open_agent_log, write_agent_json

log = logging.getLogger(__name__)


class LocalBackend(Backend):
    name = "local"
    poll_seconds = 0.25

    def __init__(self, hive):
        super().__init__(hive)
        self._procs: dict[str, subprocess.Popen] = {}
        self._wanted: set[str] = set()  # started and not asked to stop: an exit is a crash
        self._crashes: dict[str, str] = {}
        self._lock = threading.RLock()

    # --- the command ---------------------------------------------------------------------------------------

    def uses_standin_model(self) -> bool:
        return (not os.environ.get("HYPERHIVE_AGENT_COMMAND") and self.hive.config.claude_command is None
                and shutil.which("claude") is None)

    def command(self, name: str) -> list[str]:
        override = os.environ.get("HYPERHIVE_AGENT_COMMAND")
        # -P: the harness runs in the agent's state directory, which `python -m` would put first on the import
        # path (a hyperhive/ or json.py the agent wrote there would run on the host)
        base = shlex.split(override) if override else [sys.executable, "-P", "-m", "hyperhive", "agent"]
        state = repos.state_path(self.hive, name)
        return base + ["--name", name, "--socket", str(self.hive.config.agent_socket(name)),
                       "--agent-config", str(repos.agent_json_path(self.hive, name)), "--state-dir", str(state)]

    def _deployed_sha(self, name: str) -> str:
        try:
            return repos.main_sha(repos.open_repo(repos.applied_path(self.hive, name))) or ""
        except Exception:
            return ""

    # --- life cycle ----------------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        with self._lock:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None:
                return
            try:
                write_agent_json(self.hive, name)
            except KeyError:
                raise BuildError(f"{name} is not an agent of this hive") from None
            state = repos.ensure_state_dir(self.hive, name)
            env = {**os.environ, "PYTHONSAFEPATH": "1", "HYPERHIVE_SOCKET": str(self.hive.config.agent_socket(name)),
                   "HYPERHIVE_DEPLOYED_SHA": self._deployed_sha(name), "HYPERHIVE_AGENT_NAME": name}
            cmd = self.command(name)
            with os.fdopen(open_agent_log(self.hive, name), "ab") as out:
                try:
                    proc = subprocess.Popen(cmd, cwd=str(state), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT)
                except OSError as e:
                    raise BuildError(f"cannot start {name} ({shlex.join(cmd)}): {e}") from None
            self._procs[name] = proc
            self._wanted.add(name)
            self._crashes.pop(name, None)
            if self.uses_standin_model():
                self.hive.extensions["standin_model"] = True
            log.info("started %s (pid %d): %s", name, proc.pid, shlex.join(cmd))

    def stop(self, name: str, timeout: float | None = None) -> None:
        if timeout is None:  # how long an agent gets to exit after SIGTERM (HYPERHIVE_AGENT_STOP_SECONDS)
            try:
                timeout = float(os.environ.get("HYPERHIVE_AGENT_STOP_SECONDS", "5"))
            except ValueError:
                timeout = 5.0
        with self._lock:
            self._wanted.discard(name)
            self._crashes.pop(name, None)
            proc = self._procs.pop(name, None)
        if proc is not None:
            _terminate([proc], timeout)

    def stop_all(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
            self._procs.clear()
            self._wanted.clear()
        _terminate(procs, 5)

    def state(self, name: str) -> str:
        with self._lock:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None:
                return "running"
            if name in self._crashes:
                return "crashed"
            return "stopped"

    def pid(self, name: str) -> int | None:
        proc = self._procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def crashed(self) -> list[tuple[str, str]]:
        out = []
        with self._lock:
            for name, proc in list(self._procs.items()):
                code = proc.poll()
                if code is None or name not in self._wanted:
                    continue
                self._wanted.discard(name)
                self._procs.pop(name)
                detail = (f"its process was killed by signal {-code}" if code < 0
                          else f"its process exited with status {code}")
                self._crashes[name] = detail
                out.append((name, detail))
        return out

    # --- deploys -------------------------------------------------------------------------------------------

    def lock(self, name: str) -> None:
        repos.lock_input_in_python(self.hive, name)

    def deploy(self, name: str, sha: str) -> None:
        """Check the config's Nix files parse (there is no Nix build here), then run the agent on the new
        config: a fresh agent.json and a restarted process."""
        self.check_parses(name)
        self.stop(name)
        self.start(name)

    def check_parses(self, name: str) -> None:
        nix = shutil.which("nix-instantiate")
        if nix is None:
            return
        root = repos.applied_path(self.hive, name)
        for path in sorted(root.rglob("*.nix")):
            if ".git" in path.relative_to(root).parts or path.is_symlink():
                continue
            # A parse needs no Nix store (and the build sandbox cannot open one).
            result = subprocess.run([nix, "--parse", "--store", "dummy://", str(path)], capture_output=True,
                                    text=True, timeout=60, stdin=subprocess.DEVNULL)
            if result.returncode != 0:
                raise BuildError(f"{path.relative_to(root)} does not parse:\n{result.stderr.strip()[-5000:]}")

    def log_path(self, name: str):
        return repos.agent_json_path(self.hive, name).with_name("agent.log")

    def logs(self, name: str, lines: int = 200, cursor: str | None = None, search: str | None = None) -> dict:
        from .. import agent_logs, nofollow

        path = self.log_path(name)
        # agents/<n> is the manager's to write: the log is opened relative to a descriptor of a real directory
        # (no link followed on the way), never by its path
        try:
            with nofollow.directory(self.hive.config.state_dir,
                                    path.parent.relative_to(self.hive.config.state_dir)) as dir_fd:
                return agent_logs.read_file_log(path, lines, cursor, search, dir_fd=dir_fd)
        except FileNotFoundError:
            return agent_logs.read_file_log(path, lines, cursor, search)  # nothing there yet: "no log yet"

    def describe(self) -> str:
        if os.environ.get("HYPERHIVE_AGENT_COMMAND"):
            return "running as local processes (HYPERHIVE_AGENT_COMMAND)"
        if self.uses_standin_model():
            return "running as local processes with the scripted stand-in model (no `claude` on PATH)"
        return "running as local processes"


def _terminate(procs: list[subprocess.Popen], timeout: float) -> None:
    live = [p for p in procs if p.poll() is None]
    for p in live:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in live:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
