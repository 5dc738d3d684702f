"""Operator verbs over ``host.sock``: list, send, inbox."""

from __future__ import annotations

import click

from .common import echo_json, echo_messages, host_call, host_options, one_line
from ..times import when


@click.command("list")
@host_options
def list_agents(config_path, as_json):
    """List every agent as the dashboard shows it: state, deployed tag, inbox (unread / leased), last turn and
    flags (STALE: the proposed repo's main is not what is deployed; STUCK: messages wait and no turn ends;
    STAND-IN: a scripted stand-in model, not Claude; OVER BUDGET: no turn starts until its daily limit allows;
    KILLED: killed, and kept stopped across restarts of the service until started again),
    then drafts and destroyed agents kept."""
    result = host_call(config_path, "agents_overview")
    if as_json:
        return echo_json(result)
    header = f"{'AGENT':<10} {'ROLE':<8} {'STATE':<9} {'DEPLOYED':<24} {'UNREAD':>6} {'LEASED':>6}  {'LAST TURN':<36} FLAGS"
    click.echo(header)
    for a in result["agents"]:
        deployed = f"{a['deployed_tag']} {(a.get('deployed_sha') or '')[:7]}" if a.get("deployed_tag") else "-"
        flags = []
        if a.get("stale"):
            flags.append("STALE")
        if a.get("stuck"):
            flags.append(f"STUCK ({a.get('stuck_reason')})")
        if a.get("standin"):
            flags.append("STAND-IN")
        if a.get("over_budget"):
            flags.append("OVER BUDGET")
        if a.get("killed_by"):
            flags.append(f"KILLED by {a['killed_by']} (stays stopped until `hyperhive start {a['name']}`)")
        if a.get("origin") == "spawned":
            flags.append("spawned")
        last = when(a.get("last_turn_at"), relative=True) if a.get("last_turn_at") else "no turn yet"
        click.echo(one_line(f"{a['name']:<10} {a.get('role', ''):<8} {a['state']:<9} {deployed:<24} "
                            f"{a.get('unread', 0):>6} {a.get('leased', 0):>6}  {last:<36} {' '.join(flags) or '-'}"))
    for d in result.get("drafts") or []:
        click.echo(one_line(f"{d['name']:<10} {'draft':<8} {'draft':<9} head {(d.get('head') or '-')[:7]} "
                            "(the manager spawns it with request_spawn_commit)"))
    for t in result.get("tombstones") or []:
        click.echo(one_line(f"{t['name']:<10} {'agent':<8} {'destroyed':<9} config and state kept since "
                            f"{when(t.get('destroyed_at'))} (hyperhive revive {t['name']} | destroy --purge)"))


@click.command("send")
@click.argument("to")
@click.argument("body")
@click.option("--reply-to", "reply_to", type=int, default=None, metavar="ID",
              help="The id of TO's message (in your inbox) this answers; TO sees the id. Marks it read.")
@host_options
def send(to, body, reply_to, config_path, as_json):
    """Send BODY to agent TO as the operator (with --reply-to ID: as a reply to TO's message ID)."""
    args = {"to": to, "body": body}
    if reply_to is not None:
        args["in_reply_to"] = reply_to
    result = host_call(config_path, "send", **args)
    if reply_to is not None:
        host_call(config_path, "mark_read", ids=[reply_to])
    if as_json:
        return echo_json(result)
    click.echo(f"sent #{result['id']} to {to}" + (f" in reply to #{reply_to}" if reply_to is not None else ""))


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
