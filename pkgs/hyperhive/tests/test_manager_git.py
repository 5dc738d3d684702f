"""The manager's git is ``hyperhive git`` and nothing else: through the real Claude Code CLI, raw git (with
``-c core.fsmonitor=...``) is refused, the model cannot edit a config repo's ``.git``, an edited ``.git/config``
or a hook runs nothing, and the ordinary edit -> commit -> request_apply_commit still works; then the entry
point's own refusals, on real repos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_for
from standins.support import git
from hyperhive import manager_git
from hyperhive.harness import own_hyperhive_command, python_path_env
from hyperhive.testing.messages_api import hive, last_tool_result, tool_use

IDENTITY = {"GIT_AUTHOR_NAME": "hive", "GIT_AUTHOR_EMAIL": "hive@localhost", "GIT_COMMITTER_NAME": "hive",
            "GIT_COMMITTER_EMAIL": "hive@localhost"}


def results_of(requests: list[dict]) -> list[str]:
    return [last_tool_result(r) for r in requests[1:]]


def test_the_manager_runs_no_program_through_git_and_still_commits_and_proposes(claude_hive, model_api, tmp_path):
    hp = claude_hive({"alice": {}})
    sd = hp.config.state_dir
    config = sd / "agents" / "alice" / "config"
    hg = f"{own_hyperhive_command()} git -C {config}"
    marker = tmp_path / "pwned"
    hook_marker = tmp_path / "hooked"
    model_api.script("manager", [
        # git itself, with a program for fsmonitor: no rule allows it
        tool_use("Bash", command=f"git -C {config} -c core.fsmonitor='touch {marker}-raw' status"),
        # the same through the entry point, before and after the subcommand
        tool_use("Bash", command=f"{own_hyperhive_command()} git -C {config} -c core.fsmonitor='touch {marker}-c' "
                                 "status"),
        tool_use("Bash", command=f"{hg} status -c core.fsmonitor='touch {marker}-c2'"),
        tool_use("Bash", command=f"{hg} --exec-path={tmp_path} status"),
        tool_use("Bash", command=f"{own_hyperhive_command()} git -C {sd}/agents/../agents/alice/config status"),
        # the model cannot rewrite git's own files
        tool_use("Edit", file_path=f"{config}/.git/config", old_string="[core]",
                 new_string=f"[core]\n\tfsmonitor = touch {marker}-edit"),
        tool_use("Write", file_path=f"{config}/.git/hooks/pre-commit", content=f"#!/bin/sh\ntouch {hook_marker}\n"),
        tool_use("Read", file_path=f"{config}/.git/config"),
        tool_use("Bash", command=f"{hg} show HEAD:flake.nix > {config}/.git/config"),  # nor through a redirect
        # the ordinary work: edit, commit, read the sha, propose it
        tool_use("Edit", file_path=f"{config}/agent.nix", old_string="{ pkgs, ... }:",
                 new_string="# tidier\n{ pkgs, ... }:"),
        tool_use("Bash", command=f'{hg} commit -am "alice: a tidier agent.nix"'),
        tool_use("Bash", command=f"{hg} rev-parse HEAD"),
        lambda request: hive("request_apply_commit", agent="alice", commit=last_tool_result(request).strip()),
        {"text": "proposed"},
    ])
    hp.host().call("send", to="manager", body="tidy alice's config")
    results = results_of(model_api.wait_requests("manager", 14, timeout=90))
    assert "denied" in results[0], results[0]
    assert "-c: refused (sets git configuration)" in results[1], results[1]
    assert "git status -c: refused" in results[2], results[2]
    assert "--exec-path: refused" in results[3], results[3]
    assert "the repo must be" in results[4], results[4]
    assert all("denied" in r for r in results[5:9]), results[5:9]
    assert "fsmonitor" not in (config / ".git" / "config").read_text()
    assert not (config / ".git" / "hooks" / "pre-commit").exists()
    assert not list(tmp_path.glob("pwned*")), "a program ran"
    sha = git(config, "rev-parse", "HEAD")
    assert results[11].strip() == sha
    assert git(config, "log", "-1", "--format=%s") == "alice: a tidier agent.nix"
    pending = wait_for(lambda: hp.host().call("pending")["approvals"], message="the apply approval")
    assert [(a["kind"], a["agent"], a["sha"]) for a in pending] == [("apply", "alice", sha)]


def test_a_git_config_or_hook_planted_before_runs_nothing(claude_hive, model_api, tmp_path):
    """A .git/config key or a hook written some other way (an older hive let the manager edit them) runs
    nothing: the key is refused by name; a hook is never run."""
    hp = claude_hive({"alice": {}})
    config = hp.config.state_dir / "agents" / "alice" / "config"
    hg = f"{own_hyperhive_command()} git -C {config}"
    hook = config / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {tmp_path}/hooked\n")
    hook.chmod(0o755)
    (config / "notes.txt").write_text("x\n")
    with open(config / ".git" / "config", "a") as f:
        f.write(f"[core]\n\tfsmonitor = touch {tmp_path}/pwned\n")
    model_api.script("manager", [
        tool_use("Bash", command=f"{hg} status"),
        {"text": "refused"},
    ])
    hp.host().call("send", to="manager", body="look at alice")
    refused = results_of(model_api.wait_requests("manager", 2, timeout=60))[0]
    assert "alice/config/.git/config sets core.fsmonitor" in refused, refused
    git(config, "config", "--unset", "core.fsmonitor")  # the operator removes it
    model_api.script("manager", [
        tool_use("Bash", command=f"{hg} add notes.txt"),
        tool_use("Bash", command=f'{hg} commit -m "alice: notes"'),
        {"text": "committed"},
    ])
    hp.host().call("send", to="manager", body="commit alice's notes")
    committed = results_of(model_api.wait_requests("manager", 5, timeout=60)[2:])
    assert "alice: notes" in committed[1], committed
    assert git(config, "log", "-1", "--format=%s") == "alice: notes"
    assert not list(tmp_path.glob("pwned*")) and not (tmp_path / "hooked").exists()


# --- the entry point on its own ---------------------------------------------------------------------------


@pytest.fixture
def agents(tmp_path) -> Path:
    root = tmp_path / "agents"
    repo = root / "alice" / "config"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "agent.nix").write_text("{ }\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "seed")
    return root


def run(agents: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **IDENTITY, manager_git.AGENTS_DIR_ENV: str(agents), "PYTHONPATH": python_path_env()}
    return subprocess.run([sys.executable, "-m", "hyperhive", "git", *args], env=env, capture_output=True,
                          text=True, cwd=agents, timeout=60)


@pytest.mark.parametrize("args, says", [
    (["status"], "usage: hyperhive git -C"),
    (["-c", "core.fsmonitor=touch x", "-C", "{repo}", "status"], "-c: refused (sets git configuration)"),
    (["-C", "{repo}", "-C", "/tmp", "status"], "-C: only -C <repo> may come before the subcommand"),
    (["-C", "{repo}", "--git-dir=/tmp/x", "status"], "--git-dir: refused (points git elsewhere)"),
    (["-C", "{repo}", "--work-tree", "/", "status"], "--work-tree: refused"),
    (["-C", "{repo}", "--exec-path=/tmp", "status"], "--exec-path: refused"),
    (["-C", "{repo}", "config", "core.fsmonitor", "x"], "git config: not a subcommand hyperhive git runs"),
    (["-C", "{repo}", "fetch", "ext::sh -c x"], "git fetch: not a subcommand"),
    (["-C", "{repo}", "status", "-c", "x=y"], "git status -c: refused (sets git configuration)"),
    (["-C", "{repo}", "diff", "--ext-diff"], "git diff --ext-diff: refused (runs a program)"),
    (["-C", "{repo}", "diff", "--textconv"], "--textconv: refused (runs a program)"),
    (["-C", "{repo}", "diff", "--output=/tmp/x"], "--output: refused (writes a file outside the repo)"),
    (["-C", "{repo}", "diff", "--outp=/tmp/x"], "git diff --outp: not an option hyperhive git allows"),
    (["-C", "{repo}", "diff", "--no-index", "a", "b"], "--no-index: refused"),
    (["-C", "{repo}", "diff", "/etc/passwd", "/dev/null"], "argument '/etc/passwd': only paths inside the repo"),
    (["-C", "{repo}", "show", "HEAD:../../bob/state/notes.md"], "only paths inside the repo"),
    (["-C", "{repo}", "commit", "-F", "/etc/shadow"], "git commit -F: not an option"),
    (["-C", "{repo}", "commit", "-aF/etc/shadow"], "git commit -F: not an option"),
    (["-C", "{repo}", "commit", "--template=/etc/shadow"], "--template: refused (reads a file outside"),
    (["-C", "{repo}", "commit", "-S", "-m", "x"], "git commit -S: not an option"),
    (["-C", "{repo}", "commit", "--gpg-sign", "-m", "x"], "--gpg-sign: refused (runs a program)"),
    (["-C", "{repo}", "add", "-p"], "git add -p: not an option"),
    (["-C", "{repo}", "add", "--pathspec-from-file=/etc/shadow"], "--pathspec-from-file: refused"),
    (["-C", "{repo}", "log", "--show-signature"], "--show-signature: refused (runs a program)"),
    (["-C", "{repo}", "status", "--ignore-submodules=none"], "--ignore-submodules: refused"),
    (["-C", "{repo}", "switch", "--recurse-submodules", "main"], "--recurse-submodules: refused"),
    (["-C", "{repo}", "restore", "--source", "/tmp/x"], "the value of --source '/tmp/x'"),
    (["-C", "{repo}", "add", "--", "../../bob/state/x"], "only paths inside the repo"),
    (["-C", "{repo}", "mv", "agent.nix", ".git/hooks/pre-commit"], "not in .git"),
    (["-C", "{repo}", "restore", "--source=HEAD", "--", "sub/.GIT/config"], "not in .git"),
    (["-C", "{repo}", "log", "--format=%H %G?"], "--format: %G... (signature checks) runs a program"),
    (["-C", "{repo}", "log", "--pretty=format:%GS"], "--pretty: %G..."),
    (["-C", "{agents}/alice/config/../config", "status"], "the repo must be {agents}/<name>/config"),
    (["-C", "{agents}//alice/config", "status"], "the repo must be"),
    (["-C", "{agents}/alice/state", "status"], "the repo must be"),
    (["-C", "{agents}/../x/config", "status"], "the repo must be"),
    (["-C", "{agents}/Alice/config", "status"], "'Alice' is not an agent name"),
    (["-C", "alice/config", "status"], "the repo must be"),
])
def test_the_entry_point_refuses_what_could_run_a_program_or_leave_the_repo(agents, args, says):
    repo = agents / "alice" / "config"
    args = [a.format(repo=repo, agents=agents) for a in args]
    result = run(agents, *args)
    assert result.returncode == 2, result
    assert says.format(agents=agents) in result.stderr, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("key, value", [
    ("core.fsmonitor", "touch {marker}"), ("core.hooksPath", "{tmp}"), ("core.pager", "touch {marker}"),
    ("core.editor", "touch {marker}"), ("core.worktree", "/"), ("include.path", "{tmp}/evil.conf"),
    ("diff.external", "touch {marker}"), ("filter.x.clean", "touch {marker}"), ("gpg.program", "touch {marker}"),
    ("alias.st", "!touch {marker}"), ("core.bare", "true"), ("extensions.worktreeConfig", "true"),
    ("core.sshCommand", "touch {marker}"), ("uploadpack.packObjectsHook", "touch {marker}"),
])
def test_a_repo_config_key_outside_the_allow_list_is_refused_by_name(agents, tmp_path, key, value):
    repo = agents / "alice" / "config"
    marker = tmp_path / "pwned"
    (repo / ".gitattributes").write_text("* filter=x diff=x\n")
    git(repo, "config", key, value.format(marker=marker, tmp=tmp_path))
    git(repo, "config", "commit.gpgSign", "true") if key == "gpg.program" else None
    for args in (["status"], ["diff"], ["add", "-A"], ["commit", "-am", "x"], ["log", "-p"]):
        result = run(agents, "-C", str(repo), *args)
        assert result.returncode == 2, result
        assert f"alice/config/.git/config sets {key.lower()}" in result.stderr.lower(), result.stderr
    assert not marker.exists()


def test_hooks_fsmonitor_and_nested_repos_run_nothing_while_the_work_gets_done(agents, tmp_path):
    repo = agents / "alice" / "config"
    marker = tmp_path / "pwned"
    # a nested repo of the manager's making, with a clean filter in its own config, added as a gitlink
    nested = repo / "sub"
    subprocess.run(["git", "init", "-q", str(nested)], check=True)
    (nested / "f").write_text("x\n")
    git(nested, "add", "f")
    git(nested, "commit", "-q", "-m", "n")
    git(nested, "config", "filter.x.clean", f"touch {marker}-nested")
    (nested / ".gitattributes").write_text("* filter=x\n")
    (nested / "f").write_text("changed\n")
    git(repo, "add", "sub")
    hooks = repo / ".git" / "hooks"
    for name in ("pre-commit", "commit-msg", "post-commit", "post-index-change", "reference-transaction",
                 "fsmonitor-watchman"):
        (hooks / name).write_text(f"#!/bin/sh\ntouch {marker}-{name}\n")
        (hooks / name).chmod(0o755)
    (repo / "agent.nix").write_text("{ x = 1; }\n")
    for args in (["status"], ["diff"], ["add", "-A"], ["commit", "-am", "alice: x = 1"], ["log", "-p", "-1"],
                 ["show", "--stat"], ["status", "--porcelain"], ["log", "--pretty=format:%h %s", "-3"],
                 ["log", "--oneline", "-n", "2", "--", "agent.nix"], ["diff", "HEAD~1..HEAD", "--stat"],
                 ["switch", "-c", "topic"], ["branch", "--show-current"], ["switch", "main"]):
        result = run(agents, "-C", str(repo), *args)
        assert result.returncode == 0, (args, result.stderr)
    assert "x = 1" in run(agents, "-C", str(repo), "show", "HEAD:agent.nix").stdout
    assert git(repo, "log", "-1", "--format=%s %an") == "alice: x = 1 hive"
    assert not list(tmp_path.glob("pwned*")), list(tmp_path.glob("pwned*"))


def test_a_repo_that_borrows_from_elsewhere_or_is_reached_through_a_link_is_refused(agents, tmp_path):
    repo = agents / "alice" / "config"
    elsewhere = tmp_path / "elsewhere"
    subprocess.run(["git", "init", "-q", str(elsewhere)], check=True)
    (repo / ".git" / "commondir").write_text(f"{elsewhere}/.git\n")
    assert "alice/config/.git/commondir: a repo that borrows" in run(agents, "-C", str(repo), "status").stderr
    (repo / ".git" / "commondir").unlink()
    (repo / ".git" / "objects" / "info" / "alternates").write_text(f"{elsewhere}/.git/objects\n")
    assert "objects/info/alternates" in run(agents, "-C", str(repo), "status").stderr
    (repo / ".git" / "objects" / "info" / "alternates").unlink()
    # config/.git a gitfile, and an agent directory that is a link
    (agents / "bob").mkdir()
    (agents / "bob" / "config").mkdir()
    (agents / "bob" / "config" / ".git").write_text(f"gitdir: {elsewhere}/.git\n")
    assert "bob/config/.git is not a directory" in run(agents, "-C", str(agents / "bob/config"), "status").stderr
    (agents / "carol").symlink_to(agents / "alice")
    assert "carol is a symbolic link" in run(agents, "-C", str(agents / "carol/config"), "status").stderr
    assert run(agents, "-C", str(repo), "status").returncode == 0


def test_the_entry_point_drops_the_callers_git_environment(agents, tmp_path):
    """GIT_* of the caller never reach git: not a GIT_DIR elsewhere, not config from the environment."""
    repo = agents / "alice" / "config"
    marker = tmp_path / "pwned"
    env = {**os.environ, **IDENTITY, manager_git.AGENTS_DIR_ENV: str(agents), "PYTHONPATH": python_path_env(),
           "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsmonitor", "GIT_CONFIG_VALUE_0": f"touch {marker}",
           "GIT_EXTERNAL_DIFF": f"touch {marker}", "GIT_DIR": str(tmp_path), "GIT_EXEC_PATH": str(tmp_path),
           "GIT_PAGER": f"touch {marker}", "PAGER": f"touch {marker}"}
    (repo / "agent.nix").write_text("{ y = 2; }\n")
    result = subprocess.run([sys.executable, "-m", "hyperhive", "git", "-C", str(repo), "diff"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "+{ y = 2; }" in result.stdout
    assert not marker.exists()


@pytest.mark.parametrize("command, says", [
    ("hyperhive", "must be an absolute path"), ("/opt/my tools/hyperhive", "must be a plain path"),
    ("/x/hyperhive;id", "must be a plain path"), (["/x"], "must be an absolute path")])
def test_the_managers_hyperhive_command_is_a_plain_absolute_path(tmp_path, command, says):
    from hyperhive.harness import HarnessError, load_agent_settings

    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"name": "manager", "role": "manager", "hyperhiveCommand": command}))
    with pytest.raises(HarnessError, match=says):
        load_agent_settings(path, "manager", tmp_path / "state")


def test_the_managers_rules_name_the_entry_point_and_deny_git_internals(tmp_path):
    from hyperhive.harness import load_agent_settings, permission_deny_rules, permission_rules

    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"name": "manager", "role": "manager", "hyperhiveCommand": "/opt/hh/bin/hyperhive",
                                "agentsDir": "/srv/agents"}))
    settings = load_agent_settings(path, "manager", tmp_path / "state")
    assert "Bash(/opt/hh/bin/hyperhive git *)" in permission_rules(settings)
    assert not any(r.startswith("Bash(git") for r in permission_rules(settings))
    assert permission_deny_rules(settings) == [
        "Read(//srv/agents/*/config/.git/**)", "Read(//srv/agents/*/config/**/.git/**)",
        "Edit(//srv/agents/*/config/.git/**)", "Edit(//srv/agents/*/config/**/.git/**)"]
    path.write_text(json.dumps({"name": "alice", "role": "agent"}))
    assert permission_deny_rules(load_agent_settings(path, "alice", tmp_path / "state")) == []
