"""Operator verbs over ``host.sock``: list, send, inbox."""

from __future__ import annotations

import click

from .common import echo_json, echo_messages, host_call, host_options, one_line


@click.command("list")
@host_options
def list_agents(config_path, as_json):
    """List the manager and every agent with its state."""
    result = host_call(config_path, "list_agents")
    if as_json:
        return echo_json(result)
    for agent in result["agents"]:
        click.echo(f"{one_line(agent['name']):<10} {one_line(agent.get('role', '')):<8} {one_line(agent['state'])}")


@click.command("send")
@click.argument("to")
@click.argument("body")
@host_options
def send(to, body, config_path, as_json):
    """Send BODY to agent TO as the operator."""
    result = host_call(config_path, "send", to=to, body=body)
    if as_json:
        return echo_json(result)
    click.echo(f"sent #{result['id']} to {to}")


@click.command("inbox")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many of the latest messages to show.")
@click.option("--mark-read", is_flag=True,
              help="Mark every message to the operator read: they stop counting against their senders' "
                   "limits.maxUnackedPerSender.")
@host_options
def inbox(limit, mark_read, config_path, as_json):
    """Show the latest messages sent to the operator (or, with --mark-read, mark them read)."""
    if mark_read:
        result = host_call(config_path, "mark_read")
        return echo_json(result) if as_json else click.echo(f"marked {result['marked']} message(s) read")
    result = host_call(config_path, "inbox", limit=limit)
    if as_json:
        return echo_json(result)
    echo_messages(result["messages"])


COMMANDS = [list_agents, send, inbox]
