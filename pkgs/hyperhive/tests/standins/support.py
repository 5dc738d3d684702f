"""Helpers for the tests of config repos, approvals, spawning, backends and retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

STANDINS = Path(__file__).resolve().parent

# Reading a spawned agent's policy from its agent.nix (and checking a config parses) needs Nix's evaluator:
# skipped only in the Nix build sandbox, a failure anywhere else (tests/conftest.py).
needs_nix = pytest.mark.nix

# Agents run as the stand-in agent process; crashes are looked for often.
AGENT_ENV = {
    "HYPERHIVE_AGENT_COMMAND": f"{Path(sys.executable).absolute()} {STANDINS / 'agent'}",
    "HYPERHIVE_CRASH_POLL_SECONDS": "0.2",
}


def nixos_env(hive_dir: Path) -> dict:
    """The nixos-container backend against the stand-in ``nix`` and ``nixos-container`` on PATH."""
    return {
        # this interpreter's directory too: the stand-ins run on `python3` from PATH, quickly (no pyenv shim)
        "PATH": f"{STANDINS}:{Path(sys.executable).absolute().parent}:{os.environ.get('PATH', '')}",
        "HYPERHIVE_STANDIN_LOG": str(hive_dir / "standin.log"),
        "HYPERHIVE_STANDIN_DIR": str(hive_dir / "standin"),
        "HYPERHIVE_STANDIN_FAIL": str(hive_dir / "standin.fail"),
        "HYPERHIVE_NIXOS_CONTAINERS_DIR": str(hive_dir / "standin" / "etc"),
        "HYPERHIVE_CRASH_POLL_SECONDS": "0.2",
    }


def without_nixos_container_env() -> dict:
    """The nixos-container backend off NixOS: a PATH of git and this interpreter only, where neither
    ``nixos-container`` nor the stand-ins are (skips where nixos-container is installed beside them)."""
    import shutil

    path = os.pathsep.join(dict.fromkeys([str(Path(shutil.which("git")).parent), str(Path(sys.executable).parent)]))
    if any(Path(d, "nixos-container").exists() for d in path.split(os.pathsep)):
        pytest.skip("nixos-container is installed beside git or python here: this hive would start containers")
    return {"PATH": path}


def git(path: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(path), "-c", "user.name=manager", "-c", "user.email=manager@hive",
                             *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} in {path}: {result.stderr}")
    return result.stdout.strip()


def state_dir(hp) -> Path:
    return hp.config.state_dir


def commit_change(hp, agent: str, text: str, filename: str = "agent.nix", message: str = "a change") -> str:
    """What the manager does: edit the proposed repo and commit; returns the new sha."""
    repo = state_dir(hp) / "agents" / agent / "config"
    (repo / filename).write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")



def two_changes_from_deployed(hp, agent: str, fix_line: str) -> tuple[str, str, str]:
    """What a manager does to make two proposals that each look harmless alone: from the deployed commit, a branch
    ``fix`` adding ``fix_line`` to agent.nix and a branch ``tweak`` adding a comment to flake.nix. Returns
    (deployed, fix, tweak) shas."""
    sd = state_dir(hp)
    config = sd / "agents" / agent / "config"
    deployed = git(sd / "applied" / agent, "rev-parse", "main")
    git(config, "checkout", "-q", "-b", "fix", deployed)
    fix = commit_change(hp, agent, (config / "agent.nix").read_text() + fix_line + "\n")
    git(config, "checkout", "-q", "-b", "tweak", deployed)
    tweak = commit_change(hp, agent, (config / "flake.nix").read_text() + "# a comment\n", filename="flake.nix")
    return deployed, fix, tweak

def agent_nix(prompt: str, recipients: str = '[ "manager" "operator" ]') -> str:
    return ('{ pkgs, ... }:\n{\n  hyperhive = {\n'
            f'    prompt = {json.dumps(prompt)};\n    allowedRecipients = {recipients};\n'
            '    bash.allow = [ "git *" ];\n    packages = [ pkgs.ripgrep ];\n  };\n}\n')


def tags(path: Path) -> dict[str, str]:
    """Tag name to the commit it points at."""
    out = git(path, "for-each-ref", "refs/tags", "--format=%(refname:strip=2) %(*objectname)%(objectname)")
    result = {}
    for line in out.splitlines():
        name, obj = line.split(" ", 1)
        result[name] = obj[:40]
    return result


def tag_message(path: Path, name: str) -> str:
    return git(path, "for-each-ref", f"refs/tags/{name}", "--format=%(contents)")


def standin_info(hp, agent: str) -> dict | None:
    base = state_dir(hp) / ("manager" if agent == hp.config.manager else f"agents/{agent}") / "state"
    try:
        return json.loads((base / "standin-agent.json").read_text())
    except (OSError, ValueError):
        return None


def wait_status(host, approval_id: int, statuses=("deployed", "failed"), timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        a = host.call("approval", id=approval_id)
        if a["status"] in statuses:
            return a
        time.sleep(0.05)
    raise AssertionError(f"approval #{approval_id} did not reach {statuses}: {a}")


def events(client, wait: float = 0) -> list[dict]:
    """Everything waiting for this socket's owner (received and acknowledged)."""
    got = client.call("recv", wait_seconds=wait, max=100)["messages"]
    if got:
        client.call("ack", ids=[m["id"] for m in got])
    return got


def wait_event(client, predicate, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        for m in events(client, wait=min(1.0, max(0.05, deadline - time.monotonic()))):
            seen.append(m)
            if predicate(m):
                return m
    raise AssertionError(f"no matching event within {timeout}s; saw: {[m['body'] for m in seen]}")
