"""The ``nixos-container`` backend: each agent is a NixOS container built from the meta flake.

A deploy pins the agent's input (``nix flake lock --update-input agent-<n>`` in the meta repo), then builds and
switches its container (``nixos-container create|update h-<n> --flake <meta>#<n>``, the manager's is ``hm1nd``)
and starts it. Every command has a timeout and its output is kept for the ``failed/<id>`` tag.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from .. import nofollow, repos
from ..errors import HiveError
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
    network (no PRIVATE_NETWORK: `nixos-container create` would give a private network with no NAT), the host's
    resolv.conf copied in (COPY_RESOLV_CONF=1, `copyResolvConf`'s default: nixos-containers.nix's startScript copies
    it only then, and `nixos-container create` writes no such key), the user namespace, the mounts, and SYSTEM_PATH
    resolved inside the container."""
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
    return {"SYSTEM_PATH": "/nix/var/nix/profiles/system", "COPY_RESOLV_CONF": "1",
            "PRIVATE_USERS": str(uid) if uid else "no", "INTERFACES": "", "MACVLANS": "", "AUTO_START": "1",
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
        """A writable directory the service's commands run under (`nix eval` of a policy runs in it)."""
        path = self.hive.config.state_dir / "build"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def private_build_dir(self):
        """A fresh working directory for one command, removed after it. nixos-container.pl's buildFlake runs
        `nix build -o "$systemPath.tmp"` with $systemPath still undefined, that is a link `.tmp` in the working
        directory, and then reads the system back from that link (pkgs/by-name/ni/nixos-container/nixos-container.pl;
        it never removes it: its `unlink("$systemPath.tmp")` names the store path's sibling). Two builds in one
        directory, say an approved deploy and the start of an agent whose container is gone, could each read the
        other's system and boot it."""
        path = Path(tempfile.mkdtemp(prefix="run-", dir=self.build_dir()))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def logs(self, name: str, lines: int = 200, cursor: str | None = None, search: str | None = None) -> dict:
        from .. import agent_logs
        return agent_logs.read_journal(self.container(name), lines, cursor, search)

    def _run(self, cmd: list[str], timeout: float, cwd: Path | None = None) -> str:
        if cwd is None:
            with self.private_build_dir() as private:
                return self._run(cmd, timeout, cwd=private)
        try:
            result = subprocess.run(cmd, cwd=str(cwd), stdin=subprocess.DEVNULL,
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
        try:
            self._run(["nixos-container", action, container, "--flake", f"{repos.meta_path(self.hive)}#{name}"],
                      self.build_timeout)
            # At every deploy, not only the first: the conf follows the agent's privateUsers as deployed now. nspawn
            # reads it only when the container starts (`update` just switches the running system), so a running
            # container whose conf changed is started again on it.
            written = self._add_bind_mounts(name, created=action == "create")
        except BuildError:
            if action == "create":
                self._undo_create(name)
            raise
        if written is not None:
            changed, uid = written
            if changed and action == "update" and self.state(name) == "running":
                self._run(["nixos-container", "stop", container], self.command_timeout)
            self._own_directories(name, uid)  # stopped if its uids changed: nothing of it writes there meanwhile
        self._run(["nixos-container", "start", container], self.command_timeout)
        with self._lock:
            self._wanted.add(name)
            self._crashes.pop(name, None)

    def _undo_create(self, name: str) -> None:
        """What a failed `nixos-container create` left: nixos-container.pl removes its conf when setting the profile
        fails, not when the flake's build does, and a conf this service cannot rewrite is no container to start. It
        was not listed before the create, so whatever is listed now is this create's."""
        try:
            if self.exists(name):
                self._run(["nixos-container", "destroy", self.container(name)], self.command_timeout)
        except BuildError as e:
            log.warning("removing the container of %s after its failed create: %s", name, e)

    def conf_path(self, name: str) -> Path:
        """/etc/nixos-containers/<container>.conf: nixos-containers.nix's configurationDirectory (/etc/containers
        before stateVersion 22.05), as the host module tells the service (HYPERHIVE_NIXOS_CONTAINERS_DIR)."""
        conf_dir = Path(os.environ.get("HYPERHIVE_NIXOS_CONTAINERS_DIR") or "/etc/nixos-containers")
        return conf_dir / f"{self.container(name)}.conf"

    def _add_bind_mounts(self, name: str, created: bool = False) -> tuple[bool, int] | None:
        """A container created at run time (a spawned agent) gets what a declared one has: `nixos-container create`
        wrote a private network with no NAT and no user namespace; its conf is replaced by the declared settings
        (container_conf), and its directories are made (their ownership is _own_directories'). A declared
        container's conf (a link into /etc/static) is the host module's: None. Else whether the conf changed, and
        the host uid of the container's root.

        A container just created must have the conf `create` wrote, a file: else it would run without any of
        those settings (bind mounts, user namespace), so the deploy fails naming it."""
        conf = self.conf_path(name)
        cfg = self.hive.config
        if not created and (conf.is_symlink() or (not conf.exists() and (name == cfg.manager or name in cfg.agents))):
            return None  # the host module's (declared): its prepare unit owns the directories
        if not conf.is_file() or conf.is_symlink():
            what = "is a symbolic link" if conf.is_symlink() else "does not exist"
            raise BuildError(
                f"{conf} {what} after `nixos-container {'create' if created else 'update'} {self.container(name)}`: "
                f"the service writes {name}'s container settings (bind mounts, user namespace) there, and without "
                f"them the container would run without its socket and state. nixos-container writes its confs to "
                f"nixos-containers.nix's configurationDirectory (/etc/containers before the host's stateVersion "
                f"22.05, /etc/nixos-containers from it); the service looks in {conf.parent} "
                f"(HYPERHIVE_NIXOS_CONTAINERS_DIR)")
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
        for base, rel, _ in self._directories(name):
            try:
                with nofollow.directory(base, rel, create=True, mode=0o700):
                    pass
            except HiveError as e:
                raise BuildError(f"refusing to hand {base / rel} to the container of {name}: {e.message}") from None
        values = container_conf(self.hive, name, self.container(name), uid)
        before = conf.read_text(encoding="utf-8")
        # No FLAKE (`create` wrote the meta flake's path, without `#<name>`). nixos-containers.nix's startScript runs
        # `nixos-container update <c>` when FLAKE is set and the container's profile is missing, and nixos-container.pl
        # builds that FLAKE as written with the attribute "container" (it cuts `#attr` off --flake only, not off the
        # conf's FLAKE): `<meta>#nixosConfigurations."container"`, the system of an agent named "container", booted
        # in this agent's container; and `<meta>#<name>` would be no flake reference Nix accepts. Deploys pass
        # `--flake <meta>#<name>` themselves; a container without its profile fails to start and `rebuild` makes it.
        text = "\n".join(f'{k}="{v}"' if k in ("EXTRA_NSPAWN_FLAGS", "INTERFACES", "MACVLANS") else f"{k}={v}"
                          for k, v in values.items()) + "\n"
        if text == before:
            return False, uid
        tmp = conf.with_name(conf.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, conf)
        return True, uid

    def _directories(self, name: str) -> list[tuple[Path, Path, bool]]:
        """The host directories bound into the container (container_conf), each as (a directory of the service's,
        the path under it, whether it is the socket's): its state, its Claude credentials, its socket's directory."""
        cfg = self.hive.config
        state = repos.state_path(self.hive, name)
        sockets = cfg.agent_socket(name).parent
        return [(cfg.state_dir, state.relative_to(cfg.state_dir), False), (cfg.state_dir, Path("claude") / name, False),
                (cfg.run_dir, sockets.relative_to(cfg.run_dir), True)]

    def _own_directories(self, name: str, uid: int) -> None:
        """As the host module's prepare unit does for a declared container (modules/hyperhive.nix, prepareScript):
        each directory belongs to the container's root uid, and when it does not (privateUsers or the uid base
        changed), all that is in it is given to that uid (`chown -R`, no link followed), the socket directory mode
        0700 (the container's root reaches its socket; other local users do not). systemd-nspawn's
        --private-users-ownership=auto adjusts the container's own tree, never a bind mount, and nothing at all
        without a user namespace: so with privateUsers turned off they are given back to root (uid 0), and files
        the agent made meanwhile become its namespaced root's again when it is turned on."""
        for base, rel, sockets in self._directories(name):
            try:
                with nofollow.directory(base, rel, mode=0o700) as fd:
                    if os.fstat(fd).st_uid != uid:
                        _own_tree(fd, uid)
                    if sockets:
                        os.fchmod(fd, 0o700)  # under runDir, which only the service writes
            except HiveError as e:
                raise BuildError(f"refusing to hand {base / rel} to the container of {name}: {e.message}") from None
            except OSError as e:  # not root (tests): the container could not use it, nobody else gains it
                log.warning("cannot give %s to uid %d: %s", base / rel, uid, e)

    # --- life cycle ----------------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        if not self.exists(name):
            from .. import approvals

            # Creating it is a deploy of what meta's lock pins, which a deploy in flight moves (and puts back when its
            # build fails): one at a time, as `rebuild` does; the deploy waited for may have created it.
            with approvals.deploy_lock(self.hive):
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


def _own_tree(fd: int, uid: int) -> None:
    """`chown -R uid:uid` of the directory open at ``fd``: every entry below it, links themselves (never followed),
    walked by descriptor so that nothing renamed meanwhile leads the walk out of it."""
    for _root, _dirs, files, root_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        os.fchown(root_fd, uid, uid)
        for entry in files:
            try:
                os.chown(entry, uid, uid, dir_fd=root_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
