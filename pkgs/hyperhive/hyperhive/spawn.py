"""Agents created at run time, and the life cycle of every agent: drafts, tombstones, start/kill/restart/rebuild,
destroy, purge, revive; and the overview the dashboard's C0NTAINERS section shows.

Spawned agents are rows of the ``agents`` table (``registry``: state ``draft | active | tombstone``, origin
``spawned``) with the policy read from their own ``agent.nix``; declared agents live in the config.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import delete, func, select

from . import approvals, repos
from . import store as db
from .config import check_name
from .registry import agent_row, check_new_name, set_agent_state
from .errors import HiveError, bad_request, conflict, forbidden, not_found

log = logging.getLogger(__name__)

ACTIONS = ("start", "kill", "restart", "rebuild", "destroy", "purge", "revive")

# --- drafts ------------------------------------------------------------------------------------------------

def _visible_path(hive, path: Path) -> str:
    """Where the manager sees a path: inside its container ``/agents/...``; on the local backend, the host path."""
    if hive.config.backend == "nixos-container":
        return "/agents/" + str(path.relative_to(hive.config.state_dir / "agents"))
    return str(path)


def create_draft(hive, name) -> dict:
    """Two-step spawn, step one: the proposed repo (an initial commit) and the state dir, no container."""
    check_new_name(hive, name)
    row = agent_row(hive, name)
    if row is not None and row.state == "draft":
        raise conflict(f'a draft "{name}" exists already: commit to it and queue it with request_spawn_commit')
    limit = hive.config.limits.max_drafts
    with hive.store.read() as conn:
        drafts = conn.execute(select(func.count()).select_from(db.agents).where(db.agents.c.state == "draft")).scalar()
    if drafts >= limit:
        raise conflict(f"{drafts} drafts wait already; the limit is {limit} (limits.maxDrafts): queue one with "
                       "request_spawn_commit (or ask the operator to purge one) first")
    repos.seed_config_repo(hive, name)
    repos.ensure_state_dir(hive, name)
    set_agent_state(hive, name, "draft")
    hive.notify(hive.config.manager, f"draft {name} created: edit and commit its config, then "
                f"request_spawn_commit", event="draft", name=name)
    return {"name": name, "config_path": _visible_path(hive, repos.config_path(hive, name)),
            "state_path": _visible_path(hive, repos.state_path(hive, name))}


def list_drafts(hive) -> list[dict]:
    with hive.store.read() as conn:
        rows = conn.execute(select(db.agents).where(db.agents.c.state == "draft").order_by(db.agents.c.name)).all()
    out = []
    for row in rows:
        head = repos.proposed_main(hive, row.name)  # read as text, no link followed, no git run
        out.append({"name": row.name, "config_path": str(repos.config_path(hive, row.name)),
                    "state_path": str(repos.state_path(hive, row.name)), "created_at": db.iso(row.created_at),
                    "head": head})
    return out


def list_tombstones(hive) -> list[dict]:
    with hive.store.read() as conn:
        rows = conn.execute(select(db.agents).where(db.agents.c.state == "tombstone")
                            .order_by(db.agents.c.name)).all()
    return [{"name": r.name, "destroyed_at": db.iso(r.updated_at),
             "config_path": str(repos.config_path(hive, r.name))} for r in rows]


# --- the overview ------------------------------------------------------------------------------------------

def _deployed(hive, name: str) -> tuple[str | None, str | None, bool]:
    """(deployed tag, deployed sha, stale) of one agent."""
    try:
        applied = repos.open_repo(repos.applied_path(hive, name))
    except HiveError:
        return None, None, False
    sha = repos.main_sha(applied)
    tag_name = None
    if sha:
        tags = applied.git.tag("--points-at", sha, "--list", "deployed/*").split()
        if tags:
            tag_name = max(tags, key=lambda t: int(t.split("/")[1]) if t.split("/")[1].isdigit() else -1)
    proposed = repos.proposed_main(hive, name)  # read as text, no link followed, no git run
    stale = proposed is not None and sha is not None and proposed != sha
    return tag_name, sha, stale


def agent_overview(hive) -> list[dict]:
    names = [hive.config.manager] + sorted(hive.agent_configs())
    out = []
    for name in names:
        tag_name, sha, stale = _deployed(hive, name)
        role = "manager" if name == hive.config.manager else "agent"
        origin = "declared" if role == "manager" or name in hive.config.agents else "spawned"
        out.append({"name": name, "role": role, "state": hive.agent_state(name), "deployed_tag": tag_name,
                    "deployed_sha": sha, "stale": stale, "origin": origin})
    return out


# --- actions -----------------------------------------------------------------------------------------------

def _backend(hive):
    backend = hive.extensions.get("backend")
    if backend is None:
        raise HiveError("internal", "no deploy backend is running")
    return backend


def agent_action(hive, name, action, by: str = "operator") -> dict:
    """start | kill | restart | rebuild | destroy | purge | revive one agent; ``by`` is who asked."""
    if action not in ACTIONS:
        raise bad_request(f'unknown action "{action}" (known: {", ".join(ACTIONS)})')
    if not isinstance(name, str):
        raise bad_request('"name" must be a string')
    if by == hive.config.manager and name == hive.config.manager:
        raise forbidden(f"the manager cannot {action} itself")
    if name != hive.config.manager:
        problem = check_name(name)
        if problem:
            raise bad_request(problem)
    row = agent_row(hive, name)
    if action == "revive":
        if row is None or row.state != "tombstone":
            raise not_found(f'there is no destroyed agent "{name}" to revive')
        approval_id = approvals.request_spawn(hive, name, by, revive=True)
        return {"name": name, "state": "tombstone", "approval_id": approval_id}
    if action == "purge" and row is not None and row.state in ("tombstone", "draft"):
        return _purge(hive, name, by)
    live = name == hive.config.manager or name in hive.agent_configs()
    if not live:
        if row is not None and row.state == "tombstone":
            raise conflict(f"{name} was destroyed: revive it first (or purge it)")
        if row is not None and row.state == "draft":
            raise conflict(f"{name} is a draft: queue it with request_spawn_commit")
        raise not_found(f'unknown agent "{name}"')
    backend = _backend(hive)
    deploy_lock = approvals.deploy_lock

    if action in ("destroy", "purge"):
        if name == hive.config.manager or name in hive.config.agents:
            raise conflict(f"{name} is declared in the config ({hive.config.source}): remove it there instead")
        with deploy_lock(hive):
            backend.destroy(name)
            set_agent_state(hive, name, "tombstone")
            repos.sync_meta(hive, f"meta: {name} destroyed")
        hive.notify(hive.config.manager, f"{name} was destroyed by {by}; its config and state are kept",
                    event="destroyed", name=name, by=by)
        for waiting in approvals.list_approvals(hive, "pending"):
            if waiting["agent"] == name and waiting["kind"] == "apply":
                approvals.deny(hive, waiting["id"], f"{name} was destroyed")
        if action == "purge":
            return _purge(hive, name, by)
        return {"name": name, "state": "tombstone"}
    if action == "start":
        backend.start(name)
        verb = "started"
    elif action == "kill":
        backend.stop(name)
        verb = "killed"
    elif action == "restart":
        backend.restart(name)
        verb = "restarted"
    else:  # rebuild: build and activate what is deployed again
        with deploy_lock(hive):
            sha = repos.main_sha(repos.open_repo(repos.applied_path(hive, name))) or ""
            backend.lock(name)
            backend.deploy(name, sha)
        verb = "rebuilt"
    state = hive.agent_state(name)
    hive.notify(name, f"{name} was {verb} by {by}", event=verb, name=name, by=by, state=state)
    hive.bus.publish("state", {"what": "agent", "name": name, "state": state})
    return {"name": name, "state": state}


def _purge(hive, name: str, by: str) -> dict:
    """Everything of the agent goes: its repos, its state, its row (the approvals table keeps its rows)."""
    # rmtree does not follow links (a link planted at agents/<n> is refused, not its target emptied)
    for path in (repos.config_path(hive, name).parent, repos.applied_path(hive, name),
                 repos.quarantine_path(hive, name)):
        shutil.rmtree(path, ignore_errors=True)
    with hive.store.write() as conn:
        conn.execute(delete(db.agents).where(db.agents.c.name == name))
    hive.agents_changed()
    hive.bus.publish("state", {"what": "agent", "name": name, "state": "purged"})
    hive.notify(hive.config.manager, f"{name} was purged by {by}: its config and state are gone",
                event="purged", name=name, by=by)
    return {"name": name, "state": "purged"}
