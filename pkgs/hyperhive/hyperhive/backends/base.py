"""What every deploy backend does, and what they share (the agent.json each agent reads)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import nofollow, repos
from ..errors import HiveError


class BuildError(Exception):
    """A build or activation that failed; the message is the output kept in the ``failed/<id>`` tag."""


class Backend:
    """One way of running agents. ``name`` is the config's ``backend`` value.

    A deploy is ``lock(name)`` (pin meta's ``agent-<n>`` input to ``applied/<n>`` main) then ``deploy(name, sha)``
    (build and activate it); either raises ``BuildError`` and leaves what ran before running.
    """

    name = "abstract"
    # How often the crash watcher asks ``crashed()``.
    poll_seconds = 1.0

    def __init__(self, hive):
        self.hive = hive

    def lock(self, name: str) -> None:
        raise NotImplementedError

    def deploy(self, name: str, sha: str) -> None:
        raise NotImplementedError

    def start(self, name: str) -> None:
        raise NotImplementedError

    def stop(self, name: str) -> None:
        raise NotImplementedError

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def destroy(self, name: str) -> None:
        self.stop(name)

    def state(self, name: str) -> str:
        """running | stopped | crashed | starting | missing | unknown"""
        raise NotImplementedError

    def crashed(self) -> list[tuple[str, str]]:
        """Agents that stopped without being asked since the last call: (name, what happened)."""
        return []

    def stop_all(self) -> None:
        pass

    def describe(self) -> str:
        return self.name

    def logs(self, name: str, lines: int = 200, cursor: str | None = None, search: str | None = None) -> dict:
        """The agent's service log: ``{lines, cursor, source}``, the last ``lines`` (or those after ``cursor``)."""
        raise BuildError(f"the {self.name} backend keeps no logs hyperhive can read")


def role_of(hive, name: str) -> str:
    return "manager" if name == hive.config.manager else "agent"


def agent_json(hive, name: str) -> dict:
    """The agent's section of hive.json plus who it is, as the harness reads it (``--agent-config``)."""
    cfg = hive.agent_config(name)
    if cfg is None:
        raise KeyError(name)
    out = cfg.to_json()
    out.update({
        "name": name,
        "role": role_of(hive, name),
        "manager": hive.config.manager,
        "claudeCommand": None if hive.config.claude_command is None else list(hive.config.claude_command),
        "operatorPronouns": hive.config.operator_pronouns,
        "stateDir": str(repos.state_path(hive, name)),
    })
    if out["role"] == "manager":  # where it finds the proposed config repos (/agents in its NixOS container)
        out["agentsDir"] = str(hive.config.state_dir / "agents")
    return out


def write_agent_json(hive, name: str) -> Path:
    """``agents/<n>/agent.json``, atomically. The manager's container writes under ``agents/`` too, so nothing
    there is written through: ``agents/<n>`` is reached without following a link and a fresh file (O_EXCL,
    O_NOFOLLOW) is renamed over the name itself."""
    path = repos.agent_json_path(hive, name)
    data = (json.dumps(agent_json(hive, name), indent=2) + "\n").encode()
    try:
        with nofollow.directory(hive.config.state_dir, path.parent.relative_to(hive.config.state_dir),
                                create=True) as fd:
            nofollow.write_file(fd, path.name, data, 0o644)
    except HiveError as e:
        raise BuildError(f"refusing to write {name}'s agent.json: {e.message}") from None
    return path


def open_agent_log(hive, name: str) -> int:
    """A descriptor appending to ``agents/<n>/agent.log`` (reached and opened without following a link)."""
    path = repos.agent_json_path(hive, name).with_name("agent.log")
    try:
        with nofollow.directory(hive.config.state_dir, path.parent.relative_to(hive.config.state_dir),
                                create=True) as fd:
            return nofollow.open_append(fd, path.name, path)
    except HiveError as e:
        raise BuildError(f"refusing to open {name}'s agent.log: {e.message}") from None
