"""Tag retention in the applied repos and the quarantine (where ``proposal/`` and ``denied/`` tags live): keep
every ``deployed/*``; drop ``failed/*`` and ``denied/*`` older than their configured age; drop ``proposal/``,
``approved/`` and ``building/`` once their approval has a terminal tag. The approvals table keeps every row."""

from __future__ import annotations

import logging
import time

from . import repos

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
    return {"kept": kept, "dropped": dropped, "dry_run": dry_run, "now": now}
