"""``GET /api/state``: every section of the main page, each loaded on its own.

A section that fails (a query error, a row that cannot be decoded) is reported in ``errors`` with its cause and
logged at warning level; the other sections still load.

The agent rows come from ``OverviewCache`` (see there: reading a hundred git repos per request is too slow).

"Stuck" (C0NTAINERS): messages have been waiting for the agent longer than a threshold and no turn has ended for
that long either. The threshold is ``STUCK_IDLE_SECONDS`` (10 minutes) while nothing is leased (the harness is not
picking messages up), and twice the agent's ``turnTimeoutSeconds`` (at least 10 minutes) while a message is leased
(a turn runs, but no turn may last longer than its timeout). An agent whose last ``FAILED_TURNS`` turns all failed
while messages wait for it is stuck at once, with the harness's last reason (``claude`` not logged in, say): its
turns end, so the clock above would never call it stuck. Agents that are stopped are never called stuck.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from .. import approvals, questions, spawn
from ..store import iso
from ..telemetry import MAX_FUTURE_SKEW_SECONDS

log = logging.getLogger(__name__)

STUCK_IDLE_SECONDS = 600
FAILED_TURNS = 3
NOT_RUNNING = frozenset({"stopped", "killed", "destroyed", "tombstone", "draft", "absent", "missing"})
INBOX_LIMIT = 50
# The page and /api/state stay small whatever the hive holds: a page of each list (with the counts of what is not
# shown), and each agent's text cut to a preview (the whole is one request away).
PAGE_SIZES = {"questions": 20, "approvals": 10, "inbox": INBOX_LIMIT}
TEXT_PREVIEW_CHARS = 4000


def _load(errors: list[dict], section: str, loader: Callable[[], Any], default: Any) -> Any:
    try:
        return loader()
    except Exception as e:
        message = getattr(e, "message", None) or str(e) or type(e).__name__
        log.warning("dashboard: section %s failed to load: %s: %s", section, type(e).__name__, message,
                    exc_info=not hasattr(e, "code"))
        errors.append({"section": section, "error": f"{type(e).__name__}: {message}"})
        return default


class OverviewCache:
    """The C0NTAINERS rows, reused between requests.

    ``spawn.agent_overview`` reads every agent's repos with git (several milliseconds an agent), too slow to run
    on every refresh of a hive of a hundred agents. The rows are recomputed at once when anything changed that
    they show (every deploy, life-cycle action and crash publishes on the bus's ``state`` channel; a config
    reload calls ``invalidate``), and in the background once they are older than ``FRESH_SECONDS`` (what changes
    without an event, e.g. a commit that makes an agent stale, shows within that time).
    """

    FRESH_SECONDS = 10.0

    def __init__(self, hive):
        self.hive = hive
        self._lock = threading.Lock()  # one computation at a time; the others wait for its result
        self._rows: list[dict] | None = None
        self._seq: int | None = None
        self._at = 0.0
        self._refreshing = False

    def _state_seq(self) -> int:
        recent = self.hive.bus.recent("state")
        return recent[-1]["seq"] if recent else 0

    def invalidate(self) -> None:
        self._seq = None

    def get(self) -> list[dict]:
        seq = self._state_seq()
        rows = self._rows
        if rows is not None and seq == self._seq:
            if time.monotonic() - self._at > self.FRESH_SECONDS and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="dashboard-overview", daemon=True).start()
            return [dict(r) for r in rows]
        with self._lock:
            if self._rows is not None and self._seq == self._state_seq():
                return [dict(r) for r in self._rows]
            return [dict(r) for r in self._compute()]

    def _refresh(self) -> None:
        try:
            with self._lock:
                self._compute()
        except Exception:
            log.warning("dashboard: refreshing the agent overview failed", exc_info=True)
        finally:
            self._refreshing = False

    def _compute(self) -> list[dict]:
        seq = self._state_seq()  # read first: an event during the computation makes the next get recompute
        rows = [dict(r) for r in spawn.agent_overview(self.hive)]
        self._rows, self._seq, self._at = rows, seq, time.monotonic()
        return rows


def overview_cache(hive) -> OverviewCache:
    cache = hive.extensions.get("dashboard_overview")
    if cache is None:
        cache = hive.extensions.setdefault("dashboard_overview", OverviewCache(hive))
    return cache


def agents(hive) -> list[dict]:
    return overview_cache(hive).get()


def activity(hive, names: list[str]) -> dict[str, dict]:
    """Per agent: waiting messages, the oldest one's age, the last turn and whether a stand-in model runs it."""
    now = time.time()
    out = {n: {"unread": 0, "leased": 0, "oldest_waiting": None, "last_turn": None, "standin": False,
               "failed_turns": 0, "last_error": None} for n in names}
    with hive.store.read() as conn:
        # Nothing here reads the backlog: the broker counts what is unacknowledged as it goes, the leased rows
        # have their own partial index (messages_leased), and the oldest waiting message is the first entry of
        # each agent's inbox index.
        unacked = hive.broker.unacked_counts()
        leased = dict(conn.exec_driver_sql(
            "SELECT recipient, count(*) FROM messages INDEXED BY messages_leased "
            "WHERE acked_at IS NULL AND lease_until > ? GROUP BY recipient", (now,)).all())
        for recipient, oldest in conn.exec_driver_sql(
                "SELECT j.value, (SELECT sent_at FROM messages WHERE recipient = j.value AND acked_at IS NULL "
                "ORDER BY id LIMIT 1) FROM json_each(?) AS j", (json.dumps(names),)):
            waiting = unacked.get(recipient, 0)
            held = leased.get(recipient, 0)
            out[recipient].update(unread=max(0, waiting - held), leased=held,
                                  oldest_waiting=oldest if waiting else None)
        # Index lookups per agent (stats_agent_key_ts), in one statement. A turn stamped in the future (stored
        # before telemetry.MAX_FUTURE_SKEW_SECONDS was enforced) does not count: it would hide "stuck" for ever.
        for agent, last_turn, standin in conn.exec_driver_sql(
                "SELECT j.value, "
                "(SELECT max(ts) FROM stats WHERE agent = j.value AND key = 'turn.duration_s' AND ts <= ?), "
                "(SELECT value FROM stats WHERE agent = j.value AND key = 'model.standin' "
                " ORDER BY ts DESC LIMIT 1) "
                "FROM json_each(?) AS j", (now + MAX_FUTURE_SKEW_SECONDS, json.dumps(names))):
            out[agent].update(last_turn=last_turn, standin=bool(standin))
        # of each agent's last FAILED_TURNS turns, newest first (turns_agent_started, read backwards): how many
        # failed, and why the newest failed (when they all failed, that is the reason it is stuck)
        for agent, failed, last_error in conn.exec_driver_sql(
                "SELECT j.value, (SELECT count(*) FROM (SELECT status FROM turns WHERE agent = j.value AND "
                "kind = 'turn' ORDER BY started_at DESC LIMIT ?) WHERE status != 'ok'), "
                "(SELECT error FROM turns WHERE agent = j.value AND kind = 'turn' ORDER BY started_at DESC LIMIT 1) "
                "FROM json_each(?) AS j", (FAILED_TURNS, json.dumps(names))):
            out[agent].update(failed_turns=failed, last_error=last_error)
    return out


def stuck(state: str | None, act: dict, turn_timeout: float, now: float) -> str | None:
    """Why the agent looks stuck, or None."""
    waiting = act["unread"] + act["leased"]
    if not waiting or act["oldest_waiting"] is None or (state or "") in NOT_RUNNING:
        return None
    if act["failed_turns"] >= FAILED_TURNS:
        return (f"its last {FAILED_TURNS} turns failed ({act['last_error'] or 'its log says why'}); "
                f"{waiting} message(s) waiting")
    threshold = max(STUCK_IDLE_SECONDS, 2 * turn_timeout) if act["leased"] else STUCK_IDLE_SECONDS
    waited = now - act["oldest_waiting"]
    since_turn = None if act["last_turn"] is None else now - act["last_turn"]
    if waited < threshold or (since_turn is not None and since_turn < threshold):
        return None
    turn = "no turn yet" if since_turn is None else f"last turn ended {_ago(since_turn)} ago"
    return f"{waiting} message(s) waiting for {_ago(waited)}; {turn}"


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def with_activity(hive, rows: list[dict]) -> None:
    now = time.time()
    act = activity(hive, [r["name"] for r in rows])
    configs = {**hive.agent_configs(), hive.config.manager: hive.config.manager_settings}
    for row in rows:
        a = act.get(row["name"])
        if a is None:
            continue
        config = configs.get(row["name"])
        reason = stuck(row.get("state"), a, config.turn_timeout_seconds if config else 1800, now)
        row.update(unread=a["unread"], leased=a["leased"], last_turn_at=iso(a["last_turn"]),
                   oldest_waiting_at=iso(a["oldest_waiting"]), stuck=reason is not None, stuck_reason=reason,
                   standin=a["standin"])


def attention(hive) -> dict:
    """What needs the operator, for the header of every page: questions and approvals waiting, unread messages to
    the operator, and the agents that are stuck or crashed. Each part that fails to load is named in ``errors``."""
    errors: list[dict] = []
    with hive.store.read() as conn:
        waiting = dict(conn.exec_driver_sql(
            "SELECT 'questions', count(*) FROM questions WHERE status = 'pending' UNION ALL "
            "SELECT 'approvals', count(*) FROM approvals WHERE status = 'pending' UNION ALL "
            "SELECT 'inbox', count(*) FROM messages WHERE recipient = 'operator' AND acked_at IS NULL").all())
    rows = _load(errors, "agents", lambda: agents(hive), [])
    if rows:
        _load(errors, "agents.activity", lambda: with_activity(hive, rows), None)
    stuck = [{"name": r["name"], "why": r.get("stuck_reason")} for r in rows if r.get("stuck")]
    crashed = [r["name"] for r in rows if r.get("state") == "crashed"]
    return {"questions": waiting.get("questions", 0), "approvals": waiting.get("approvals", 0),
            "inbox_unread": waiting.get("inbox", 0), "stuck": stuck, "crashed": crashed,
            "count": waiting.get("questions", 0) + waiting.get("approvals", 0), "errors": errors}


def preview(item: dict, field: str, limit: int = TEXT_PREVIEW_CHARS) -> dict:
    """Cut ``item[field]`` to ``limit`` characters; ``<field>_chars`` then holds the whole length."""
    text = item.get(field)
    if isinstance(text, str) and len(text) > limit:
        item[field] = text[:limit]
        item[f"{field}_chars"] = len(text)
    return item


def _count(hive, sql: str) -> tuple:
    with hive.store.read() as conn:
        return conn.exec_driver_sql(sql).one()


def page_offsets(args) -> dict[str, int]:
    """``questions_offset``, ``approvals_offset``, ``inbox_offset`` from a request's query (0 when absent or odd)."""
    out = {}
    for section in PAGE_SIZES:
        raw = args.get(f"{section}_offset", "")
        out[section] = min(int(raw), 10**9) if raw.isdigit() else 0
    return out


def _page(section: str, offset: int, total: int | None, shown: int) -> dict:
    size = PAGE_SIZES[section]
    total = shown + offset if total is None else total
    return {"offset": offset, "limit": size, "shown": shown, "total": total,
            "not_shown": max(0, total - shown), "next": offset + size if offset + shown < total else None,
            "prev": max(0, offset - size) if offset else None}


def _inbox_page(hive, offset: int) -> list[dict]:
    """The operator's messages, newest first from ``offset`` (the list is shown newest first)."""
    newest = hive.broker.operator_inbox(INBOX_LIMIT + offset)
    return newest[:len(newest) - offset] if offset else newest


def collect_state(hive, offsets: dict[str, int] | None = None) -> dict:
    errors: list[dict] = []
    offsets = {s: 0 for s in PAGE_SIZES} | (offsets or {})
    rows = _load(errors, "agents", lambda: agents(hive), [])
    if rows:
        _load(errors, "agents.activity", lambda: with_activity(hive, rows), None)
    if hive.extensions.get("backend_error"):  # no agent can run (the service and its sockets do)
        errors.append({"section": "backend", "error": hive.extensions["backend_error"]})
    for name, why in sorted((hive.extensions.get("seed_errors") or {}).items()):  # one agent's repos
        errors.append({"section": "seeding", "agent": name, "error": why})
    socket_errors = dict(getattr(hive, "socket_errors", None) or {})
    for name, why in sorted(socket_errors.items()):  # one agent's broken socket path costs only its socket
        errors.append({"section": "sockets", "agent": name, "error": why})
    for row in rows:
        if row.get("name") in socket_errors:
            row["socket_error"] = socket_errors[row["name"]]
    # each section loads its page and its count together: one that fails takes only itself down
    pending, (n_questions,) = _load(errors, "questions", lambda: (
        [preview(q, "question") for q in questions.list_questions(
            hive, "pending", PAGE_SIZES["questions"], offsets["questions"])],
        _count(hive, "SELECT count(*) FROM questions WHERE status = 'pending'")), ([], (0,)))
    inbox, (n_inbox, unread) = _load(errors, "inbox", lambda: (
        [preview(m, "body") for m in _inbox_page(hive, offsets["inbox"])],
        # two index-only counts (messages_operator, messages_inbox): no table row is read
        _count(hive, "SELECT (SELECT count(*) FROM messages WHERE recipient = 'operator'), "
                     "(SELECT count(*) FROM messages WHERE recipient = 'operator' AND acked_at IS NULL)")),
        ([], (0, 0)))
    queue, (n_approvals,) = _load(errors, "approvals", lambda: (
        approvals.list_approvals(hive, "pending", PAGE_SIZES["approvals"], offsets["approvals"]),
        _count(hive, "SELECT count(*) FROM approvals WHERE status = 'pending'")), ([], (0,)))
    total = {"questions": n_questions, "approvals": n_approvals, "inbox": n_inbox, "inbox_unread": unread}
    return {
        "agents": rows,
        "tombstones": _load(errors, "tombstones", lambda: spawn.list_tombstones(hive), []),
        "drafts": _load(errors, "drafts", lambda: spawn.list_drafts(hive), []),
        "questions": pending,
        "inbox": inbox,
        "approvals": queue,
        "errors": errors,
        "counts": total,
        "pages": {"questions": _page("questions", offsets["questions"], total.get("questions"), len(pending)),
                  "approvals": _page("approvals", offsets["approvals"], total.get("approvals"), len(queue)),
                  "inbox": _page("inbox", offsets["inbox"], total.get("inbox"), len(inbox))},
        "standin_model": bool(hive.extensions.get("standin_model")),
        "config_errors": list(getattr(hive, "config_errors", []) or []),
        "manager": hive.config.manager,
        "now": iso(time.time()),
    }
