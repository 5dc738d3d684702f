"""Telemetry: samples ``(agent, ts, key, value)`` sent by harnesses and recorded by the service."""

from __future__ import annotations

import math
import re
import time

from sqlalchemy import insert, select

from . import store as db
from .errors import bad_request

KEY_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,100}$")
MAX_SAMPLES = 1000
HIVE_AGENT = "hive"  # the agent of host-wide telemetry (config.RESERVED_NAMES keeps it from naming an agent)
# A sample may be stamped at most this far ahead of the service's clock (the containers share the host's clock;
# this allows for rounding and a slow request). A turn stamped in the future would make "last turn" look recent
# for ever and hide a stuck agent.
MAX_FUTURE_SKEW_SECONDS = 60
# ... and at most this far behind it: a harness reports what just happened, and a time such as -1e308 only breaks
# every chart and time the console shows.
MAX_AGE_SECONDS = 30 * 86400


def validate_samples(samples) -> list[dict]:
    if not isinstance(samples, list):
        raise bad_request('"samples" must be a list of {key, value, ts?}')
    if len(samples) > MAX_SAMPLES:
        raise bad_request(f'"samples" holds {len(samples)} entries; at most {MAX_SAMPLES} per request')
    now = time.time()
    rows = []
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise bad_request(f"samples[{i}] must be an object")
        key, value, ts = s.get("key"), s.get("value"), s.get("ts", now)
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise bad_request(f"samples[{i}].key must be 1-100 characters of letters, digits and _.:/-")
        for field, v in (("value", value), ("ts", ts)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad_request(f"samples[{i}].{field} must be a finite number")
        if ts > now + MAX_FUTURE_SKEW_SECONDS:
            raise bad_request(f"samples[{i}].ts is {ts - now:.0f} s in the future; a sample may be at most "
                              f"{MAX_FUTURE_SKEW_SECONDS} s ahead of the service's clock (leave ts out for now)")
        if ts < now - MAX_AGE_SECONDS:
            raise bad_request(f"samples[{i}].ts lies more than {MAX_AGE_SECONDS // 86400} days in the past; a "
                              "sample tells what just happened (leave ts out for now)")
        rows.append({"key": key, "value": float(value), "ts": float(ts)})
    return rows


def record(hive, agent: str, samples: list[dict], conn=None) -> int:
    """Store checked ``samples`` of ``agent``: in a transaction of their own, or in the caller's ``conn``."""
    if not samples:
        return 0
    if conn is None:
        with hive.store.write() as conn:
            return record(hive, agent, samples, conn)
    conn.execute(insert(db.stats), [{"agent": agent, **s} for s in samples])
    return len(samples)


def query(hive, agent: str | None = None, key: str | None = None, since: float | None = None,
          limit: int = 5000) -> list[dict]:
    s = db.stats
    q = select(s.c.agent, s.c.ts, s.c.key, s.c.value)
    if agent:
        q = q.where(s.c.agent == agent)
    if key:
        q = q.where(s.c.key == key)
    if since is not None:
        q = q.where(s.c.ts >= since)
    q = q.order_by(s.c.ts.desc()).limit(limit)
    with hive.store.read() as conn:
        rows = conn.execute(q).all()
    return [{"agent": r.agent, "ts": r.ts, "key": r.key, "value": r.value} for r in reversed(rows)]
