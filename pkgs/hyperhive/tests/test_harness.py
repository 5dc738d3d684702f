"""The harness end to end: a real service, its local backend running ``hyperhive agent`` for every agent, and the
fake ``claude`` honouring Claude Code's command line and calling the real MCP tools."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import wait_for
from harness_support import (FAKE_COMMAND, TurnStream, agent_state_dir, db_rows, fake_hive, runs, stats,
                             wait_runs)

PING_PONG = {"rules": [
    {"when": {"agent": "alice", "prompt_contains": "from operator"},
     "steps": [{"tool": "send", "args": {"to": "bob", "body": "ping from alice"}}, {"say": "asked bob"}]},
    {"when": {"agent": "bob"}, "steps": [{"reply": "pong from bob"}, {"say": "answered"}]},
    {"when": {"agent": "alice", "prompt_contains": "from bob"},
     "steps": [{"append": "notes.md", "content": "- bob answered pong\n"}, {"say": "noted"}]},
]}


def unsettled(hp, agent: str) -> int:
    return db_rows(hp, "SELECT count(*) FROM messages WHERE recipient = ? AND acked_at IS NULL", (agent,))[0][0]


def test_a_turn_sends_to_b_whose_harness_wakes_and_replies_and_a_receives_it(start_hive, hive_dir):
    hp = fake_hive(start_hive, hive_dir, PING_PONG)
    stream = TurnStream(hp.dashboard_url, "bob")
    try:
        hp.host().call("send", to="alice", body="please check with bob")

        alice = wait_runs(hive_dir, "alice", 2)
        bob = wait_runs(hive_dir, "bob", 1)
        assert "from operator" in alice[0]["prompt"] and "please check with bob" in alice[0]["prompt"]
        assert "from alice" in bob[0]["prompt"] and "ping from alice" in bob[0]["prompt"]
        assert "from bob" in alice[1]["prompt"] and "pong from bob" in alice[1]["prompt"]
        assert [c["is_error"] for c in alice[0]["calls"] + bob[0]["calls"]] == [False, False]
        # A receives it: its second turn wrote what bob said into its notes.
        notes = agent_state_dir(hp, "alice") / "notes.md"
        assert wait_for(lambda: notes.exists() and "bob answered pong" in notes.read_text())
        # Every message was acknowledged once its turn was done.
        wait_for(lambda: unsettled(hp, "alice") == 0 and unsettled(hp, "bob") == 0,
                 message="all messages acknowledged")

        # The live view of bob's turn: start, Claude's own events, end.
        stream.wait_type("turn_end")
        types = stream.types()
        assert types[0] == "turn_start" and types[-1] == "turn_end" and "event" in types
        start = stream.items[0]
        assert start["agent"] == "bob" and start["data"]["messages"][0]["from"] == "alice"
        assert start["ts"].endswith("Z")
        events = [i["data"]["event"] for i in stream.items if i["type"] == "event"]
        assert events[0]["type"] == "system" and events[0]["subtype"] == "init"
        tool_uses = [b for e in events if e["type"] == "assistant" for b in e["message"]["content"]
                     if b["type"] == "tool_use"]
        assert [(t["name"], t["input"]["to"]) for t in tool_uses] == [("mcp__hyperhive__send", "alice")]
        assert events[-1]["type"] == "result"
        assert stream.items[-1]["data"]["ok"] is True
    finally:
        stream.close()


def test_claude_gets_the_design_command_line_and_exactly_the_policy_permission_rules(start_hive, hive_dir):
    agents = {"alice": {"bashAllow": ["git *", "ls -la"], "model": "claude-opus-4-1", "prompt": "You keep the docs.",
                        "extraMcpServers": {"mirror": {"command": sys.executable,
                                                       "args": ["-m", "hyperhive", "mcp"]}}},
              "bob": {}}
    script = {"rules": [{"when": {"agent": "alice"}, "steps": [
        {"bash": "git --version"}, {"bash": "ls -la"}, {"bash": "rm -rf /tmp/nothing-here"},
        {"bash": "git status && rm -rf /tmp/nothing-here"},
        {"write": "notes.md", "content": "- allowed\n"}, {"write": "/tmp/hyperhive-forbidden.txt", "content": "x"},
        {"tool": "list_agents"}, {"tool": "list_agents", "server": "mirror"}]}]}
    hp = fake_hive(start_hive, hive_dir, script, agents)
    hp.host().call("send", to="alice", body="hello")
    run = wait_runs(hive_dir, "alice", 1)[0]
    state = agent_state_dir(hp, "alice")
    rules = ["Bash(git *)", "Bash(ls -la)", "mcp__hyperhive__*", "mcp__mirror__*", f"Edit(/{state}/**)"]

    argv = run["argv"]
    files = dict(zip(argv[argv.index("--settings")::2], argv[argv.index("--settings") + 1::2]))
    assert argv[:argv.index("--settings")] == ["--print", "--verbose", "--output-format", "stream-json",
                                               "--model", "claude-opus-4-1"]  # first turn: nothing to --continue
    assert argv[argv.index("--settings"):] == [
        "--settings", files["--settings"], "--system-prompt-file", files["--system-prompt-file"],
        "--mcp-config", files["--mcp-config"], "--strict-mcp-config", "--allowedTools", *rules]
    assert run["settings"]["permissions"] == {"allow": rules, "defaultMode": "dontAsk"}
    assert run["cwd"] == str(state)
    assert "You keep the docs." in run["system_prompt"] and f"{state}/notes.md" in run["system_prompt"]
    assert "`git *`" in run["system_prompt"]

    servers = run["mcp_config"]
    assert set(servers) == {"hyperhive", "mirror"}
    assert servers["hyperhive"]["args"][-2:] == ["--socket", str(hp.config.agent_socket("alice"))]
    assert run["server_status"]["mirror"]["status"] == "connected"  # the extra server was started as well

    calls = [(c["tool"], c["input"].get("command") or c["input"].get("file_path"), c["is_error"])
             for c in run["calls"]]
    assert calls == [
        ("Bash", "git --version", False), ("Bash", "ls -la", False),
        ("Bash", "rm -rf /tmp/nothing-here", True), ("Bash", "git status && rm -rf /tmp/nothing-here", True),
        ("Write", f"{state}/notes.md", False), ("Write", "/tmp/hyperhive-forbidden.txt", True),
        ("mcp__hyperhive__list_agents", None, False), ("mcp__mirror__list_agents", None, False)]
    assert not os.path.exists("/tmp/hyperhive-forbidden.txt")


def test_an_agent_gets_no_manager_tools_and_the_manager_gets_them_all(start_hive, hive_dir):
    hp = fake_hive(start_hive, hive_dir, [{"say": "ok"}])
    host = hp.host()
    host.call("send", to="alice", body="hi")
    host.call("send", to="manager", body="hi")
    alice = wait_runs(hive_dir, "alice", 1)[0]
    manager = wait_runs(hive_dir, "manager", 1)[0]
    assert alice["tools"]["hyperhive"] == ["send", "recv", "ask_operator", "list_agents"]
    assert manager["tools"]["hyperhive"] == [
        "send", "recv", "ask_operator", "list_agents", "request_spawn", "request_spawn_draft",
        "request_spawn_commit", "request_apply_commit", "kill", "start", "restart", "update"]
    assert "manager" in manager["system_prompt"] and "request_apply_commit" in manager["system_prompt"]
    assert "request_apply_commit" not in alice["system_prompt"]
