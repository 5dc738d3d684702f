"""The approval lifecycle on real git repos, through the real service: the manager proposes on its socket, the
operator approves or denies with the CLI, and the local backend restarts the agent on the new commit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest

from conftest import refused, wait_for
from hyperhive.errors import HiveError
from standins.support import (AGENT_ENV, agent_nix, commit_change, events, git, needs_nix, standin_info, state_dir,
                              tag_message, tags, two_changes_from_deployed, wait_event, wait_status)


@pytest.fixture
def hive(start_hive):
    hp = start_hive(env=AGENT_ENV)
    wait_for(lambda: all(standin_info(hp, n) for n in ("manager", "alice", "bob")), message="agents running")
    return hp


def test_every_agent_is_seeded_and_runs_its_seed(hive):
    sd = state_dir(hive)
    for name in ("manager", "alice", "bob"):
        applied = sd / "applied" / name
        main = git(applied, "rev-parse", "main")
        assert tags(applied) == {"deployed/0": main}
        assert git(sd / "agents" / name / "config", "remote", "get-url", "applied") == str(applied)
        info = standin_info(hive, name)
        assert info["deployed_sha"] == main
        assert info["whoami"]["name"] == name
        assert info["agent_config"]["name"] == name and info["agent_config"]["manager"] == "manager"
    assert (sd / "manager" / "state").is_dir() and (sd / "agents" / "alice" / "state").is_dir()
    # a declared agent's config repo sets none of its policy: the config gives it, now and after it changes
    # (test_nix.py::test_the_meta_flake_gives_the_module_systems_policy_and_the_hosts_nixpkgs evaluates that)
    for name in ("alice", "manager"):
        seeded = (sd / "agents" / name / "config" / "agent.nix").read_text()
        assert "hyperhive = { };" in seeded and "declared in the hive's config" in seeded, seeded
        assert "allowedRecipients =" not in seeded and "bash.allow =" not in seeded
    assert (sd / "agents" / "alice" / "config" / "flake.nix").exists()
    log = git(sd / "meta", "log", "--format=%s")
    for name in ("manager", "alice", "bob"):
        assert f"deploy {name} deployed/0 " in log
    flake = (sd / "meta" / "flake.nix").read_text()
    assert 'agent-alice.url = "git+file://' in flake and '"alice" = container' in flake
    lock = json.loads((sd / "meta" / "flake.lock").read_text())
    assert lock["nodes"]["agent-bob"]["locked"]["rev"] == git(sd / "applied" / "bob", "rev-parse", "main")
    if shutil.which("nix-instantiate"):
        parsed = subprocess.run(["nix-instantiate", "--parse", str(sd / "meta" / "flake.nix")],
                                capture_output=True, text=True)
        assert parsed.returncode == 0, parsed.stderr
    policy = json.loads((sd / "meta" / "policy" / "alice.json").read_text())
    assert policy["allowedRecipients"] == ["bob", "manager", "operator"] and policy["role"] == "agent"


def test_approve_deploys_tags_commits_meta_and_restarts_the_agent(hive):
    sd = state_dir(hive)
    manager = hive.client("manager")
    alice = hive.client("alice")
    before = standin_info(hive, "alice")
    seed = before["deployed_sha"]
    sha = commit_change(hive, "alice", agent_nix("You write the docs, carefully."), message="alice: docs prompt")

    approval_id = manager.call("request_apply_commit", agent="alice", commit="main")["approval_id"]
    pending = hive.cli("pending").stdout
    assert f"#{approval_id}" in pending and "apply alice main" in pending and sha[:12] in pending
    shown = hive.host().call("approval", id=approval_id)
    assert shown["ref"] == "main" and shown["sha"] == sha and shown["base_sha"] == seed
    assert "+    prompt = \"You write the docs, carefully.\";" in shown["diff"]
    # the proposal waits in the quarantine (mounted nowhere); applied/ has none of it until it is approved
    assert tags(sd / "quarantine" / "alice.git")[f"proposal/{approval_id}"] == sha
    assert subprocess.run(["git", "-C", str(sd / "applied" / "alice"), "cat-file", "-e", sha]).returncode != 0

    out = hive.cli("approve", str(approval_id)).stdout
    assert "deployed" in out and f"deployed/{approval_id}" in out
    applied = sd / "applied" / "alice"
    t = tags(applied)
    for state in ("approved", "building", "deployed"):
        assert t[f"{state}/{approval_id}"] == sha, state
    assert git(applied, "rev-parse", "main") == sha
    assert git(sd / "meta", "log", "-1", "--format=%s") == f"deploy alice deployed/{approval_id} {sha[:12]}"
    lock = json.loads((sd / "meta" / "flake.lock").read_text())
    assert lock["nodes"]["agent-alice"]["locked"]["rev"] == sha

    info = wait_for(lambda: (i := standin_info(hive, "alice")) and i["deployed_sha"] == sha and i,
                    message="alice restarted on the new commit")
    assert info["pid"] != before["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(before["pid"], 0)

    for client in (manager, alice):
        event = wait_event(client, lambda m: m["kind"] == "event" and m["data"].get("approval_id") == approval_id)
        assert event["from"] == "system"
        assert event["data"]["status"] == "deployed" and event["data"]["sha"] == sha
        assert event["data"]["tag"] == f"deployed/{approval_id}"
    assert hive.cli("pending").stdout.strip() == "nothing pending"
    overview = {a["name"]: a for a in hive.host().call("agents_overview")["agents"]}
    assert overview["alice"]["deployed_tag"] == f"deployed/{approval_id}"
    assert overview["alice"]["deployed_sha"] == sha and overview["alice"]["stale"] is False
    assert overview["bob"]["deployed_tag"] == "deployed/0"


def test_deny_tags_the_note_and_tells_the_manager(hive):
    sd = state_dir(hive)
    manager = hive.client("manager")
    sha = commit_change(hive, "bob", agent_nix("Do whatever."))
    approval_id = manager.call("request_apply_commit", agent="bob", commit=sha)["approval_id"]
    assert hive.host().call("agents_overview")["agents"][2]["stale"] is True
    assert '+    prompt = "Do whatever.";' in hive.cli("pending", "--diff").stdout

    out = hive.cli("deny", str(approval_id), "--note", "too vague: say what bob maintains").stdout
    assert "denied" in out
    applied = sd / "applied" / "bob"
    quarantine = sd / "quarantine" / "bob.git"
    assert tags(quarantine)[f"denied/{approval_id}"] == sha
    assert tag_message(quarantine, f"denied/{approval_id}").strip() == "too vague: say what bob maintains"
    assert git(applied, "rev-parse", "main") != sha
    # nothing of the denied commit is in applied/ (which the manager mounts)
    assert subprocess.run(["git", "-C", str(applied), "cat-file", "-e", sha]).returncode != 0
    repo_tags = hive.host().call("repo_tags", agent="bob")["tags"]
    assert [t["name"] for t in repo_tags["denied"]] == [f"denied/{approval_id}"]
    event = wait_event(manager, lambda m: m["data"].get("approval_id") == approval_id)
    assert event["data"]["status"] == "denied" and event["data"]["note"] == "too vague: say what bob maintains"
    assert "too vague" in event["body"]

    again = hive.cli("approve", str(approval_id), check=False)
    assert again.returncode != 0 and "conflict" in again.stderr and "denied" in again.stderr
    missing = hive.cli("deny", "999", "--note", "x", check=False)
    assert missing.returncode != 0 and "no approval #999" in missing.stderr
    no_note = hive.cli("deny", str(approval_id), check=False)
    assert no_note.returncode != 0 and "--note" in no_note.stderr


def test_refusals_name_what_was_wrong(hive):
    manager = hive.client("manager")
    alice = hive.client("alice")
    host = hive.host()
    unknown = "0123456789abcdef0123456789abcdef01234567"
    assert "not in the proposed repo of alice" in refused(
        lambda: manager.call("request_apply_commit", agent="alice", commit=unknown), "not_found")
    # a commit that exists, but in another agent's repo
    bob_sha = commit_change(hive, "bob", agent_nix("bob only"))
    refused(lambda: manager.call("request_apply_commit", agent="alice", commit=bob_sha), "not_found")
    refused(lambda: manager.call("request_apply_commit", agent="alice", commit="--upload-pack=touch /tmp/x"),
            "bad_request")
    assert "zed" in refused(lambda: manager.call("request_apply_commit", agent="zed", commit="main"), "not_found")
    assert "commit" in refused(lambda: manager.call("request_apply_commit", agent="alice"), "bad_request")

    # no agent proposes, and no agent (not even the manager) approves
    refused(lambda: alice.call("request_apply_commit", agent="alice", commit="main"), "forbidden")
    approval_id = manager.call("request_apply_commit", agent="bob", commit=bob_sha)["approval_id"]
    for client in (alice, manager):
        for op in ("approve", "deny"):
            refused(lambda: client.call(op, id=approval_id), "forbidden")
    assert host.call("approval", id=approval_id)["status"] == "pending"
    assert host.call("pending")["approvals"][0]["id"] == approval_id


def test_two_approvals_for_one_agent_in_a_row(hive):
    sd = state_dir(hive)
    manager = hive.client("manager")
    first = commit_change(hive, "alice", agent_nix("first"), message="first")
    second = commit_change(hive, "alice", agent_nix("second"), message="second")
    id1 = manager.call("request_apply_commit", agent="alice", commit=first)["approval_id"]
    id2 = manager.call("request_apply_commit", agent="alice", commit=second)["approval_id"]
    host = hive.host()
    host.call("approve", id=id1)
    host.call("approve", id=id2)
    a1 = wait_status(host, id1)
    a2 = wait_status(host, id2)
    assert (a1["status"], a2["status"]) == ("deployed", "deployed")
    assert a2["base_sha"] == first
    applied = sd / "applied" / "alice"
    assert git(applied, "rev-parse", "main") == second
    t = tags(applied)
    assert t[f"deployed/{id1}"] == first and t[f"deployed/{id2}"] == second
    log = git(sd / "meta", "log", "-2", "--format=%s").splitlines()
    assert log == [f"deploy alice deployed/{id2} {second[:12]}", f"deploy alice deployed/{id1} {first[:12]}"]
    wait_for(lambda: standin_info(hive, "alice")["deployed_sha"] == second, message="alice on the second commit")
    # the deployed diff is the change from what it replaced
    assert '-    prompt = "first";' in a2["diff"] and '+    prompt = "second";' in a2["diff"]
    listed = hive.cli("pending", "--all").stdout
    assert f"#{id1}" in listed and f"#{id2}" in listed


def test_manager_lifecycle_ops_and_crash_report(hive):
    manager = hive.client("manager")
    assert "itself" in refused(lambda: manager.call("kill", name="manager"), "forbidden")
    refused(lambda: manager.call("update", name="manager"), "forbidden")
    refused(lambda: hive.client("alice").call("kill", name="bob"), "forbidden")

    pid = standin_info(hive, "bob")["pid"]
    assert manager.call("kill", name="bob") == {"name": "bob", "state": "stopped"}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert {a["name"]: a["state"] for a in manager.call("list_agents")["agents"]}["bob"] == "stopped"
    assert manager.call("start", name="bob")["state"] == "running"
    wait_for(lambda: standin_info(hive, "bob")["pid"] != pid, message="bob started again")
    pid = standin_info(hive, "bob")["pid"]
    assert manager.call("restart", name="bob")["state"] == "running"
    wait_for(lambda: standin_info(hive, "bob")["pid"] != pid, message="bob restarted")
    assert manager.call("update", name="bob")["state"] == "running"
    bodies = [m["body"] for m in events(manager)]
    assert any("bob was killed by manager" in b for b in bodies)
    assert any("bob was restarted by manager" in b for b in bodies)
    assert not any("crashed" in b for b in bodies)  # asked to stop: not a crash

    # a process that dies without being asked is a crash, reported within seconds
    os.kill(standin_info(hive, "alice")["pid"], signal.SIGKILL)
    event = wait_event(manager, lambda m: m["data"].get("event") == "crashed", timeout=5)
    assert event["data"]["agent"] == "alice" and "alice crashed" in event["body"] and "signal 9" in event["body"]
    assert {a["name"]: a["state"] for a in manager.call("list_agents")["agents"]}["alice"] == "crashed"
    assert hive.cli("start", "alice").stdout.strip() == "alice: running"


@needs_nix
def test_a_config_that_does_not_parse_fails_and_the_agent_keeps_running(hive):
    sd = state_dir(hive)
    before = standin_info(hive, "alice")
    lock_before = (sd / "meta" / "flake.lock").read_text()
    sha = commit_change(hive, "alice", "{ pkgs, ... }: { hyperhive.prompt = \"unterminated; }\n")
    approval_id = hive.client("manager").call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    result = hive.cli("approve", str(approval_id), check=False)
    assert result.returncode == 1 and "agent.nix does not parse" in result.stderr
    applied = sd / "applied" / "alice"
    assert tags(applied)[f"failed/{approval_id}"] == sha
    assert "agent.nix does not parse" in tag_message(applied, f"failed/{approval_id}")
    assert git(applied, "rev-parse", "main") == before["deployed_sha"]
    assert (sd / "meta" / "flake.lock").read_text() == lock_before
    assert standin_info(hive, "alice")["pid"] == before["pid"]
    os.kill(before["pid"], 0)  # never stopped


def test_an_approval_is_resolved_once_however_many_approve_it_at_once(hive):
    import threading

    sha = commit_change(hive, "bob", agent_nix("raced"))
    approval_id = hive.client("manager").call("request_apply_commit", agent="bob", commit=sha)["approval_id"]
    clients = [hive.host() for _ in range(6)]
    outcomes = []

    def approve(client):
        try:
            outcomes.append(client.call("approve", id=approval_id)["status"])
        except HiveError as e:
            outcomes.append(e.code)

    threads = [threading.Thread(target=approve, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["approved"] + ["conflict"] * 5
    assert wait_status(hive.host(), approval_id)["status"] == "deployed"
    assert git(state_dir(hive) / "meta", "log", "--format=%s").count(f"deployed/{approval_id} ") == 1


def test_a_proposed_repo_that_borrows_another_repos_history_is_refused(hive):
    """The manager writes agents/: it must not make the operator review (and deploy) another repo's commits."""
    sd = state_dir(hive)
    manager = hive.client("manager")
    config = sd / "agents" / "alice" / "config"
    elsewhere = sd / "agents" / "bob" / "config"
    sha = commit_change(hive, "alice", agent_nix(prompt="mine"), message="a change of alice's")
    # objects borrowed through alternates
    alternates = config / ".git" / "objects" / "info" / "alternates"
    alternates.write_text(str(elsewhere / ".git" / "objects") + "\n")
    assert "alternates" in refused(lambda: manager.call("request_apply_commit", agent="alice", commit=sha), "forbidden")
    alternates.unlink()
    # the whole .git swapped for a link to another repository
    real_git = config / ".git"
    real_git.rename(config / "git.saved")
    (config / ".git").symlink_to(elsewhere / ".git")
    assert "symbolic link" in refused(
        lambda: manager.call("request_apply_commit", agent="alice", commit="main"), "forbidden")
    (config / ".git").unlink()
    # or for a gitdir: file
    (config / ".git").write_text(f"gitdir: {elsewhere / '.git'}\n")
    assert "not a directory" in refused(
        lambda: manager.call("request_apply_commit", agent="alice", commit="main"), "forbidden")
    (config / ".git").unlink()
    (config / "git.saved").rename(config / ".git")
    assert isinstance(manager.call("request_apply_commit", agent="alice", commit=sha)["approval_id"], int)


def test_a_state_directory_swapped_for_a_link_is_not_followed(hive, tmp_path):
    sd = state_dir(hive)
    state = sd / "agents" / "alice" / "state"
    outside = tmp_path / "host-secrets"
    outside.mkdir()
    hive.client("manager").call("kill", name="alice")
    state.rename(state.with_name("state.saved"))
    state.symlink_to(outside)
    assert "symbolic link" in refused(lambda: hive.client("manager").call("start", name="alice"), "forbidden")
    assert list(outside.iterdir()) == []
    state.unlink()
    state.with_name("state.saved").rename(state)
    hive.client("manager").call("start", name="alice")


# --- a hostile manager and the proposed repos ---------------------------------------------------------------

def host_repo(directory, secret: str):
    """Another repository on the host (say, one holding an agent's credentials), with one commit."""
    directory.mkdir()
    git(directory, "init", "-q", "-b", "main")
    (directory / "secret.txt").write_text(secret)
    (directory / "agent.nix").write_text(agent_nix("smuggled"))
    git(directory, "add", "-A")
    git(directory, "commit", "-q", "-m", "host only")
    return git(directory, "rev-parse", "HEAD")


def has_object(repo, sha: str) -> bool:
    return repo.exists() and subprocess.run(["git", "-C", str(repo), "cat-file", "-e", sha],
                                            capture_output=True).returncode == 0


def test_links_inside_the_proposed_repos_git_bring_nothing_from_elsewhere(hive, tmp_path):
    """The manager keeps agents/<n>/config/.git a real directory but links what is inside it to another repo on
    the host: no commit, blob or secret of that repo may reach applied/, the quarantine or the operator."""
    sd = state_dir(hive)
    manager = hive.client("manager")
    secret = "HOST-SECRET-3f9a1c"
    host = tmp_path / "host"
    host_sha = host_repo(host, secret)
    dot_git = sd / "agents" / "alice" / "config" / ".git"
    pristine = tmp_path / "pristine.git"
    shutil.copytree(dot_git, pristine, symlinks=True)

    def objects_and_refs():
        shutil.rmtree(dot_git / "objects")
        shutil.rmtree(dot_git / "refs")
        (dot_git / "objects").symlink_to(host / ".git" / "objects")
        (dot_git / "refs").symlink_to(host / ".git" / "refs")
        return "main"

    def object_files():  # each of the host's loose objects linked in one by one, and a plain ref naming its commit
        for obj in (host / ".git" / "objects").glob("??/*"):
            (dot_git / "objects" / obj.parent.name).mkdir(exist_ok=True)
            (dot_git / "objects" / obj.parent.name / obj.name).symlink_to(obj)
        (dot_git / "refs" / "heads" / "smuggled").write_text(host_sha + "\n")
        return "smuggled"

    def object_dirs():  # whole fan-out directories linked
        for d in (host / ".git" / "objects").glob("??"):
            if not (dot_git / "objects" / d.name).exists():
                (dot_git / "objects" / d.name).symlink_to(d)
        (dot_git / "refs" / "heads" / "smuggled").write_text(host_sha + "\n")
        return host_sha

    def packs():  # the host repo packed, its pack linked in, and packed-refs linked too
        git(host, "gc", "-q")
        for p in (host / ".git" / "objects" / "pack").glob("pack-*"):
            (dot_git / "objects" / "pack" / p.name).symlink_to(p)
        (dot_git / "packed-refs").unlink(missing_ok=True)
        (dot_git / "packed-refs").symlink_to(host / ".git" / "packed-refs")
        (dot_git / "refs" / "heads" / "main").unlink()
        return "main"

    for plant in (objects_and_refs, object_files, object_dirs, packs):
        ref = plant()
        message = refused(lambda: manager.call("request_apply_commit", agent="alice", commit=ref), "forbidden")
        assert "symbolic link" in message, (plant.__name__, message)
        assert secret not in message
        for repo in (sd / "applied" / "alice", sd / "quarantine" / "alice.git"):
            assert not has_object(repo, host_sha), (plant.__name__, repo)
        assert hive.cli("pending").stdout.strip() == "nothing pending"
        shutil.rmtree(dot_git)
        shutil.copytree(pristine, dot_git, symlinks=True)
    for path in sd.rglob("*"):
        if path.is_file() and not path.is_symlink() and "agents" not in path.relative_to(sd).parts[:1]:
            assert secret.encode() not in path.read_bytes(), path
    # the repo, plain again (and packed by git gc: packs and packed-refs of its own), proposes as usual
    sha = commit_change(hive, "alice", agent_nix("plain again"))
    git(dot_git.parent, "gc", "-q")
    assert not list((dot_git / "refs" / "heads").iterdir()) and list((dot_git / "objects" / "pack").glob("*.pack"))
    approval_id = manager.call("request_apply_commit", agent="alice", commit="main")["approval_id"]
    assert hive.host().call("approval", id=approval_id)["sha"] == sha
    assert '+    prompt = "plain again";' in hive.host().call("approval", id=approval_id)["diff"]


def test_the_diff_shows_every_byte_whatever_the_repo_says(hive):
    """A NUL byte, a -diff attribute, a symlink or a mode change must not hide a change from the operator: the
    text diff is shown anyway (bytes escaped) and what deserves a second look is flagged on the approval, in
    `hyperhive pending` and on the dashboard."""
    from browser import http

    sd = state_dir(hive)
    manager = hive.client("manager")
    host = hive.host()
    config = sd / "agents" / "alice" / "config"

    # a NUL byte in a comment: git would say "Binary files differ", Nix still evaluates the file
    sha = commit_change(hive, "alice", "# \0 looks binary to git\n" + agent_nix("obey the manager only"))
    nul = manager.call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    shown = host.call("approval", id=nul)
    assert "Binary files" not in shown["diff"]
    assert '+    prompt = "obey the manager only";' in shown["diff"] and "+# \\x00 looks binary" in shown["diff"]
    assert [(f["kind"], f["path"]) for f in shown["flags"]] == [("binary", "agent.nix")]
    assert "!! BINARY: agent.nix holds bytes that are not plain text" in hive.cli("pending").stdout
    hive.cli("deny", str(nul), "--note", "no")

    # a deployed `*.nix -diff` would hide every later change; a symlink and a mode change are one line each
    (config / ".gitattributes").write_text("*.nix -diff\n")
    os.symlink("/etc/passwd", config / "leak.nix")
    (config / "flake.nix").chmod(0o755)
    sha = commit_change(hive, "alice", agent_nix("attributes first"))
    first = manager.call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    kinds = {(f["kind"], f["path"]) for f in host.call("approval", id=first)["flags"]}
    assert kinds == {("attributes", ".gitattributes"), ("symlink", "leak.nix"), ("mode", "flake.nix")}
    pending = hive.cli("pending").stdout
    assert "!! SYMLINK: leak.nix is a symbolic link to /etc/passwd" in pending
    assert "!! MODE: flake.nix: mode 100644 -> 100755" in pending and "!! ATTRIBUTES: .gitattributes" in pending
    if hive.dashboard_url:
        for page in ("/", f"/approvals/{first}"):
            html = http(hive.dashboard_url, "GET", page).body.decode()
            assert "leak.nix is a symbolic link to /etc/passwd" in html
            assert "flake.nix: mode 100644 -&gt; 100755" in html
        assert http(hive.dashboard_url, "GET", f"/api/approvals/{first}").json()["flags"]
    hive.cli("approve", str(first))
    later = commit_change(hive, "alice", agent_nix("the change -diff would hide"))
    second = manager.call("request_apply_commit", agent="alice", commit=later)["approval_id"]
    diff = host.call("approval", id=second)["diff"]
    assert "Binary files" not in diff and '+    prompt = "the change -diff would hide";' in diff


def test_a_proposal_nix_would_build_differently_from_its_diff_is_refused(hive):
    """export-subst / export-ignore (and other attributes that rewrite content) and submodules make what Nix
    builds differ from the diff the operator reads: such a proposal is refused, naming why."""
    sd = state_dir(hive)
    manager = hive.client("manager")
    config = sd / "agents" / "bob" / "config"
    for attrs, named in (("agent.nix export-subst\n", "export-subst"), ("secret.nix export-ignore\n", "export-ignore"),
                         ("[attr]sneaky filter=x\n*.nix sneaky\n", "filter"), ("* text eol=crlf\n", "eol, text")):
        (config / ".gitattributes").write_text(attrs)
        sha = commit_change(hive, "bob", agent_nix("$Format:%H$"))
        message = refused(lambda: manager.call("request_apply_commit", agent="bob", commit=sha), "bad_request")
        assert ".gitattributes sets " + named in message, message
    (config / ".gitattributes").unlink()
    sha = commit_change(hive, "bob", agent_nix("with a submodule"))
    git(config, "update-index", "--add", "--cacheinfo", f"160000,{sha},vendor")
    git(config, "commit", "-q", "-m", "a gitlink")
    message = refused(lambda: manager.call("request_apply_commit", agent="bob", commit="main"), "bad_request")
    assert "vendor is a submodule" in message
    assert hive.cli("pending").stdout.strip() == "nothing pending"


def test_a_gitattributes_git_reads_differently_from_the_review_is_refused(hive):
    """git splits a .gitattributes on \\n only and takes \\r as a blank between a pattern and its attributes, and
    reads all of a large one: a carriage-return separated or a 1 MiB-padded export-ignore (nested too) is
    refused, never passed as an empty or attribute-free file."""
    sd = state_dir(hive)
    manager = hive.client("manager")
    config = sd / "agents" / "bob" / "config"
    (config / "sub").mkdir()
    padding = b"# padding\n" * 110_000
    for rel, data, named in ((".gitattributes", b"secret.nix\rexport-ignore\nagent.nix\rexport-subst\n",
                              ".gitattributes holds control characters"),
                             ("sub/.gitattributes", padding + b"secret.nix export-ignore\n",
                              "sub/.gitattributes is larger than 1 MiB"),
                             (".gitattributes", b"# a comment\fsecret.nix export-ignore\n",
                              ".gitattributes holds control characters")):
        for f in (config / ".gitattributes", config / "sub" / ".gitattributes"):
            f.unlink(missing_ok=True)
        (config / rel).write_bytes(data)
        secret = rel.replace(".gitattributes", "secret.nix")
        (config / secret).write_text("{ }\n")
        sha = commit_change(hive, "bob", agent_nix(f"attributes {rel} {len(data)}"))
        check = git(config, "-c", "attr.tree=HEAD", "check-attr", "export-ignore", "--", secret)
        assert check.endswith("export-ignore: set") or "\f" in data.decode(), check
        message = refused(lambda: manager.call("request_apply_commit", agent="bob", commit=sha), "bad_request")
        assert named in message, message
    assert hive.cli("pending").stdout.strip() == "nothing pending"


def test_a_proposed_git_of_many_empty_files_or_deep_directories_is_refused_naming_it(hive):
    """The copy's byte cap let 200,000 empty files under .git/refs hold a proposal for 33 s (and the agent page for
    minutes), and 1,200 nested directories overflowed the walk (an internal error with a traceback): both are
    refused, naming the repo and the place, and proposing works again once they are gone."""
    from browser import http

    sd = state_dir(hive)
    manager = hive.client("manager")
    config = sd / "agents" / "bob" / "config"
    sha = commit_change(hive, "bob", agent_nix("past the junk"))
    junk = config / ".git" / "refs" / "junk"
    junk.mkdir()
    for i in range(20_001):
        (junk / str(i)).touch()
    message = refused(lambda: manager.call("request_apply_commit", agent="bob", commit=sha), "too_large")
    assert f"{config / '.git'} holds more than 20000 files" in message, message
    if hive.dashboard_url:
        page = http(hive.dashboard_url, "GET", "/agents/bob", timeout=30)
        assert page.status == 200 and "holds more than 20000 files" in page.text
    shutil.rmtree(junk)
    deep = config / ".git" / "refs" / "deep" / "/".join(["a"] * 1200)
    subprocess.run(["mkdir", "-p", str(deep)], check=True)  # (os.makedirs recurses per level)
    message = refused(lambda: manager.call("request_apply_commit", agent="bob", commit=sha), "too_large")
    assert f"{config / '.git' / 'refs' / 'deep'}/a/a/" in message and "nested more than 32 directories deep" \
        in message, message
    subprocess.run(["rm", "-rf", str(config / ".git" / "refs" / "deep")], check=True)
    assert manager.call("request_apply_commit", agent="bob", commit=sha)["approval_id"]


def test_viewing_an_unchanged_proposed_repo_copies_nothing_again(hive):
    """Every view of an agent's repo copied its whole proposed .git again (minutes with 200,000 files): a view
    copies only when a file there changed (what the service's copy holds shows it: a ref the test removes from
    it stays removed until the manager commits again)."""
    sd, host = state_dir(hive), hive.host()
    quarantine = sd / "quarantine" / "bob.git"
    first = commit_change(hive, "bob", agent_nix("seen once"))
    refused(lambda: host.call("repo_log", agent="bob", rev="nosuch"), "not_found")  # a view: it copies
    assert git(quarantine, "rev-parse", "refs/heads/main") == first
    git(quarantine, "update-ref", "-d", "refs/heads/main")
    refused(lambda: host.call("repo_log", agent="bob", rev="nosuch"), "not_found")
    with pytest.raises(AssertionError):
        git(quarantine, "rev-parse", "--verify", "refs/heads/main")
    second = commit_change(hive, "bob", agent_nix("seen again"))
    refused(lambda: host.call("repo_log", agent="bob", rev="nosuch"), "not_found")
    assert git(quarantine, "rev-parse", "refs/heads/main") == second
    # a proposal always copies
    git(quarantine, "update-ref", "-d", "refs/heads/main")
    hive.client("manager").call("request_apply_commit", agent="bob", commit=second)
    assert git(quarantine, "rev-parse", "refs/heads/main") == second


def test_links_swapped_in_while_proposals_are_copied_bring_nothing(hive, tmp_path):
    """The manager may race the copy: swap a fan-out directory of objects for a link to another repo's and back,
    over and over, while proposing. Every proposal is either refused or brings only the manager's own objects."""
    import threading

    sd = state_dir(hive)
    manager = hive.client("manager")
    host = tmp_path / "host"
    host_sha = host_repo(host, "RACED-SECRET")
    sha = commit_change(hive, "alice", agent_nix("raced"))
    objects = sd / "agents" / "alice" / "config" / ".git" / "objects"
    (objects / "info").mkdir(exist_ok=True)
    # the host commit's objects, as one directory the manager links in and out under a name git reads
    lure = objects / "zz"
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (sd / "agents" / "alice" / "config" / ".git" / "refs" / "heads" / "smuggled").write_text(host_sha + "\n")
    host_dirs = sorted((host / ".git" / "objects").glob("??"))
    stop = threading.Event()

    def flip():  # links in most of the time, out for moments
        import time

        own = {d.name for d in objects.glob("??")}
        while not stop.is_set():
            made = []
            for d in host_dirs + [decoy]:
                target = lure if d == decoy else objects / d.name
                if target.name in own:
                    continue  # a fan-out directory the manager's repo has too: leave it
                try:
                    target.symlink_to(d)
                    made.append(target)
                except OSError:
                    pass
            time.sleep(0.02)
            for target in made:
                target.unlink(missing_ok=True)
            time.sleep(0.002)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    outcomes = []
    try:
        for _ in range(15):
            for ref in ("smuggled", sha):
                try:
                    outcomes.append(manager.call("request_apply_commit", agent="alice", commit=ref)["approval_id"])
                except HiveError as e:
                    assert e.code in ("forbidden", "not_found", "bad_request", "conflict"), e.message
                    assert "RACED-SECRET" not in e.message
    finally:
        stop.set()
        flipper.join(10)
    for repo in (sd / "applied" / "alice", sd / "quarantine" / "alice.git"):
        assert not has_object(repo, host_sha), repo
    for approval_id in outcomes:
        assert hive.host().call("approval", id=approval_id)["sha"] == sha


def test_a_tree_entry_mode_git_and_libgit2_read_differently_is_refused(hive):
    """A tree written by hand can give agent.nix the mode 120755: git shows a symbolic link (the review's flag says
    "symbolic link to ..."), libgit2 -- Nix's git fetcher -- builds an executable file (any x bit wins). Such a
    tree, or any mode git does not write itself (100664, 100600), is refused when it is copied, naming why."""
    import subprocess as sp

    sd = state_dir(hive)
    manager = hive.client("manager")
    config = sd / "agents" / "bob" / "config"
    blob = sp.run(["git", "-C", str(config), "hash-object", "-w", "--stdin"], input=agent_nix("a file to Nix").encode(),
                  capture_output=True, check=True).stdout.decode().strip()
    for mode in (b"120755", b"100664", b"100600"):
        tree = sp.run(["git", "-C", str(config), "hash-object", "-t", "tree", "-w", "--literally", "--stdin"],
                      input=mode + b" agent.nix\0" + bytes.fromhex(blob), capture_output=True,
                      check=True).stdout.decode().strip()
        sha = git(config, "commit-tree", tree, "-p", "HEAD", "-m", f"agent.nix as {mode.decode()}")
        message = refused(lambda: manager.call("request_apply_commit", agent="bob", commit=sha), "bad_request")
        assert "mode is not one of 100644, 100755, 120000" in message and "badFilemode" in message, message
    assert hive.cli("pending").stdout.strip() == "nothing pending"
    # a tree git wrote itself still goes through
    sha = commit_change(hive, "bob", agent_nix("written by git"))
    assert manager.call("request_apply_commit", agent="bob", commit=sha)["approval_id"]


def test_approving_a_proposal_made_before_another_was_deployed_does_not_undo_it_unseen(hive):
    """Two proposals made from the same deployed commit: the operator reads both diffs (against what is deployed),
    approves the security fix, then the harmless comment -- whose commit lacks the fix, so deploying it undid the
    fix, a change no diff the operator read ever showed. That approve is refused, naming why; approving the diff
    taken against what is deployed now (--base, as the pages send) goes through, knowingly."""
    from browser import http

    sd = state_dir(hive)
    manager = hive.client("manager")
    deployed, fix, tweak = two_changes_from_deployed(hive, "bob", "# THE SECURITY FIX")
    first = manager.call("request_apply_commit", agent="bob", commit=fix)["approval_id"]
    second = manager.call("request_apply_commit", agent="bob", commit=tweak)["approval_id"]
    shown = hive.cli("pending", "--diff").stdout
    assert f"diff against {deployed[:12]} (approve {second} --base {deployed[:12]}" in shown, shown
    assert "THE SECURITY FIX" in shown  # (in the first's diff)

    hive.cli("approve", str(first))
    result = hive.cli("approve", str(second), check=False)
    assert result.returncode == 1, result.stdout
    assert (f"conflict: approval #{second}: what is deployed for bob changed since it was proposed "
            f"(against {deployed[:12]}); it is now {fix[:12]}, and commit {tweak[:12]} does not contain it") \
        in result.stderr, result.stderr
    assert git(sd / "applied" / "bob", "rev-parse", "main") == fix
    assert hive.host().call("approval", id=second)["status"] == "pending"
    # the diff of a stale look is refused too; the one against what is deployed now shows the undoing, and goes
    result = hive.cli("approve", str(second), "--base", deployed[:12], check=False)
    assert result.returncode == 1 and "conflict" in result.stderr, result.stderr
    now = hive.host().call("approval", id=second)
    assert now["diff_base"] == fix and "-# THE SECURITY FIX" in now["diff"]
    if hive.dashboard_url:
        page = http(hive.dashboard_url, "GET", f"/approvals/{second}").text
        assert f'name="base" value="{fix}"' in page
        reply = http(hive.dashboard_url, "POST", f"/api/approvals/{second}/approve", json={"base": deployed})
        assert reply.status == 409 and reply.error["code"] == "conflict", reply
    assert f"deployed/{second}" in hive.cli("approve", str(second), "--base", fix[:12]).stdout
    assert git(sd / "applied" / "bob", "rev-parse", "main") == tweak
