"""The broker: dispatches socket requests to ops, stores messages, and parks ``recv`` until a message comes.

A parked ``recv`` sleeps on a per-recipient condition that ``send`` signals right after its commit, so it wakes
within milliseconds and never polls the database in a loop. It also wakes when the earliest lease of its inbox
lapses, so a message whose harness died comes again without anyone sending.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from sqlalchemy import select

from . import store as db
from .errors import HiveError, bad_request, conflict, forbidden, not_found
from .plugins import direct_caller
from .transport import Connection, Identity

if TYPE_CHECKING:
    from .service import Hive

log = logging.getLogger(__name__)

ROLES_ALL = frozenset({"agent", "manager", "operator"})
ROLES_AGENTS = frozenset({"agent", "manager"})
ROLES_MANAGER = frozenset({"manager"})
ROLES_OPERATOR = frozenset({"operator"})
SYSTEM = "system"
OPERATOR = "operator"
UNLIMITED_SENDERS = frozenset({SYSTEM, OPERATOR})  # trusted: no quota on what they send


@dataclass(frozen=True)
class Op:
    """One request type of the wire protocol: ``handler(hive, identity, args) -> result`` and who may call it."""

    handler: Callable[["Hive", Identity, dict], Any]
    roles: frozenset = ROLES_ALL
    help: str = ""
    # Runs on the socket loop itself instead of a worker thread: for ops that are quick and never block (no
    # waiting, no git, no process, no lock held for long). They write only through ``store.insert_raw`` or
    # ``store.raw_write`` and act on what they wrote through ``store.after_commit``: all inline requests of one
    # turn of the loop share one transaction, answered once it has committed.
    inline: bool | Callable[[dict], bool] = False  # or, per request, a test of its arguments


def message_dict(row) -> dict:
    """The wire form of a messages row (a SQLAlchemy row, by column name)."""
    return _message_from_tuple((row.id, row.sender, row.recipient, row.kind, row.body, getattr(row, "data", None),
                                row.sent_at, getattr(row, "reply_to", None)))


def _message_from_tuple(row: tuple) -> dict:
    """The wire form of a raw ``(id, sender, recipient, kind, body, data, sent_at, reply_to)`` row."""
    out = {"id": row[0], "from": row[1], "to": row[2], "kind": row[3], "body": row[4], "sent_at": db.iso(row[6])}
    data = db.loads_json(row[5])
    if data is not None:
        out["data"] = data
    if row[7] is not None:
        out["in_reply_to"] = row[7]
    return out


# --- argument checking, shared by every op ---------------------------------------------------------------

_MISSING = object()


def arg(args: dict, name: str, kind, default: Any = _MISSING, *, nullable: bool = False) -> Any:
    """The argument ``name`` of a request, checked against ``kind``; a clear bad_request otherwise."""
    if name not in args or (args[name] is None and default is not _MISSING):
        if default is _MISSING:
            raise bad_request(f'missing argument "{name}"')
        return default
    value = args[name]
    if value is None and nullable:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        want = " or ".join({str: "a string", int: "an integer", float: "a number", bool: "a boolean",
                            list: "a list", dict: "an object"}[k] for k in kinds)
        raise bad_request(f'argument "{name}" must be {want}')
    return value


def no_extra_args(args: dict, allowed: Iterable[str]) -> None:
    extra = sorted(set(args) - set(allowed))
    if extra:
        raise bad_request(f"unknown argument(s) {', '.join(extra)} (this op takes: {', '.join(sorted(allowed)) or 'none'})")


class Broker:
    def __init__(self, hive: "Hive"):
        self.hive = hive
        self.ops: dict[str, Op] = {}
        self._lock = threading.Lock()
        self._conds: dict[str, threading.Condition] = {}
        self._generation: dict[str, int] = {}
        self._closing = False
        # Which connection holds the lease of each leased message (only leases taken on a socket). Written
        # only with the store's write lock held, so that it always agrees with the lease_until column.
        self._lease_owner: dict[int, Connection] = {}
        self._authorize_send = direct_caller(hive.pm, "authorize_send")
        self._message_stored = direct_caller(hive.pm, "message_stored")

    # --- dispatch ---------------------------------------------------------------------------------------

    def register(self, ops: dict[str, Op]) -> None:
        for name, op in ops.items():
            if name in self.ops:
                raise RuntimeError(f"two plugins define the op {name!r}")
            self.ops[name] = op

    def handle(self, identity: Identity, request: dict) -> dict:
        name = request.get("op")
        if not isinstance(name, str):
            raise bad_request('request needs an "op" string')
        op = self.ops.get(name)
        if op is None:
            known = ", ".join(sorted(n for n, o in self.ops.items() if identity.role in o.roles))
            raise bad_request(f'unknown op "{name}" (known: {known})')
        if identity.role not in op.roles:
            who = " or ".join(sorted(op.roles))
            raise forbidden(f'op "{name}" is not available to {identity.name} (it is for: {who})')
        args = {k: v for k, v in request.items() if k != "op"}
        return {"ok": True, "result": op.handler(self.hive, identity, args)}

    def runs_inline(self, identity: Identity, request: dict) -> bool:
        """Whether the socket loop answers ``request`` itself (an inline op, or one refused at once)."""
        op = self.ops.get(request.get("op")) if isinstance(request.get("op"), str) else None
        if op is None or identity.role not in op.roles:
            return True  # refused at once
        return op.inline(request) if callable(op.inline) else op.inline

    # --- messages ---------------------------------------------------------------------------------------

    def send(self, sender: str, recipient: str, body: str, *, kind: str = "message",
             data: dict | None = None, check_policy: bool = True, in_reply_to: int | None = None) -> int:
        """Store one message durably, wake whoever waits for it, and return its id. ``in_reply_to`` names the
        message this one answers: one that ``recipient`` sent to ``sender``."""
        hive = self.hive
        if not isinstance(body, str):
            raise bad_request('"body" must be a string')
        if not body.strip():  # it would wake its recipient into a model turn about nothing
            raise bad_request('"body" is empty: write what the message says')
        if sender == OPERATOR and recipient == OPERATOR:  # it would only sit in the operator's own inbox
            raise bad_request('the operator cannot send to "operator" (itself): name an agent')
        if in_reply_to is not None:
            self._check_reply(sender, recipient, in_reply_to)
        limit = hive.config.broker.max_message_bytes
        size = len(body.encode("utf-8"))
        if size > limit:
            raise HiveError("too_large", f"message body is {size} bytes; the limit is {limit} (maxMessageBytes)")
        known = hive.recipients()
        if recipient not in known:
            known = hive.recipients(fresh=True)  # an agent spawned a moment ago
        if recipient not in known:
            raise not_found(f'unknown recipient "{recipient}" (known: {", ".join(sorted(known))})')
        if check_policy:
            reason = self._authorize_send(hive=hive, sender=sender, recipient=recipient, body=body)
            if reason:
                raise forbidden(reason)
        ts = time.time()
        msg_id = hive.store.insert_raw(
            "INSERT INTO messages (sender, recipient, kind, body, data, sent_at, deliveries, reply_to) "
            "VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
            (sender, recipient, kind, body, None if data is None else json.dumps(data), ts, in_reply_to),
            check=None if sender in UNLIMITED_SENDERS else lambda raw: self._check_quota(raw, sender, recipient))
        message = {"id": msg_id, "from": sender, "to": recipient, "kind": kind, "body": body,
                   "sent_at": db.iso(ts)}
        if data is not None:
            message["data"] = data
        if in_reply_to is not None:
            message["in_reply_to"] = in_reply_to
        # Nobody hears of the message before it is committed (on the socket loop, that is at the end of the turn).
        hive.store.after_commit(lambda: self._stored(message))
        return msg_id

    def _stored(self, message: dict) -> None:
        """A message is committed: wake its recipient, tell the dashboard and the plugins."""
        self.wake(message["to"])
        self.hive.bus.publish("messages", message)
        try:
            self._message_stored(hive=self.hive, message=message)
        except Exception:  # an observer must never turn a stored message into a failed send
            log.exception("a message_stored hook failed for message %s", message["id"])

    def _check_reply(self, sender: str, recipient: str, in_reply_to) -> None:
        """A reply answers a message its sender received from its recipient (so no one can thread under, or
        learn of, a message that was not theirs)."""
        if isinstance(in_reply_to, bool) or not isinstance(in_reply_to, int):
            raise bad_request('"in_reply_to" must be a message id (an integer)')
        with self.hive.store.read() as conn:
            row = conn.exec_driver_sql("SELECT sender, recipient FROM messages WHERE id = ?", (in_reply_to,)).first()
        if row is None or row[1] != sender:
            raise not_found(f"message #{in_reply_to} was not sent to {sender}, so {sender} cannot reply to it")
        if row[0] != recipient:
            raise bad_request(f"message #{in_reply_to} came from {row[0]}: send the reply to {row[0]}, not "
                              f"{recipient}")

    # --- counting what is unacknowledged ------------------------------------------------------------------
    # The table inbox_counts (kept by triggers on messages, whoever writes) holds how many messages each sender
    # has unacknowledged at each recipient: quotas, recv's "unread", status and the dashboard read it instead of
    # counting rows, so they cost the same whatever the backlog.

    def unacked(self, recipient: str, conn=None) -> int:
        """How many messages to ``recipient`` are not acknowledged (leased or not)."""
        conn = conn or self.hive.store.raw_reader()
        return int(conn.execute("SELECT total(unacked) FROM inbox_counts WHERE recipient = ?",
                                (recipient,)).fetchone()[0])

    def unacked_counts(self) -> dict[str, int]:
        rows = self.hive.store.raw_reader().execute(
            "SELECT recipient, sum(unacked) FROM inbox_counts GROUP BY recipient").fetchall()
        return {r: int(n) for r, n in rows if n}

    def _check_quota(self, raw, sender: str, recipient: str) -> None:
        """``limits.maxUnackedPerSender``: counted per (sender, recipient) inside the insert's transaction, so
        concurrent sends cannot pass it together, and one flooder never blocks another sender's messages."""
        limit = self.hive.config.limits.max_unacked_per_sender
        row = raw.execute("SELECT unacked FROM inbox_counts WHERE recipient = ? AND sender = ?",
                          (recipient, sender)).fetchone()
        waiting = row[0] if row else 0
        if waiting >= limit:
            later = ("the operator marks them read (dashboard inbox, or `hyperhive inbox --mark-read`)"
                     if recipient == OPERATOR else f"{recipient} acknowledges some")
            raise conflict(f"{sender} already has {waiting} unacknowledged messages waiting for {recipient}; the "
                           f"limit is {limit} (limits.maxUnackedPerSender): send again once {later}")

    def mark_read(self, recipient: str, up_to: int | None = None) -> int:
        """Acknowledge every message to ``recipient`` (the operator, who has no harness to ack) up to id
        ``up_to`` (everything when None); what a sender has waiting stops counting against its quota."""
        with self.hive.store.raw_write() as raw:
            if up_to is None:
                return raw.execute("UPDATE messages SET acked_at = ? WHERE recipient = ? AND acked_at IS NULL",
                                   (time.time(), recipient)).rowcount
            return raw.execute("UPDATE messages SET acked_at = ? WHERE recipient = ? AND acked_at IS NULL "
                               "AND id <= ?", (time.time(), recipient, up_to)).rowcount

    def event(self, recipient: str, body: str, **data: Any) -> int | None:
        """Store an event from ``system`` (no policy); None when the recipient is gone."""
        try:
            return self.send(SYSTEM, recipient, body, kind="event", data=data or None, check_policy=False)
        except HiveError as e:
            log.warning("event to %s not stored: %s", recipient, e.message)
            return None

    def recv(self, recipient: str, *, wait_seconds: float | None = None, max_messages: int = 1,
             lease_seconds: float | None = None, peer_connected: Callable[[], bool] | None = None,
             owner: Connection | None = None) -> dict:
        """Lease up to ``max_messages`` of ``recipient``'s inbox, parking up to ``wait_seconds`` for one.

        With an ``owner`` connection, what is leased belongs to it: ``release(owner)`` (called when it closes)
        hands back whatever it did not acknowledge."""
        cfg = self.hive.config.broker
        wait = min(float(wait_seconds or 0), float(cfg.recv_max_wait_seconds))
        lease = float(lease_seconds or cfg.lease_seconds)
        deadline = time.monotonic() + wait
        cond = self._cond(recipient)
        empty = {"messages": [], "unread": 0}
        parked = False
        while True:
            with cond:
                generation = self._generation.get(recipient, 0)
            if owner is not None and owner.closed:
                return empty  # the client has gone: lease nothing
            if parked and peer_connected is not None and not peer_connected():
                return empty  # it hung up while parked (the send that woke it is for whoever comes next)
            found, unread, next_expiry = self._lease(recipient, max_messages, lease, owner)
            if found or deadline <= time.monotonic() or self._closing:
                return {"messages": found, "unread": unread}
            wake_at = deadline
            if next_expiry is not None:  # a lapsing lease makes a message deliverable again
                wake_at = min(wake_at, time.monotonic() + max(0.0, next_expiry - time.time()) + 0.001)
            # Sleep until a send signals, the wait ends or a lease lapses; the database is not read meanwhile.
            # With a client to watch, wake every second to see whether it is still there.
            parked = True
            while True:
                remaining = wake_at - time.monotonic()
                if remaining <= 0:
                    break
                with cond:
                    if self._generation.get(recipient, 0) != generation or self._closing:
                        break
                    cond.wait(min(remaining, 1.0) if peer_connected else remaining)
                    if self._generation.get(recipient, 0) != generation or self._closing:
                        break
                if peer_connected is not None and not peer_connected():
                    return empty  # nobody to hand messages to: lease nothing

    # The inbox queries below are plain SQL: they run on every recv, ack and status, and building SQLAlchemy
    # expressions each time costs more than the query itself. They use the partial index messages_inbox.
    _ELIGIBLE = "recipient = ? AND acked_at IS NULL AND (lease_until IS NULL OR lease_until <= ?)"

    def _lease(self, recipient: str, limit: int, lease: float,
               owner: Connection | None = None) -> tuple[list[dict], int, float | None]:
        ts = time.time()
        reader = self.hive.store.raw_reader()
        waiting = reader.execute(f"SELECT 1 FROM messages WHERE {self._ELIGIBLE} LIMIT 1", (recipient, ts)).fetchone()
        if waiting is None:
            next_expiry = reader.execute(
                "SELECT min(lease_until) FROM messages WHERE recipient = ? AND acked_at IS NULL "
                "AND lease_until > ?", (recipient, ts)).fetchone()[0]
            return [], 0, next_expiry
        with self.hive.store.raw_write() as raw:
            ts = time.time()
            rows = raw.execute(
                "SELECT id, sender, recipient, kind, body, data, sent_at, reply_to FROM messages "
                f"WHERE {self._ELIGIBLE} ORDER BY id LIMIT ?", (recipient, ts, limit)).fetchall()
            if rows:
                ids = [r[0] for r in rows]
                raw.execute(
                    "UPDATE messages SET lease_until = ?, deliveries = deliveries + 1 "
                    f"WHERE id IN ({','.join('?' * len(ids))})", (ts + lease, *ids))
                with self._lock:
                    for i in ids:
                        if owner is None:
                            self._lease_owner.pop(i, None)
                        else:
                            self._lease_owner[i] = owner
                            owner.leases.add(i)
            leased = self._leased(raw, recipient, ts)
            unread = max(0, self.unacked(recipient, raw) - leased)
        return [_message_from_tuple(r) for r in rows], unread, None

    @staticmethod
    def _leased(conn, recipient: str, ts: float) -> int:
        """Messages to ``recipient`` leased now (index messages_leased: costs what is leased, not the backlog)."""
        return conn.execute("SELECT count(*) FROM messages WHERE recipient = ? AND acked_at IS NULL "
                            "AND lease_until > ?", (recipient, ts)).fetchone()[0]

    def ack(self, recipient: str, ids: list[int]) -> int:
        if not ids:
            return 0
        ids = list(dict.fromkeys(ids))[:1000]
        with self.hive.store.raw_write() as raw:
            acked = raw.execute(
                "UPDATE messages SET acked_at = ? WHERE recipient = ? AND acked_at IS NULL "
                f"AND id IN ({','.join('?' * len(ids))})", (time.time(), recipient, *ids)).rowcount
            with self._lock:
                for i in ids:
                    holder = self._lease_owner.get(i)
                    if holder is not None and holder.identity.name == recipient:
                        del self._lease_owner[i]
                        holder.leases.discard(i)
        return acked

    def lease(self, recipient: str, ids: list[int], seconds: float, owner: Connection | None = None) -> dict:
        """Keep ``recipient``'s messages ``ids`` leased ``seconds`` more on ``owner``'s behalf, or give them back (0).

        A message counts when it is unacknowledged, was received before, and is held by ``owner`` (or by no
        connection). One that nobody holds now (the service requeued it at its start, or its lease lapsed) is
        taken back by ``owner``: the harness of a turn that outlived a restart of the service keeps its messages,
        and they go with ``owner`` when it closes. One that another connection holds now was handed out again:
        it stays with that connection and comes back in ``lost``."""
        if not ids:
            return {"leased": 0, "lost": []}
        ids = list(dict.fromkeys(ids))[:1000]
        if owner is not None and owner.closed:
            return {"leased": 0, "lost": []}  # the caller has gone: take nothing
        with self.hive.store.raw_write() as raw:
            ts = time.time()
            rows = raw.execute(
                "SELECT id, lease_until FROM messages WHERE recipient = ? AND acked_at IS NULL AND deliveries > 0 "
                f"AND id IN ({','.join('?' * len(ids))})", (recipient, *ids)).fetchall()
            mine, lost = [], []
            with self._lock:
                for i, until in rows:
                    holder = self._lease_owner.get(i)
                    held = until is not None and until > ts
                    if held and holder is not None and holder is not owner and not holder.closed:
                        lost.append(i)
                    elif held or seconds:  # giving back what nobody holds changes nothing
                        mine.append(i)
            if mine:
                raw.execute(f"UPDATE messages SET lease_until = ? WHERE id IN ({','.join('?' * len(mine))})",
                            (ts + seconds if seconds else None, *mine))
                with self._lock:
                    for i in mine:
                        holder = self._lease_owner.pop(i, None)
                        if holder is not None and holder is not owner:
                            holder.leases.discard(i)
                        if seconds and owner is not None:
                            self._lease_owner[i] = owner
                            owner.leases.add(i)
                        elif owner is not None:
                            owner.leases.discard(i)
        self.wake(recipient)  # a parked recv takes what was given back now, or re-reads when the new lease lapses
        return {"leased": len(mine), "lost": sorted(lost)}

    def release(self, owner: Connection) -> int:
        """A connection closed: what it leased and did not acknowledge can be delivered again at once."""
        if not owner.leases:
            return 0
        with self.hive.store.write() as conn:
            with self._lock:
                ids = [i for i in owner.leases if self._lease_owner.get(i) is owner]
                for i in ids:
                    del self._lease_owner[i]
                owner.leases.clear()
            released = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                released += conn.exec_driver_sql(
                    "UPDATE messages SET lease_until = NULL WHERE acked_at IS NULL AND lease_until IS NOT NULL "
                    f"AND id IN ({','.join('?' * len(chunk))})", tuple(chunk)).rowcount
        if released:
            log.info("released %d message(s) leased by a closed connection of %s", released, owner.identity.name)
            self.wake(owner.identity.name)
        return released

    def status(self, recipient: str) -> dict:
        reader = self.hive.store.raw_reader()
        leased = self._leased(reader, recipient, time.time())
        return {"unread": max(0, self.unacked(recipient, reader) - leased), "leased": leased}

    def requeue_leased(self) -> int:
        """At start: whatever was leased by a harness of the previous run comes again."""
        with self.hive.store.write() as conn:
            return conn.exec_driver_sql(
                "UPDATE messages SET lease_until = NULL WHERE acked_at IS NULL AND lease_until IS NOT NULL"
            ).rowcount

    def operator_inbox(self, limit: int = 50) -> list[dict]:
        """The last ``limit`` messages to the operator, read or not, newest last (index ``messages_operator``)."""
        m = db.messages
        with self.hive.store.read() as conn:
            rows = conn.execute(select(m).where(m.c.recipient == OPERATOR)
                                .order_by(m.c.id.desc()).limit(limit)).all()
        out = []
        for r in reversed(rows):
            msg = message_dict(r)
            msg["read"] = r.acked_at is not None  # the operator has no harness: "read" is acknowledged
            out.append(msg)
        return out

    # --- waking ----------------------------------------------------------------------------------------

    def _cond(self, recipient: str) -> threading.Condition:
        with self._lock:
            cond = self._conds.get(recipient)
            if cond is None:
                cond = self._conds[recipient] = threading.Condition()
            return cond

    def wake(self, recipient: str) -> None:
        cond = self._cond(recipient)
        with cond:
            self._generation[recipient] = self._generation.get(recipient, 0) + 1
            cond.notify_all()

    def close(self) -> None:
        self._closing = True
        with self._lock:
            conds = list(self._conds.items())
        for name, _ in conds:
            self.wake(name)
