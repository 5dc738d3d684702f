"""The harness end to end: a real service, its local backend running ``hyperhive agent`` for every agent, and the
fake ``claude`` honouring Claude Code's command line and calling the real MCP tools."""

from __future__ import annotations

import json
import os
import sys
import time

from conftest import wait_for
from harness_support import TurnStream, agent_state_dir, db_rows, fake_hive, process_gone, runs, stats, wait_runs

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
        "--mcp-config", files["--mcp-config"], "--strict-mcp-config", "--setting-sources", "",
        "--allowedTools", *rules]
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


def test_settings_files_the_agent_writes_grant_it_nothing(start_hive, hive_dir, tmp_path):
    """The agent may edit its /state, Claude Code's working directory, and Claude Code reads settings files there
    (and in ~/.claude): a permission rule the agent writes into them must not widen its policy."""
    escaped = tmp_path / "escaped"
    config_dir = tmp_path / "claude-config"
    wide = json.dumps({"permissions": {"allow": ["Bash(*)", "Edit(//**)"], "defaultMode": "bypassPermissions"}})
    script = {"rules": [
        {"when": {"agent": "alice", "prompt_contains": "first"}, "steps": [
            {"write": ".claude/settings.json", "content": wide},
            {"write": ".claude/settings.local.json", "content": wide}, {"say": "done"}]},
        {"when": {"agent": "alice", "prompt_contains": "second"}, "steps": [
            {"bash": f"touch {escaped}"}, {"write": str(escaped), "content": "x"}, {"bash": "ls -la"}]}]}
    config_dir.mkdir()
    (config_dir / "settings.json").write_text(wide)  # the user settings (~/.claude is the agent's too)
    hp = fake_hive(start_hive, hive_dir, script, {"alice": {"bashAllow": ["ls -la"]}},
                   env={"CLAUDE_CONFIG_DIR": str(config_dir)})
    hp.host().call("send", to="alice", body="first")
    first = wait_runs(hive_dir, "alice", 1)[0]
    assert [c["is_error"] for c in first["calls"]] == [False, False]  # its own /state: allowed
    hp.host().call("send", to="alice", body="second")
    second = wait_runs(hive_dir, "alice", 2)[1]
    assert second.get("setting_files", []) == []
    assert second["settings"]["permissions"]["defaultMode"] == "dontAsk"
    calls = [(c["tool"], c["is_error"]) for c in second["calls"]]
    assert calls == [("Bash", True), ("Write", True), ("Bash", False)]
    assert not escaped.exists()


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


def events_to(hp, recipient: str) -> list[tuple]:
    return db_rows(hp, "SELECT body, data FROM messages WHERE recipient = ? AND sender = 'system' ORDER BY id",
                   (recipient,))


def test_a_claude_that_exits_non_zero_leaves_the_message_to_come_again_and_the_manager_hears_of_it(
        start_hive, hive_dir):
    script = {"rules": [{"when": {"agent": "alice", "run": 1},
                         "steps": [{"exit": 3, "stderr": "boom: the model is unavailable"}]}],
              "default": [{"say": "ok"}]}
    hp = fake_hive(start_hive, hive_dir, script)
    stream = TurnStream(hp.dashboard_url, "alice")
    try:
        sent = hp.host().call("send", to="alice", body="do the thing")["id"]
        first, second = wait_runs(hive_dir, "alice", 2)
        assert first["exit"] == 3
        assert f"#{sent} from operator" in first["prompt"] and f"#{sent} from operator" in second["prompt"]
        assert second["started"] - first["ended"] >= 0.9  # the backoff before it came again
        wait_for(lambda: unsettled(hp, "alice") == 0, message="the message acknowledged after the good turn")

        error = stream.wait_type("error")[0]["data"]
        assert "exited with status 3" in error["reason"] and "boom: the model is unavailable" in error["reason"]
        assert error["exit_status"] == 3 and error["message_ids"] == [sent]
        notices = wait_for(lambda: [b for b, _ in events_to(hp, "manager") if "alice: a turn failed" in b],
                           message="the manager's event")
        assert "status 3" in notices[0]
        assert not [b for b, _ in events_to(hp, "alice") if "turn failed" in b]  # no event to re-wake alice
        wait_for(lambda: [v for _, v in stats(hp, "alice", "turn.exit_status")] == [3.0, 0.0],
                 message="exit statuses 3 then 0")
    finally:
        stream.close()


def test_a_hanging_claude_is_killed_at_the_turn_timeout_and_the_message_comes_again(start_hive, hive_dir):
    script = {"rules": [{"when": {"agent": "alice", "run": 1}, "steps": [{"hang": "ignore_term"}]}],
              "default": [{"say": "ok"}]}
    agents = {"alice": {"turnTimeoutSeconds": 4}, "bob": {}}  # room for the good turn on a loaded machine
    hp = fake_hive(start_hive, hive_dir, script, agents)
    sent = hp.host().call("send", to="alice", body="this will hang once")["id"]
    second = wait_runs(hive_dir, "alice", 2, timeout=30)[1]
    hung = runs(hive_dir, "alice")[0]
    assert hung.get("hung") and "exit" not in hung  # it ignored SIGTERM and got SIGKILL
    assert second["started"] - hung["started"] >= 4
    assert f"#{sent} from operator" in second["prompt"]
    assert process_gone(hung["pid"])
    assert process_gone(hung["server_status"]["hyperhive"]["pid"])  # its MCP server went with it
    wait_for(lambda: unsettled(hp, "alice") == 0, message="acknowledged after the good turn")
    wait_for(lambda: [v for _, v in stats(hp, "alice", "turn.exit_status")] == [124.0, 0.0],
             message="exit statuses 124 (timed out) then 0")
    notice = wait_for(lambda: [b for b, _ in events_to(hp, "manager") if "alice: a turn failed" in b],
                      message="the manager's event")[0]
    assert "turn timeout" in notice


def test_prompt_too_long_compacts_the_notes_and_retries_once_in_a_new_conversation(start_hive, hive_dir):
    script = {"rules": [
        {"when": {"agent": "alice", "prompt_contains": "compact this"}, "steps": [{"say": "# Notes\n- compacted\n"}]},
        {"when": {"agent": "alice", "run": 2}, "steps": [{"too_long": True}]}],
        "default": [{"say": "ok"}]}
    hp = fake_hive(start_hive, hive_dir, script)
    notes = agent_state_dir(hp, "alice") / "notes.md"
    host = hp.host()
    host.call("send", to="alice", body="first")
    wait_runs(hive_dir, "alice", 1)
    original = "# Notes\n" + "".join(f"- an old observation number {i}\n" for i in range(100))
    notes.write_text(original)
    sent = host.call("send", to="alice", body="second")["id"]
    _, too_long, compaction, retry = wait_runs(hive_dir, "alice", 4)

    assert "--continue" in too_long["argv"] and too_long["exit"] == 1
    assert compaction["prompt"].startswith("compact this") and original in compaction["prompt"]
    assert compaction["mcp_config"] == {} and compaction["settings"]["permissions"]["allow"] == []
    assert compaction["cwd"] != too_long["cwd"]  # its session must not become the one turns --continue
    assert "--continue" not in retry["argv"] and retry["prompt"] == too_long["prompt"]
    assert f"#{sent} from operator" in retry["prompt"] and retry["exit"] == 0
    assert notes.read_text() == "# Notes\n- compacted\n"
    assert (notes.parent / "notes.md.prev").read_text() == original
    wait_for(lambda: unsettled(hp, "alice") == 0, message="acknowledged after the retry")
    assert not [b for b, _ in events_to(hp, "manager") if "turn failed" in b]


def test_notes_compaction_shrinks_the_notes_and_a_failed_one_leaves_them_as_they_were(start_hive, hive_dir):
    chunk = "- " + "a fact worth keeping for a while " * 12 + "\n"  # ~400 bytes: over the limit after each turn
    script = {"rules": [
        {"when": {"agent": "alice", "run": 2}, "steps": [{"exit": 1, "stderr": "compaction crashed"}]},
        {"when": {"agent": "alice", "run": 4}, "steps": [{"say": "   \n"}]},
        {"when": {"agent": "alice", "run": 6}, "steps": [{"hang": True}]},
        {"when": {"agent": "alice", "run": 8}, "steps": [{"say": chunk * 9}]},
        {"when": {"agent": "alice", "run": 10}, "steps": [{"say": "```markdown\n# Notes\n- the gist\n```"}]},
        {"when": {"agent": "alice"}, "steps": [{"append": "notes.md", "content": chunk}]}]}
    # The timeout bounds the hanging compaction; it leaves the turns room on a loaded machine.
    agents = {"alice": {"notesCompactBytes": 300, "turnTimeoutSeconds": 6}, "bob": {}}
    hp = fake_hive(start_hive, hive_dir, script, agents)
    stream = TurnStream(hp.dashboard_url, "alice")
    notes = agent_state_dir(hp, "alice") / "notes.md"
    prev = notes.with_name("notes.md.prev")
    host = hp.host()
    try:
        for turn, why in enumerate(["failed", "empty", "timed out", "not smaller"], start=1):
            host.call("send", to="alice", body=f"turn {turn}")
            stream.wait_type("turn_end", turn)
            ends = wait_for(lambda: [e["data"]["event"] for e in stream.items if e["type"] == "event"
                                     and e["data"]["event"].get("subtype") == "compaction_end"][turn - 1:],
                            timeout=20, message=f"compaction {turn} ({why})")
            assert ends[0]["status"] == "failed", ends[0]
            assert notes.read_text() == chunk * turn, why
            assert not prev.exists(), why
        host.call("send", to="alice", body="turn 5")
        done = wait_for(lambda: [e["data"]["event"] for e in stream.items if e["type"] == "event"
                                 and e["data"]["event"].get("subtype") == "compaction_end"][4:],
                        timeout=20, message="a compaction that worked")
        assert done[0]["status"] == "compacted"
        assert notes.read_text() == "# Notes\n- the gist\n"
        assert prev.read_text() == chunk * 5
        sizes = wait_for(lambda: [v for _, v in stats(hp, "alice", "notes.bytes")][4:], message="notes.bytes")
        assert sizes == [len("# Notes\n- the gist\n")]
    finally:
        stream.close()


def test_the_phrase_in_a_successful_turn_is_not_taken_for_claudes_error(start_hive, hive_dir):
    script = {"rules": [{"when": {"agent": "alice"}, "steps": [
        {"tool": "recv"}, {"say": "Prompt is too long, bob says about his essay"}]}], "default": [{"say": "ok"}]}
    hp = fake_hive(start_hive, hive_dir, script)
    hp.client("bob").call("send", to="alice", body="Prompt is too long: my essay was cut")
    wait_runs(hive_dir, "alice", 1)
    wait_for(lambda: unsettled(hp, "alice") == 0, message="acknowledged")
    time.sleep(0.5)
    assert len(runs(hive_dir, "alice")) == 1  # no compaction, no retry
