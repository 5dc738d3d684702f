"""Ops for approvals, spawning and the agents' life cycle.

The manager proposes (``request_*``) and may start, kill, restart and update other agents; only the operator
(host.sock) approves, denies, spawns directly, destroys, revives, and runs retention."""

from __future__ import annotations

import base64

from .. import approvals, insight, repos, retention, spawn
from ..broker import ROLES_MANAGER, ROLES_OPERATOR, Op, arg, no_extra_args
from ..errors import bad_request
from ..hookspecs import hookimpl

MANAGER_AND_OPERATOR = frozenset({"manager", "operator"})


def request_spawn(hive, who, args):
    no_extra_args(args, ("name",))
    return {"approval_id": approvals.request_spawn(hive, arg(args, "name", str), who.name)}


def request_spawn_draft(hive, who, args):
    no_extra_args(args, ("name",))
    return spawn.create_draft(hive, arg(args, "name", str))


def request_spawn_commit(hive, who, args):
    no_extra_args(args, ("name", "commit", "reason"))
    return {"approval_id": approvals.request_spawn_commit(hive, arg(args, "name", str), arg(args, "commit", str),
                                                          who.name, arg(args, "reason", str, None))}


def request_apply_commit(hive, who, args):
    no_extra_args(args, ("agent", "commit", "reason"))
    return {"approval_id": approvals.request_apply(hive, arg(args, "agent", str), arg(args, "commit", str),
                                                   who.name, arg(args, "reason", str, None))}


def _action(action):
    def handler(hive, who, args):
        no_extra_args(args, ("name",))
        return spawn.agent_action(hive, arg(args, "name", str), action, by=who.name)
    return handler


def pending(hive, who, args):
    no_extra_args(args, ("status",))
    status = arg(args, "status", str, "pending")
    return {"approvals": approvals.list_approvals(hive, status)}


def approval(hive, who, args):
    no_extra_args(args, ("id",))
    return approvals.get_approval(hive, arg(args, "id", int))


def approve(hive, who, args):
    no_extra_args(args, ("id", "base"))
    return approvals.approve(hive, arg(args, "id", int), arg(args, "base", str, None, nullable=True))


def deny(hive, who, args):
    no_extra_args(args, ("id", "note"))
    return approvals.deny(hive, arg(args, "id", int), arg(args, "note", str, ""))


def spawn_now(hive, who, args):
    """The operator spawns directly: the request is recorded and approved at once."""
    no_extra_args(args, ("name",))
    approval_id = approvals.request_spawn(hive, arg(args, "name", str), who.name)
    return approvals.approve(hive, approval_id)


def destroy(hive, who, args):
    no_extra_args(args, ("name", "purge"))
    purge = arg(args, "purge", bool, False)
    return spawn.agent_action(hive, arg(args, "name", str), "purge" if purge else "destroy", by=who.name)


def run_retention(hive, who, args):
    no_extra_args(args, ("dry_run", "now"))
    now = arg(args, "now", (int, float), None, nullable=True)
    if now is not None and now <= 0:
        raise bad_request('"now" must be a positive Unix time')
    return retention.run_retention(hive, now=now, dry_run=arg(args, "dry_run", bool, False))


def agents_overview(hive, who, args):
    """What the dashboard's agent table shows: state, deployed tag, stale, and the inbox (unread, leased), the last
    turn and whether the agent looks stuck."""
    from ..dashboard.state import with_activity

    no_extra_args(args, ())
    rows = spawn.agent_overview(hive)
    with_activity(hive, rows)
    costs, over = insight.costs_today_by_agent(hive), insight.over_budget(hive)
    for row in rows:
        row["cost_today_usd"] = costs.get(row["name"], {}).get("usd", 0.0)
        row["over_budget"] = over.get(row["name"])
    return {"agents": rows, "drafts": spawn.list_drafts(hive), "tombstones": spawn.list_tombstones(hive)}


def repo_tags(hive, who, args):
    no_extra_args(args, ("agent",))
    return {"tags": repos.repo_tags(hive, arg(args, "agent", str))}


def repo_log(hive, who, args):
    no_extra_args(args, ("agent", "rev", "limit"))
    return {"commits": repos.repo_log(hive, arg(args, "agent", str), arg(args, "rev", str, "main"),
                                      arg(args, "limit", int, 50))}


def repo_diff(hive, who, args):
    no_extra_args(args, ("agent", "rev"))
    return {"diff": repos.repo_diff(hive, arg(args, "agent", str), arg(args, "rev", str))}


def repo_file(hive, who, args):
    no_extra_args(args, ("agent", "rev", "path"))
    data = repos.repo_file(hive, arg(args, "agent", str), arg(args, "rev", str), arg(args, "path", str))
    try:
        return {"text": data.decode("utf-8"), "size": len(data)}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii"), "size": len(data)}


def meta_log(hive, who, args):
    no_extra_args(args, ("limit",))
    return {"commits": repos.meta_log(hive, arg(args, "limit", int, 100))}


@hookimpl
def broker_ops(hive):
    return {
        "request_spawn": Op(request_spawn, ROLES_MANAGER, "ask the operator to spawn a new agent"),
        "request_spawn_draft": Op(request_spawn_draft, ROLES_MANAGER, "create a draft agent's config repo"),
        "request_spawn_commit": Op(request_spawn_commit, ROLES_MANAGER, "ask to spawn a draft at a commit"),
        "request_apply_commit": Op(request_apply_commit, ROLES_MANAGER, "ask to deploy a commit of an agent's config"),
        "start": Op(_action("start"), MANAGER_AND_OPERATOR, "start an agent"),
        "kill": Op(_action("kill"), MANAGER_AND_OPERATOR, "stop an agent"),
        "restart": Op(_action("restart"), MANAGER_AND_OPERATOR, "restart an agent"),
        "update": Op(_action("rebuild"), MANAGER_AND_OPERATOR, "rebuild and restart an agent on its deployed config"),
        "rebuild": Op(_action("rebuild"), ROLES_OPERATOR, "rebuild and restart an agent on its deployed config"),
        "revive": Op(_action("revive"), ROLES_OPERATOR, "queue the spawn of a destroyed agent"),
        "destroy": Op(destroy, ROLES_OPERATOR, "destroy an agent (purge: its config and state too)"),
        "pending": Op(pending, ROLES_OPERATOR, "list approvals (pending unless status is given)"),
        "approval": Op(approval, ROLES_OPERATOR, "one approval with its diff"),
        "approve": Op(approve, ROLES_OPERATOR, "approve: build and deploy"),
        "deny": Op(deny, ROLES_OPERATOR, "deny with a note"),
        "spawn": Op(spawn_now, ROLES_OPERATOR, "spawn a new agent from the template"),
        "retention": Op(run_retention, ROLES_OPERATOR, "drop old tags (dry_run to only list them)"),
        "agents_overview": Op(agents_overview, ROLES_OPERATOR, "agents, drafts and tombstones"),
        "repo_tags": Op(repo_tags, ROLES_OPERATOR, "an agent's config repo tags, by state"),
        "repo_log": Op(repo_log, ROLES_OPERATOR, "an agent's config repo log"),
        "repo_diff": Op(repo_diff, ROLES_OPERATOR, "one commit of an agent's config repo, with its diff"),
        "repo_file": Op(repo_file, ROLES_OPERATOR, "a file of an agent's config repo at a revision"),
        "meta_log": Op(meta_log, ROLES_OPERATOR, "the meta repo's deploy log"),
    }
