"""The manager's whole job, done by a scripted model through the real Claude Code CLI, its permission engine and
``hyperhive mcp``, on the real service: draft a new agent, read and edit its agent.nix, commit with git, queue the
spawn, the operator approves, the new agent runs and answers; then change an existing agent the same way."""

from __future__ import annotations

import re
import time

from conftest import wait_for
from harness_support import TurnStream, db_rows
from standins.support import commit_change, git, needs_nix, tags
from hyperhive.harness import own_hyperhive_command
from hyperhive.testing.messages_api import hive, last_tool_result, text_of, tool_use

TEMPLATE_PROMPT = "You are a new agent of this hive. Keep your notes in /state/notes.md, and ask the manager for work."


def sha_from(request: dict) -> str:
    found = re.search(r"\b[0-9a-f]{40}\b", last_tool_result(request))
    assert found, f"no sha in the last tool result: {last_tool_result(request)!r}"
    return found.group(0)


def manager_git(config, args: str) -> dict:
    """The manager's git, as its prompt spells it: the hyperhive executable's `git -C <config> ...`."""
    return tool_use("Bash", command=f"{own_hyperhive_command()} git -C {config} {args}")


def edit_and_commit(config, old: str, new: str, message: str) -> list:
    """What the manager does in a config repo: Read, Edit, commit, and read back the sha (its file tools and
    `hyperhive git`, as its prompt says)."""
    nix = f"{config}/agent.nix"
    return [tool_use("Read", file_path=nix),
            tool_use("Edit", file_path=nix, old_string=old, new_string=new),
            manager_git(config, f'commit -am "{message}"'),
            manager_git(config, "rev-parse HEAD")]


def denials(api, agent: str) -> list[str]:
    """Every tool_result of ``agent``'s requests that says a permission was refused."""
    return [r for req in api.requests(agent) for m in req["messages"] if isinstance(m.get("content"), list)
            for b in m["content"] if b.get("type") == "tool_result" and b.get("is_error")
            for r in [str(b.get("content"))] if "ermission" in r or "denied" in r]


def inbox(hp, recipient: str) -> list[tuple]:
    return db_rows(hp, "SELECT sender, kind, body FROM messages WHERE recipient = ? ORDER BY id", (recipient,))


@needs_nix  # a spawned agent's policy is read from its agent.nix with nix-instantiate
def test_the_manager_drafts_edits_commits_and_proposes_and_the_approved_agents_run(claude_hive, model_api):
    hp = claude_hive({"alice": {}})
    sd = hp.config.state_dir
    config = sd / "agents" / "carol" / "config"
    model_api.script("manager", [
        hive("request_spawn_draft", name="carol"),
        *edit_and_commit(config, TEMPLATE_PROMPT, "You are carol. You answer questions about the weather.",
                         "carol: the weather agent"),
        lambda request: hive("request_spawn_commit", name="carol", commit=sha_from(request)),
        {"text": "carol is queued for approval"},
    ])
    host = hp.host()
    host.call("send", to="manager", body="please add an agent carol who knows the weather")
    model_api.wait_requests("manager", 7, timeout=90)
    assert denials(model_api, "manager") == []
    pending = wait_for(lambda: host.call("pending")["approvals"], message="the spawn approval")
    assert [(a["kind"], a["agent"], a["requested_by"]) for a in pending] == [("spawn", "carol", "manager")]
    sha = git(config, "rev-parse", "HEAD")
    assert git(config, "log", "-1", "--format=%s") == "carol: the weather agent"
    assert pending[0]["sha"] == sha
    diff = host.call("approval", id=pending[0]["id"])["diff"]
    assert "+      You are carol. You answer questions about the weather." in diff

    # The operator approves; carol runs the real CLI too and answers the operator.
    # (the manager's turns for the events about carol get the stand-in's "no script step left" answer)
    model_api.script("carol", [hive("send", to="operator", body="sunny all week"), {"text": "answered"}])
    hp.cli("approve", str(pending[0]["id"]))
    assert tags(sd / "applied" / "carol")[f"deployed/{pending[0]['id']}"] == sha
    host.call("send", to="carol", body="what is the weather?")
    wait_for(lambda: ("carol", "message", "sunny all week") in inbox(hp, "operator"), timeout=60,
             message="carol's answer to the operator")
    # (carol's first turn may be for the event of its own spawn, with the operator's question or before it)
    wait_for(lambda: any("what is the weather?" in text_of(r["messages"]) for r in model_api.requests("carol")),
             timeout=60, message="carol's turn with the operator's question")
    assert "You are carol. You answer questions about the weather." in model_api.requests("carol")[0]["system"]

    # An existing agent: edit, commit, request_apply_commit, approve, deployed/<id>.
    tides = edit_and_commit(config, "You answer questions about the weather.", "You forecast the tides as well.",
                            "carol: tides too")
    model_api.script("manager", [
        {**tides[0], "expect": "carol should forecast the tides too"}, *tides[1:],
        lambda request: hive("request_apply_commit", agent="carol", commit=sha_from(request)),
        {"text": "proposed"},
    ])
    host.call("send", to="manager", body="carol should forecast the tides too")
    wait_for(lambda: model_api.pending("manager") == 0, timeout=90, message="the manager's second job")
    model_api.wait_requests("manager", len(model_api.requests("manager")))  # its last answer is out
    assert denials(model_api, "manager") == []
    proposal = wait_for(lambda: host.call("pending")["approvals"], message="the apply approval")[0]
    assert (proposal["kind"], proposal["agent"]) == ("apply", "carol")
    assert proposal["sha"] == git(config, "rev-parse", "HEAD")
    hp.cli("approve", str(proposal["id"]))
    assert tags(sd / "applied" / "carol")[f"deployed/{proposal['id']}"] == proposal["sha"]
    assert "You forecast the tides as well." in (sd / "applied" / "carol" / "agent.nix").read_text()


def harness_up(hp, name: str, count: int = 1) -> None:
    """Wait until ``name``'s harness said hello ``count`` times (its model.standin sample at start)."""
    wait_for(lambda: len(db_rows(hp, "SELECT 1 FROM stats WHERE agent = ? AND key = 'model.standin'", (name,)))
             >= count, timeout=30, message=f"{name}'s harness up")


def test_after_an_approve_the_restarted_agent_has_its_deployed_event_within_2_seconds(claude_hive, model_api):
    hp = claude_hive({"alice": {}})
    harness_up(hp, "alice")
    sha = commit_change(hp, "alice", "# alice\n", filename="README.md", message="alice: a readme")
    approval_id = hp.client("manager").call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    model_api.script("alice", [{"text": "noted the deploy"}])
    stream = TurnStream(hp.dashboard_url, "alice")
    try:
        hp.cli("approve", str(approval_id))
        approved_at = time.monotonic()
        start = stream.wait_type("turn_start", timeout=30)[0]  # the restarted harness took the event
        assert time.monotonic() - approved_at < 2
    finally:
        stream.close()
    assert [m["from"] for m in start["data"]["messages"]] == ["system"]
    assert f"deployed/{approval_id}" in str(model_api.wait_requests("alice", 1)[0]["messages"])


def test_a_killed_agent_gets_its_killed_event_at_its_next_start_at_once(claude_hive, model_api):
    hp = claude_hive({"alice": {}})
    harness_up(hp, "alice")
    model_api.script("alice", [{"text": "back"}])
    hp.cli("kill", "alice")
    wait_for(lambda: any("killed" in b for s, k, b in inbox(hp, "alice") if s == "system"),
             message="the killed event stored")
    stream = TurnStream(hp.dashboard_url, "alice")
    try:
        hp.cli("start", "alice")
        started = time.monotonic()
        start = stream.wait_type("turn_start", timeout=30)[0]  # the new harness took the event
        assert time.monotonic() - started < 2
    finally:
        stream.close()
    assert "killed" in str(start["data"]["messages"])


def test_the_managers_file_rules_reach_the_config_repos_and_an_agents_reach_only_its_own_state(
        claude_hive, model_api):
    """The real CLI in dontAsk mode refuses Read and Edit outside the paths its rules name: the manager's rules
    name the agents' config repos and state, an agent's only its own /state."""
    hp = claude_hive({"alice": {}, "bob": {}})
    sd = hp.config.state_dir
    bob_notes = sd / "agents" / "bob" / "state" / "notes.md"
    bob_notes.write_text("bob's own notes\n")
    alice_config = sd / "agents" / "alice" / "config"
    readable = alice_config / "README.md"
    readable.write_text("alice's config repo\n")
    model_api.script("manager", [tool_use("Read", file_path=str(readable)),
                                 tool_use("Read", file_path=str(bob_notes)),
                                 manager_git(alice_config, "status --short"),
                                 manager_git(sd, "status"),
                                 {"text": "done"}])
    model_api.script("alice", [tool_use("Read", file_path=str(bob_notes)),
                               tool_use("Read", file_path=str(readable)),
                               tool_use("Write", file_path=str(alice_config / "planted.nix"), content="{ }"),
                               {"text": "done"}])
    hp.host().call("send", to="manager", body="look around")
    hp.host().call("send", to="alice", body="look around")
    manager = model_api.wait_requests("manager", 5, timeout=60)
    alice = model_api.wait_requests("alice", 4, timeout=60)
    results = [last_tool_result(r) for r in manager[1:]]
    assert "alice's config repo" in results[0] and "bob's own notes" in results[1]
    assert "README.md" in results[2]
    assert "the repo must be" in results[3]  # git only in an agent's config repo
    results = [last_tool_result(r) for r in alice[1:]]
    assert all("denied" in r for r in results), results
    assert "bob's own notes" not in str(results)
    assert len(results) == 3 and not (alice_config / "planted.nix").exists()
