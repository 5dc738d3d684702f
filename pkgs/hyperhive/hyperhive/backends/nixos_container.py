"""The ``nixos-container`` backend: each agent is a NixOS container built from the meta flake.

A deploy pins the agent's input (``nix flake lock --update-input agent-<n>`` in the meta repo), then builds and
switches its container (``nixos-container create|update h-<n> --flake <meta>#<n>``, the manager's is ``hm1nd``)
and starts it. Every command has a timeout and its output is kept for the ``failed/<id>`` tag.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
from pathlib import Path

from .. import repos
from .base import Backend, BuildError, write_agent_json

log = logging.getLogger(__name__)

NIX_FLAGS = ("--extra-experimental-features", "nix-command flakes")
MAX_OUTPUT = 20000


def _timeout(var: str, default: float) -> float:
    try:
        return float(os.environ.get(var, default))
    except ValueError:
        return default


class NixosContainerBackend(Backend):
    name = "nixos-container"
    poll_seconds = 2.0

    def __init__(self, hive):
        super().__init__(hive)
        self._wanted: set[str] = set()
        self._crashes: dict[str, str] = {}
        self._lock = threading.RLock()
        self.build_timeout = _timeout("HYPERHIVE_BUILD_TIMEOUT", 3600)
        self.lock_timeout = _timeout("HYPERHIVE_LOCK_TIMEOUT", 600)
        self.command_timeout = _timeout("HYPERHIVE_CONTAINER_TIMEOUT", 120)

    def container(self, name: str) -> str:
        return "hm1nd" if name == self.hive.config.manager else f"h-{name}"

    def _run(self, cmd: list[str], timeout: float, cwd: Path | None = None) -> str:
        try:
            result = subprocess.run(cmd, cwd=str(cwd) if cwd else None, stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise BuildError(f"`{cmd[0]}` is not installed (needed by the nixos-container backend)") from None
        except subprocess.TimeoutExpired as e:
            out = _text(e.stdout) + _text(e.stderr)
            raise BuildError(f"`{shlex.join(cmd)}` timed out after {timeout:g}s\n{out[-MAX_OUTPUT:]}") from None
        output = (result.stdout or "") + (result.stderr or "")
        if result.returncode != 0:
            raise BuildError(f"`{shlex.join(cmd)}` failed with exit status {result.returncode}\n"
                             f"{output[-MAX_OUTPUT:]}")
        return output

    # --- deploys -------------------------------------------------------------------------------------------

    def lock(self, name: str) -> None:
        self._run(["nix", *NIX_FLAGS, "flake", "lock", "--update-input", f"agent-{name}"], self.lock_timeout,
                  cwd=repos.meta_path(self.hive))

    def exists(self, name: str) -> bool:
        out = self._run(["nixos-container", "list"], self.command_timeout)
        return self.container(name) in out.split()

    def deploy(self, name: str, sha: str) -> None:
        write_agent_json(self.hive, name)  # what the service expects it to run, for reference on the host
        container = self.container(name)
        action = "update" if self.exists(name) else "create"
        self._run(["nixos-container", action, container, "--flake", f"{repos.meta_path(self.hive)}#{name}"],
                  self.build_timeout)
        if action == "create":
            self._add_bind_mounts(name)
        self._run(["nixos-container", "start", container], self.command_timeout)
        with self._lock:
            self._wanted.add(name)
            self._crashes.pop(name, None)

    def _add_bind_mounts(self, name: str) -> None:
        """An imperative container (a spawned agent) gets the mounts a declared one has: its socket dir and its
        state."""
        conf_dir = Path(os.environ.get("HYPERHIVE_NIXOS_CONTAINERS_DIR", "/etc/nixos-containers"))
        conf = conf_dir / f"{self.container(name)}.conf"
        if not conf.exists():
            return
        cfg = self.hive.config
        binds = [f"--bind={cfg.agent_socket(name).parent}:/run/hive",
                 f"--bind={repos.ensure_state_dir(self.hive, name)}:/state",
                 f"--bind={cfg.state_dir / 'claude' / name}:/root/.claude"]
        (cfg.state_dir / "claude" / name).mkdir(parents=True, exist_ok=True)
        text = conf.read_text(encoding="utf-8")
        if "EXTRA_NSPAWN_FLAGS=" not in text:
            conf.write_text(text.rstrip("\n") + f'\nEXTRA_NSPAWN_FLAGS="{" ".join(binds)}"\n', encoding="utf-8")

    # --- life cycle ----------------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        if not self.exists(name):
            repo = repos.open_repo(repos.applied_path(self.hive, name))
            self.deploy(name, repos.main_sha(repo) or "")
            return
        self._run(["nixos-container", "start", self.container(name)], self.command_timeout)
        with self._lock:
            self._wanted.add(name)
            self._crashes.pop(name, None)

    def stop(self, name: str) -> None:
        with self._lock:
            self._wanted.discard(name)
            self._crashes.pop(name, None)
        try:
            self._run(["nixos-container", "stop", self.container(name)], self.command_timeout)
        except BuildError as e:
            log.warning("stopping %s: %s", name, e)

    def destroy(self, name: str) -> None:
        self.stop(name)
        try:
            self._run(["nixos-container", "destroy", self.container(name)], self.command_timeout)
        except BuildError as e:
            log.warning("destroying %s: %s", name, e)

    def state(self, name: str) -> str:
        with self._lock:
            crashed = name in self._crashes
        try:
            out = self._run(["nixos-container", "status", self.container(name)], self.command_timeout).strip()
        except BuildError:
            return "crashed" if crashed else "missing"
        if out == "up":
            return "running"
        return "crashed" if crashed else "stopped"

    def crashed(self) -> list[tuple[str, str]]:
        with self._lock:
            watched = list(self._wanted)
        out = []
        for name in watched:
            if self.state(name) == "running":
                continue
            with self._lock:
                if name not in self._wanted:  # asked to stop meanwhile
                    continue
                self._wanted.discard(name)
                detail = f"its container {self.container(name)} is no longer running"
                self._crashes[name] = detail
            out.append((name, detail))
        return out

    def stop_all(self) -> None:
        # Containers outlive the service (systemd runs them); only stop watching them.
        with self._lock:
            self._wanted.clear()

    def describe(self) -> str:
        return "running as NixOS containers"


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
