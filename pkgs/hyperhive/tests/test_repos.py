"""The read-only config repo browser, on host.sock and the dashboard's JSON API: tags by state, log, a commit's
diff, raw files, the meta log; and every way of reaching outside a repo refused."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest

from browser import http
from conftest import HiveProcess, wait_for, write_config
from hyperhive.errors import HiveError
from standins.support import AGENT_ENV, agent_nix, commit_change, git, standin_info, state_dir


@pytest.fixture(scope="module")
def hive():
    directory = Path(tempfile.mkdtemp(prefix="hh", dir="/tmp"))
    (directory / "secret.txt").write_text("outside the repos\n")
    config = write_config(directory, agents={"alice": {}})
    process = HiveProcess(config, env=AGENT_ENV).start()
    wait_for(lambda: standin_info(process, "alice"), message="alice running")
    # one deployed change with a symlink inside the repo and two pointing out of it
    repo = state_dir(process) / "agents" / "alice" / "config"
    (repo / "docs").mkdir()
    (repo / "docs" / "notes.md").write_text("# alice\n")
    os.symlink("agent.nix", repo / "alias.nix")
    os.symlink("/etc/passwd", repo / "leak")
    os.symlink("../../../secret.txt", repo / "docs" / "leak2")
    (repo / "blob.bin").write_bytes(bytes(range(256)))
    process.sha = commit_change(process, "alice", agent_nix("browsable"), message="alice: browsable\n\nwith a body")
    approval_id = process.client("manager").call("request_apply_commit", agent="alice", commit="main")["approval_id"]
    process.cli("approve", str(approval_id))
    process.approval_id = approval_id
    yield process
    process.stop()
    shutil.rmtree(directory, ignore_errors=True)


def call(hive, op, **args):
    return hive.host().call(op, **args)


def refused(hive, code, op, **args) -> str:
    with pytest.raises(HiveError) as e:
        call(hive, op, **args)
    assert e.value.code == code, (op, args, e.value.message)
    return e.value.message


def test_tags_grouped_by_state(hive):
    tags = call(hive, "repo_tags", agent="alice")["tags"]
    assert set(tags) == {"proposal", "approved", "building", "deployed", "failed", "denied"}
    n = hive.approval_id
    assert [t["name"] for t in tags["deployed"]] == [f"deployed/{n}", "deployed/0"]
    newest = tags["deployed"][0]
    assert newest["sha"] == hive.sha and newest["date"].endswith("Z") and newest["message"]
    assert [t["name"] for t in tags["proposal"]] == [f"proposal/{n}"]
    assert tags["failed"] == [] and tags["denied"] == []


def test_log_diff_and_files(hive):
    log = call(hive, "repo_log", agent="alice")["commits"]
    assert [c["message"] for c in log] == ["alice: browsable", "alice: initial config from hive.json and templates/agent"]
    assert log[0]["sha"] == hive.sha and log[0]["short"] == hive.sha[:len(log[0]["short"])]
    assert log[0]["author"] == "manager <manager@hive>"
    assert len(call(hive, "repo_log", agent="alice", rev="deployed/0", limit=5)["commits"]) == 1
    diff = call(hive, "repo_diff", agent="alice", rev=hive.sha[:10])["diff"]
    assert f"commit {hive.sha}" in diff and "with a body" in diff
    assert '+    prompt = "browsable";' in diff and "docs/notes.md" in diff

    assert call(hive, "repo_file", agent="alice", rev="main", path="docs/notes.md")["text"] == "# alice\n"
    assert 'prompt = "browsable"' in call(hive, "repo_file", agent="alice", rev="main", path="alias.nix")["text"]
    seed = call(hive, "repo_file", agent="alice", rev="deployed/0", path="agent.nix")["text"]
    assert "browsable" not in seed and "hyperhive" in seed
    assert call(hive, "repo_file", agent="alice", rev="main", path="blob.bin")["size"] == 256
    meta = call(hive, "meta_log")["commits"]
    assert meta[0]["message"] == f"deploy alice deployed/{hive.approval_id} {hive.sha[:12]}"
    assert any(c["message"].startswith("deploy manager deployed/0 ") for c in meta)


def test_what_is_outside_the_repo_is_refused(hive):
    for path in ("../../../secret.txt", "/etc/passwd", "docs/../../x", "./agent.nix", ".git/config", "", "a\\b"):
        refused(hive, "bad_request", "repo_file", agent="alice", rev="main", path=path)
    assert "outside the repo" in refused(hive, "bad_request", "repo_file", agent="alice", rev="main", path="leak")
    assert "outside the repo" in refused(hive, "bad_request", "repo_file", agent="alice", rev="main",
                                         path="docs/leak2")
    assert "directory" in refused(hive, "bad_request", "repo_file", agent="alice", rev="main", path="docs")
    refused(hive, "not_found", "repo_file", agent="alice", rev="main", path="nope.nix")
    for rev in ("--output=/tmp/x", "main..HEAD", "main;ls", "-n1", "x" * 300):
        refused(hive, "bad_request", "repo_log", agent="alice", rev=rev)
    refused(hive, "not_found", "repo_log", agent="alice", rev="no-such-branch")
    refused(hive, "not_found", "repo_diff", agent="alice", rev="0" * 40)
    refused(hive, "not_found", "repo_tags", agent="zed")
    refused(hive, "bad_request", "repo_tags", agent="../alice")
    refused(hive, "bad_request", "repo_log", agent="alice", limit=0)
    # the agents cannot browse over their sockets: it is the operator's
    with pytest.raises(HiveError) as e:
        hive.client("alice").call("repo_file", agent="alice", rev="main", path="agent.nix")
    assert e.value.code == "forbidden"


def test_the_dashboard_api_serves_the_same_and_refuses_the_same(hive):
    url = hive.dashboard_url
    if not url:
        pytest.skip("no dashboard in this build")
    tags = http(url, "GET", "/api/agents/alice/repo/tags").json()
    assert tags["deployed"][0]["name"] == f"deployed/{hive.approval_id}"
    assert http(url, "GET", f"/api/agents/alice/repo/log?rev=deployed/{hive.approval_id}").json()[0]["sha"] == hive.sha
    reply = http(url, "GET", "/api/agents/alice/repo/file/main/docs/notes.md")
    assert reply.status == 200 and reply.body == b"# alice\n"
    assert http(url, "GET", "/api/agents/alice/repo/file/deployed/0/agent.nix").status == 200
    for path in ("/api/agents/alice/repo/file/main/leak", "/api/agents/alice/repo/file/main/docs/leak2",
                 "/api/agents/alice/repo/file/main/%2e%2e/%2e%2e/%2e%2e/secret.txt",
                 "/api/agents/alice/repo/file/main/.git/config",
                 "/api/agents/alice/repo/diff/--output=x"):
        reply = http(url, "GET", path)
        assert reply.status in (400, 404) and b"outside the repos" not in reply.body, (path, reply)
    assert http(url, "GET", "/api/agents/zed/repo/tags").status == 404
    assert http(url, "GET", "/api/agents/alice/repo/diff/nosuchrev").status == 404
    assert http(url, "GET", "/api/meta/log").json()[0]["message"].startswith("deploy alice ")


def test_a_draft_is_browsable_before_it_has_an_applied_repo(hive):
    manager = hive.client("manager")
    manager.call("request_spawn_draft", name="gil")
    sha = commit_change(hive, "gil", agent_nix("draft only"), message="gil: first try")
    log = call(hive, "repo_log", agent="gil")["commits"]
    assert log[0]["sha"] == sha and log[0]["message"] == "gil: first try"
    assert "draft only" in call(hive, "repo_file", agent="gil", rev="main", path="agent.nix")["text"]
    assert all(v == [] for v in call(hive, "repo_tags", agent="gil")["tags"].values())
    assert git(state_dir(hive) / "agents" / "gil" / "config", "rev-parse", "HEAD") == sha


def test_the_proposed_repos_own_git_config_runs_nothing(hive, tmp_path):
    """The manager writes the proposed repo, .git/config included: browsing it must not run a command that config
    names (a diff driver's textconv, the gpg program that checks a signature, an fsmonitor)."""
    manager = hive.client("manager")
    manager.call("request_spawn_draft", name="mal")
    repo = state_dir(hive) / "agents" / "mal" / "config"
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\necho ran \"$@\" >> {marker}\ncat \"$1\" 2>/dev/null\n")
    evil.chmod(0o755)
    sha = commit_change(hive, "mal", agent_nix("innocent"), message="mal: innocent")
    # a commit carrying a signature, so that a log showing signatures would call the gpg program
    raw = git(repo, "cat-file", "commit", sha)
    header, _, message = raw.partition("\n\n")
    signed = (header + "\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n AAAA\n -----END PGP SIGNATURE-----\n\n"
              + message + "\n")
    object_file = tmp_path / "commit"
    object_file.write_text(signed)
    signed_sha = git(repo, "hash-object", "-t", "commit", "-w", str(object_file))
    git(repo, "update-ref", "refs/heads/main", signed_sha)
    for key, value in (("diff.evil.textconv", str(evil)), ("log.showSignature", "true"),
                       ("gpg.program", str(evil)), ("core.fsmonitor", str(evil)), ("core.pager", str(evil))):
        git(repo, "config", key, value)
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("* diff=evil\n")

    assert call(hive, "repo_log", agent="mal")["commits"][0]["sha"] == signed_sha
    assert '+    prompt = "innocent";' in call(hive, "repo_diff", agent="mal", rev=signed_sha)["diff"]
    assert "innocent" in call(hive, "repo_file", agent="mal", rev="main", path="agent.nix")["text"]
    if hive.dashboard_url:
        assert http(hive.dashboard_url, "GET", f"/api/agents/mal/repo/diff/{signed_sha}").status == 200
        assert http(hive.dashboard_url, "GET", "/api/agents/mal/repo/log").status == 200
    assert not marker.exists(), marker.read_text()


def test_a_file_with_any_name_is_served_by_the_dashboard(hive):
    if not hive.dashboard_url:
        pytest.skip("no dashboard in this build")
    hive.client("manager").call("request_spawn_draft", name="nia")
    name = '日本 "x".md'
    sha = commit_change(hive, "nia", "non-ascii name\n", filename=name, message="nia: a file")
    reply = http(hive.dashboard_url, "GET", f"/api/agents/nia/repo/file/{sha}/{quote(name)}")
    assert reply.status == 200 and reply.body == b"non-ascii name\n", reply
    assert reply.headers["Content-Disposition"] == (
        f"inline; filename=\"__ _x_.md\"; filename*=UTF-8''{quote(name, safe='')}")
    assert "sandbox" in reply.headers["Content-Security-Policy"]


def test_a_drafts_git_linked_to_another_repo_shows_nothing_of_it(hive, tmp_path):
    """The browser reads drafts from a copy made without following links: a draft whose .git/objects and
    .git/refs point at another repository on the host shows none of that repository's files or commits."""
    manager = hive.client("manager")
    manager.call("request_spawn_draft", name="lnk")
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    (other / "credentials.json").write_text('{"token": "HOST-ONLY-77c1"}\n')
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", "host secret")
    dot_git = state_dir(hive) / "agents" / "lnk" / "config" / ".git"
    for part in ("objects", "refs"):
        shutil.rmtree(dot_git / part)
        (dot_git / part).symlink_to(other / ".git" / part)
    for op, args in (("repo_file", {"rev": "main", "path": "credentials.json"}), ("repo_log", {"rev": "main"})):
        with pytest.raises(HiveError) as e:
            call(hive, op, agent="lnk", **args)
        assert "HOST-ONLY" not in e.value.message and "host secret" not in e.value.message
    if hive.dashboard_url:
        for path in ("/api/agents/lnk/repo/file/main/credentials.json", "/api/agents/lnk/repo/log",
                     "/agents/lnk?rev=main"):
            reply = http(hive.dashboard_url, "GET", path)
            assert b"HOST-ONLY" not in reply.body and b"host secret" not in reply.body, (path, reply.status)


def test_a_branch_named_like_the_services_tags_is_not_taken_for_one(hive):
    manager = hive.client("manager")
    manager.call("request_spawn_draft", name="tgs")
    config = state_dir(hive) / "agents" / "tgs" / "config"
    sha = commit_change(hive, "tgs", agent_nix("a forged tag"), message="forged")
    for name in ("proposal/999", "deployed/999", "denied/999"):
        git(config, "branch", name, sha)
    for rev in ("proposal/999", "deployed/999", "denied/999"):
        refused(hive, "not_found", "repo_log", agent="tgs", rev=rev)
    assert call(hive, "repo_log", agent="tgs", rev="main")["commits"][0]["sha"] == sha
    assert all(t == [] for t in call(hive, "repo_tags", agent="tgs")["tags"].values())
