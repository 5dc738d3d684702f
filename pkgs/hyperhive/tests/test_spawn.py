"""Spawning (one step and two steps), destroy, revive and purge, through the real service and its sockets."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import refused, wait_for
from standins.support import (AGENT_ENV, agent_nix, commit_change, git, needs_nix, standin_info, state_dir, tags,
                              wait_event, wait_status)


@pytest.fixture
def hive(start_hive):
    hp = start_hive(agents={"alice": {}}, env=AGENT_ENV)
    wait_for(lambda: standin_info(hp, "alice") and standin_info(hp, "manager"), message="agents running")
    return hp


def names(client) -> dict[str, str]:
    return {a["name"]: a["state"] for a in client.call("list_agents")["agents"]}


def test_one_step_spawn_from_the_template(hive):
    sd = state_dir(hive)
    manager = hive.client("manager")
    approval_id = manager.call("request_spawn", name="carol")["approval_id"]
    host = hive.host()
    pending = host.call("pending")["approvals"]
    assert [(a["id"], a["kind"], a["agent"], a["requested_by"]) for a in pending] == \
        [(approval_id, "spawn", "carol", "manager")]
    diff = host.call("approval", id=approval_id)["diff"]
    assert "+++ b/agent.nix" in diff and "hyperhive" in diff
    assert "carol" not in names(manager)
    assert f"#{approval_id}" in refused(lambda: manager.call("request_spawn", name="carol"), "conflict")

    assert "deployed/0" in hive.cli("approve", str(approval_id)).stdout
    applied = sd / "applied" / "carol"
    main = git(applied, "rev-parse", "main")
    assert tags(applied) == {"deployed/0": main}
    assert git(sd / "agents" / "carol" / "config", "rev-parse", "HEAD") == main
    assert (sd / "agents" / "carol" / "state").is_dir()
    assert [p.name for p in (sd / "agents" / "carol" / "state").iterdir()] == ["standin-agent.json"]
    info = wait_for(lambda: standin_info(hive, "carol"), message="carol running")
    assert info["deployed_sha"] == main and info["whoami"] == {"name": "carol", "role": "agent"}
    # its policy comes from its own agent.nix (the template's), read with nix-instantiate
    template = (sd / "agents" / "carol" / "config" / "agent.nix").read_text()
    nix = shutil.which("nix-instantiate") is not None
    if nix:
        assert info["agent_config"]["prompt"] and info["agent_config"]["prompt"].strip() in template
        assert info["agent_config"]["allowedRecipients"] == ["manager", "operator"]
    assert names(manager)["carol"] == "running"
    assert "deploy carol deployed/0" in git(sd / "meta", "log", "-1", "--format=%s")
    assert '"carol" = container' in (sd / "meta" / "flake.nix").read_text()
    event = wait_event(manager, lambda m: m["data"].get("approval_id") == approval_id)
    assert "carol was spawned" in event["body"] and event["data"]["tag"] == "deployed/0"
    carol = hive.client("carol")
    assert carol.call("whoami") == {"name": "carol", "role": "agent"}
    if nix:  # the policy from agent.nix is enforced by the broker
        refused(lambda: carol.call("send", to="alice", body="hi"), "forbidden")
    assert carol.call("send", to="manager", body="hello, I am new")["id"]


@needs_nix
def test_two_step_spawn_from_a_draft(hive):
    sd = state_dir(hive)
    manager = hive.client("manager")
    draft = manager.call("request_spawn_draft", name="dave")
    assert draft == {"name": "dave", "config_path": str(sd / "agents" / "dave" / "config"),
                     "state_path": str(sd / "agents" / "dave" / "state")}
    config = sd / "agents" / "dave" / "config"
    assert git(config, "log", "--format=%s") == "dave: initial config from templates/agent"
    assert (sd / "agents" / "dave" / "state").is_dir()
    overview = hive.host().call("agents_overview")
    assert [d["name"] for d in overview["drafts"]] == ["dave"]
    assert overview["drafts"][0]["head"] == git(config, "rev-parse", "HEAD")
    assert "dave" not in names(manager)  # no container, no socket yet
    assert not hive.config.agent_socket("dave").exists()
    refused(lambda: manager.call("request_spawn_draft", name="dave"), "conflict")
    result = hive.cli("destroy", "dave", check=False)  # nothing runs to destroy: the operator is told what can be done
    assert result.returncode != 0 and "a draft" in result.stderr and "hyperhive destroy dave --purge" in result.stderr

    sha = commit_change(hive, "dave", agent_nix("You test everything twice.", '[ "manager" "alice" ]'),
                        message="dave: a tester")
    approval_id = manager.call("request_spawn_commit", name="dave", commit=sha)["approval_id"]
    shown = hive.host().call("approval", id=approval_id)
    assert shown["kind"] == "spawn" and shown["sha"] == sha
    assert '+    prompt = "You test everything twice.";' in shown["diff"]
    # the proposal waits in the quarantine; no applied repo exists before the operator approves
    assert tags(sd / "quarantine" / "dave.git") == {f"proposal/{approval_id}": sha}
    assert not (sd / "applied" / "dave").exists()

    hive.cli("approve", str(approval_id))
    applied = sd / "applied" / "dave"
    t = tags(applied)
    assert t[f"deployed/{approval_id}"] == sha and git(applied, "rev-parse", "main") == sha
    info = wait_for(lambda: standin_info(hive, "dave"), message="dave running")
    assert info["deployed_sha"] == sha
    assert info["agent_config"]["prompt"] == "You test everything twice."
    assert info["agent_config"]["allowedRecipients"] == ["manager", "alice"]
    assert hive.host().call("agents_overview")["drafts"] == []
    assert names(manager)["dave"] == "running"
    assert hive.client("dave").call("send", to="alice", body="found a bug")["id"]

    # later changes to a spawned agent re-read its policy from agent.nix
    sha2 = commit_change(hive, "dave", agent_nix("Now you only talk to the manager."))
    approval2 = manager.call("request_apply_commit", agent="dave", commit=sha2)["approval_id"]
    hive.cli("approve", str(approval2))
    info = wait_for(lambda: (i := standin_info(hive, "dave")) and i["deployed_sha"] == sha2 and i,
                    message="dave on the new config")
    assert info["agent_config"]["allowedRecipients"] == ["manager", "operator"]
    refused(lambda: hive.client("dave").call("send", to="alice", body="still there?"), "forbidden")


@needs_nix
def test_a_broken_agent_nix_fails_the_spawn_and_keeps_the_draft(hive):
    sd = state_dir(hive)
    manager = hive.client("manager")
    manager.call("request_spawn_draft", name="erin")
    sha = commit_change(hive, "erin", "{ pkgs, ... }: { hyperhive.prompt = ; }\n")
    approval_id = manager.call("request_spawn_commit", name="erin", commit=sha)["approval_id"]
    result = hive.cli("approve", str(approval_id), check=False)
    assert result.returncode == 1
    approval = wait_status(hive.host(), approval_id)
    assert approval["status"] == "failed" and "agent.nix does not evaluate" in approval["error"]
    assert tags(sd / "applied" / "erin")[f"failed/{approval_id}"] == sha
    with pytest.raises(AssertionError):  # main is back to what it was: none
        git(sd / "applied" / "erin", "rev-parse", "--verify", "main")
    assert [d["name"] for d in hive.host().call("agents_overview")["drafts"]] == ["erin"]
    assert "erin" not in names(manager)


def test_destroy_revive_and_purge(hive):
    sd = state_dir(hive)
    host = hive.host()
    out = hive.cli("spawn", "fred").stdout
    assert "deployed/0" in out
    info = wait_for(lambda: standin_info(hive, "fred"), message="fred running")

    waiting = hive.client("manager").call("request_apply_commit", agent="fred",
                                          commit=commit_change(hive, "fred", agent_nix("soon gone")))["approval_id"]
    destroyed = hive.cli("destroy", "fred").stdout
    assert host.call("approval", id=waiting)["status"] == "denied"
    assert host.call("approval", id=waiting)["note"] == "fred was destroyed"
    assert destroyed.strip() == "fred: tombstone"
    with pytest.raises(ProcessLookupError):
        os.kill(info["pid"], 0)
    assert "fred" not in names(host)
    assert not hive.config.agent_socket("fred").exists()
    assert [t["name"] for t in host.call("agents_overview")["tombstones"]] == ["fred"]
    assert (sd / "agents" / "fred" / "config" / ".git").is_dir() and (sd / "applied" / "fred").is_dir()
    assert (sd / "agents" / "fred" / "state" / "standin-agent.json").exists()  # its state is kept
    assert '"fred" = container' not in (sd / "meta" / "flake.nix").read_text()
    manager = hive.client("manager")
    assert "revive" in refused(lambda: manager.call("request_apply_commit", agent="fred", commit="main"), "conflict")
    assert "revive" in refused(lambda: manager.call("request_spawn", name="fred"), "conflict")
    refused(lambda: manager.call("start", name="fred"), "conflict")

    revived = hive.cli("revive", "fred").stdout
    assert "approval #" in revived
    approval_id = host.call("pending")["approvals"][-1]["id"]
    assert host.call("approval", id=approval_id)["kind"] == "spawn"
    hive.cli("approve", str(approval_id))
    assert names(host)["fred"] == "running"
    assert host.call("agents_overview")["tombstones"] == []
    assert f"deployed/{approval_id}" in tags(sd / "applied" / "fred")
    wait_for(lambda: standin_info(hive, "fred")["pid"] != info["pid"], message="fred running again")

    assert hive.cli("destroy", "fred", "--purge").stdout.strip() == "fred: purged"
    assert not (sd / "agents" / "fred").exists() and not (sd / "applied" / "fred").exists()
    assert host.call("agents_overview")["tombstones"] == [] and "fred" not in names(host)
    freds = [a for a in host.call("pending", status="all")["approvals"] if a["agent"] == "fred"]
    assert freds  # the rows stay; what they changed cannot be shown any more, and says so
    for a in freds:
        shown = host.call("approval", id=a["id"])
        assert shown["flags"] == [] and ("purged" in shown["diff"] or not a["sha"]), shown
    assert not (sd / "agents" / "fred").exists() and not (sd / "applied" / "fred").exists()
    audit = hive.cli("pending", "--all", "--diff").stdout
    assert "UNKNOWN" not in audit and "fatal" not in audit, audit
    # the name is free again
    assert "deployed/0" in hive.cli("spawn", "fred").stdout


def test_a_purged_name_inherits_nothing_and_a_declared_one_is_never_purged(hive, hive_dir):
    """What waited for a purged agent (unread messages, reminders, questions) does not reach a new agent of its name;
    and a name declared in the config is never purged, even when a destroyed agent of that name is kept."""
    from conftest import write_config

    sd = state_dir(hive)
    host = hive.host()
    hive.cli("spawn", "gus")
    wait_for(lambda: standin_info(hive, "gus"), message="gus running")
    gus = hive.client("gus")
    question = gus.call("ask_operator", question="may I?")["id"]
    gus.call("remind", body="old reminder", in_seconds=3600)
    hive.cli("kill", "gus")
    host.call("send", to="gus", body="a secret for the old gus")
    hive.cli("destroy", "gus")
    # its question was cancelled at the destroy: an answer nobody would hear is refused, not lost
    status = {q["id"]: q["status"] for q in host.call("questions", status="all")["questions"]}
    assert status[question] == "cancelled"
    assert hive.cli("destroy", "gus", "--purge").stdout.strip() == "gus: purged"
    assert [r for r in host.call("reminders", agent="gus")["reminders"] if r["status"] == "pending"] == []
    import sqlite3

    with sqlite3.connect(f"file:{sd / 'hive.db'}?mode=ro", uri=True) as conn:  # nothing waits for a gus any more
        assert conn.execute("SELECT count(*) FROM messages WHERE recipient = 'gus' AND acked_at IS NULL").fetchone() \
            == (0,)
    hive.cli("spawn", "gus")
    wait_for(lambda: standin_info(hive, "gus"), message="the new gus running")
    bodies = [m["body"] for m in hive.client("gus").call("recv", wait_seconds=2, max=50)["messages"]]
    assert not any("secret" in b for b in bodies), bodies
    assert not any("secret" in m["body"] for m in host.call("inbox")["messages"])  # no answer quoting it

    hive.cli("destroy", "gus")  # a tombstone, and then the operator declares the name
    write_config(hive_dir, agents={"alice": {}, "gus": {}})
    wait_for(lambda: standin_info(hive, "gus"), message="the declared gus running")
    result = hive.cli("destroy", "gus", "--purge", check=False)
    assert result.returncode != 0 and "declared in the config" in result.stderr
    assert (sd / "agents" / "gus" / "config" / ".git").is_dir() and (sd / "applied" / "gus").is_dir()


def test_what_cannot_be_spawned_or_destroyed(hive):
    manager = hive.client("manager")
    for name, code in (("Bad!", "bad_request"), ("waytoolongname", "bad_request"), ("system", "bad_request"),
                       ("manager", "bad_request"), ("alice", "conflict")):
        refused(lambda: manager.call("request_spawn", name=name), code)
    assert "request_spawn_draft" in refused(
        lambda: manager.call("request_spawn_commit", name="nobody", commit="main"), "not_found")
    refused(lambda: hive.client("alice").call("request_spawn", name="gina"), "forbidden")
    refused(lambda: manager.call("destroy", name="alice"), "forbidden")  # the operator's
    result = hive.cli("destroy", "alice", check=False)
    assert result.returncode != 0 and "declared in the config" in result.stderr
    result = hive.cli("revive", "alice", check=False)
    assert result.returncode != 0 and "no destroyed agent" in result.stderr
    result = hive.cli("kill", "zed", check=False)
    assert result.returncode != 0 and 'unknown agent "zed"' in result.stderr


def test_agents_declared_or_removed_at_run_time(hive, hive_dir):
    from conftest import write_config

    sd = state_dir(hive)
    alice_pid = standin_info(hive, "alice")["pid"]
    write_config(hive_dir, agents={"alice": {"prompt": "a new prompt"}, "hank": {}})
    info = wait_for(lambda: standin_info(hive, "hank"), message="hank started after the config changed")
    assert info["deployed_sha"] == git(sd / "applied" / "hank", "rev-parse", "main")
    assert tags(sd / "applied" / "hank") == {"deployed/0": info["deployed_sha"]}
    assert '"hank" = container' in (sd / "meta" / "flake.nix").read_text()
    # alice restarts on her new policy
    alice = wait_for(lambda: (i := standin_info(hive, "alice")) and i["pid"] != alice_pid and i,
                     message="alice restarted")
    assert alice["agent_config"]["prompt"] == "a new prompt"

    question = hive.client("hank").call("ask_operator", question="still there?")["id"]
    write_config(hive_dir, agents={"alice": {"prompt": "a new prompt"}})
    wait_for(lambda: "hank" not in names(hive.host()), message="hank gone from the list")
    result = hive.cli("answer", str(question), "yes", check=False)  # nobody would hear it: refused, not lost
    assert result.returncode != 0 and "no longer an agent" in result.stderr and "cancel" in result.stderr
    with pytest.raises(ProcessLookupError):
        wait_for(lambda: os.kill(info["pid"], 0) and False, timeout=5)
    wait_for(lambda: '"hank" = container' not in (sd / "meta" / "flake.nix").read_text(),
             message="hank gone from the meta flake")
    assert (sd / "applied" / "hank" / ".git").is_dir()  # its history stays

    # A new "hank" would start from the removed one's deployed config (with the policy hive.toml gave it, here
    # unrestricted), not from the template its approval names: refused, until its leftovers are purged.
    manager = hive.client("manager")
    message = refused(lambda: manager.call("request_spawn", name="hank"), "conflict")
    assert "removed from the config" in message and "hyperhive destroy hank --purge" in message
    refused(lambda: manager.call("request_spawn_draft", name="hank"), "conflict")
    assert hive.cli("destroy", "hank", "--purge").stdout.strip() == "hank: purged"
    assert not (sd / "applied" / "hank").exists() and not (sd / "agents" / "hank").exists()
    assert "deployed/0" in hive.cli("spawn", "hank").stdout
    hank = wait_for(lambda: standin_info(hive, "hank"), message="the new hank running")
    assert hank["agent_config"]["allowedRecipients"] == ["manager", "operator"]  # the template's policy


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_name_no_longer_declared_but_spawned_keeps_running(hive, hive_dir):
    """Declaring a spawned agent's name and then removing it from the config leaves an agent of the hive: the
    reload stops only what is no longer an agent."""
    from conftest import write_config

    hive.cli("spawn", "carol")
    wait_for(lambda: standin_info(hive, "carol"), message="carol running")
    reloads = hive.log().count("config reloaded")
    write_config(hive_dir, agents={"alice": {}, "carol": {}})
    wait_for(lambda: hive.log().count("config reloaded") > reloads, timeout=15, message="carol declared")
    reloads = hive.log().count("config reloaded")
    write_config(hive_dir, agents={"alice": {}})
    wait_for(lambda: hive.log().count("config reloaded") > reloads, timeout=15, message="carol no longer declared")
    assert names(hive.host())["carol"] == "running"
    wait_for(lambda: (i := standin_info(hive, "carol")) and _alive(i["pid"]), message="carol alive")
    assert hive.client("carol").call("whoami") == {"name": "carol", "role": "agent"}


def test_a_denied_spawn_creates_nothing(hive):
    sd = state_dir(hive)
    manager = hive.client("manager")
    approval_id = manager.call("request_spawn", name="ivy")["approval_id"]
    hive.cli("deny", str(approval_id), "--note", "we have enough agents")
    approval = hive.host().call("approval", id=approval_id)
    assert approval["status"] == "denied" and approval["tag"] is None
    assert not (sd / "agents" / "ivy").exists() and not (sd / "applied" / "ivy").exists()
    assert "ivy" not in names(manager)
    event = wait_event(manager, lambda m: m["data"].get("approval_id") == approval_id)
    assert "we have enough agents" in event["body"] and event["data"]["kind"] == "spawn"


def test_a_restarted_service_runs_the_same_agents_and_commits_nothing_new(hive):
    from conftest import HiveProcess

    sd = state_dir(hive)
    hive.cli("spawn", "jay")
    hive.client("manager").call("request_spawn_draft", name="kim")
    first = wait_for(lambda: standin_info(hive, "jay"), message="jay running")
    meta_head = git(sd / "meta", "rev-parse", "HEAD")
    hive.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)  # the service stops its agents

    again = HiveProcess(hive.config_path, env=hive.env).start()
    try:
        info = wait_for(lambda: (i := standin_info(again, "jay")) and i["pid"] != first["pid"] and i,
                        message="jay started again")
        assert info["deployed_sha"] == first["deployed_sha"]
        assert names(again.host()) == {"manager": "running", "alice": "running", "jay": "running"}
        assert [d["name"] for d in again.host().call("agents_overview")["drafts"]] == ["kim"]
        assert git(sd / "meta", "rev-parse", "HEAD") == meta_head
    finally:
        again.stop()


def test_a_killed_agent_stays_stopped_across_restarts_of_the_service_until_it_is_started(hive):
    """A kill is the operator's (or the manager's) brake on an agent: a restart of the service (an upgrade, a
    reboot) must not quietly run the agent again. It stays stopped, and says so, until someone starts it."""
    from conftest import HiveProcess

    hive.cli("spawn", "jay")
    wait_for(lambda: standin_info(hive, "jay"), message="jay running")
    hive.cli("kill", "alice")
    hive.client("manager").call("kill", name="jay")
    listing = hive.cli("list").stdout
    assert "KILLED by operator" in listing and "KILLED by manager" in listing, listing
    hive.stop()

    again = HiveProcess(hive.config_path, env=hive.env).start()
    try:
        assert names(again.host()) == {"manager": "running", "alice": "stopped", "jay": "stopped"}
        assert "alice stays stopped: operator killed it" in again.log()
        assert "jay stays stopped: manager killed it" in again.log()
        rows = {a["name"]: a for a in again.host().call("agents_overview")["agents"]}
        assert rows["alice"]["killed_by"] == "operator" and "killed_by" not in rows["manager"]
        waiting = again.host().call("send", to="alice", body="are you there?")["id"]  # it waits for her
        again.cli("start", "alice")
        wait_for(lambda: standin_info(again, "alice") and names(again.host())["alice"] == "running",
                 message="alice started again")
        assert "killed_by" not in {a["name"]: a for a in again.host().call("agents_overview")["agents"]}["alice"]
        got = again.client("alice").call("recv", max=10)["messages"]
        assert [m["body"] for m in got if m["id"] == waiting] == ["are you there?"]  # kept while she was stopped
    finally:
        again.stop()

    third = HiveProcess(hive.config_path, env=hive.env).start()
    try:  # started again, she is no longer held; jay, never started, still is
        assert names(third.host()) == {"manager": "running", "alice": "running", "jay": "stopped"}
    finally:
        third.stop()


def test_a_draft_is_never_seeded_through_links_the_manager_planted(hive, tmp_path):
    """The manager writes agents/: whatever it planted where a draft's repo and state go, the service writes,
    chmods and runs git only in directories it made itself."""
    sd = state_dir(hive)
    agents = sd / "agents"
    manager = hive.client("manager")
    victim = tmp_path / "victim"
    victim.write_text("a 0600 file of the host\n")
    victim.chmod(0o600)
    outside = tmp_path / "outside"
    outside.mkdir()

    (agents / "eve").mkdir()
    (agents / "eve" / "config").symlink_to(outside)  # the whole repo linked elsewhere
    assert "symbolic link" in refused(lambda: manager.call("request_spawn_draft", name="eve"), "forbidden")
    (agents / "gus").mkdir()
    (agents / "gus" / "state").symlink_to(outside)  # the state directory linked elsewhere
    assert "symbolic link" in refused(lambda: manager.call("request_spawn_draft", name="gus"), "forbidden")
    (agents / "hal").symlink_to(outside)  # the agent's directory itself
    assert "symbolic link" in refused(lambda: manager.call("request_spawn_draft", name="hal"), "forbidden")
    assert list(outside.iterdir()) == []  # no git init, no template, no state made there

    # a real directory whose files link to a host file: the repo is made fresh, the host file untouched
    config = agents / "fay" / "config"
    config.mkdir(parents=True)
    for name in ("agent.nix", "flake.nix"):
        (config / name).symlink_to(victim)
    assert manager.call("request_spawn_draft", name="fay")["name"] == "fay"
    assert victim.read_text() == "a 0600 file of the host\n" and victim.stat().st_mode & 0o777 == 0o600
    assert not (config / "agent.nix").is_symlink() and "hyperhive" in (config / "agent.nix").read_text()
    assert git(config, "log", "--format=%s") == "fay: initial config from templates/agent"
    assert [d["name"] for d in hive.host().call("agents_overview")["drafts"]] == ["fay"]


def test_an_agent_log_linked_elsewhere_is_replaced_not_written_through(hive, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("the host's file\n")
    log = state_dir(hive) / "agents" / "alice" / "agent.log"
    log.unlink(missing_ok=True)
    log.symlink_to(victim)
    message = refused(lambda: hive.client("manager").call("get_logs", agent="alice"), "forbidden")
    assert "the host's file" not in message  # the manager's log reader does not read through it either
    pid = standin_info(hive, "alice")["pid"]
    assert hive.client("manager").call("restart", name="alice")["state"] == "running"
    wait_for(lambda: standin_info(hive, "alice")["pid"] != pid, message="alice restarted")
    assert victim.read_text() == "the host's file\n"
    assert not log.is_symlink() and log.is_file()


def test_a_repo_a_crash_left_without_a_commit_is_made_again_and_stops_no_other_seed(start_hive, hive_dir):
    """kill -9 while a reload seeds new agents leaves agents/<n>/config/.git without a commit: the next start
    makes that repo again, and one agent whose repos cannot be made does not keep the others from theirs."""
    sd = hive_dir / "state"
    half = sd / "agents" / "ann" / "config"
    half.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(half)], check=True)  # what the interrupted seed left
    (sd / "agents" / "bea").mkdir(parents=True)
    (sd / "agents" / "bea" / "config").symlink_to(hive_dir)  # and an agent that cannot be seeded at all
    hp = start_hive(agents={"ann": {}, "bea": {}, "cy": {}}, env=AGENT_ENV)
    for name in ("ann", "cy", "manager"):
        applied = sd / "applied" / name
        assert tags(applied) == {"deployed/0": git(applied, "rev-parse", "main")}, name
        assert git(sd / "agents" / name / "config", "rev-parse", "HEAD") == git(applied, "rev-parse", "main")
    assert list((sd / "agents" / "ann").glob("config.incomplete-*"))  # kept aside, not deleted
    assert "bea" in hp.log() and "symbolic link" in hp.log()
    assert not (hive_dir / ".git").exists() and not (hive_dir / "agent.nix").exists()
    # bea is deployed from the template all the same; only its proposed repo waits for the link to go
    assert "deployed/0" in tags(sd / "applied" / "bea")
    assert "agent-bea" in (sd / "meta" / "flake.lock").read_text()
    wait_for(lambda: standin_info(hp, "cy"), message="cy running")


@needs_nix
def test_a_deploy_cut_short_leaves_a_spawned_agent_on_the_policy_it_runs_with(start_hive, hive_dir):
    """kill -9 of the service while a spawned agent's new config is being deployed (its new policy already
    stored): at the next start the approval is failed, main is put back, and the broker enforces the policy of
    what is applied again, not the one that never got deployed."""
    import sqlite3

    from conftest import HiveProcess

    stubborn = hive_dir / "stubborn"
    env = {**AGENT_ENV, "HYPERHIVE_STANDIN_STUBBORN": str(stubborn), "HYPERHIVE_AGENT_STOP_SECONDS": "120"}
    hp = start_hive(agents={"alice": {}}, env=env)
    sd = state_dir(hp)
    manager, host = hp.client("manager"), hp.host()
    manager.call("request_spawn_draft", name="dan")
    first = commit_change(hp, "dan", agent_nix("dan", '[ "manager" "operator" ]'))
    spawned = manager.call("request_spawn_commit", name="dan", commit=first)["approval_id"]
    host.call("approve", id=spawned)
    assert wait_status(host, spawned)["status"] == "deployed"
    wait_for(lambda: standin_info(hp, "dan"), message="dan running")
    refused(lambda: hp.client("dan").call("send", to="alice", body="hi"), "forbidden")

    wider = commit_change(hp, "dan", agent_nix("dan", '[ "manager" "operator" "alice" ]'))
    approval_id = manager.call("request_apply_commit", agent="dan", commit=wider)["approval_id"]
    stubborn.touch()  # dan's process takes its whole grace to stop: the deploy is caught mid-way

    def stored_policy():
        with sqlite3.connect(f"file:{sd / 'hive.db'}?mode=ro", uri=True) as db:
            return db.execute("SELECT policy FROM agents WHERE name = 'dan'").fetchone()[0] or ""

    host.call("approve", id=approval_id)
    wait_for(lambda: "alice" in stored_policy(), timeout=60, message="the new policy stored mid-deploy")
    assert git(sd / "applied" / "dan", "rev-parse", "main") == wider
    hp.kill9()
    stubborn.unlink()

    again = HiveProcess(hp.config_path, env=hp.env).start()
    try:
        approval = again.host().call("approval", id=approval_id)
        assert approval["status"] == "failed" and "interrupted" in approval["error"]
        assert git(sd / "applied" / "dan", "rev-parse", "main") == first
        assert "alice" not in stored_policy()
        wait_for(lambda: (i := standin_info(again, "dan")) and i["deployed_sha"] == first and i["pid"] != 0,
                 message="dan running on its deployed config")
        assert "alice" in refused(lambda: again.client("dan").call("send", to="alice", body="hi"), "forbidden")
    finally:
        again.stop()


def test_a_spawn_deploys_the_template_it_showed_not_a_repo_planted_for_the_name(hive):
    """The operator approves a one-step spawn on the template's diff: a repo the manager prepared beforehand at
    agents/<name>/config must not become the new agent's deployed/0."""
    sd = state_dir(hive)
    planted = sd / "agents" / "ivy" / "config"
    planted.mkdir(parents=True)
    git(planted, "init", "-q", "-b", "main")
    (planted / "agent.nix").write_text(agent_nix("planted before the spawn", '[ "alice" "manager" "operator" ]'))
    (planted / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    git(planted, "add", "-A")
    git(planted, "commit", "-q", "-m", "planted")
    planted_sha = git(planted, "rev-parse", "HEAD")
    manager = hive.client("manager")
    approval_id = manager.call("request_spawn", name="ivy")["approval_id"]
    shown = hive.host().call("approval", id=approval_id)["diff"]
    assert "planted before the spawn" not in shown
    hive.cli("approve", str(approval_id))
    applied = sd / "applied" / "ivy"
    deployed = git(applied, "rev-parse", "deployed/0")
    assert deployed != planted_sha
    assert "planted before the spawn" not in git(applied, "show", "deployed/0:agent.nix")
    assert git(planted, "rev-parse", "HEAD") == planted_sha  # the manager's repo is left as it was


def test_a_name_whose_socket_path_would_not_fit_is_refused_at_the_spawn(start_broker, hive_dir):
    """A runDir with room for the declared agents' sockets but not for a 9-character name: spawning that name is
    refused, naming runDir, instead of an agent whose socket can never be made."""
    run_dir = hive_dir / ("r" * (83 - len(str(hive_dir)) - 1))
    assert len(str(run_dir)) == 83
    hive = start_broker(runDir=str(run_dir))
    message = refused(lambda: hive.host().call("spawn", name="abcdefghi"), "bad_request")
    assert f"{run_dir} is too long for the socket of abcdefghi" in message and "at most 81 bytes" in message
    message = refused(lambda: hive.client("manager").call("request_spawn", name="abcdefghi"), "bad_request")
    assert "too long for the socket of abcdefghi" in message
    hive.host().call("spawn", name="carol")  # a shorter name fits
    assert wait_for(lambda: (hive.config.agent_socket("carol").exists()
                             and hive.client("carol").call("whoami")["name"] == "carol"), message="carol's socket")
