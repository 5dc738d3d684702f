"""Shared fixtures: a real ``hyperhive serve`` process on real Unix sockets, and clients for it."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperhive.config import load_config
from hyperhive.errors import HiveError
from hyperhive.testing.messages_api import MessagesAPI
from hyperhive.transport import Client

TESTS_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = TESTS_DIR.parent
REPO_ROOT = PACKAGE_DIR.parent.parent
# Where `make claude` installs the pinned Claude Code CLI (the Makefile holds the version); $HYPERHIVE_CLAUDE wins.
PROJECT_CLAUDE = REPO_ROOT / ".tools" / "npm" / "bin" / "claude"

# ------------------------------------------------------------------------------------ the build sandbox convention
#
# nix/package.nix runs these tests from a lone copy of pkgs/hyperhive, with HYPERHIVE_BUILD_SANDBOX=1, no network and
# only the Nix check inputs on PATH (python with the dependencies, pytest, hypothesis, git). A test that needs
# something the sandbox lacks says so with a marker; it is skipped ONLY when HYPERHIVE_BUILD_SANDBOX=1 and fails
# loudly anywhere else, so that CI never skips silently:
#
#   @pytest.mark.repo        the repository around the package (flake.nix, examples/, modules/)
#   @pytest.mark.nix         nix-instantiate (Debian's nix-bin)
#   @pytest.mark.browser     headless Chromium driven by playwright
#   @pytest.mark.claude_cli  the real Claude Code CLI
#
# Tests call ``require(what, present, how)`` for anything else of the kind.

BUILD_SANDBOX = os.environ.get("HYPERHIVE_BUILD_SANDBOX") == "1"


def require(what: str, present: bool, how: str) -> None:
    """Skip (inside the Nix build sandbox only) or fail loudly when ``what`` is not present."""
    if present:
        return
    if BUILD_SANDBOX:
        pytest.skip(f"{what} is not available in the Nix build sandbox (HYPERHIVE_BUILD_SANDBOX=1)")
    pytest.fail(f"{what} is missing: {how} (only the Nix build sandbox, HYPERHIVE_BUILD_SANDBOX=1, may skip this)",
                pytrace=False)


def has_repository() -> bool:
    return (REPO_ROOT / "flake.nix").is_file() and (REPO_ROOT / "modules").is_dir()


NEEDS = {
    "repo": ("the repository around pkgs/hyperhive", has_repository,
             "run the tests from a checkout of the whole repository"),
    "nix": ("nix-instantiate", lambda: shutil.which("nix-instantiate") is not None,
            "apt-get install nix-bin (make test does)"),
    # Never in the sandbox; elsewhere the fixtures that start them fail loudly when they are missing.
    "browser": ("headless Chromium", lambda: not BUILD_SANDBOX, "apt-get install chromium (make test does)"),
    "claude_cli": ("the Claude Code CLI", lambda: not BUILD_SANDBOX, "make test installs it"),
}


def pytest_configure(config):
    for marker, (what, _present, _how) in NEEDS.items():
        config.addinivalue_line("markers", f"{marker}: needs {what} (skipped only in the Nix build sandbox)")


def pytest_runtest_setup(item):
    for marker, (what, present, how) in NEEDS.items():
        if item.get_closest_marker(marker) is not None:
            require(what, present(), how)


@pytest.fixture
def repo_root() -> Path:
    """The repository around the package (skipped only in the build sandbox)."""
    require(*[NEEDS["repo"][0], has_repository(), NEEDS["repo"][2]])
    return REPO_ROOT



def write_config(directory: Path, agents: dict | None = None, **top) -> Path:
    """A hive.json in ``directory`` with a short run dir (Unix socket paths are limited to 108 bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 1,
        "stateDir": str(directory / "state"),
        "runDir": str(directory / "run"),
        "manager": "manager",
        "backend": "local",
        "dashboard": {"listen": "127.0.0.1:0"},
        "agents": agents if agents is not None else {
            "alice": {"allowedRecipients": ["bob", "manager", "operator"]},
            "bob": {},
        },
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = directory / "hive.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(path)  # atomic, as a deploy would swap it
    return path


class HiveProcess:
    """``hyperhive serve --config PATH`` as a child process, with helpers to talk to its sockets."""

    def __init__(self, config_path: Path, env: dict | None = None, args: tuple[str, ...] = ()):
        self.config_path = Path(config_path)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}
        self._clients: list[Client] = []
        self._config = None

    @property
    def config(self):
        """The config the service was started with (tests may break the file afterwards)."""
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def start(self, timeout: float = 30) -> "HiveProcess":
        self._config = load_config(self.config_path)
        log = open(self.config_path.parent / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hyperhive", "serve", "--config", str(self.config_path), *self.args],
            stdout=subprocess.PIPE, stderr=log, env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(b"{"):
                    self.ready = json.loads(line)
                    return self
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"hyperhive serve did not start: {line!r}\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.config_path.parent / "serve.log").read_text(errors="replace")
        except OSError:
            return ""

    def client(self, name: str, timeout: float | None = 30) -> Client:
        c = Client(self.config.agent_socket(name), timeout=timeout)
        self._clients.append(c)
        return c

    def host(self, timeout: float | None = 30) -> Client:
        c = Client(self.config.host_socket, timeout=timeout)
        self._clients.append(c)
        return c

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "hyperhive", *args, "--config", str(self.config_path)],
                                capture_output=True, text=True, env=self.env, input=input, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"hyperhive {' '.join(args)} failed: {result.stderr}")
        return result

    @property
    def dashboard_url(self) -> str | None:
        return self.ready.get("dashboard")

    def close_clients(self) -> None:
        for c in self._clients:
            try:
                c.close()
            except OSError:
                pass
        self._clients.clear()

    def kill9(self) -> None:
        self.close_clients()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.close_clients()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # whatever it started (local agents) goes too
            except ProcessLookupError:
                pass
            if self.proc.stdout:
                self.proc.stdout.close()


@pytest.fixture
def hive_dir(tmp_path_factory) -> Path:
    # A short path: the socket paths under it must stay within the 108-byte limit of sun_path.
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="hh", dir="/tmp"))
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start_hive(hive_dir):
    """``start_hive(agents=..., **top)`` writes a config and starts a real service; all are stopped after."""
    started: list[HiveProcess] = []

    def start(agents: dict | None = None, env: dict | None = None, run_agents: bool = True,
              **top) -> HiveProcess:
        path = write_config(hive_dir, agents, **top)
        hp = HiveProcess(path, env=env, args=() if run_agents else ("--no-agents",)).start()
        started.append(hp)
        return hp

    yield start
    for hp in started:
        hp.stop()


def wait_for(predicate, timeout: float = 10, interval: float = 0.02, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def refused(call, code: str) -> str:
    """The message of the HiveError ``call()`` raises, after checking its code."""
    with pytest.raises(HiveError) as info:
        call()
    assert info.value.code == code, info.value.message
    return info.value.message


def event_about(client, question_id: int, wait: float = 10) -> dict:
    """The event about ``question_id`` in this agent's inbox (acknowledging what it reads)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        result = client.call("recv", wait_seconds=max(0.1, deadline - time.monotonic()), max=10)
        if result["messages"]:
            client.call("ack", ids=[m["id"] for m in result["messages"]])
        for m in result["messages"]:
            if m["kind"] == "event" and (m.get("data") or {}).get("question_id") == question_id:
                return m
    raise AssertionError(f"no event about question #{question_id}")


@pytest.fixture
def start_broker(start_hive):
    """Like ``start_hive`` but with ``serve --no-agents``: the test plays every agent on its socket."""

    def start(agents: dict | None = None, **kw) -> HiveProcess:
        return start_hive(agents, run_agents=False, **kw)

    return start


# --- the real Claude Code CLI against the stand-in Messages API -------------------------------------------------

def claude_path() -> Path | None:
    path = Path(os.environ.get("HYPERHIVE_CLAUDE") or PROJECT_CLAUDE)
    return path if path.is_file() and os.access(path, os.X_OK) else None


@pytest.fixture(scope="session")
def claude_cli() -> str:
    """The path of the real Claude Code CLI; skipped only in the Nix build sandbox, which cannot have it."""
    path = claude_path()
    require("the Claude Code CLI", path is not None,
            f"not at {os.environ.get('HYPERHIVE_CLAUDE') or PROJECT_CLAUDE}: run `make claude` (make test does), "
            "or set HYPERHIVE_CLAUDE")
    return str(path)


@pytest.fixture
def model_api():
    """The stand-in Anthropic Messages API on loopback, scripted per agent (see hyperhive.testing.messages_api)."""
    with MessagesAPI() as api:
        yield api


def claude_env(api: MessagesAPI, directory: Path) -> dict:
    """The environment a hive's harnesses hand Claude Code: the stand-in API and a config dir of the test's own."""
    config_dir = directory / "claude-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    # a git identity for the commits the manager makes (a NixOS container sets one for its user)
    return {**api.claude_env(str(config_dir)), "GIT_AUTHOR_NAME": "hive", "GIT_AUTHOR_EMAIL": "hive@localhost",
            "GIT_COMMITTER_NAME": "hive", "GIT_COMMITTER_EMAIL": "hive@localhost"}


@pytest.fixture
def claude_hive(start_hive, hive_dir, model_api, claude_cli):
    """``claude_hive(agents, env=..., **top)``: a real service whose harnesses run the real Claude Code CLI
    against ``model_api``; script the agents with ``model_api.script(name, steps)`` before sending to them."""

    def start(agents: dict | None = None, *, env: dict | None = None, **top) -> HiveProcess:
        top.setdefault("harness", {"claudeCommand": [claude_cli]})
        return start_hive(agents, env={**claude_env(model_api, hive_dir), **(env or {})}, **top)

    return start
