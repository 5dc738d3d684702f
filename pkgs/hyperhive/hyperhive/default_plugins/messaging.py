"""Built-in ops for messages: whoami, send, recv, ack, status, list_agents, and the operator's inbox."""

from __future__ import annotations

from ..broker import ROLES_ALL, ROLES_OPERATOR, Op, arg, no_extra_args
from ..errors import bad_request
from ..hookspecs import hookimpl
from ..transport import current_connection, peer_connected


def whoami(hive, who, args):
    no_extra_args(args, ())
    return {"name": who.name, "role": who.role}


def send(hive, who, args):
    no_extra_args(args, ("to", "body", "in_reply_to"))
    to = arg(args, "to", str)
    body = arg(args, "body", str)
    in_reply_to = arg(args, "in_reply_to", int, None, nullable=True)
    return {"id": hive.broker.send(who.name, to, body, in_reply_to=in_reply_to)}


def recv(hive, who, args):
    no_extra_args(args, ("wait_seconds", "max", "lease_seconds"))
    wait = arg(args, "wait_seconds", (int, float), 0)
    limit = arg(args, "max", int, 1)
    lease = arg(args, "lease_seconds", (int, float), None, nullable=True)
    if wait < 0:
        raise bad_request('"wait_seconds" must be 0 or more')
    if not 1 <= limit <= 1000:
        raise bad_request('"max" must be from 1 to 1000')
    if lease is not None and lease <= 0:
        raise bad_request('"lease_seconds" must be positive')
    return hive.broker.recv(who.name, wait_seconds=wait, max_messages=limit, lease_seconds=lease,
                            peer_connected=peer_connected, owner=current_connection())


def _does_not_wait(request: dict) -> bool:
    """A recv that only peeks runs on the socket loop; one that may park runs on a worker."""
    return not request.get("wait_seconds")


def ack(hive, who, args):
    no_extra_args(args, ("ids",))
    ids = arg(args, "ids", list)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise bad_request('"ids" must be a list of message ids (integers)')
    return {"acked": hive.broker.ack(who.name, ids)}


def status(hive, who, args):
    no_extra_args(args, ())
    return hive.broker.status(who.name)


def list_agents(hive, who, args):
    no_extra_args(args, ())
    return {"agents": hive.agent_list()}


def inbox(hive, who, args):
    no_extra_args(args, ("limit",))
    limit = arg(args, "limit", int, 50)
    if not 1 <= limit <= 1000:
        raise bad_request('"limit" must be from 1 to 1000')
    return {"messages": hive.broker.operator_inbox(limit)}


def mark_read(hive, who, args):
    no_extra_args(args, ("up_to", "ids"))
    ids = arg(args, "ids", list, None, nullable=True)
    if ids is not None:
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise bad_request('"ids" must be a list of message ids (integers)')
        marked = hive.broker.ack("operator", ids)
    else:
        marked = hive.broker.mark_read("operator", arg(args, "up_to", int, None, nullable=True))
    hive.bus.publish("state", {"section": "inbox", "what": "read"})
    return {"marked": marked}


@hookimpl
def broker_ops(hive):
    return {
        "whoami": Op(whoami, ROLES_ALL, "who this socket speaks for"),
        "send": Op(send, ROLES_ALL, "send a message", inline=True),
        "recv": Op(recv, ROLES_ALL, "receive messages (peek, or park with wait_seconds)",
                   inline=_does_not_wait),
        "ack": Op(ack, ROLES_ALL, "acknowledge received messages", inline=True),
        "status": Op(status, ROLES_ALL, "count unread and leased messages", inline=True),
        "list_agents": Op(list_agents, ROLES_ALL, "the agents and their state"),
        "inbox": Op(inbox, ROLES_OPERATOR, "the last messages to the operator"),
        "mark_read": Op(mark_read, ROLES_OPERATOR,
                        "mark the operator's messages read (those in ids, or up to id up_to, else all): they stop counting "
                        "against their senders' limits.maxUnackedPerSender"),
    }
