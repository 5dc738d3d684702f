"""Tag retention with a controllable clock (``now`` on the ``retention`` op), on tags made by real approvals."""

from __future__ import annotations

import time

from conftest import wait_for
from standins.support import (AGENT_ENV, agent_nix, commit_change, needs_nix, standin_info, state_dir, tags,
                              wait_status)

def all_tags(sd, agent: str) -> dict[str, str]:
    """An agent's tags: approved/, building/, deployed/, failed/ in applied/, proposal/ and denied/ in the
    quarantine."""
    out = {}
    for path in (sd / "applied" / agent, sd / "quarantine" / f"{agent}.git"):
        if path.exists():
            out.update(tags(path))
    return out


DAY = 86400


@needs_nix  # the failed tag comes from a draft whose agent.nix does not evaluate
def test_retention_keeps_deployed_and_drops_by_age_and_by_terminal_sibling(start_hive):
    hive = start_hive(agents={"alice": {}}, env=AGENT_ENV,
                      retention={"failedMaxAgeDays": 30, "deniedMaxAgeDays": 14, "dropIntermediateTags": True})
    wait_for(lambda: standin_info(hive, "alice"), message="alice running")
    manager = hive.client("manager")
    host = hive.host()
    sd = state_dir(hive)

    deployed = manager.call("request_apply_commit", agent="alice",
                            commit=commit_change(hive, "alice", agent_nix("one")))["approval_id"]
    host.call("approve", id=deployed)
    wait_status(host, deployed)
    denied = manager.call("request_apply_commit", agent="alice",
                          commit=commit_change(hive, "alice", agent_nix("two")))["approval_id"]
    host.call("deny", id=denied, note="no")
    manager.call("request_spawn_draft", name="erin")
    failed = manager.call("request_spawn_commit", name="erin",
                          commit=commit_change(hive, "erin", "{ broken"))["approval_id"]
    host.call("approve", id=failed)
    assert wait_status(host, failed)["status"] == "failed"
    waiting = manager.call("request_apply_commit", agent="alice",
                           commit=commit_change(hive, "alice", agent_nix("three")))["approval_id"]
    before = {**{f"alice {t}": s for t, s in all_tags(sd, "alice").items()},
              **{f"erin {t}": s for t, s in all_tags(sd, "erin").items()}}
    intermediate = {f"alice proposal/{deployed}", f"alice approved/{deployed}", f"alice building/{deployed}",
                    f"alice proposal/{denied}", f"erin proposal/{failed}", f"erin approved/{failed}",
                    f"erin building/{failed}"}
    assert intermediate <= set(before)

    def run(days, dry_run):
        result = host.call("retention", now=time.time() + days * DAY, dry_run=dry_run)
        return ({f"{t['agent']} {t['tag']}" for t in result["kept"]},
                {f"{t['agent']} {t['tag']}": t["reason"] for t in result["dropped"]})

    # a dry run a day later: only the intermediate tags of finished approvals would go; nothing is deleted
    kept, dropped = run(1, dry_run=True)
    assert set(dropped) == intermediate
    assert all(r == "its approval has a terminal tag" for r in dropped.values())
    assert {f"alice deployed/{deployed}", "alice deployed/0", f"alice denied/{denied}", f"erin failed/{failed}",
            f"alice proposal/{waiting}"} <= kept
    assert len(all_tags(sd, "alice")) + len(all_tags(sd, "erin")) == len(before)

    # 20 days on: denied (14 days) goes, failed (30 days) stays
    kept, dropped = run(20, dry_run=False)
    assert set(dropped) == intermediate | {f"alice denied/{denied}"}
    assert dropped[f"alice denied/{denied}"] == "older than 14 days"
    assert f"erin failed/{failed}" in kept

    # 40 days on: failed goes too; every deployed tag and the pending proposal stay
    kept, dropped = run(40, dry_run=False)
    assert set(dropped) == {f"erin failed/{failed}"}
    alice = all_tags(sd, "alice")
    assert set(alice) == {"deployed/0", f"deployed/{deployed}", f"proposal/{waiting}"}
    assert all_tags(sd, "erin") == {}
    # the approvals table keeps every row
    statuses = {a["id"]: a["status"] for a in host.call("pending", status="all")["approvals"]}
    assert statuses == {deployed: "deployed", denied: "denied", failed: "failed", waiting: "pending"}

    # the CLI prints what it kept and dropped (real clock: nothing left to drop)
    out = hive.cli("retention", "--dry-run").stdout
    assert f"kept       alice      deployed/{deployed}" in out and "4 kept, 0 would drop" in out  # alice 3, manager 1


def test_retention_collects_the_quarantine_but_keeps_what_every_approval_shows(start_hive):
    """Branches the manager makes and deletes were fetched into the quarantine on every view and never collected
    (232K -> 58M). Retention collects it, and every recorded approval still shows its diff: a denied one whose
    commit only the quarantine held (and whose tag retention dropped) and a pending one."""
    import os
    import subprocess

    from conftest import refused
    from standins.support import git

    hive = start_hive(env=AGENT_ENV)
    wait_for(lambda: standin_info(hive, "bob"), message="bob running")
    manager, host, sd = hive.client("manager"), hive.host(), state_dir(hive)
    config = sd / "agents" / "bob" / "config"
    denied = manager.call("request_apply_commit", agent="bob",
                          commit=commit_change(hive, "bob", agent_nix("denied then forgotten")))["approval_id"]
    host.call("deny", id=denied, note="no")
    git(config, "reset", "-q", "--hard", "HEAD~1")  # only the quarantine holds the denied commit now
    pending = manager.call("request_apply_commit", agent="bob",
                           commit=commit_change(hive, "bob", agent_nix("still waiting")))["approval_id"]
    git(config, "checkout", "-q", "-b", "junk")
    (config / "junk.bin").write_bytes(os.urandom(20 << 20))
    git(config, "add", "-A")
    git(config, "commit", "-q", "-m", "20 MB the manager deletes again")
    git(config, "checkout", "-q", "main")
    quarantine = sd / "quarantine" / "bob.git"
    assert host.call("repo_log", agent="bob", rev="junk")["commits"]  # an operator's view copies it in
    git(config, "branch", "-q", "-D", "junk")
    refused(lambda: host.call("repo_log", agent="bob", rev="junk"), "not_found")

    def size():
        return sum(f.stat().st_size for f in quarantine.rglob("*") if f.is_file())

    assert size() > 20 << 20
    old = time.time() - 2 * 3600  # (git gc keeps what was written in the last hour: a fetch not yet tagged)
    for f in quarantine.rglob("*"):
        os.utime(f, (old, old))
    host.call("retention", now=time.time() + 400 * DAY)
    assert f"denied/{denied}" not in tags(quarantine)
    assert size() < 2 << 20, f"the quarantine is {size() >> 20} MiB after retention"
    assert '+    prompt = "denied then forgotten";' in host.call("approval", id=denied)["diff"]
    assert '+    prompt = "still waiting";' in host.call("approval", id=pending)["diff"]
    subprocess.run(["git", "--git-dir", str(quarantine), "fsck", "--no-dangling", "--connectivity-only"],
                   check=True)
