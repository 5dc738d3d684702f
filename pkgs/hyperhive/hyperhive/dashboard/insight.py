"""The dashboard's view of what the swarm costs and does: ``/stats``, the JSON behind it, an agent's turns, model,
reminders and logs, and the figures around a deploy. Registered by the ``insight`` default plugin through the
``dashboard_blueprints`` hook, behind the same token, CSRF and header rules as every other route.

Charts are drawn here as SVG (no script needed to read them): one per series, a bar per bucket, and a dashed
line where a deploy of the agent (or of any agent, on the hive's view) happened.
"""

from __future__ import annotations

import calendar
import math
import time

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from markupsafe import Markup, escape

from .. import insight, reminders
from .. import store as db
from ..errors import HiveError, bad_request, not_found
from ..times import when
from .api import _sse, agent_name, body, done, int_query

bp = Blueprint("insight", __name__)

LOG_POLL_SECONDS = 1.0
SERIES = (
    ("cost_usd", "cost (USD)", lambda b: b["cost_usd"], lambda v: f"${v:,.4f}"),
    ("tokens", "tokens", lambda b: sum(b[f"tokens_{f}"] for f in insight.TOKEN_FIELDS), lambda v: f"{v:,.0f}"),
    ("turns", "turns", lambda b: b["turns"], lambda v: f"{v:,.0f}"),
)


def hive():
    return current_app.extensions["hive"]


def _window() -> str:
    window = request.args.get("window", "24h")
    if window not in insight.WINDOWS:
        raise bad_request(f'window must be one of {", ".join(insight.WINDOWS)}, not "{window[:20]}"')
    return window


def _agent_arg(history=None) -> str | None:
    """The ``agent`` query argument: None for the whole hive, else a name that is or was an agent (not_found
    otherwise: a typo must not read as "nothing there"); ``history`` is the column whose rows make one known."""
    agent = request.args.get("agent") or None
    return insight.check_agent(hive(), agent_name(agent), history) if agent else None


def _iso_ts(value) -> float:
    """Seconds since the epoch of an ISO time as the store writes it (UTC), or a number as it is."""
    if isinstance(value, (int, float)):
        return float(value)
    return float(calendar.timegm(time.strptime(str(value)[:19], "%Y-%m-%dT%H:%M:%S")))


def chart_svg(report: dict, key: str, label: str, value, fmt) -> Markup:
    """One series of ``report`` as an SVG bar chart, deploys marked; every bar has a title with its figure. The
    chart stretches to the page's width, so its time axis is HTML below it (text inside would stretch too)."""
    buckets = report["buckets"]
    width, height = 600, 120
    n = max(len(buckets), 1)
    values = [value(b) for b in buckets]
    top = max(values) if values and max(values) > 0 else 1
    bar = (width - 2) / n
    parts = [f'<svg class="cost-chart" role="img" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
             f'data-series="{escape(key)}" aria-label="{escape(label)} per bucket, total '
             f'{escape(fmt(sum(values)))}">',
             f'<title>{escape(label)}: total {escape(fmt(sum(values)))} in the last {escape(report["window"])}</title>']
    for i, (b, v) in enumerate(zip(buckets, values)):
        h = 0 if v <= 0 else max(1.5, (v / top) * (height - 4))
        parts.append(f'<rect class="bar" x="{1 + i * bar:.2f}" y="{height - h:.2f}" width="{max(bar - 1, 0.5):.2f}" '
                     f'height="{h:.2f}"><title>{escape(when(b["start"]))}: {escape(fmt(v))}</title></rect>')
    start = _iso_ts(report["since"])
    span = max(_iso_ts(report["until"]) - start, 1)
    for d in report["deploys"]:
        x = 1 + (width - 2) * min(max((_iso_ts(d["at"]) - start) / span, 0), 1)
        parts.append(f'<line class="deploy" x1="{x:.2f}" x2="{x:.2f}" y1="0" y2="{height}" data-tag="{escape(d["tag"])}">'
                     f'<title>{escape(d["agent"])} {escape(d["tag"])} deployed at {escape(when(d["at"]))}</title></line>')
    parts.append("</svg>")
    parts.append(f'<div class="chart-foot"><span>{escape(when(report["since"]))}</span><span>now</span></div>')
    return Markup("".join(parts))


@bp.app_context_processor
def insight_helpers():
    def costs_today():
        try:
            states = insight.over_budget_states(hive())
            return {"hive": insight.cost_today(hive()), "agents": insight.costs_today_by_agent(hive()),
                    "over": {n: s.reason for n, s in states.items()}, "over_states": states}
        except Exception as e:  # never take a page down for a figure
            return {"hive": None, "agents": {}, "over": {}, "over_states": {}, "error": str(e)}
    def agent_insight(name: str, log_search: str | None = None) -> dict:
        """What the agent page shows of one agent: model, reminders, recent sessions, the log's last lines."""
        out = {"model": insight.model_for(hive(), name),
               "reminders": reminders.list_reminders(hive(), name, "pending"),
               "turns": insight.list_turns(hive(), name, 20), "log": None, "log_error": None,
               "log_search": log_search}
        try:
            out["log"] = _logs(name, 200, None, (log_search or "")[:200] or None)
        except HiveError as e:
            out["log_error"] = e.message
        return out

    def approval_impact(aid: int) -> dict | None:
        try:
            return impact(aid)
        except HiveError:
            return None

    return {"costs_today": costs_today, "agent_insight": agent_insight, "approval_impact": approval_impact}


# --- pages ---------------------------------------------------------------------------------------------------

@bp.get("/stats")
def stats_page():
    agent, window = _agent_arg(db.turns.c.agent), _window()
    report = insight.report(hive(), agent, window)
    charts = [(label, chart_svg(report, key, label, value, fmt)) for key, label, value, fmt in SERIES]
    names = sorted(insight.known_agents(hive()) | ({agent} if agent else set()))  # (one that was, too)
    return render_template("stats.html", r=report, agent=agent, window=window, windows=list(insight.WINDOWS),
                           charts=charts, names=names, over=insight.over_budget(hive()),
                           today=insight.cost_today(hive(), agent))


# --- JSON ----------------------------------------------------------------------------------------------------

@bp.get("/api/insight")
def api_report():
    return jsonify(insight.report(hive(), _agent_arg(db.turns.c.agent), _window()))


@bp.get("/api/costs/today")
def api_costs_today():
    return jsonify({"hive": insight.cost_today(hive()), "agents": insight.costs_today_by_agent(hive()),
                    "over_budget": insight.over_budget(hive())})


@bp.get("/api/agents/<name>/turn-records")
def api_turns(name):
    name = insight.check_agent(hive(), agent_name(name), db.turns.c.agent)  # a typo is not "no turns yet"
    return jsonify({"turns": insight.list_turns(hive(), name, int_query("limit", 50, 1, 1000))})


@bp.route("/api/agents/<name>/model", methods=["GET", "POST"])
def api_model(name):
    name = agent_name(name)
    if request.method == "GET":
        return jsonify(insight.model_for(hive(), name))
    args = body()
    reset = args.get("reset") in (True, "1", "true", "on")
    model = args.get("model")
    if not request.is_json and isinstance(model, str) and not model.strip():
        model = None  # a form's empty field is no model given
    if reset and model is not None:  # as the host socket's op: which one was meant is not for us to guess
        raise bad_request('give "model" or "reset", not both')
    if not reset and (not isinstance(model, str) or not model.strip()):
        raise bad_request('give "model" (a model name) or "reset"')
    return done(insight.set_model(hive(), name, None if reset else model.strip()))


@bp.post("/api/budget")
def api_budget():
    """Today's limit of ``agent`` (absent or empty: the whole hive): ``usd`` and/or ``tokens``, as JSON numbers or
    a form's text ("$5", "1,000,000")."""
    args = body()
    agent = args.get("agent") or None
    if agent is not None:
        if not isinstance(agent, str):
            raise bad_request('"agent" must be an agent\'s name (or absent for the whole hive)')
        if agent_name(agent) not in insight.known_agents(hive()):
            raise not_found(f'no agent "{agent}"')

    def number(key):
        raw = args.get(key)
        if raw is None or raw == "":
            return None
        if isinstance(raw, str):
            text = raw.strip().replace(",", "").replace("_", "")
            text = text[1:] if key == "usd" and text.startswith("$") else text
            try:
                value = float(text)
            except ValueError:
                raise bad_request(f'"{key}" must be a number, not "{raw[:40]}"') from None
            return int(value) if key == "tokens" and math.isfinite(value) and value == int(value) else value
        return raw  # a JSON value: insight.check_limit names what is wrong with it

    return done(insight.raise_limit(hive(), agent, number("usd"), number("tokens")))


@bp.get("/api/reminders")
def api_reminders():
    status = request.args.get("status", "pending")
    if status not in ("pending", "delivered", "cancelled", "all"):
        raise bad_request("status must be pending, delivered, cancelled or all")
    agent = _agent_arg(db.reminders.c.agent)
    return jsonify({"reminders": reminders.list_reminders(hive(), agent, None if status == "all" else status)})


@bp.post("/api/reminders/<int:rid>/cancel")
def api_cancel_reminder(rid):
    return done(reminders.cancel(hive(), rid))


def _backend():
    backend = hive().extensions.get("backend")
    if backend is None:
        raise HiveError("internal", "no deploy backend is running")
    return backend


def _logs(name, lines, cursor=None, search=None, backend=None) -> dict:
    from ..backends import BuildError
    try:
        return (backend or _backend()).logs(name, lines, cursor, search)
    except BuildError as e:
        raise not_found(str(e)) from None


@bp.get("/api/agents/<name>/logs")
def api_logs(name):
    name = insight.check_agent(hive(), agent_name(name))
    search = request.args.get("search") or None
    return jsonify({"agent": name, **_logs(name, int_query("lines", 200, 1, 5000), request.args.get("cursor"),
                                            search)})


@bp.get("/api/agents/<name>/logs/stream")
def api_logs_stream(name):
    """Live tail: the last lines, then every new line as the agent writes it (polled once a second)."""
    name = insight.check_agent(hive(), agent_name(name))
    search = request.args.get("search") or None
    backend = _backend()  # the generator runs after the request's context is gone: take what it needs now
    first = _logs(name, int_query("lines", 100, 1, 5000), None, search, backend)
    stop = current_app.extensions["stopping"]

    def generate():
        cursor = first.get("cursor")
        yield _sse("lines", {"lines": first["lines"]})
        idle = 0.0
        while not stop.is_set():
            stop.wait(LOG_POLL_SECONDS)
            try:
                got = _logs(name, 5000, cursor, search, backend)
            except HiveError as e:
                yield _sse("error", {"message": e.message})
                return
            cursor = got.get("cursor") or cursor
            if got["lines"]:
                idle = 0.0
                yield _sse("lines", {"lines": got["lines"]})
            else:
                idle += LOG_POLL_SECONDS
                if idle >= 15:
                    idle = 0.0
                    yield ": keep-alive\n\n"

    return Response(generate(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@bp.get("/api/approvals/<int:aid>/impact")
def api_impact(aid):
    return jsonify(impact(aid))


def impact(aid: int) -> dict | None:
    """For a deployed approval: the agent's cost per turn, duration and failure rate before and after it."""
    from .. import approvals
    a = approvals.get_approval(hive(), aid)
    if a.get("status") != "deployed" or not a.get("resolved_at"):
        return None
    return {"approval_id": aid, "agent": a["agent"],
            **insight.around_deploy(hive(), a["agent"], _iso_ts(a["resolved_at"]))}

