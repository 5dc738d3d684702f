"""``hyperhive client``: speak the agent protocol on one socket, for scripts and debugging."""

from __future__ import annotations

import os

import click

from .common import echo_json, socket_call

DEFAULT_SOCKET = "/run/hive/mcp.sock"


# The arguments of each op an agent's socket answers (docs/protocol.md has the whole contract); "?" marks an
# optional one. The list of ops itself comes from the plugins, so an op a plugin adds is listed too.
OP_ARGS = {
    "whoami": "",
    "send": "to, body, in_reply_to? (the id of a message from `to` that this answers)",
    "recv": "wait_seconds?, max? (1-1000), lease_seconds?",
    "ack": "ids (list of message ids)",
    "status": "",
    "ask_operator": "question, options? (list), multi? (bool), ttl_seconds?",
    "list_agents": "",
    "stats": "samples (list of {key, value, ts?})",
    "turn_event": "event ({type: turn_start|event|turn_end|error, data})",
    "lease": "ids, seconds",
    "request_spawn": "name",
    "request_spawn_draft": "name",
    "request_spawn_commit": "name, commit, reason?",
    "request_apply_commit": "agent, commit, reason?",
    "start": "name",
    "kill": "name",
    "restart": "name",
    "update": "name",
    "remind": "body, in_seconds? or at? (ISO 8601 with its zone)",
    "turn_ready": "wait_seconds?",
    "turn_record": "turn ({kind, started_at, ended_at, status, model, wake, tokens, cost_usd, ...})",
    "get_logs": "agent, lines?",
}


def agent_ops() -> list[tuple[str, str, str, str]]:
    """(op, arguments, who may call it, what it does) for every op an agent's or the manager's socket answers."""
    from ..broker import ROLES_AGENTS
    from ..plugins import make_plugin_manager

    ops = {}
    for impl in make_plugin_manager().hook.broker_ops.get_hookimpls():
        try:
            ops.update(impl.function(hive=None) or {})
        except Exception:  # a plugin that needs a running hive to name its ops: left out of the help
            continue
    out = []
    for name in sorted(ops):
        op = ops[name]
        if not set(op.roles) & ROLES_AGENTS:
            continue
        who = "manager" if set(op.roles) & ROLES_AGENTS == {"manager"} else "all"
        out.append((name, OP_ARGS.get(name, "(see docs/protocol.md)"), who, op.help))
    return out


class ClientGroup(click.Group):
    def format_epilog(self, ctx, formatter):
        rows = [(f"{name}({args})" if args else f"{name}()", f"[{who}] {what}") for name, args, who, what in agent_ops()]
        with formatter.section("Ops (for `call OP JSON_ARGS`; arguments marked ? are optional)"):
            formatter.write_dl(rows)
        formatter.write_paragraph()
        formatter.write_text("Example: hyperhive client --socket /run/hive/mcp.sock call send "
                             "'{\"to\": \"bob\", \"body\": \"hi\"}'")


@click.group("client", cls=ClientGroup)
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False), default=None,
              help="The agent socket. Default: $HYPERHIVE_SOCKET, else /run/hive/mcp.sock.")
@click.pass_context
def client(ctx, socket_path):
    """Talk to the broker as the agent whose socket this is."""
    ctx.obj = socket_path or os.environ.get("HYPERHIVE_SOCKET") or DEFAULT_SOCKET


@client.command("whoami")
@click.pass_obj
def whoami(sock):
    """Who this socket speaks for."""
    echo_json(socket_call(sock, "whoami"))


@client.command("send")
@click.argument("to")
@click.argument("body")
@click.pass_obj
def send(sock, to, body):
    """Send BODY to TO."""
    echo_json(socket_call(sock, "send", to=to, body=body))


@client.command("recv")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=0,
              help="Seconds to park waiting for a message (0 peeks and returns at once).")
@click.option("--max", "max_messages", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--ack", "do_ack", is_flag=True, help="Acknowledge what was received at once.")
@click.pass_obj
def recv(sock, wait_seconds, max_messages, do_ack):
    """Receive (and lease) messages; they come again unless acknowledged."""
    def receive(client):
        # on the connection that leased them: closing it first would give them back before the ack
        result = client.call("recv", wait_seconds=wait_seconds, max=max_messages)
        if do_ack and result["messages"]:
            client.call("ack", ids=[m["id"] for m in result["messages"]])
        return result

    echo_json(socket_call(sock, receive))


@client.command("ack")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.pass_obj
def ack(sock, ids):
    """Acknowledge messages by id."""
    echo_json(socket_call(sock, "ack", ids=list(ids)))


@client.command("status")
@click.pass_obj
def status(sock):
    """Count unread and leased messages."""
    echo_json(socket_call(sock, "status"))


@client.command("call")
@click.argument("op")
@click.argument("json_args", required=False, default="{}")
@click.pass_obj
def call(sock, op, json_args):
    """Call any OP with a JSON object of arguments."""
    import json

    try:
        args = json.loads(json_args)
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="JSON_ARGS") from None
    if not isinstance(args, dict):
        raise click.BadParameter("must be a JSON object", param_hint="JSON_ARGS")
    echo_json(socket_call(sock, op, **args))


COMMANDS = [client]
