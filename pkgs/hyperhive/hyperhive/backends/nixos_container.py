"""The ``nixos-container`` backend: each agent is a NixOS container built from the meta flake.

A deploy pins the agent's input (``nix flake lock --update-input agent-<n>`` in the meta repo), then builds and
switches its container (``nixos-container create|update h-<n> --flake <meta>#<n>``, the manager's is ``hm1nd``)
and starts it. Every command has a timeout and its output is kept for the ``failed/<id>`` tag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import threading
from pathlib import Path

from .. import repos
from .base import Backend, BuildError, write_agent_json

log = logging.getLogger(__name__)

NIX_FLAGS = ("--extra-experimental-features", "nix-command flakes")
MAX_OUTPUT = 20000

# Where the uid ranges of user-namespaced agents lie: modules/lib.nix's `uidRanges` (above systemd-nspawn's
# --private-users=pick region 0x00080000-0x6FFFFFFF, below the foreign range 0x7FFE0000).
HASHED_END = 0x7FFE0000


def uid_base(name: str, base: int) -> int:
    """The first host uid of agent ``name``'s user namespace: modules/lib.nix's ``uidBase`` for an agent without an
    explicit one (the host module's declared agents and agents spawned at run time share the hash)."""
    slots = (HASHED_END - base) // 65536
    return base + 65536 * (int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) % slots)


def container_settings(path: Path | None = None) -> dict | None:
    """/etc/hyperhive/containers.json (``HYPERHIVE_CONTAINERS``), written by the host module: the host's nixpkgs,
    the uid base, and the host data of every container (modules/container-host.nix). None when absent."""
    path = path or (Path(os.environ["HYPERHIVE_CONTAINERS"]) if os.environ.get("HYPERHIVE_CONTAINERS") else None)
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.error("cannot read %s: %s", path, e)
        return None


def container_conf(hive, name: str, container: str, uid: int) -> dict[str, str]:
    """The /etc/nixos-containers/<container>.conf of a container the service creates at run time, with the keys and
    values nixos-containers.nix writes for a declared one (modules/hyperhive.nix's `containers.<c>`): the host's
    network (no PRIVATE_NETWORK: `nixos-container create` would give a private network with no NAT), the user
    namespace, the mounts, and SYSTEM_PATH resolved inside the container."""
    cfg = hive.config
    if name == cfg.manager:  # modules/hyperhive.nix's hm1nd: its own state, and the repos it works on
        binds = [f"--bind={cfg.agent_socket(name).parent}:/run/hive",
                 f"--bind={cfg.state_dir / 'manager' / 'state'}:/state",
                 f"--bind={cfg.state_dir / 'claude' / name}:/root/.claude",
                 f"--bind={cfg.state_dir / 'agents'}:/agents",
                 f"--bind-ro={cfg.state_dir / 'applied'}:/applied",
                 f"--bind-ro={cfg.state_dir / 'meta'}:/meta"]
        uid = 0
    else:
        binds = [f"--bind={cfg.agent_socket(name).parent}:/run/hive",
                 f"--bind={cfg.state_dir / 'agents' / name / 'state'}:/state",
                 f"--bind={cfg.state_dir / 'claude' / name}:/root/.claude"]
    if uid:
        binds.append("--private-users-ownership=auto")
    return {"SYSTEM_PATH": "/nix/var/nix/profiles/system", "PRIVATE_USERS": str(uid) if uid else "no",
            "EXTRA_NSPAWN_FLAGS": " ".join(binds)}


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
        # Said once, before any repo is pinned or container started (each would fail on its own, slowly: a
        # flake lock that tries the network, a start that finds no nixos-container).
        missing = [c for c in ("nixos-container", "nix") if shutil.which(c) is None]
        if missing:
            raise BuildError(f"{' and '.join(f'`{c}`' for c in missing)} not found on PATH: the nixos-container "
                             'backend runs each agent as a NixOS container on a NixOS host (backend = "local" runs '
                             "them as local processes)")
        self._wanted: set[str] = set()
        self._crashes: dict[str, str] = {}
        self._lock = threading.RLock()
        self.build_timeout = _timeout("HYPERHIVE_BUILD_TIMEOUT", 3600)
        self.lock_timeout = _timeout("HYPERHIVE_LOCK_TIMEOUT", 600)
        self.command_timeout = _timeout("HYPERHIVE_CONTAINER_TIMEOUT", 120)

    def container(self, name: str) -> str:
        return "hm1nd" if name == self.hive.config.manager else f"h-{name}"

    def build_dir(self) -> Path:
        """A writable working directory: nixos-container.pl builds with `nix build -o "$systemPath.tmp"`, a path
        relative to it (pkgs/tools/virtualization/nixos-container/nixos-container.pl, buildFlake)."""
        path = self.hive.config.state_dir / "build"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def logs(self, name: str, lines: int = 200, cursor: str | None = None, search: str | None = None) -> dict:
        from .. import agent_logs
        return agent_logs.read_journal(self.container(name), lines, cursor, search)

    def _run(self, cmd: list[str], timeout: float, cwd: Path | None = None) -> str:
        try:
            result = subprocess.run(cmd, cwd=str(cwd or self.build_dir()), stdin=subprocess.DEVNULL,
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
        # Nix locks the agent flake's own inputs here, as root: none may be read from this host (policy_eval).
        from .. import policy_eval

        try:
            policy_eval.check_flake_inputs(repos.applied_path(self.hive, name))
        except policy_eval.PolicyError as e:
            raise BuildError(str(e)) from None
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
        """A container created at run time (a spawned agent) gets what a declared one has: `nixos-container create`
        wrote a private network with no NAT and no user namespace; its conf is replaced by the declared settings
        (container_conf), its state directories are owned by its root uid."""
        conf_dir = Path(os.environ.get("HYPERHIVE_NIXOS_CONTAINERS_DIR", "/etc/nixos-containers"))
        conf = conf_dir / f"{self.container(name)}.conf"
        if not conf.exists() or conf.is_symlink():
            return
        cfg = self.hive.config
        settings = container_settings() or {}
        from .. import registry
        from .. import store as db

        row = registry.agent_row(self.hive, name)
        policy = db.loads_json(row.policy, {}) if row is not None and row.policy else {}
        if name == cfg.manager:  # shares host uids: it commits into the config repos the service owns
            private = False
        elif name in cfg.agents:
            private = cfg.agents[name].private_users
        else:
            private = policy.get("privateUsers", True)
        uid = uid_base(name, int(settings.get("privateUsersBase", 0x70000000))) if private else 0
        state = repos.ensure_state_dir(self.hive, name)
        claude = cfg.state_dir / "claude" / name
        claude.mkdir(parents=True, exist_ok=True)
        sockets = cfg.agent_socket(name).parent
        sockets.mkdir(parents=True, exist_ok=True)
        # As the host module's prepare unit does for a declared container: its directories belong to its root uid,
        # the socket directory 0700 (the container's root reaches its socket; other local users do not).
        for path in (state, claude, sockets):
            if path.is_symlink():
                raise BuildError(f"{path.name} of {name} is a symbolic link; refusing to hand it to the container")
            if uid:
                try:
                    os.chown(path, uid, uid, follow_symlinks=False)
                except OSError as e:  # not root (tests): the container could not use it, nobody else gains it
                    log.warning("cannot give %s to uid %d: %s", path, uid, e)
        os.chmod(sockets, 0o700)  # under runDir, which only the service writes
        values = container_conf(self.hive, name, self.container(name), uid)
        keep = [line for line in conf.read_text(encoding="utf-8").splitlines()
                if line.split("=", 1)[0] in ("AUTO_START", "FLAKE")]
        text = "\n".join(keep + [f'{k}="{v}"' if k == "EXTRA_NSPAWN_FLAGS" else f"{k}={v}"
                                 for k, v in values.items()]) + "\n"
        tmp = conf.with_name(conf.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, conf)

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
