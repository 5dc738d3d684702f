"""What the swarm costs and does: one row per Claude Code session (turn or compaction), the stats built from them,
daily budgets, and the operator's run-time model choice.

A harness reports each session it ran with op ``turn_record`` (what the CLI's ``result`` event said: tokens, cost,
model usage, API time), and the service adds what the agent ran at that moment (its deployed tag and commit). The
same figures go to telemetry as ``turn.tokens.*`` and ``turn.cost_usd`` (``compaction.*`` for compactions).

Budgets are per UTC day. An agent may start a turn while the day's spending, plus what its last turn cost (the
estimate of the next one), stays within its own limit and the hive's; otherwise the harness does not start it —
its messages wait unread — and the operator is asked once a day whether to raise the limit. A running turn is
never cut: a budget is checked only before a turn starts (op ``turn_ready``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from . import registry, telemetry
from . import store as db
from .config import Budget
from .errors import HiveError, bad_request, not_found

log = logging.getLogger(__name__)

HIVE = "*"  # the budget_days key of the hive-wide budget
WINDOWS = {"24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
BUCKETS = {"24h": 3600.0, "7d": 86400.0, "30d": 86400.0}
KINDS = ("turn", "compaction")
STATUSES = ("ok", "failed", "timeout", "too_long")
WAKE_KINDS = ("message", "event", "reminder", "retry", "operator")
TOKEN_FIELDS = ("input", "output", "cache_read", "cache_write")
MAX_MODEL_CHARS = 200
MAX_ERROR_CHARS = 1000  # why a session failed, as its harness said (longer is cut, not refused)
MAX_FUTURE_SKEW_SECONDS = 300.0  # a harness clock ahead of the host's by more than this is refused


# --- recording ----------------------------------------------------------------------------------------------

def _number(record: dict, key: str, *, integer: bool = False, default: Any = 0) -> Any:
    value = record.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise bad_request(f'"{key}" must be a finite number of 0 or more')
    if integer:
        if value != int(value):
            raise bad_request(f'"{key}" must be a whole number')
        return int(value)
    return float(value)


def _choice(record: dict, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = record.get(key, default)
    if value is None:
        return None
    if value not in choices:
        raise bad_request(f'"{key}" must be one of {", ".join(choices)}, not {json.dumps(value)}')
    return value


def _short_str(record: dict, key: str, limit: int = MAX_MODEL_CHARS) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise bad_request(f'"{key}" must be a string of at most {limit} characters')
    return value


def _usd_of(usage: dict) -> float | None:
    """The ``costUSD`` of one model's usage (0 when absent), or None when it is not a number of 0 or more."""
    value = usage.get("costUSD", 0)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def check_record(record: Any) -> dict:
    """Validate what a harness reports of one session; a clear bad_request names what is wrong."""
    if not isinstance(record, dict):
        raise bad_request('"turn" must be an object')
    known = {"kind", "started_at", "ended_at", "status", "exit_status", "model", "wake", "tokens", "cost_usd",
             "num_turns", "duration_api_ms", "model_usage", "tools", "error"}
    extra = sorted(set(record) - known)
    if extra:
        raise bad_request(f"unknown turn field(s) {', '.join(extra)} (known: {', '.join(sorted(known))})")
    now = time.time()
    started = _number(record, "started_at", default=None)
    ended = _number(record, "ended_at", default=None)
    if started is None or ended is None:
        raise bad_request('"started_at" and "ended_at" (seconds since the epoch) are required')
    if ended < started:
        raise bad_request('"ended_at" is before "started_at"')
    if started < now - telemetry.MAX_AGE_SECONDS:
        raise bad_request(f'"started_at" lies more than {telemetry.MAX_AGE_SECONDS // 86400} days in the past')
    if ended > now + MAX_FUTURE_SKEW_SECONDS:
        raise bad_request(f'"ended_at" lies in the future (more than {MAX_FUTURE_SKEW_SECONDS:g}s ahead)')
    tokens = record.get("tokens") or {}
    if not isinstance(tokens, dict) or set(tokens) - set(TOKEN_FIELDS):
        raise bad_request(f'"tokens" must be an object of {", ".join(TOKEN_FIELDS)}')
    wake = record.get("wake") or {}
    if not isinstance(wake, dict) or set(wake) - {"kind", "from", "message_ids"}:
        raise bad_request('"wake" must be an object of kind, from, message_ids')
    ids = wake.get("message_ids") or []
    if not isinstance(ids, list) or len(ids) > 1000 or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise bad_request('"wake.message_ids" must be a list of message ids')
    tools = record.get("tools") or {}
    if not isinstance(tools, dict) or len(tools) > 500 or not all(
            isinstance(k, str) and len(k) <= 200 and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in tools.items()):
        raise bad_request('"tools" must be an object of tool name to call count')
    usage = record.get("model_usage") or {}
    if not isinstance(usage, dict) or len(json.dumps(usage)) > 20000:
        raise bad_request('"model_usage" must be an object (as the CLI reports it), at most 20,000 bytes')
    for model, u in usage.items():
        if not isinstance(u, dict) or _usd_of(u) is None:
            raise bad_request(f'"model_usage.{model[:100]}" must be an object whose "costUSD" (when given) is a '
                              "number of 0 or more")
    status = _choice(record, "status", STATUSES, None) or "ok"
    error = record.get("error")
    if error is not None and not isinstance(error, str):
        raise bad_request('"error" must be a string (why the session failed)')
    if error is not None and len(error) > MAX_ERROR_CHARS:  # kept, cut: a long reason must not lose the turn's cost
        error = error[:MAX_ERROR_CHARS - 1] + "…"
    if error is not None and status == "ok":
        raise bad_request('"error" says why a session failed: a session whose "status" is ok has none')
    exit_status = record.get("exit_status")
    if exit_status is not None and (isinstance(exit_status, bool) or not isinstance(exit_status, int)):
        raise bad_request('"exit_status" must be an integer')
    return {
        "kind": _choice(record, "kind", KINDS, "turn"),
        "started_at": started, "ended_at": ended,
        "status": status,
        "exit_status": exit_status,
        "model": _short_str(record, "model"),
        "wake_kind": _choice(wake, "kind", WAKE_KINDS, None),
        "wake_from": _short_str(wake, "from", 100),
        "message_ids": json.dumps(ids),
        **{f"tokens_{f}": _number(tokens, f, integer=True) for f in TOKEN_FIELDS},
        "cost_usd": _number(record, "cost_usd"),
        "num_turns": _number(record, "num_turns", integer=True, default=None),
        "duration_api_ms": _number(record, "duration_api_ms", default=None),
        "model_usage": json.dumps(usage) if usage else None,
        "tool_calls": sum(tools.values()),
        "tools": json.dumps(tools) if tools else None,
        "error": error,
    }


def deployed_at(hive, agent: str) -> tuple[str | None, str | None]:
    """The agent's deployed tag and commit now, as the agents table reads them (``spawn.deployed``)."""
    from . import spawn

    tag, sha, _stale = spawn.deployed(hive, agent)
    return tag, sha


def record_turn(hive, agent: str, record: dict) -> int:
    """Store one checked session of ``agent`` with its deployed tag, and its telemetry samples, in one
    transaction: whoever reads the turn reads its samples too."""
    tag, sha = deployed_at(hive, agent)
    prefix = "turn" if record["kind"] == "turn" else "compaction"
    samples = [{"key": f"{prefix}.tokens.{f}", "value": float(record[f"tokens_{f}"]), "ts": record["ended_at"]}
               for f in TOKEN_FIELDS]
    samples.append({"key": f"{prefix}.cost_usd", "value": record["cost_usd"], "ts": record["ended_at"]})
    with hive.store.write() as conn:
        turn_id = conn.execute(insert(db.turns).values(agent=agent, deployed_tag=tag, deployed_sha=sha,
                                                       **record)).inserted_primary_key[0]
        telemetry.record(hive, agent, samples, conn)
    hive.bus.publish("state", {"section": "costs", "agent": agent, "what": "turn"})
    budget_changed(hive)  # a parked turn_ready re-checks its budget (the hive's may be crossed now)
    return turn_id


# --- reading -------------------------------------------------------------------------------------------------

def _turn_dict(r) -> dict:
    return {"id": r.id, "agent": r.agent, "kind": r.kind, "started_at": db.iso(r.started_at),
            "ended_at": db.iso(r.ended_at), "duration_s": round(r.ended_at - r.started_at, 3), "status": r.status,
            "exit_status": r.exit_status, "model": r.model,
            "wake": {"kind": r.wake_kind, "from": r.wake_from, "message_ids": db.loads_json(r.message_ids, [])},
            "tokens": {f: getattr(r, f"tokens_{f}") for f in TOKEN_FIELDS}, "cost_usd": r.cost_usd,
            "num_turns": r.num_turns, "duration_api_ms": r.duration_api_ms,
            "model_usage": db.loads_json(r.model_usage, {}), "tool_calls": r.tool_calls,
            "tools": db.loads_json(r.tools, {}), "deployed_tag": r.deployed_tag, "deployed_sha": r.deployed_sha,
            "error": r.error}


def list_turns(hive, agent: str | None = None, limit: int = 50) -> list[dict]:
    t = db.turns
    q = select(t).order_by(t.c.id.desc()).limit(max(1, min(int(limit), 1000)))
    if agent:
        q = q.where(t.c.agent == agent)
    with hive.store.read() as conn:
        return [_turn_dict(r) for r in conn.execute(q).all()]


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def report(hive, agent: str | None = None, window: str = "24h", now: float | None = None) -> dict:
    """The stats view for one agent or the whole hive over ``window``: cost and tokens per bucket, turns,
    duration p50/p95, model mix, top tools, wake mix, result mix, and the deploys in the window."""
    if window not in WINDOWS:
        raise bad_request(f'"window" must be one of {", ".join(WINDOWS)}, not {json.dumps(window)}')
    if agent is not None:  # one that was an agent (destroyed, purged) keeps its history
        check_agent(hive, agent, db.turns.c.agent)
    now = time.time() if now is None else now
    since = now - WINDOWS[window]
    step = BUCKETS[window]
    t = db.turns
    q = select(t.c.kind, t.c.started_at, t.c.ended_at, t.c.status, t.c.model, t.c.wake_kind, t.c.tools,
               t.c.model_usage, t.c.cost_usd, *(t.c[f"tokens_{f}"] for f in TOKEN_FIELDS)).where(
        t.c.started_at >= since)
    if agent:
        q = q.where(t.c.agent == agent)
    with hive.store.read() as conn:
        rows = conn.execute(q.order_by(t.c.started_at)).all()
    first = math.floor(since / step) * step
    count = int(math.ceil((now - first) / step)) or 1
    buckets = [{"start": db.iso(first + i * step), "turns": 0, "cost_usd": 0.0,
                **{f"tokens_{f}": 0 for f in TOKEN_FIELDS}} for i in range(count)]
    totals = {"turns": 0, "compactions": 0, "cost_usd": 0.0, **{f"tokens_{f}": 0 for f in TOKEN_FIELDS}}
    durations: list[float] = []
    models: dict[str, dict] = {}
    tools: dict[str, int] = {}
    wakes: dict[str, int] = {}
    results: dict[str, int] = {}
    for r in rows:
        b = buckets[min(max(int((r.started_at - first) // step), 0), count - 1)]
        b["cost_usd"] += r.cost_usd
        totals["cost_usd"] += r.cost_usd
        for f in TOKEN_FIELDS:
            b[f"tokens_{f}"] += getattr(r, f"tokens_{f}")
            totals[f"tokens_{f}"] += getattr(r, f"tokens_{f}")
        usage = db.loads_json(r.model_usage, {})
        if isinstance(usage, dict) and usage:
            for model, u in usage.items():
                m = models.setdefault(str(model), {"turns": 0, "cost_usd": 0.0})
                m["turns"] += 1
                # (a row stored before its harness's figures were checked counts what is a number)
                m["cost_usd"] += (_usd_of(u) or 0.0) if isinstance(u, dict) else 0.0
        elif r.model:
            m = models.setdefault(r.model, {"turns": 0, "cost_usd": 0.0})
            m["turns"] += 1
            m["cost_usd"] += r.cost_usd
        if r.kind != "turn":
            totals["compactions"] += 1
            continue
        b["turns"] += 1
        totals["turns"] += 1
        durations.append(r.ended_at - r.started_at)
        for name, n in (db.loads_json(r.tools, {}) or {}).items():
            tools[name] = tools.get(name, 0) + int(n)
        wakes[r.wake_kind or "unknown"] = wakes.get(r.wake_kind or "unknown", 0) + 1
        results[r.status] = results.get(r.status, 0) + 1
    for b in buckets:
        b["cost_usd"] = round(b["cost_usd"], 6)
    totals["cost_usd"] = round(totals["cost_usd"], 6)
    return {
        "agent": agent, "window": window, "since": db.iso(since), "until": db.iso(now), "bucket_seconds": step,
        "totals": totals,
        "duration_s": {"p50": _percentile(durations, 0.5), "p95": _percentile(durations, 0.95)},
        "buckets": buckets,
        "models": dict(sorted(models.items(), key=lambda kv: -kv[1]["turns"])),
        "top_tools": [{"tool": k, "calls": v} for k, v in sorted(tools.items(), key=lambda kv: (-kv[1], kv[0]))][:10],
        "wakes": wakes, "results": results,
        "deploys": deploys(hive, agent, since, now),
    }


def deploys(hive, agent: str | None, since: float, until: float) -> list[dict]:
    a = db.approvals
    q = select(a.c.id, a.c.agent, a.c.tag, a.c.sha, a.c.resolved_at).where(
        a.c.status == "deployed", a.c.resolved_at >= since, a.c.resolved_at <= until)
    if agent:
        q = q.where(a.c.agent == agent)
    with hive.store.read() as conn:
        rows = conn.execute(q.order_by(a.c.resolved_at)).all()
    return [{"approval_id": r.id, "agent": r.agent, "tag": r.tag, "sha": r.sha, "at": db.iso(r.resolved_at)}
            for r in rows]


def _period(hive, agent: str, start: float, end: float) -> dict:
    t = db.turns
    with hive.store.read() as conn:
        rows = conn.execute(select(t.c.started_at, t.c.ended_at, t.c.status, t.c.cost_usd).where(
            t.c.agent == agent, t.c.kind == "turn", t.c.started_at >= start, t.c.started_at < end)).all()
    n = len(rows)
    return {"turns": n,
            "cost_per_turn_usd": round(sum(r.cost_usd for r in rows) / n, 6) if n else None,
            "duration_p50_s": _percentile([r.ended_at - r.started_at for r in rows], 0.5),
            "failure_rate": round(sum(r.status != "ok" for r in rows) / n, 4) if n else None}


def around_deploy(hive, agent: str, deployed: float, days: float = 3.0, now: float | None = None) -> dict:
    """The agent's cost per turn, turn duration and failure rate in the days before and after a deploy."""
    now = time.time() if now is None else now
    span = days * 86400.0
    return {"days": days, "before": _period(hive, agent, deployed - span, deployed),
            "after": _period(hive, agent, deployed, min(deployed + span, now + 1))}


def cost_today(hive, agent: str | None = None, now: float | None = None) -> dict:
    """Dollars and tokens spent since the start of the UTC day, by one agent or (None) the whole hive."""
    start = day_start(now)
    t = db.turns
    tokens = sum(t.c[f"tokens_{f}"] for f in TOKEN_FIELDS)
    q = select(func.coalesce(func.sum(t.c.cost_usd), 0.0), func.coalesce(func.sum(tokens), 0)).where(
        t.c.started_at >= start)
    if agent:
        q = q.where(t.c.agent == agent)
    with hive.store.read() as conn:
        usd, toks = conn.execute(q).one()
    return {"usd": round(float(usd), 6), "tokens": int(toks)}


def costs_today_by_agent(hive, now: float | None = None) -> dict[str, dict]:
    t = db.turns
    tokens = sum(t.c[f"tokens_{f}"] for f in TOKEN_FIELDS)
    with hive.store.read() as conn:
        rows = conn.execute(select(t.c.agent, func.sum(t.c.cost_usd), func.sum(tokens), func.count())
                            .where(t.c.started_at >= day_start(now)).group_by(t.c.agent)).all()
    return {r[0]: {"usd": round(float(r[1] or 0), 6), "tokens": int(r[2] or 0), "turns": int(r[3])} for r in rows}


def known_agents(hive) -> set[str]:
    return set(hive.agent_configs()) | {hive.config.manager}


def check_agent(hive, name: str, history=None) -> str:
    """``name``, unless it is not and never was an agent of the hive (not_found: a typo must not read as "nothing
    there"). One that was counts: a destroyed agent (its tombstone), or one ``history`` (a column such as
    ``turns.agent``) has rows of, as a purged agent's."""
    if name in known_agents(hive) or registry.agent_row(hive, name) is not None:
        return name
    if history is not None:
        with hive.store.read() as conn:
            if conn.execute(select(history).where(history == name).limit(1)).first() is not None:
                return name
    raise not_found(f'no agent "{name}"')


# --- budgets -------------------------------------------------------------------------------------------------

def day_start(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return float(int(now // 86400) * 86400)


def day_key(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() if now is None else now))


def _raised(hive, who: str, day: str) -> tuple[float | None, int | None] | None:
    b = db.budget_days
    with hive.store.read() as conn:
        row = conn.execute(select(b.c.usd, b.c.tokens, b.c.decided).where(b.c.agent == who, b.c.day == day)).first()
    if row is None or row.decided != "raised":
        return None
    return row.usd, row.tokens


def limits(hive, agent: str | None, now: float | None = None) -> Budget:
    """Today's limit of ``agent`` (None: the hive's): the configured one, or what the operator raised it to."""
    if agent is None:
        configured = hive.config.budget
    else:
        cfg = hive.agent_config(agent)
        configured = cfg.budget if cfg is not None else Budget()
    raised = _raised(hive, agent or HIVE, day_key(now))
    if raised is None:
        return configured
    usd, tokens = raised
    return Budget(daily_usd=usd if usd is not None else configured.daily_usd,
                  daily_tokens=tokens if tokens is not None else configured.daily_tokens)


def _last_turn_cost(hive, agent: str) -> tuple[float, int]:
    t = db.turns
    tokens = sum(t.c[f"tokens_{f}"] for f in TOKEN_FIELDS)
    with hive.store.read() as conn:
        row = conn.execute(select(t.c.cost_usd, tokens).where(t.c.agent == agent, t.c.kind == "turn")
                           .order_by(t.c.id.desc()).limit(1)).first()
    return (float(row[0]), int(row[1])) if row else (0.0, 0)


@dataclass
class BudgetState:
    over: bool
    scope: str | None = None  # the agent's name, or "hive"
    reason: str = ""
    spent: dict | None = None
    limit: Budget | None = None
    estimate: tuple[float, int] = (0.0, 0)  # what the next turn is expected to cost: dollars, tokens


def _check(scope: str, spent: dict, limit: Budget, estimate: tuple[float, int]) -> str | None:
    usd, tokens = estimate
    if limit.daily_usd is not None and spent["usd"] + usd > limit.daily_usd + 1e-12 \
            and (spent["usd"] >= limit.daily_usd or usd > 0):
        return (f"{scope} has spent ${spent['usd']:.4f} today; its next turn (about ${usd:.4f}, what the last one "
                f"cost) would cross its daily limit of ${limit.daily_usd:.4f}")
    if limit.daily_tokens is not None and spent["tokens"] + tokens > limit.daily_tokens \
            and (spent["tokens"] >= limit.daily_tokens or tokens > 0):
        return (f"{scope} has used {spent['tokens']:,} tokens today; its next turn (about {tokens:,}, what the "
                f"last one used) would cross its daily limit of {limit.daily_tokens:,}")
    return None


def budget_state(hive, agent: str, now: float | None = None) -> BudgetState:
    """Whether ``agent`` may start its next turn now, within its own budget and the hive's. Without a limit on
    either, nothing is spent reading turns (every page render asks this of every agent)."""
    own, hive_limit = limits(hive, agent, now), limits(hive, None, now)
    if not (own.limited or hive_limit.limited):
        return BudgetState(False)
    estimate = _last_turn_cost(hive, agent)
    if own.limited:
        spent = cost_today(hive, agent, now)
        reason = _check(agent, spent, own, estimate)
        if reason:
            return BudgetState(True, agent, reason, spent, own, estimate)
    if hive_limit.limited:
        spent = cost_today(hive, None, now)
        reason = _check("the hive", spent, hive_limit, estimate)
        if reason:
            return BudgetState(True, "hive", reason, spent, hive_limit, estimate)
    return BudgetState(False)


def over_budget_states(hive, now: float | None = None) -> dict[str, BudgetState]:
    """Every agent that may not start a turn now, with whose limit holds it back (its own, or the hive's)."""
    out = {}
    for name in sorted(known_agents(hive)):
        state = budget_state(hive, name, now)
        if state.over:
            out[name] = state
    return out


def over_budget(hive, now: float | None = None) -> dict[str, str]:
    """Every agent that may not start a turn now, with the reason (for the dashboard and ``list``)."""
    return {name: state.reason for name, state in over_budget_states(hive, now).items()}


def _cond(hive) -> threading.Condition:
    return hive.extensions.setdefault("insight_budget_cond", threading.Condition())


def budget_changed(hive) -> None:
    cond = _cond(hive)
    with cond:
        hive.extensions["insight_budget_gen"] = hive.extensions.get("insight_budget_gen", 0) + 1
        cond.notify_all()


RAISE_FACTOR = 2.0
RAISE_OPTION = "raise today's limit to "


def _raised_limit(state: BudgetState) -> Budget:
    limit, spent = state.limit or Budget(), state.spent or {"usd": 0.0, "tokens": 0}
    # at least twice what today will have cost once the next turn is done: a raise the operator accepts must let
    # that turn start (twice the limit alone did not when the last turn cost more than the limit)
    est_usd, est_tokens = state.estimate
    usd = None if limit.daily_usd is None else math.ceil(max(limit.daily_usd * RAISE_FACTOR,
                                                             (spent["usd"] + est_usd) * RAISE_FACTOR, 0.01) * 100) / 100
    tokens = None if limit.daily_tokens is None else int(max(limit.daily_tokens * RAISE_FACTOR,
                                                             (spent["tokens"] + est_tokens) * RAISE_FACTOR, 1000))
    return Budget(usd, tokens)


def _describe(b: Budget) -> str:
    parts = []
    if b.daily_usd is not None:
        parts.append(f"${b.daily_usd:.2f}")
    if b.daily_tokens is not None:
        parts.append(f"{b.daily_tokens:,} tokens")
    return " and ".join(parts) or "no limit"


def ask_operator(hive, state: BudgetState, now: float | None = None) -> int | None:
    """Ask the operator once per scope and day whether to raise the limit; the question's id, or None when one
    was asked already today."""
    from . import questions

    who = HIVE if state.scope == "hive" else state.scope
    day = day_key(now)
    b = db.budget_days
    with hive.store.read() as conn:
        row = conn.execute(select(b.c.question_id, b.c.decided).where(b.c.agent == who, b.c.day == day)).first()
    if row is not None and (row.question_id is not None or row.decided is not None):
        return None
    proposed = _raised_limit(state)
    raise_option = f"{RAISE_OPTION}{_describe(proposed)}"
    # it is about today's limit alone: at the end of the UTC day it expires (tomorrow's limit lets turns start)
    ends_in = max(day_start(now) + 86400 - (time.time() if now is None else now), 1.0)
    qid = questions.ask(hive, "system", f"Budget: {state.reason}. Its messages wait until the limit allows a "
                        "turn (tomorrow, or now if you raise it). Raise the limit for today? (Or answer with "
                        "the limit you want, such as $20 or 500000 tokens.)",
                        [raise_option, "keep the limit"], ttl_seconds=ends_in)
    with hive.store.write() as conn:
        if row is None:
            conn.execute(insert(b).values(agent=who, day=day, question_id=qid,
                                          usd=proposed.daily_usd, tokens=proposed.daily_tokens))
        else:
            conn.execute(update(b).where(b.c.agent == who, b.c.day == day).values(
                question_id=qid, usd=proposed.daily_usd, tokens=proposed.daily_tokens))
    log.warning("budget: %s; asked the operator (question #%d)", state.reason, qid)
    return qid


_USD_RE = re.compile(r"\$\s*(\d[\d,]*(?:\.\d+)?)|(\d[\d,]*(?:\.\d+)?)\s*(?:usd|dollars?)\b", re.I)
_TOKENS_RE = re.compile(r"(\d[\d,_]*)\s*(k|m)?\s*tokens?\b", re.I)
_NO = re.compile(r"^\s*(keep|no|nope|don'?t|do not|deny|denied)\b", re.I)
_YES = re.compile(r"^\s*(raise|yes|y|ok|okay|sure|go|go ahead|do it|approve|approved)\b", re.I)


def read_budget_answer(answer: str) -> tuple[bool, float | None, int | None]:
    """What an answer to a budget question decides: whether to raise, and to what when it names a limit ("$20",
    "20 usd", "500,000 tokens", "2M tokens"). The raise option, or a plain yes, raises to the proposed limit;
    anything else keeps the limit."""
    usd = tokens = None
    m = _USD_RE.search(answer)
    if m:
        usd = float((m.group(1) or m.group(2)).replace(",", ""))
    m = _TOKENS_RE.search(answer)
    if m:
        tokens = int(m.group(1).replace(",", "").replace("_", "")) * {"k": 1000, "m": 1000000}.get(
            (m.group(2) or "").lower(), 1)
    if _NO.match(answer):
        return False, None, None
    return bool(_YES.match(answer) or usd is not None or tokens is not None), usd, tokens


def question_resolved(hive, question: dict) -> None:
    """An answer to a budget question raises today's limit or keeps it."""
    b = db.budget_days
    with hive.store.read() as conn:
        row = conn.execute(select(b.c.agent, b.c.day, b.c.decided).where(b.c.question_id == question["id"])).first()
    if row is None or row.decided is not None:
        return  # the operator set the day's limit directly (raise_limit), which answered the question: that stands
    answer = str(question.get("answer") or "") if question["status"] == "answered" else ""
    raised, usd, tokens = read_budget_answer(answer)
    values = {"decided": "raised" if raised else "kept"}
    if raised and answer not in (question.get("options") or []):  # a limit written replaces the proposed one
        values.update({k: v for k, v in (("usd", usd), ("tokens", tokens)) if v is not None})
    with hive.store.write() as conn:
        conn.execute(update(b).where(and_(b.c.agent == row.agent, b.c.day == row.day, b.c.decided.is_(None)))
                     .values(**values))
    log.info("budget of %s for %s: %s by the operator", row.agent, row.day, "raised" if raised else "kept")
    budget_changed(hive)
    hive.bus.publish("state", {"section": "costs", "agent": row.agent, "what": "budget"})


def check_limit(usd: Any, tokens: Any) -> tuple[float | None, int | None]:
    """A limit the operator gives: dollars (a finite number) and tokens (a whole number), each 0 or more."""
    if usd is not None and (isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd)
                            or usd < 0):
        raise bad_request(f'"usd" must be a finite number of dollars, 0 or more, not {json.dumps(usd)[:40]}')
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0):
        raise bad_request(f'"tokens" must be a whole number of tokens, 0 or more, not {json.dumps(tokens)[:40]}')
    if usd is None and tokens is None:
        raise bad_request('give "usd" or "tokens"')
    return (None if usd is None else float(usd)), tokens


def raise_limit(hive, agent: str | None, usd: float | None, tokens: int | None, now: float | None = None) -> dict:
    """The operator sets today's limit of ``agent`` (None: the hive) directly: in dollars, in tokens, or both (one
    given leaves the other as it is today). It answers the day's budget question if one is still pending, so a
    later answer to that question cannot undo it. Returns the limit in force now."""
    usd, tokens = check_limit(usd, tokens)
    who, day = agent or HIVE, day_key(now)
    b = db.budget_days
    with hive.store.write() as conn:
        row = conn.execute(select(b.c.usd, b.c.tokens, b.c.decided, b.c.question_id)
                           .where(b.c.agent == who, b.c.day == day)).first()
        if row is not None and row.decided == "raised":  # what was set earlier today stays where not given now
            usd = row.usd if usd is None else usd
            tokens = row.tokens if tokens is None else tokens
        values = {"usd": usd, "tokens": tokens, "decided": "raised"}
        if row is not None:
            conn.execute(update(b).where(b.c.agent == who, b.c.day == day).values(**values))
        else:
            conn.execute(insert(b).values(agent=who, day=day, **values))
    limit = limits(hive, agent, now)
    if row is not None and row.question_id is not None and row.decided is None:
        from . import questions
        try:
            questions.answer(hive, row.question_id, f"the operator set today's limit to {_describe(limit)}")
        except HiveError as e:  # answered or cancelled meanwhile: nothing is left to answer
            log.info("budget question #%s: %s", row.question_id, e.message)
    budget_changed(hive)
    hive.bus.publish("state", {"section": "costs", "agent": agent, "what": "budget"})
    return {"agent": agent, "day": day, "limit": limit.to_json()}


def wait_for_budget(hive, agent: str, wait_seconds: float, stopping: threading.Event | None = None) -> BudgetState:
    """Park until ``agent`` may start a turn or the wait ends; asks the operator the first time it is over."""
    deadline = time.monotonic() + wait_seconds
    cond = _cond(hive)
    while True:
        with cond:
            generation = hive.extensions.get("insight_budget_gen", 0)
        state = budget_state(hive, agent)
        if not state.over:
            return state
        ask_operator(hive, state)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (stopping is not None and stopping.is_set()):
            return state
        # the day rolls over at UTC midnight: wake then at the latest
        remaining = min(remaining, day_start() + 86400 - time.time() + 0.5, 60.0)
        with cond:
            if hive.extensions.get("insight_budget_gen", 0) == generation:
                cond.wait(max(remaining, 0.01))


# --- models --------------------------------------------------------------------------------------------------

def model_for(hive, agent: str) -> dict:
    """The model the agent's next turn uses: the operator's choice, else its configured one (None: the CLI's)."""
    cfg = hive.agent_config(agent)
    configured = cfg.model if cfg is not None else None
    o = db.agent_overrides
    with hive.store.read() as conn:
        row = conn.execute(select(o.c.model).where(o.c.agent == agent)).first()
    override = row.model if row is not None else None
    return {"agent": agent, "model": override or configured, "configured": configured, "override": override}


def set_model(hive, agent: str, model: str | None) -> dict:
    if agent not in known_agents(hive):
        raise not_found(f'no agent "{agent}"')
    o = db.agent_overrides
    if model is not None:
        if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS \
                or any(c.isspace() or ord(c) < 32 for c in model):
            raise bad_request(f"a model is a name such as claude-sonnet-4-5: no spaces, at most {MAX_MODEL_CHARS} "
                              "characters")
    with hive.store.write() as conn:
        conn.execute(o.delete().where(o.c.agent == agent))
        if model is not None:
            conn.execute(insert(o).values(agent=agent, model=model, updated_at=time.time()))
    log.info("model of %s: %s", agent, model or "reset to the configured one")
    hive.bus.publish("state", {"section": "agents", "agent": agent, "what": "model"})
    return model_for(hive, agent)
