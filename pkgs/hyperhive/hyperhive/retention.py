"""Tag retention in the applied repos and the quarantine (where ``proposal/`` and ``denied/`` tags live): keep
every ``deployed/*``; drop ``failed/*`` and ``denied/*`` older than their configured age; drop ``proposal/``,
``approved/`` and ``building/`` once their approval has a terminal tag. The approvals table keeps every row.

Then each quarantine is collected (``prune_quarantine``): the manager's branches are fetched into it on every page
view, and one it deleted left its objects there for good (20 MB branches made and deleted grew it 232K -> 58M)."""

from __future__ import annotations

import logging
import tempfile
import time

from sqlalchemy import select

from . import repos
from . import store as db

log = logging.getLogger(__name__)

DAY = 86400.0


def run_retention(hive, now: float | None = None, dry_run: bool = False) -> dict:
    """Apply the retention rules to every applied repo; ``now`` is the clock (tests pass their own)."""
    now = time.time() if now is None else now
    cfg = hive.config.retention
    max_age = {"failed": cfg.failed_max_age_days * DAY, "denied": cfg.denied_max_age_days * DAY}
    kept: list[dict] = []
    dropped: list[dict] = []
    agents: dict[str, list] = {}
    for root, marker, suffix in ((hive.config.state_dir / "applied", ".git", ""),
                                 (hive.config.state_dir / "quarantine", "HEAD", ".git")):
        for path in sorted(root.iterdir()) if root.is_dir() else []:
            if path.is_symlink() or not (path / marker).exists() or not path.name.endswith(suffix):
                continue
            agents.setdefault(path.name[:len(path.name) - len(suffix)] if suffix else path.name, []).append(path)
    for agent, paths in sorted(agents.items()):
        # an approval's tags are split between applied/<n> and the quarantine: a terminal tag in either counts
        found = [(path, repos.open_repo(path)) for path in paths]
        all_dates = {}
        for _path, repo in found:
            all_dates.update(repos.tag_dates(repo))
        terminal = {name.split("/", 1)[1] for name in all_dates
                    if name.split("/", 1)[0] in repos.TERMINAL_TAG_STATES and "/" in name}
        for path, repo in found:
            with repos.repo_lock(path):
                dates = repos.tag_dates(repo)
                doomed = []
                for name, ts in sorted(dates.items()):
                    state, _, approval = name.partition("/")
                    reason = None
                    if state in max_age and now - ts > max_age[state]:
                        reason = f"older than {max_age[state] / DAY:g} days"
                    elif state in ("proposal", "approved", "building") and cfg.drop_intermediate_tags \
                            and approval in terminal:
                        reason = "its approval has a terminal tag"
                    entry = {"agent": agent, "tag": name,
                             "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))}
                    if reason:
                        dropped.append({**entry, "reason": reason})
                        doomed.append(name)
                    else:
                        kept.append(entry)
                if doomed and not dry_run:
                    repo.git.tag("-d", *doomed)
    if dropped and not dry_run:
        log.info("retention dropped %d tag(s)", len(dropped))
    if not dry_run:
        for agent, paths in sorted(agents.items()):
            for path in paths:
                if path.parent.name == "quarantine":
                    prune_quarantine(hive, agent, path)
    return {"kept": kept, "dropped": dropped, "dry_run": dry_run, "now": now}


# What git gc keeps anyway: an object written within this long is not pruned (``gc --prune=<date>``), so a proposal
# whose commit was fetched but not yet tagged (import_proposed, then review, then the tag) never loses it.
PRUNE_GRACE = "1.hour.ago"


def prune_quarantine(hive, agent: str, path) -> None:
    """Drop from the quarantine what nothing needs: every approval ever recorded for ``agent`` (its commit and
    the commit it was compared with) is held by a ref ``refs/hyperhive/keep/<id>[-base]`` first, so its diff can
    still be shown once retention dropped its tags; the manager's current branches are refs already."""
    with hive.store.read() as conn:
        rows = conn.execute(select(db.approvals.c.id, db.approvals.c.sha, db.approvals.c.base_sha)
                            .where(db.approvals.c.agent == agent)).all()
    with repos.repo_lock(path):
        repo = repos.open_repo(path)
        lines = [f"update refs/hyperhive/keep/{row.id}{suffix} {sha}\n"
                 for row in rows for suffix, sha in (("", row.sha), ("-base", row.base_sha))
                 if sha and repos.has_object(repo, sha)]
        if lines:
            with tempfile.TemporaryFile("w+") as f:
                f.writelines(lines)
                f.seek(0)
                repo.git.update_ref("--stdin", istream=f)
        # bare and with core.logAllRefUpdates unset, the quarantine keeps no reflog that would hold objects
        repo.git.gc("--quiet", f"--prune={PRUNE_GRACE}")
