"""What runs inside an agent's container: ``hyperhive agent`` (the harness) and ``hyperhive mcp`` (the tools)."""

from __future__ import annotations

import os
import sys

import click

DEFAULT_SOCKET = "/run/hive/mcp.sock"
DEFAULT_AGENT_CONFIG = "/etc/hyperhive/agent.json"

socket_option = click.option(
    "--socket", "socket_path", type=click.Path(dir_okay=False), default=None,
    help="The agent's broker socket. Default: $HYPERHIVE_SOCKET, else /run/hive/mcp.sock.")


def _socket(path: str | None) -> str:
    return path or os.environ.get("HYPERHIVE_SOCKET") or DEFAULT_SOCKET


@click.command("mcp")
@socket_option
def mcp(socket_path):
    """Serve the hive's tools to Claude Code over stdio (MCP, started from Claude's --mcp-config).

    Tools: send, recv, ask_operator, list_agents; for the manager also request_spawn, request_spawn_draft,
    request_spawn_commit, request_apply_commit, kill, start, restart, update. Every call goes to the broker
    over the socket, which is the agent's identity.
    """
    from ..mcp import run

    sys.exit(run(_socket(socket_path)))


@click.command("agent")
@click.option("--name", required=True, help="The agent's name (the manager's, for the manager).")
@socket_option
@click.option("--agent-config", "agent_config", type=click.Path(dir_okay=False), default=None,
              help="The agent's config (its hive.json section plus name, role, manager, claudeCommand). "
                   "Default: $HYPERHIVE_AGENT_CONFIG, else /etc/hyperhive/agent.json.")
@click.option("--state-dir", "state_dir", type=click.Path(file_okay=False), default=None,
              help="The agent's /state (notes.md lives there; Claude Code runs in it). Default: stateDir of the "
                   "agent config, else /state.")
@click.option("--work-dir", "work_dir", type=click.Path(file_okay=False), default=None,
              help="Where the harness writes Claude Code's settings, system prompt and MCP config. Default: a "
                   "fresh temporary directory, removed on exit.")
@click.option("--once", is_flag=True, help="Handle one batch of messages, then exit.")
@click.option("--lease-seconds", type=click.FloatRange(min=0.1), default=120, show_default=True,
              help="How long a received message stays leased between heartbeats: the messages of a harness that "
                   "dies come again after this.")
def agent(name, socket_path, agent_config, state_dir, work_dir, once, lease_seconds):
    """Run the harness: wait for messages, run one Claude Code turn per batch, report, compact the notes.

    Claude Code is `claudeCommand` from the agent config, else $HYPERHIVE_CLAUDE_COMMAND (a JSON list), else
    `claude` on PATH, else the scripted stand-in model (python -m hyperhive.standin), labelled as such.
    """
    from ..harness import main

    config = agent_config or os.environ.get("HYPERHIVE_AGENT_CONFIG") or DEFAULT_AGENT_CONFIG
    sys.exit(main(name, _socket(socket_path), config, state_dir, work_dir, once=once, lease_seconds=lease_seconds))




@click.command("git", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                        "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def git(args):
    """The manager's git: `hyperhive git -C <agents>/<name>/config <subcommand> [options] [--] [paths]`.

    Runs git on one agent's proposed config repo, and nothing else: the subcommands a manager needs to edit and
    commit (status, diff, log, show, add, rm, mv, restore, commit, rev-parse, ls-files, branch, switch), options
    that cannot start a program or reach outside the repo, a repo whose .git/config holds only plain keys, and a
    hardened environment (no hooks, pager, editor, fsmonitor, system or global config). <agents> is
    $HYPERHIVE_AGENTS_DIR (the harness sets it), else /agents. `hyperhive git --help` lists what it allows.
    """
    from ..manager_git import main

    sys.exit(main(list(args)))


COMMANDS = [mcp, agent, git]
