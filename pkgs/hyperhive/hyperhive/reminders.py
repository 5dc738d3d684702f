"""Reminders an agent sets for itself: op ``remind`` (``body`` and ``in_seconds`` or ``at``) stores one, and at
its time the agent gets an ``event`` from ``system`` (``what: "reminder"``).

They are rows of the database, so a reminder set before the service stops (or is killed) arrives after it starts
again — at once when its time has passed meanwhile. One thread (``due.DueThread``) sleeps until the next is due; setting or
cancelling one wakes it. Delivery and marking the reminder delivered happen in one step per reminder: the event
is stored, then the row is marked, so a crash between the two can deliver a reminder twice but never lose it.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime

from sqlalchemy import func, insert, select, update

from . import store as db
from .due import DueThread
from .errors import HiveError, bad_request, conflict, not_found

log = logging.getLogger(__name__)

MAX_DELAY_SECONDS = 366 * 86400.0
MAX_BODY_CHARS = 4000


def _when(in_seconds, at, now: float) -> float:
    if (in_seconds is None) == (at is None):
        raise bad_request('give exactly one of "in_seconds" (a number of seconds from now) or "at" '
                          '(an ISO 8601 time with its zone, e.g. 2026-11-29T18:00:00Z)')
    if in_seconds is not None:
        if isinstance(in_seconds, bool) or not isinstance(in_seconds, (int, float)) \
                or not math.isfinite(in_seconds) or not 0 <= in_seconds <= MAX_DELAY_SECONDS:
            raise bad_request(f'"in_seconds" must be a number from 0 to {MAX_DELAY_SECONDS:.0f} (366 days)')
        return now + float(in_seconds)
    if not isinstance(at, str):
        raise bad_request('"at" must be an ISO 8601 time string with its zone, e.g. 2026-11-29T18:00:00Z')
    try:
        parsed = datetime.fromisoformat(at.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise bad_request(f'"at" is not an ISO 8601 time: "{at[:60]}" (e.g. 2026-11-29T18:00:00Z)') from None
    if parsed.tzinfo is None:
        raise bad_request(f'"at" needs its time zone ("{at[:60]}": add Z for UTC, or +01:00)')
    due = parsed.timestamp()
    if due > now + MAX_DELAY_SECONDS:
        raise bad_request('"at" is more than 366 days ahead')
    return max(due, now)  # a time just past is due at once


def add(hive, agent: str, body, in_seconds=None, at=None) -> dict:
    if not isinstance(body, str) or not body.strip():
        raise bad_request('"body" must be a non-empty string (what to remind you of)')
    if len(body) > MAX_BODY_CHARS:
        raise HiveError("too_large", f'"body" is {len(body)} characters; a reminder holds at most {MAX_BODY_CHARS}')
    now = time.time()
    due = _when(in_seconds, at, now)
    limit = hive.config.limits.max_pending_reminders
    r = db.reminders
    with hive.store.write() as conn:
        pending = conn.execute(select(func.count()).select_from(r).where(
            r.c.agent == agent, r.c.status == "pending")).scalar()
        if pending >= limit:
            raise conflict(f"{agent} has {pending} pending reminders, the most allowed "
                           f"(limits.maxPendingReminders = {limit}); let one pass or ask the operator to "
                           "cancel some")
        rid = conn.execute(insert(r).values(agent=agent, body=body, due_at=due, created_at=now,
                                            status="pending")).inserted_primary_key[0]
    _scheduler(hive).wake()
    hive.bus.publish("state", {"section": "reminders", "agent": agent, "id": rid, "what": "set"})
    return {"id": rid, "due_at": db.iso(due)}


def _dict(row) -> dict:
    return {"id": row.id, "agent": row.agent, "body": row.body, "due_at": db.iso(row.due_at),
            "created_at": db.iso(row.created_at), "status": row.status, "ended_at": db.iso(row.ended_at),
            "message_id": row.message_id}


def list_reminders(hive, agent: str | None = None, status: str | None = "pending", limit: int = 200) -> list[dict]:
    r = db.reminders
    q = select(r).order_by(r.c.due_at, r.c.id).limit(limit)
    if agent:
        q = q.where(r.c.agent == agent)
    if status:
        q = q.where(r.c.status == status)
    with hive.store.read() as conn:
        return [_dict(row) for row in conn.execute(q).all()]


def cancel(hive, reminder_id, agent: str | None = None) -> dict:
    if isinstance(reminder_id, bool) or not isinstance(reminder_id, int) or reminder_id < 1:
        raise bad_request("a reminder id is a positive integer")
    r = db.reminders
    with hive.store.write() as conn:
        row = conn.execute(select(r).where(r.c.id == reminder_id)).first()
        if row is None or (agent is not None and row.agent != agent):
            raise not_found(f"no reminder #{reminder_id}")
        if row.status != "pending":
            raise conflict(f"reminder #{reminder_id} is no longer pending: it was {row.status}")
        conn.execute(update(r).where(r.c.id == reminder_id).values(status="cancelled", ended_at=time.time()))
        row = conn.execute(select(r).where(r.c.id == reminder_id)).first()
    _scheduler(hive).wake()
    hive.bus.publish("state", {"section": "reminders", "agent": row.agent, "id": reminder_id, "what": "cancelled"})
    return _dict(row)


def deliver_due(hive, now: float | None = None) -> int:
    """Deliver every pending reminder whose time has come; returns how many."""
    now = time.time() if now is None else now
    r = db.reminders
    with hive.store.read() as conn:
        due = conn.execute(select(r).where(r.c.status == "pending", r.c.due_at <= now)
                           .order_by(r.c.due_at, r.c.id).limit(500)).all()
    delivered = 0
    for row in due:
        message_id = hive.broker.event(row.agent, f"reminder #{row.id}: {row.body}", what="reminder",
                                       reminder_id=row.id, set_at=db.iso(row.created_at), due_at=db.iso(row.due_at))
        status = "delivered" if message_id is not None else "cancelled"  # the agent is gone
        with hive.store.write() as conn:
            conn.execute(update(r).where(r.c.id == row.id, r.c.status == "pending").values(
                status=status, ended_at=time.time(), message_id=message_id))
        delivered += message_id is not None
        hive.bus.publish("state", {"section": "reminders", "agent": row.agent, "id": row.id, "what": status})
    return delivered


def next_due(hive) -> float | None:
    r = db.reminders
    with hive.store.read() as conn:
        return conn.execute(select(func.min(r.c.due_at)).where(r.c.status == "pending")).scalar()


def _scheduler(hive) -> DueThread:
    """The thread that sleeps until the next reminder is due (setting or cancelling one wakes it)."""
    sched = hive.extensions.get("reminders")
    if sched is None:
        sched = hive.extensions["reminders"] = DueThread("reminders", lambda: deliver_due(hive),
                                                         lambda: next_due(hive), retry_seconds=10.0,
                                                         slack=0.005)
    return sched
