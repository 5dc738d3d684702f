"""Approvals: what the manager proposes, what the operator approves or denies, and the deploy that follows.

An approval ``<id>`` of kind ``apply`` is commit C for agent N: C is copied from ``agents/N/config`` (without
following any link the manager planted, see ``repos.import_proposed``) into the quarantine repo
``quarantine/N.git``, which no container mounts, and tagged there ``proposal/<id>``; a proposal whose build input
would differ from its diff is refused (``review``). Denied: ``denied/<id>`` in the quarantine (annotated with the
note); nothing of it ever reached ``applied/N``. Approved: C is fetched from the quarantine into ``applied/N``,
tagged ``approved/<id>``, then in a background thread ``building/<id>``, ``main`` moved to C, the meta input pinned and
the backend builds and activates; then ``deployed/<id>`` and a meta commit ``deploy N deployed/<id> <sha12>``, or
an annotated ``failed/<id>`` holding the error, ``main`` and the meta lock put back. Kind ``spawn`` creates an
agent (from the template, from a two-step draft's commit, or again from a tombstone). Deploys are serialized:
they share the meta flake.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import threading
import time

from sqlalchemy import func, insert, select, update

from . import policy_eval, registry, repos, review
from . import store as db
from . import telemetry
from .errors import HiveError, bad_request, conflict, not_found

log = logging.getLogger(__name__)

STATUSES = ("pending", "approved", "building", "deployed", "failed", "denied")
KINDS = ("apply", "spawn")


# --- reading -----------------------------------------------------------------------------------------------

def _dict(row) -> dict:
    commit = db.loads_json(row.commit_info)
    return {"id": row.id, "kind": row.kind, "agent": row.agent, "requested_by": row.requested_by, "ref": row.ref,
            "sha": row.sha, "base_sha": row.base_sha, "status": row.status, "note": row.note, "error": row.error,
            "tag": row.tag, "created_at": db.iso(row.created_at), "resolved_at": db.iso(row.resolved_at),
            "reason": row.reason, "commit": commit if isinstance(commit, dict) else None}


def _row(hive, approval_id):
    if isinstance(approval_id, bool) or not isinstance(approval_id, int):
        raise bad_request("an approval id must be an integer")
    with hive.store.read() as conn:
        row = conn.execute(select(db.approvals).where(db.approvals.c.id == approval_id)).first()
    if row is None:
        raise not_found(f"no approval #{approval_id}")
    return row


def list_approvals(hive, status: str | None = "pending", limit: int | None = None, offset: int = 0) -> list[dict]:
    """Approvals with ``status`` (None or "all": every one), oldest first; a page of them with ``limit``."""
    q = select(db.approvals).order_by(db.approvals.c.id)
    if status not in (None, "all"):
        if status not in STATUSES:
            raise bad_request(f'unknown status "{status}" (known: {", ".join(STATUSES)}, all)')
        q = q.where(db.approvals.c.status == status)
    if limit is not None:
        q = q.limit(limit).offset(offset)
    with hive.store.read() as conn:
        rows = conn.execute(q).all()
    # flags for what still waits or builds (the approval itself always has them; listing every old one would run
    # git for each)
    return [{**_dict(r), "flags": _flags(hive, r) if r.status in ("pending", "approved", "building") else [],
             **({"diff_base": _diff_base(hive, r)} if r.status == "pending" else {})} for r in rows]


def _diff_base(hive, row) -> str | None:
    """The commit the approval's diff is taken against now (what approving it would replace, while it waits):
    ``base`` of approve() names it, so that what is deployed cannot change unseen between a look and a click."""
    if not row.sha or _repos_gone(hive, row):
        return None
    try:
        return _base(hive, row)
    except Exception:
        return None


def get_approval(hive, approval_id: int) -> dict:
    """One approval with ``diff``: the proposal against what is deployed (or what it replaced, once deployed)."""
    row = _row(hive, approval_id)
    out = _dict(row)
    out["flags"] = _flags(hive, row)
    out["diff_base"] = _diff_base(hive, row)
    try:
        out["diff"] = (f"(the change can no longer be shown: the repos of {row.agent} are gone, purged; this "
                       "record is what remains of it)" if _repos_gone(hive, row) else _diff(hive, row))
    except Exception as e:  # a repo that went missing must not hide the approval itself
        log.warning("diff of approval #%s: %s", row.id, e)
        out["diff"] = f"(the diff cannot be shown: {e})"
    return out


def _base(hive, row) -> str | None:
    """What the approval's commit is compared with: what is deployed now (while it waits), else what it
    replaced."""
    if row.status in ("pending", "approved"):
        path = repos.applied_path(hive, row.agent)
        return repos.main_sha(repos.open_repo(path)) if (path / ".git").is_dir() else None
    return row.base_sha


def _review_repo(hive, name: str, *shas):
    """The quarantine repo, holding ``shas`` (what is applied is fetched into it when missing). Diffs are taken
    there: a bare repo of the service's own, with no work tree whose attributes could count."""
    repo = repos.ensure_quarantine(hive, name)
    if not all(repos.has_object(repo, s) for s in shas if s):
        repo = repos.sync_quarantine_from_applied(hive, name)
    return repo


def _repos_gone(hive, row) -> bool:
    """Whether the repos that held the approval's commit are gone (its agent was purged)."""
    return bool(row.sha) and not repos.applied_path(hive, row.agent).exists() \
        and not repos.quarantine_path(hive, row.agent).exists()


def _flags(hive, row) -> list[dict]:
    """What deserves a second look in the approval's change (symlinks, modes, attributes, binary content)."""
    if not row.sha or _repos_gone(hive, row):  # (nothing to inspect, and no quarantine made for a purged agent)
        return []
    try:
        base = _base(hive, row)
        cache = hive.extensions.setdefault("review_flags", {})
        key = (row.agent, base, row.sha)
        if key not in cache:
            flags, refusals = review.inspect(_review_repo(hive, row.agent, base, row.sha), base, row.sha)
            cache[key] = flags + [{"kind": "refused", "path": "", "detail": r} for r in refusals]
        return cache[key]
    except Exception as e:
        log.warning("flags of approval #%s: %s", row.id, e)
        return [{"kind": "unknown", "path": "", "detail": f"the change could not be inspected: {e}"}]


def _diff(hive, row) -> str:
    name = row.agent
    applied_dir = repos.applied_path(hive, name)
    if row.sha:
        base = _base(hive, row)
        if base == row.sha:
            return "(no changes: this commit is what is deployed)"
        return review.diff(_review_repo(hive, name, base, row.sha), base, row.sha)
    # A spawn without a commit: a new agent from the template, or a tombstone coming back.
    if (applied_dir / ".git").exists():
        repo = repos.open_repo(applied_dir)
        main = repos.main_sha(repo)
        if main:
            return (f"(revive {name}: redeploys its last deployed config, main at {main[:12]})\n"
                    + repos.diff_between(repo, None, main))
    return _template_diff(name)


def _template_diff(name: str) -> str:
    template = repos.agent_template_dir()
    files: dict[str, str] = {}
    if template is not None and template.is_dir():
        for p in sorted(template.rglob("*")):
            if p.is_file() and ".git" not in p.parts:
                files[str(p.relative_to(template))] = p.read_text(encoding="utf-8", errors="replace")
    else:
        files = dict(repos.FALLBACK_TEMPLATE)
    out = [f"(spawn {name}: a new agent from templates/agent)\n"]
    for path, text in files.items():
        out.extend(difflib.unified_diff([], text.splitlines(keepends=True), "/dev/null", f"b/{path}"))
    return "".join(out)


# --- the queue ---------------------------------------------------------------------------------------------

QUEUE_KEY = "approvals.queue"  # host-wide telemetry (telemetry.HIVE_AGENT): how many approvals are pending


def record_queue(hive, refresh_after: float | None = None) -> bool:
    """Record ``approvals.queue`` when it differs from the series' last sample (or, with ``refresh_after``, when
    that sample is older than so many seconds: a flat series still reaches "now"). The count, the look at the
    last sample and the new one are one write transaction: the service's sampler and a change recorded as it
    happens never both add the same value."""
    s = db.stats
    with hive.store.write() as conn:
        value = float(conn.execute(select(func.count()).select_from(db.approvals)
                                   .where(db.approvals.c.status == "pending")).scalar() or 0)
        last = conn.execute(select(s.c.ts, s.c.value).where(s.c.agent == telemetry.HIVE_AGENT, s.c.key == QUEUE_KEY)
                            .order_by(s.c.ts.desc()).limit(1)).first()
        now = time.time()
        if last is not None and last.value == value and (refresh_after is None or now - last.ts < refresh_after):
            return False
        telemetry.record(hive, telemetry.HIVE_AGENT, [{"key": QUEUE_KEY, "value": value, "ts": now}], conn)
        return True


def _changed(hive, approval_id: int, status: str) -> None:
    """The queue moved: host-wide telemetry and the live views hear of it."""
    try:
        record_queue(hive)
    except Exception:
        log.exception("recording approvals.queue")
    hive.bus.publish("state", {"what": "approval", "id": approval_id, "status": status})


def _check_quota(hive, conn, requested_by: str) -> None:
    """``limits.maxPendingApprovals`` per requester (the operator is not limited), counted in the insert's
    transaction."""
    if requested_by == "operator":
        return
    limit = hive.config.limits.max_pending_approvals
    waiting = conn.execute(select(func.count()).select_from(db.approvals).where(
        db.approvals.c.status == "pending", db.approvals.c.requested_by == requested_by)).scalar()
    if waiting >= limit:
        raise conflict(f"{requested_by} already has {waiting} approvals pending; the limit is {limit} "
                       "(limits.maxPendingApprovals): wait until the operator approves or denies some")


def _insert(hive, kind: str, agent: str, requested_by: str, ref=None, sha=None, base_sha=None, reason=None,
            commit=None) -> int:
    with hive.store.write() as conn:
        _check_quota(hive, conn, requested_by)
        return conn.execute(insert(db.approvals).values(
            kind=kind, agent=agent, requested_by=requested_by, ref=ref, sha=sha, base_sha=base_sha,
            status="pending", created_at=time.time(), reason=reason,
            commit_info=None if commit is None else json.dumps(commit))).inserted_primary_key[0]


def check_reason(hive, reason) -> str | None:
    """The optional ``reason`` of a request, shown to the operator: a string within maxMessageBytes, or None."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise bad_request('"reason" must be a string')
    limit = hive.config.broker.max_message_bytes
    if len(reason.encode("utf-8")) > limit:
        raise bad_request(f'"reason" is longer than {limit} bytes (maxMessageBytes)')
    return reason.strip() or None


def _set(hive, approval_id: int, **values) -> None:
    with hive.store.write() as conn:
        conn.execute(update(db.approvals).where(db.approvals.c.id == approval_id).values(**values))
    if "status" in values:
        _changed(hive, approval_id, values["status"])


def _check_ref(ref) -> str:
    if not isinstance(ref, str) or not ref.strip():
        raise bad_request('"commit" must be a non-empty string (a sha or a branch of the proposed repo)')
    ref = ref.strip()
    if len(ref) > repos.MAX_REV_LEN or ref.startswith("-") or not repos.REV_RE.match(ref):
        raise bad_request(f'"{ref[:80]}" is not a commit (give a sha or a branch of the proposed repo)')
    return ref


def _propose(hive, kind: str, name: str, ref: str, requested_by: str, reason: str | None = None) -> int:
    """Copy ``ref``'s commit out of the proposed repo into the quarantine, check that its diff shows what would
    be built, record the approval (with the commit's subject, body, author and date, read from the copy), tag
    ``proposal/<id>`` (in the quarantine: nothing reaches ``applied/<n>`` before the operator approves)."""
    reason = check_reason(hive, reason)
    with hive.store.read() as conn:  # refuse before copying anything (``_insert`` checks again, atomically)
        _check_quota(hive, conn, requested_by)
    sha = repos.import_proposed(hive, name, ref)
    with repos.repo_lock(repos.applied_path(hive, name)):
        path = repos.applied_path(hive, name)
        base = repos.main_sha(repos.open_repo(path)) if (path / ".git").is_dir() else None
        quarantine = _review_repo(hive, name, base, sha)
        flags = review.check(quarantine, base, sha, f"commit {sha[:12]} for {name}")
        _check_inputs(hive, name, sha)
        commit = repos.commit_info(quarantine, sha)
        with repos.repo_lock(repos.quarantine_path(hive, name)):
            approval_id = _insert(hive, kind, name, requested_by, ref=ref, sha=sha, base_sha=base, reason=reason,
                                  commit=commit)
            repos.tag(quarantine, f"proposal/{approval_id}", sha,
                      f"proposal #{approval_id} for {name} by {requested_by}: {ref}")
        hive.extensions.setdefault("review_flags", {})[(name, base, sha)] = flags
    _changed(hive, approval_id, "pending")
    return approval_id


def _check_inputs(hive, name: str, sha: str) -> None:
    """Under nixos-container, a proposal whose flake takes an input from this host is refused at once (the deploy
    would refuse it before locking anyway, see policy_eval.check_flake_inputs)."""
    backend = hive.extensions.get("backend")
    if backend is None or backend.name != "nixos-container":
        return
    try:
        policy_eval.check_flake_inputs(repos.quarantine_path(hive, name), sha)
    except policy_eval.PolicyError as e:
        raise bad_request(f"commit {sha[:12]} for {name} is refused: {e}") from None


def request_apply(hive, agent, ref, requested_by: str, reason: str | None = None) -> int:
    """Queue commit ``ref`` of ``agent``'s proposed repo for the operator's review."""
    if not isinstance(agent, str):
        raise bad_request('"agent" must be a string')
    ref = _check_ref(ref)
    row = registry.agent_row(hive, agent)
    if row is not None and row.state == "draft" and agent not in hive.config.agents:
        raise conflict(f"{agent} is a draft: queue its spawn with request_spawn_commit")
    if agent != hive.config.manager and agent not in hive.agent_configs():
        if row is not None and row.state == "tombstone":
            raise conflict(f"{agent} was destroyed; the operator can revive it")
        raise not_found(f'unknown agent "{agent}"')
    return _propose(hive, "apply", agent, ref, requested_by, reason)


def request_spawn(hive, name, requested_by: str, *, revive: bool = False) -> int:
    """Queue the spawn of a new agent ``name`` (from the template), or with ``revive`` of a tombstone."""
    registry.check_new_name(hive, name, allow_tombstone=revive)
    row = registry.agent_row(hive, name)
    if revive and (row is None or row.state != "tombstone"):
        raise not_found(f'there is no destroyed agent "{name}" to revive')
    if not revive and row is not None and row.state == "tombstone":
        raise conflict(f'"{name}" is a destroyed agent whose config and state are kept: revive it or purge it')
    if not revive and row is not None and row.state == "draft":
        raise conflict(f'"{name}" is a draft: queue it with request_spawn_commit')
    with hive.store.read() as conn:
        waiting = conn.execute(select(db.approvals.c.id).where(
            db.approvals.c.agent == name, db.approvals.c.kind == "spawn",
            db.approvals.c.status.in_(("pending", "approved", "building")))).first()
    if waiting is not None:
        raise conflict(f'a spawn of "{name}" is already queued (approval #{waiting.id})')
    approval_id = _insert(hive, "spawn", name, requested_by, ref="revive" if revive else None)
    _changed(hive, approval_id, "pending")
    return approval_id


def request_spawn_commit(hive, name, ref, requested_by: str, reason: str | None = None) -> int:
    """Queue the spawn of draft ``name`` at commit ``ref`` of its proposed repo."""
    if not isinstance(name, str):
        raise bad_request('"name" must be a string')
    ref = _check_ref(ref)
    row = registry.agent_row(hive, name)
    if row is None or row.state != "draft":
        raise not_found(f'there is no draft "{name}" (create one with request_spawn_draft)')
    return _propose(hive, "spawn", name, ref, requested_by, reason)


# --- resolving ---------------------------------------------------------------------------------------------

def _take(hive, approval_id, new_status: str, **values):
    """Move a pending approval on, atomically: two operators clicking at once resolve it once."""
    row = _row(hive, approval_id)
    with hive.store.write() as conn:
        result = conn.execute(update(db.approvals).where(db.approvals.c.id == row.id,
                                                         db.approvals.c.status == "pending")
                              .values(status=new_status, **values))
    if result.rowcount != 1:
        current = _row(hive, row.id)
        raise conflict(f"approval #{row.id} is {current.status}, not pending")
    _changed(hive, row.id, new_status)
    return _row(hive, row.id)


def deny(hive, approval_id, note) -> dict:
    """Deny with a note for the manager; the note is required (the CLI, the page and the API alike)."""
    if note is not None and not isinstance(note, str):
        raise bad_request('"note" must be a string')
    note = (note or "").strip()
    if not note:
        raise bad_request("a denial needs a note: say why, so the manager can do better")
    row = _take(hive, approval_id, "denied", note=note, resolved_at=time.time())
    tag_name = None
    if row.sha:
        tag_name = f"denied/{row.id}"
        try:  # in the quarantine: what was denied never reaches applied/
            repo = _review_repo(hive, row.agent, row.sha)
            with repos.repo_lock(repos.quarantine_path(hive, row.agent)):
                repos.tag(repo, tag_name, row.sha, note or "denied by the operator")
        except Exception as e:
            log.exception("tagging %s", tag_name)
            tag_name = None
            _set(hive, row.id, error=f"could not tag denied/{row.id}: {e}")
        else:
            _set(hive, row.id, tag=tag_name)
    what = "spawn of" if row.kind == "spawn" else "change to"
    hive.notify(row.agent, f"approval #{row.id} ({what} {row.agent}) was denied by the operator"
                + (f": {note}" if note else " (no note)"),
                event="approval", approval_id=row.id, kind=row.kind, status="denied", note=note, sha=row.sha,
                tag=tag_name)
    return _dict(_row(hive, row.id))


def _contains(hive, name: str, sha: str, main: str) -> bool:
    """Whether commit ``sha`` holds ``main`` in its history (deploying it undoes nothing of ``main``)."""
    repo = _review_repo(hive, name, main, sha)
    try:
        repo.git.merge_base("--is-ancestor", main, sha)
        return True
    except Exception:
        return False


def _undoes(hive, name: str, sha: str, main: str | None, seen: str | None) -> bool:
    """Whether deploying ``sha`` would undo, unseen, ``main`` (what is deployed for ``name``): it is neither the
    commit, nor what the diff read was taken against (``seen``: a sha or a prefix of one), nor in the commit."""
    return bool(main) and main != sha and not (seen and main.startswith(seen)) and not _contains(hive, name, sha, main)


def _check_base(hive, row, base: str | None) -> str | None:
    """What is deployed for the approval's agent (its ``main``), refused as a conflict when it is not what the
    operator's diff was taken against (``base``; without one, what was deployed when it was proposed) and the
    commit does not contain it: approving would undo, unseen, what was deployed since (two proposals made from
    the same deployed commit, approved one after the other: the second reverted the first)."""
    path = repos.applied_path(hive, row.agent)
    if not row.sha or not (path / ".git").is_dir():
        return None
    main = repos.main_sha(repos.open_repo(path))
    seen = row.base_sha if base is None else base
    if not _undoes(hive, row.agent, row.sha, main, seen):
        return main
    raise conflict(f"approval #{row.id}: what is deployed for {row.agent} changed since "
                   + (f"the diff you approve was taken (against {seen[:12]})" if base is not None else
                      f"it was proposed (against {(seen or 'nothing')[:12]})")
                   + f"; it is now {main[:12]}, and commit {row.sha[:12]} does not contain it, so approving would "
                   "undo it. Look at the diff again (it shows that now) and approve that diff (the dashboard does; "
                   f"hyperhive approve {row.id} --base {main[:12]}), or ask the manager to rebase its change")


def approve(hive, approval_id, base: str | None = None) -> dict:
    """Approve and start the build and deploy in the background; the approval goes approved, building, then
    deployed or failed. ``base``: the commit the diff the operator approves was taken against (a sha or a prefix
    of one); refused as a conflict when what is deployed changed since and the commit does not contain it."""
    if base is not None and (not isinstance(base, str) or not re.fullmatch(r"[0-9a-f]{7,40}", base.strip())):
        raise bad_request('"base" must be the commit the diff was taken against (7 to 40 hex digits)')
    row = _row(hive, approval_id)
    if row.status == "pending" and hive.extensions.get("backend") is None:
        raise HiveError("internal", "no deploy backend is running, so nothing can be deployed")
    accepted = {}
    if row.status == "pending" and row.kind == "apply":
        with repos.repo_lock(repos.applied_path(hive, row.agent)):
            main = _check_base(hive, row, base.strip() if base else None)
        accepted = {"base_sha": main}  # what the deploy may replace (it checks again, under the deploy lock)
    row = _take(hive, approval_id, "approved", **accepted)
    if row.sha:
        try:  # approved: the commit comes out of the quarantine into applied/
            repo = repos.promote(hive, row.agent, row.sha)
            with repos.repo_lock(repos.applied_path(hive, row.agent)):
                repos.tag(repo, f"approved/{row.id}", row.sha, f"approved #{row.id} by the operator")
        except Exception:
            log.exception("tagging approved/%s", row.id)
    thread = threading.Thread(target=_run_deploy, args=(hive, row.id), name=f"deploy-{row.id}", daemon=True)
    threads = hive.extensions.setdefault("deploy_threads", [])
    threads[:] = [t for t in threads if t.is_alive()] + [thread]
    thread.start()
    return _dict(_row(hive, row.id))


def deploy_lock(hive) -> threading.RLock:
    # One deploy at a time: they share the meta flake and its lock file.
    return hive.extensions.setdefault("deploy_lock", threading.RLock())


def wait_deploys(hive, timeout: float = 10) -> None:
    """Let running deploys finish (up to ``timeout`` in all) before the agents are stopped."""
    deadline = time.monotonic() + timeout
    for thread in list(hive.extensions.get("deploy_threads", [])):
        thread.join(max(0.0, deadline - time.monotonic()))


def _run_deploy(hive, approval_id: int) -> None:
    with deploy_lock(hive):
        if hive.stopped.is_set():
            return
        row = _row(hive, approval_id)
        try:
            if row.kind == "apply":
                _deploy_apply(hive, row)
            else:
                _deploy_spawn(hive, row)
        except Exception as e:  # a bug in the deploy path must still end the approval
            log.exception("deploy of approval #%s", approval_id)
            current = _row(hive, approval_id)
            if current.status in ("approved", "building"):
                _set(hive, approval_id, status="failed", error=f"internal error: {type(e).__name__}: {e}",
                     resolved_at=time.time())


def _build_error(e: Exception) -> str:
    from .backends import BuildError

    if isinstance(e, (BuildError, HiveError)):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _deploy(hive, name: str, sha: str) -> None:
    """Pin and build ``applied/<n>`` main (already at ``sha``) with the running backend."""
    backend = hive.extensions["backend"]
    repos.sync_meta(hive)
    backend.lock(name)
    if registry.is_spawned(hive, name):
        # From the configuration being deployed (meta is locked to it), by the backend's rule (policy_eval.py).
        registry.store_policy(hive, name, policy_eval.read_policy(hive, name))
    backend.deploy(name, sha)
    registry.run_again(hive, name)  # a deploy runs the agent: a kill before it no longer holds


def _deploy_apply(hive, row) -> None:
    name, sha = row.agent, row.sha
    path = repos.applied_path(hive, name)
    repo = repos.promote(hive, name, sha)
    old_main = repos.main_sha(repo)
    if _undoes(hive, name, sha, old_main, row.base_sha):
        # another deploy moved main between the click and this build (deploys queue): what the operator approved
        # is not what this build would replace
        error = (f"what is deployed for {name} changed between the approval and its build (approved against "
                 f"{(row.base_sha or 'nothing')[:12]}, now {old_main[:12]}), and commit {sha[:12]} does not "
                 "contain it: building it would undo that; nothing was built (propose it again, rebased)")
        _fail(hive, row, error, old_main=None)  # (main never moved: failed/<id> records why)
        return
    old_policy = registry.agent_row(hive, name)
    _set(hive, row.id, status="building", base_sha=old_main)
    with repos.repo_lock(path):
        repos.tag(repo, f"building/{row.id}", sha, f"building #{row.id}")
        repos.set_main(repo, sha)
    try:
        _deploy(hive, name, sha)
    except Exception as e:
        _fail(hive, row, _build_error(e), old_main=old_main)
        if old_policy is not None and old_policy.origin == "spawned":
            registry.store_policy(hive, name, db.loads_json(old_policy.policy, {}))
        _recover_agent(hive, name)
        return
    _succeed(hive, row, f"deployed/{row.id}", sha,
             f"approval #{row.id} for {name} deployed: deployed/{row.id} at {sha[:12]}")


def _deploy_spawn(hive, row) -> None:
    name = row.agent
    agent = registry.agent_row(hive, name)
    path = repos.applied_path(hive, name)
    old_main = None
    if row.sha:  # two-step: the draft's commit
        repo = repos.promote(hive, name, row.sha)
        old_main = repos.main_sha(repo)
        _set(hive, row.id, status="building", base_sha=old_main)
        with repos.repo_lock(path):
            repos.tag(repo, f"building/{row.id}", row.sha, f"building #{row.id}")
            repos.set_main(repo, row.sha)
        sha, tag_name, before = row.sha, f"deployed/{row.id}", "draft"
    elif agent is not None and agent.state == "tombstone":  # revive
        repo = repos.ensure_applied_repo(hive, name)
        repos.seed_agent(hive, name)
        sha = repos.main_sha(repo)
        _set(hive, row.id, status="building", base_sha=sha, sha=sha)
        tag_name, before = f"deployed/{row.id}", "tombstone"
    else:  # one-step: a new agent from the template, its seed is deployed/0
        try:
            registry.check_new_name(hive, name)  # the name may have been taken since the request
        except HiveError as e:
            _set(hive, row.id, status="failed", error=e.message, resolved_at=time.time())
            hive.notify(hive.config.manager, f"approval #{row.id} (spawn {name}) failed: {e.message}",
                        event="approval", approval_id=row.id, kind=row.kind, status="failed", error=e.message)
            return
        _set(hive, row.id, status="building")
        sha = repos.seed_agent(hive, name) or repos.main_sha(repos.open_repo(path))
        _set(hive, row.id, sha=sha)
        tag_name, before = "deployed/0", None
    registry.set_agent_state(hive, name, "active")
    try:
        _deploy(hive, name, sha)
    except Exception as e:
        error = _build_error(e)
        registry.set_agent_state(hive, name, before or "tombstone")
        try:
            repos.sync_meta(hive)
        except Exception:
            log.exception("meta after a failed spawn of %s", name)
        _fail(hive, _row(hive, row.id), error, old_main=old_main if row.sha else sha)
        hive.extensions["backend"].stop(name)
        return
    _succeed(hive, _row(hive, row.id), tag_name, sha,
             f"{name} was spawned (approval #{row.id}): {tag_name} at {sha[:12]}")


def _succeed(hive, row, tag_name: str, sha: str, message: str) -> None:
    name = row.agent
    repo = repos.open_repo(repos.applied_path(hive, name))
    with repos.repo_lock(repos.applied_path(hive, name)):
        if repos.rev_sha(repo, f"refs/tags/{tag_name}") is None:
            repos.tag(repo, tag_name, sha, f"approval #{row.id} deployed")
    meta = repos.ensure_meta_repo(hive)
    repos.commit_meta(meta, f"deploy {name} {tag_name} {sha[:12]}", allow_empty=True)
    _set(hive, row.id, status="deployed", tag=tag_name, resolved_at=time.time(), error=None)
    hive.notify(name, message, event="approval", approval_id=row.id, kind=row.kind, status="deployed",
                note=row.note, sha=sha, tag=tag_name)


def _fail(hive, row, error: str, *, old_main: str | None) -> None:
    """Keep the error in ``failed/<id>``, put ``main`` and the meta lock back as they were."""
    name = row.agent
    path = repos.applied_path(hive, name)
    tag_name = None
    try:
        repo = repos.open_repo(path)
        with repos.repo_lock(path):
            target = row.sha or repos.main_sha(repo)
            if old_main:
                repos.set_main(repo, old_main)
            elif row.kind == "spawn" and row.sha:  # a draft's first deploy: nothing was there before
                repos.unset_main(repo)
            if target:
                tag_name = f"failed/{row.id}"
                repos.tag(repo, tag_name, target, f"build of approval #{row.id} failed:\n\n{error}", force=True)
    except Exception:
        log.exception("recording the failure of approval #%s", row.id)
    try:
        repos.restore_meta_lock(hive)
    except Exception:
        log.exception("restoring the meta lock after approval #%s", row.id)
    _set(hive, row.id, status="failed", error=error, tag=tag_name, resolved_at=time.time())
    first_line = error.strip().splitlines()[0] if error.strip() else "unknown error"
    hive.notify(name, f"approval #{row.id} for {name} failed to build or deploy: {first_line}",
                event="approval", approval_id=row.id, kind=row.kind, status="failed", note=row.note,
                sha=row.sha, tag=tag_name, error=error)


def _recover_agent(hive, name: str) -> None:
    """After a failed deploy, the agent runs its old config again if the attempt stopped it."""
    backend = hive.extensions["backend"]
    if backend.state(name) == "running" or name in registry.kept_stopped(hive):
        return  # (a killed agent stays stopped: the deploy that would have run it failed)
    try:
        backend.start(name)
    except Exception as e:
        log.warning("could not restart %s on its old config: %s", name, e)


def recover_interrupted(hive) -> int:
    """At start: deploys cut short by a stop of the service fail, with main and the meta lock put back."""
    with hive.store.read() as conn:
        rows = conn.execute(select(db.approvals).where(
            db.approvals.c.status.in_(("approved", "building")))).all()
    for row in rows:
        old = row.base_sha if row.status == "building" and row.sha else None
        try:
            if old:
                repo = repos.open_repo(repos.applied_path(hive, row.agent))
                if repos.main_sha(repo) != row.sha:
                    old = None  # main never moved
        except Exception:
            old = None
        _fail(hive, row, "interrupted: the service stopped before this deploy finished; request it again",
              old_main=old)
        _undo_interrupted(hive, row, old)
    return len(rows)


def _undo_interrupted(hive, row, restored_main: str | None) -> None:
    """After an interrupted deploy is failed (main and the meta lock put back), the agents table and what runs
    agree again: a spawn that never finished is undone as a failed one is (its container stopped), a spawned
    agent's policy is read again from what is applied now (the deploy may have stored the new one before it was
    cut short), and an agent whose ``main`` was put back is deployed again on it (the cut-short build may have
    been activated)."""
    name = row.agent
    backend = hive.extensions.get("backend")
    try:
        if row.kind == "spawn":
            agent = registry.agent_row(hive, name)
            if agent is not None and agent.state == "active" and name not in hive.config.agents:
                registry.set_agent_state(hive, name, "draft" if row.sha else "tombstone")
                repos.sync_meta(hive)
                if backend is not None:
                    backend.stop(name)
            return
        if registry.is_spawned(hive, name):
            try:
                policy = policy_eval.read_policy(hive, name)
            except Exception as e:  # fail closed: it may talk to no one until a deploy succeeds
                log.error("re-reading the policy of %s after an interrupted deploy: %s; it may send to no one "
                          "until its next deploy", name, e)
                policy = {"allowedRecipients": [], "bashAllow": []}
            registry.store_policy(hive, name, policy)
        if restored_main and backend is not None and getattr(hive, "run_agents", True):
            try:
                backend.lock(name)
                backend.deploy(name, restored_main)
                registry.run_again(hive, name)
            except Exception as e:
                log.error("deploying %s again on %s after an interrupted deploy: %s", name, restored_main[:12], e)
    except Exception:
        log.exception("undoing the interrupted deploy #%s of %s", row.id, name)
