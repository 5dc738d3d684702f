"""The agents table: the rows of agents created at run time (state ``draft | active | tombstone``, origin
``spawned``), the policy stored for each, which names a new agent may take, and which agents a kill keeps stopped.

Both the approval lifecycle (``approvals``) and the agents' life cycle (``spawn``) stand on it, so it stands on its
own: neither imports the other for it.
"""

from __future__ import annotations

import json
import os
import time

from sqlalchemy import delete, insert, select, update

from . import repos
from . import store as db
from .config import check_name, socket_too_long
from .errors import bad_request, conflict


def agent_row(hive, name):
    if not isinstance(name, str):
        return None
    with hive.store.read() as conn:
        return conn.execute(select(db.agents).where(db.agents.c.name == name)).first()


def is_spawned(hive, name: str) -> bool:
    row = agent_row(hive, name)
    return row is not None and row.origin == "spawned" and name not in hive.config.agents


def set_agent_state(hive, name: str, state: str) -> None:
    ts = time.time()
    with hive.store.write() as conn:
        done = conn.execute(update(db.agents).where(db.agents.c.name == name)
                            .values(state=state, updated_at=ts)).rowcount
        if not done:
            conn.execute(insert(db.agents).values(name=name, state=state, origin="spawned", policy=None,
                                                  created_at=ts, updated_at=ts))
    hive.agents_changed()
    hive.bus.publish("state", {"what": "agent", "name": name, "state": state})


def keep_stopped(hive, name: str, by: str) -> None:
    """``name`` was killed by ``by``: it stays stopped across restarts of the service until it is run again."""
    with hive.store.write() as conn:
        conn.execute(delete(db.stopped_agents).where(db.stopped_agents.c.agent == name))
        conn.execute(insert(db.stopped_agents).values(agent=name, by=by, at=time.time()))


def run_again(hive, name: str) -> None:
    """``name`` runs again (started, restarted, rebuilt, deployed, destroyed or purged): a kill no longer holds it."""
    with hive.store.write() as conn:
        conn.execute(delete(db.stopped_agents).where(db.stopped_agents.c.agent == name))


def kept_stopped(hive) -> dict[str, dict]:
    """The agents a kill keeps stopped: ``{name: {"by": who, "at": epoch seconds}}``."""
    with hive.store.read() as conn:
        return {r.agent: {"by": r.by, "at": r.at} for r in conn.execute(select(db.stopped_agents))}


def store_policy(hive, name: str, policy: dict) -> None:
    with hive.store.write() as conn:
        conn.execute(update(db.agents).where(db.agents.c.name == name)
                     .values(policy=json.dumps(policy), updated_at=time.time()))
    hive.agents_changed()


def check_new_name(hive, name, *, allow_tombstone: bool = False) -> str:
    problem = check_name(name)
    if problem:
        raise bad_request(problem)
    if name == hive.config.manager:
        raise conflict(f'"{name}" is the manager')
    too_long = socket_too_long(hive.config.run_dir, name, hive.config.manager)
    if too_long:  # the new agent could never be reached
        raise bad_request(f'"{name}" cannot be an agent of this hive: {too_long}')
    if name in hive.config.agents:
        raise conflict(f'"{name}" is already an agent (declared in the config)')
    row = agent_row(hive, name)
    if row is not None and row.state == "active":
        raise conflict(f'"{name}" is already an agent')
    if row is not None and row.state == "tombstone" and not allow_tombstone:
        raise conflict(f'"{name}" is a destroyed agent whose config and state are kept: revive it or purge it')
    if row is None and has_leftovers(hive, name):
        # A declared agent removed from the config keeps its repos. A new agent of that name would start from the
        # old one's deployed config (with the policy the config gave it), not from the template the approval says.
        raise conflict(f'"{name}" was an agent of this hive (removed from the config) whose repos are kept: '
                       f"declare it there again, or remove what it left (`hyperhive destroy {name} --purge`) first")
    return name


def has_leftovers(hive, name: str) -> bool:
    """Whether a deployed config of ``name`` is kept (``applied/<n>``) though the hive has no such agent."""
    return os.path.lexists(repos.applied_path(hive, name))
