"""Agents created at run time, and the life cycle of every agent: drafts, tombstones, start/kill/restart/rebuild,
destroy, purge, revive; and the overview the dashboard's C0NTAINERS section shows.

Spawned agents are rows of the ``agents`` table (``registry``: state ``draft | active | tombstone``, origin
``spawned``) with the policy read from their own ``agent.nix``; declared agents live in the config.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from sqlalchemy import delete, func, select, update

from . import approvals, questions, registry, repos
from . import store as db
from .config import check_name
from .registry import agent_row, check_new_name, has_leftovers, set_agent_state
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


def _applied_main(hive, name: str) -> str | None:
    """``main`` of ``applied/<n>`` read as text (a loose ref, else packed-refs), or None when neither says.
    The applied repos are the service's own (the manager mounts them read-only), so their refs are plain files."""
    git_dir = repos.applied_path(hive, name) / ".git"
    try:
        sha = (git_dir / "refs" / "heads" / "main").read_text(encoding="ascii").strip()
        return sha if len(sha) == 40 else None
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError):
        return None
    try:
        for line in (git_dir / "packed-refs").read_text(encoding="ascii").splitlines():
            if line.endswith(" refs/heads/main") and len(line.split(" ", 1)[0]) == 40:
                return line.split(" ", 1)[0]
    except (OSError, UnicodeDecodeError):
        pass
    return None


def _deployed_by_approvals(hive, agent: str | None = None) -> dict[str, tuple[str, str]] | None:
    """Each agent's (or one ``agent``'s) latest deployed approval: (tag, sha). One query for the whole hive."""
    a = db.approvals
    deployed = select(a.c.agent, func.max(a.c.id).label("id")).where(a.c.status == "deployed", a.c.tag.is_not(None))
    if agent is not None:
        deployed = deployed.where(a.c.agent == agent)
    latest = deployed.group_by(a.c.agent).subquery()
    try:
        with hive.store.read() as conn:
            rows = conn.execute(select(a.c.agent, a.c.tag, a.c.sha).join(latest, a.c.id == latest.c.id)).all()
    except Exception:  # the approvals cannot be read: git is asked for every agent, the table still shows
        log.warning("reading the deployed approvals failed; asking git for each agent", exc_info=True)
        return None
    return {r.agent: (r.tag, r.sha) for r in rows}


def _deployed_quick(hive, name: str, by_approvals: dict) -> tuple[str | None, str | None, bool] | None:
    """``_deployed`` without running git, when the database and the applied repo's ``main`` agree: the latest
    deployed approval's commit is ``main`` (or there is none and ``main`` is the seed, ``deployed/0``). None when
    they do not agree (a deploy in flight or cut short): then git is asked."""
    sha = _applied_main(hive, name)
    if sha is None:
        return None
    known = by_approvals.get(name)
    if known is None:
        tag_name = "deployed/0"
        git_dir = repos.applied_path(hive, name) / ".git"
        try:
            seeded = (git_dir / "refs" / "tags" / "deployed" / "0").is_file() or \
                " refs/tags/deployed/0\n" in (git_dir / "packed-refs").read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            seeded = False
        if not seeded:
            return None
    elif known[1] == sha:
        tag_name = known[0]
    else:
        return None
    proposed = repos.proposed_main(hive, name)
    return tag_name, sha, proposed is not None and proposed != sha


def deployed(hive, name: str) -> tuple[str | None, str | None, bool]:
    """(deployed tag, deployed sha, stale) of one agent now: from the approvals and the ref files where they
    agree, else from git."""
    by_approvals = _deployed_by_approvals(hive, name)
    return (_deployed_quick(hive, name, by_approvals) if by_approvals is not None else None) or _deployed(hive, name)


def agent_overview(hive) -> list[dict]:
    names = [hive.config.manager] + sorted(hive.agent_configs())
    by_approvals = _deployed_by_approvals(hive)
    kept = registry.kept_stopped(hive)
    out = []
    for name in names:
        quick = _deployed_quick(hive, name, by_approvals) if by_approvals is not None else None
        tag_name, sha, stale = quick or _deployed(hive, name)
        role = "manager" if name == hive.config.manager else "agent"
        origin = "declared" if role == "manager" or name in hive.config.agents else "spawned"
        row = {"name": name, "role": role, "state": hive.agent_state(name), "deployed_tag": tag_name,
               "deployed_sha": sha, "stale": stale, "origin": origin}
        if name in kept:  # stays stopped, across restarts of the service, until it is started
            row["killed_by"], row["killed_at"] = kept[name]["by"], db.iso(kept[name]["at"])
        out.append(row)
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
    declared = name == hive.config.manager or name in hive.config.agents
    if action in ("destroy", "purge") and declared:
        raise conflict(f"{name} is declared in the config ({hive.config.source}): remove it there instead")
    if action == "revive":
        if row is None or row.state != "tombstone":
            raise not_found(f'there is no destroyed agent "{name}" to revive')
        approval_id = approvals.request_spawn(hive, name, by, revive=True)
        return {"name": name, "state": "tombstone", "approval_id": approval_id}
    # (no row and not declared: not an agent of the hive, but maybe what a removed declared one left)
    if action == "purge" and (row.state in ("tombstone", "draft") if row is not None else has_leftovers(hive, name)):
        return _purge(hive, name, by)
    live = name == hive.config.manager or name in hive.agent_configs()
    if not live:
        if row is not None and row.state == "tombstone":
            raise conflict(f"{name} was destroyed: revive it first (or purge it)")
        if row is not None and row.state == "draft":
            raise conflict(f"{name} is a draft, with no container to {action}: the manager queues it with "
                           f"request_spawn_commit, or `hyperhive destroy {name} --purge` removes it")
        raise not_found(f'unknown agent "{name}"')
    backend = _backend(hive)
    deploy_lock = approvals.deploy_lock

    if action in ("destroy", "purge"):
        with deploy_lock(hive):
            backend.destroy(name)
            set_agent_state(hive, name, "tombstone")
            registry.run_again(hive, name)  # a revived agent starts
            repos.sync_meta(hive, f"meta: {name} destroyed")
        hive.notify(hive.config.manager, f"{name} was destroyed by {by}; its config and state are kept",
                    event="destroyed", name=name, by=by)
        questions.cancel_all(hive, name)  # nobody would hear their answers
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
        registry.keep_stopped(hive, name, by)  # until it is run again, whatever restarts meanwhile
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
    if action != "kill":
        registry.run_again(hive, name)
    state = hive.agent_state(name)
    hive.notify(name, f"{name} was {verb} by {by}", event=verb, name=name, by=by, state=state)
    hive.bus.publish("state", {"what": "agent", "name": name, "state": state})
    return {"name": name, "state": state}


def _purge(hive, name: str, by: str) -> dict:
    """Everything of the agent goes: its repos, its state, its row, and what still waited for it (its unread
    messages count as read, its reminders are cancelled), so that a new agent of the name inherits none of it. The
    approvals, messages and turns stay as the hive's history."""
    # rmtree does not follow links (a link planted at agents/<n> is refused, not its target emptied)
    for path in (repos.config_path(hive, name).parent, repos.applied_path(hive, name),
                 repos.quarantine_path(hive, name)):
        shutil.rmtree(path, ignore_errors=True)
    questions.cancel_all(hive, name)
    now = time.time()
    with hive.store.write() as conn:
        conn.execute(delete(db.agents).where(db.agents.c.name == name))
        conn.execute(delete(db.stopped_agents).where(db.stopped_agents.c.agent == name))
        conn.execute(update(db.messages).where(db.messages.c.recipient == name, db.messages.c.acked_at.is_(None))
                     .values(acked_at=now, lease_until=None))
        conn.execute(update(db.reminders).where(db.reminders.c.agent == name, db.reminders.c.status == "pending")
                     .values(status="cancelled"))
    hive.agents_changed()
    hive.bus.publish("state", {"what": "agent", "name": name, "state": "purged"})
    hive.notify(hive.config.manager, f"{name} was purged by {by}: its config and state are gone",
                event="purged", name=name, by=by)
    return {"name": name, "state": "purged"}
