"""Built-in: what the swarm costs and does — turns with tokens and cost, budgets, models, reminders, logs.

Ops for harnesses: ``turn_ready`` (may I start a turn, and with which model), ``turn_record`` (what a turn
cost). For every agent: ``remind``. For the manager: ``get_logs``. For the operator (host.sock): ``report``,
``turns``, ``model``, ``budget``, ``reminders``, ``cancel_reminder``, ``logs``. Their MCP tools (``remind``,
the manager's ``get_logs``) are in ``insight_tools``; the dashboard's routes in ``hyperhive.dashboard.insight``.
"""

from __future__ import annotations

from .. import insight, reminders
from .. import store as db
from ..broker import ROLES_AGENTS, ROLES_MANAGER, ROLES_OPERATOR, Op, arg, no_extra_args
from ..errors import HiveError, bad_request, forbidden, not_found
from ..hookspecs import hookimpl

MANAGER_AND_OPERATOR = frozenset({"manager", "operator"})


def turn_ready(hive, who, args):
    no_extra_args(args, ("wait_seconds",))
    wait = arg(args, "wait_seconds", (int, float), 0)
    if wait < 0:
        raise bad_request('"wait_seconds" must be 0 or more')
    wait = min(float(wait), float(hive.config.broker.recv_max_wait_seconds))
    state = insight.wait_for_budget(hive, who.name, wait, hive.stopped)
    tag, sha = insight.deployed_at(hive, who.name)
    out = {"ready": not state.over, "model": insight.model_for(hive, who.name)["model"],
           "deployed": {"tag": tag, "sha": sha}}
    if state.over:
        out["reason"] = state.reason
    return out


def turn_record(hive, who, args):
    no_extra_args(args, ("turn",))
    record = insight.check_record(arg(args, "turn", dict))
    return {"id": insight.record_turn(hive, who.name, record)}


def remind(hive, who, args):
    no_extra_args(args, ("body", "in_seconds", "at"))
    return reminders.add(hive, who.name, args.get("body"), args.get("in_seconds"), args.get("at"))


def _agent(hive, args, key: str) -> str:
    name = arg(args, key, str)
    if name not in insight.known_agents(hive):
        raise not_found(f'no agent "{name}"')
    return name


def _logs(hive, name: str, lines: int, cursor=None, search=None) -> dict:
    backend = hive.extensions.get("backend")
    if backend is None:
        raise HiveError("internal", "no deploy backend is running, so there are no agent logs to read")
    from ..backends import BuildError
    try:
        return {"agent": name, **backend.logs(name, lines, cursor, search)}
    except BuildError as e:
        raise HiveError("not_found", str(e)) from None


def get_logs(hive, who, args):
    no_extra_args(args, ("agent", "lines"))
    name = _agent(hive, args, "agent")
    if name == who.name:
        raise forbidden("get_logs reads the logs of the agents you manage, not your own")
    return _logs(hive, name, arg(args, "lines", int, 100))


def logs(hive, who, args):
    no_extra_args(args, ("name", "lines", "cursor", "search"))
    return _logs(hive, _agent(hive, args, "name"), arg(args, "lines", int, 200),
                 arg(args, "cursor", str, None, nullable=True), arg(args, "search", str, None, nullable=True))


def report(hive, who, args):
    no_extra_args(args, ("agent", "window"))
    return insight.report(hive, arg(args, "agent", str, None, nullable=True), arg(args, "window", str, "24h"))


def turns(hive, who, args):
    no_extra_args(args, ("agent", "limit"))
    agent = arg(args, "agent", str, None, nullable=True)
    if agent is not None:
        insight.check_agent(hive, agent, db.turns.c.agent)
    return {"turns": insight.list_turns(hive, agent, arg(args, "limit", int, 50))}


def model(hive, who, args):
    no_extra_args(args, ("name", "model", "reset"))
    name = _agent(hive, args, "name")
    reset = arg(args, "reset", bool, False)
    value = arg(args, "model", str, None, nullable=True)
    if reset and value is not None:
        raise bad_request('give "model" or "reset", not both')
    if not reset and value is None:
        return insight.model_for(hive, name)
    return insight.set_model(hive, name, None if reset else value)


def budget(hive, who, args):
    no_extra_args(args, ("agent", "usd", "tokens"))
    agent = arg(args, "agent", str, None, nullable=True)
    if agent is not None and agent not in insight.known_agents(hive):
        raise not_found(f'no agent "{agent}"')
    usd = arg(args, "usd", (int, float), None, nullable=True)
    tokens = arg(args, "tokens", int, None, nullable=True)
    if (usd is not None and usd < 0) or (tokens is not None and tokens < 0):
        raise bad_request("a limit is 0 or more")
    return insight.raise_limit(hive, agent, None if usd is None else float(usd), tokens)


def list_reminders(hive, who, args):
    no_extra_args(args, ("agent", "status"))
    status = arg(args, "status", str, "pending")
    if status not in ("pending", "delivered", "cancelled", "all"):
        raise bad_request('"status" must be pending, delivered, cancelled or all')
    agent = arg(args, "agent", str, None, nullable=True)
    if agent is not None:
        insight.check_agent(hive, agent, db.reminders.c.agent)
    return {"reminders": reminders.list_reminders(hive, agent, None if status == "all" else status)}


def cancel_reminder(hive, who, args):
    no_extra_args(args, ("id",))
    return reminders.cancel(hive, arg(args, "id", int))


@hookimpl
def broker_ops(hive):
    return {
        "turn_ready": Op(turn_ready, ROLES_AGENTS, "may a turn start now (budget), and with which model"),
        "turn_record": Op(turn_record, ROLES_AGENTS, "record what a turn cost (tokens, dollars, model)"),
        "remind": Op(remind, ROLES_AGENTS, "schedule an event to yourself: body, in_seconds or at"),
        "get_logs": Op(get_logs, ROLES_MANAGER, "the last lines of an agent's service log"),
        "logs": Op(logs, ROLES_OPERATOR, "an agent's service log: name, lines, cursor, search"),
        "report": Op(report, ROLES_OPERATOR, "cost, tokens and turns of an agent or the hive over a window"),
        "turns": Op(turns, ROLES_OPERATOR, "the latest turns with their tokens and cost"),
        "model": Op(model, ROLES_OPERATOR, "show or set an agent's model at run time (model, or reset)"),
        "budget": Op(budget, ROLES_OPERATOR, "set today's budget of an agent or the hive: usd, tokens"),
        "reminders": Op(list_reminders, ROLES_OPERATOR, "the reminders agents have set"),
        "cancel_reminder": Op(cancel_reminder, ROLES_OPERATOR, "cancel a pending reminder"),
    }


@hookimpl
def question_resolved(hive, question):
    insight.question_resolved(hive, question)


@hookimpl
def hive_started(hive):
    reminders._scheduler(hive).start()


@hookimpl
def hive_stopping(hive):
    sched = hive.extensions.get("reminders")
    if sched is not None:
        sched.stop()
    insight.budget_changed(hive)  # parked turn_ready calls return now


@hookimpl
def dashboard_blueprints(hive):
    from ..dashboard import insight as pages
    return [pages.bp]
