"""The harness end to end: a real service, its local backend running ``hyperhive agent`` for every agent, and the
real Claude Code CLI (its command line, permission engine, MCP client and stream-json) calling the real hive tools
through ``hyperhive mcp``, against the stand-in Messages API scripted per agent."""

from __future__ import annotations

import json
import sys
import time

from conftest import wait_for
from harness_support import TurnStream, agent_state_dir, db_rows, stats
from hyperhive.testing.messages_api import hive, last_tool_result, text_of, tool_use


def unsettled(hp, agent: str) -> int:
    return db_rows(hp, "SELECT count(*) FROM messages WHERE recipient = ? AND acked_at IS NULL", (agent,))[0][0]


def events_to(hp, recipient: str) -> list[tuple]:
    return db_rows(hp, "SELECT body, data FROM messages WHERE recipient = ? AND sender = 'system' ORDER BY id",
                   (recipient,))


def claude_events(stream: TurnStream) -> list[dict]:
    return [i["data"]["event"] for i in stream.items if i["type"] == "event"]


def results(stream: TurnStream) -> list[dict]:
    """The CLI's own ``result`` events, one per session."""
    return [e for e in claude_events(stream) if e.get("type") == "result"]


def test_a_turn_sends_to_b_whose_harness_wakes_and_replies_and_a_receives_it(claude_hive, model_api):
    hp = claude_hive()
    notes = agent_state_dir(hp, "alice") / "notes.md"
    model_api.script("alice", [hive("send", to="bob", body="ping from alice"), {"text": "asked bob"},
                               tool_use("Write", file_path=str(notes), content="- bob answered pong\n"),
                               {"text": "noted"}])
    model_api.script("bob", [hive("send", to="alice", body="pong from bob"), {"text": "answered"}])
    stream = TurnStream(hp.dashboard_url, "bob")
    try:
        hp.host().call("send", to="alice", body="please check with bob")
        alice = model_api.wait_requests("alice", 4, timeout=60)
        bob = model_api.wait_requests("bob", 2)
        assert "from operator" in str(alice[0]["messages"]) and "please check with bob" in str(alice[0]["messages"])
        assert "ping from alice" in str(bob[0]["messages"]) and "from alice" in str(bob[0]["messages"])
        assert "pong from bob" in str(alice[2]["messages"])
        assert '"id"' in last_tool_result(alice[1]) and '"id"' in last_tool_result(bob[1])  # both sends stored
        # A receives it: its second turn wrote what bob said into its notes.
        assert wait_for(lambda: notes.exists() and "bob answered pong" in notes.read_text(), timeout=30)
        # --continue carried the first turn into the second: the API saw turn 1's prompt and answer again.
        assert "please check with bob" in str(alice[2]["messages"]) and "asked bob" in str(alice[2]["messages"])
        assert "please check with bob" not in str(bob[0]["messages"])
        wait_for(lambda: unsettled(hp, "alice") == 0 and unsettled(hp, "bob") == 0, timeout=30,
                 message="all messages acknowledged")

        # The live view of bob's turn: start, Claude Code's own events, end.
        stream.wait_type("turn_end")
        types = stream.types()
        assert types[0] == "turn_start" and types[-1] == "turn_end" and "event" in types
        start = stream.items[0]
        assert start["agent"] == "bob" and start["data"]["messages"][0]["from"] == "alice"
        events = claude_events(stream)
        assert events[0]["type"] == "system" and events[0]["subtype"] == "init"
        tool_uses = [b for e in events if e["type"] == "assistant" for b in e["message"]["content"]
                     if b["type"] == "tool_use"]
        assert [(t["name"], t["input"]["to"]) for t in tool_uses] == [("mcp__hyperhive__send", "alice")]
        assert events[-1]["type"] == "result" and events[-1]["is_error"] is False
        assert stream.items[-1]["data"]["ok"] is True
    finally:
        stream.close()
    assert not [r for r in model_api.requests(scripted=None) if r.get("exhausted") or r.get("unexpected")]


def test_the_policy_becomes_the_clis_permissions_bash_and_writes_allowed_and_refused(claude_hive, model_api):
    agents = {"alice": {"bashAllow": ["git *", "ls -la"], "model": "claude-sonnet-4-5", "prompt": "You keep the docs.",
                        "extraMcpServers": {"mirror": {"command": sys.executable,
                                                       "args": ["-m", "hyperhive", "mcp"]}}},
              "bob": {}}
    hp = claude_hive(agents)
    state = agent_state_dir(hp, "alice")
    forbidden = hp.config.state_dir.parent / "forbidden.txt"
    model_api.script("alice", [
        tool_use("Bash", command="git --version"), tool_use("Bash", command="ls -la"),
        tool_use("Bash", command="rm -rf /tmp/nothing-here"),
        tool_use("Bash", command="git status && rm -rf /tmp/nothing-here"),
        tool_use("Write", file_path=str(state / "notes.md"), content="- allowed\n"),
        tool_use("Write", file_path=str(forbidden), content="x"),
        hive("list_agents"), tool_use("mcp__mirror__list_agents"), {"text": "done"}])
    stream = TurnStream(hp.dashboard_url, "alice")
    try:
        hp.host().call("send", to="alice", body="hello")
        result = wait_for(lambda: results(stream), timeout=60, message="the CLI's result")[0]
    finally:
        stream.close()
    # The CLI's own account of what it refused, in its result event.
    denied = [(d["tool_name"], d["tool_input"].get("command") or d["tool_input"].get("file_path"))
              for d in result["permission_denials"]]
    assert denied == [("Bash", "rm -rf /tmp/nothing-here"), ("Bash", "git status && rm -rf /tmp/nothing-here"),
                      ("Write", str(forbidden))]
    assert (state / "notes.md").read_text() == "- allowed\n" and not forbidden.exists()
    requests = model_api.wait_requests("alice", 9)
    assert "git version" in last_tool_result(requests[1]) and "total" in last_tool_result(requests[2])
    assert "alice" in last_tool_result(requests[7]) and "alice" in last_tool_result(requests[8])
    init = next(e for e in claude_events(stream) if e.get("subtype") == "init")
    assert init["permissionMode"] == "dontAsk" and init["cwd"] == str(state)
    assert {s["name"]: s["status"] for s in init["mcp_servers"]} == {"hyperhive": "connected", "mirror": "connected"}
    first = requests[0]
    assert first["model"] == "claude-sonnet-4-5"
    assert "You keep the docs." in first["system"] and f"{state}/notes.md" in first["system"]
    assert "`git *`" in first["system"]


def test_settings_files_planted_in_state_or_the_claude_config_dir_grant_nothing(claude_hive, model_api, hive_dir):
    """The agent may write its /state, Claude Code's working directory, and Claude Code would read settings files
    there (and in its config dir, ~/.claude): a permission rule planted in them must not widen the policy."""
    escaped = hive_dir / "escaped"
    wide = json.dumps({"permissions": {"allow": ["Bash(*)", "Edit(//**)", "Write(//**)"],
                                       "defaultMode": "bypassPermissions"}})
    hp = claude_hive({"alice": {"bashAllow": ["ls -la"]}})
    state = agent_state_dir(hp, "alice")
    for where in (state / ".claude" / "settings.json", state / ".claude" / "settings.local.json",
                  hive_dir / "claude-config" / "settings.json"):
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(wide)
    model_api.script("alice", [tool_use("Bash", command=f"touch {escaped}"),
                               tool_use("Write", file_path=str(escaped), content="x"),
                               tool_use("Bash", command="ls -la"), {"text": "done"}])
    stream = TurnStream(hp.dashboard_url, "alice")
    try:
        hp.host().call("send", to="alice", body="try")
        result = wait_for(lambda: results(stream), timeout=60, message="the CLI's result")[0]
    finally:
        stream.close()
    assert [d["tool_name"] for d in result["permission_denials"]] == ["Bash", "Write"]
    assert not escaped.exists()
    init = next(e for e in claude_events(stream) if e.get("subtype") == "init")
    assert init["permissionMode"] == "dontAsk"


def test_an_agent_gets_no_manager_tools_and_the_manager_gets_them_all(claude_hive, model_api):
    hp = claude_hive()
    host = hp.host()
    host.call("send", to="alice", body="hi")
    host.call("send", to="manager", body="hi")
    alice = model_api.wait_requests("alice", 1, timeout=60)[0]
    manager = model_api.wait_requests("manager", 1, timeout=60)[0]
    hive_tools = lambda r: {t.removeprefix("mcp__hyperhive__") for t in r["tools"]  # noqa: E731
                            if t.startswith("mcp__hyperhive__")}
    everyone = {"send", "recv", "ask_operator", "list_agents", "remind"}
    managing = {"request_spawn", "request_spawn_draft", "request_spawn_commit", "request_apply_commit", "kill",
                "start", "restart", "update", "get_logs"}
    assert everyone <= hive_tools(alice) and not managing & hive_tools(alice)
    assert everyone | managing <= hive_tools(manager)
    assert "manager" in manager["system"] and "request_apply_commit" in manager["system"]
    assert "request_apply_commit" not in alice["system"]


def test_api_errors_500_and_529_fail_the_turn_the_message_comes_again_and_the_manager_hears_of_it(
        claude_hive, model_api):
    # Claude Code retries a 5xx once (CLAUDE_CODE_MAX_RETRIES=1 in the tests), then gives up and exits 1.
    model_api.script("alice", [{"error": 500, "times": 2}, {"error": 529, "times": 2}, {"text": "ok"}])
    hp = claude_hive()
    stream = TurnStream(hp.dashboard_url, "alice")
    try:
        sent = hp.host().call("send", to="alice", body="do the thing")["id"]
        errors = [e["data"] for e in stream.wait_type("error", 2, timeout=90)]
        for error, status in zip(errors, (500, 529)):
            assert "exited with status 1" in error["reason"] and f"API Error: {status}" in error["reason"]
            assert error["exit_status"] == 1 and error["message_ids"] == [sent]
        requests = model_api.wait_requests("alice", 5, timeout=60)
        assert all(f"#{sent} from operator" in str(r["messages"]) for r in requests)
        wait_for(lambda: unsettled(hp, "alice") == 0, timeout=60, message="acknowledged after the good turn")
        notices = wait_for(lambda: [b for b, _ in events_to(hp, "manager") if "alice: a turn failed" in b],
                           message="the manager's event")
        assert "API Error: 500" in notices[0]  # (at most one notice a minute)
        assert not [b for b, _ in events_to(hp, "alice") if "turn failed" in b]  # no event to re-wake alice
        wait_for(lambda: [v for _, v in stats(hp, "alice", "turn.exit_status")] == [1.0, 1.0, 0.0],
                 message="exit statuses 1, 1, then 0")
    finally:
        stream.close()


def test_a_hanging_model_is_cut_at_the_turn_timeout_and_the_message_comes_again(claude_hive, model_api):
    """The model never answers; the harness stops the CLI at the turn timeout. (The real CLI ends on SIGTERM: a
    `claude` that ignores it, which the old fake could play, cannot be produced, so the SIGKILL that follows a
    grace period is not exercised end to end.)"""
    model_api.script("alice", [{"hang": None}, {"text": "ok"}])
    # the timeout leaves the good turn room on a busy machine (the CLI takes seconds to start there)
    hp = claude_hive({"alice": {"turnTimeoutSeconds": 10}, "bob": {}})
    sent_at = time.time()
    sent = hp.host().call("send", to="alice", body="this will hang once")["id"]
    hung, again = model_api.wait_requests("alice", 2, timeout=60)
    assert again["at"] - sent_at >= 10  # the turn (started after the send) was cut at its timeout
    assert f"#{sent} from operator" in str(again["messages"])
    wait_for(lambda: unsettled(hp, "alice") == 0, timeout=60, message="acknowledged after the good turn")
    wait_for(lambda: [v for _, v in stats(hp, "alice", "turn.exit_status")] == [124.0, 0.0],
             message="exit statuses 124 (timed out) then 0")
    notice = wait_for(lambda: [b for b, _ in events_to(hp, "manager") if "alice: a turn failed" in b],
                      message="the manager's event")[0]
    assert "turn timeout" in notice


def test_prompt_too_long_compacts_the_notes_and_retries_once_in_a_new_conversation(claude_hive, model_api):
    hp = claude_hive()
    notes = agent_state_dir(hp, "alice") / "notes.md"
    model_api.script("alice", [{"text": "first done"}])
    host = hp.host()
    host.call("send", to="alice", body="first")
    model_api.wait_requests("alice", 1, timeout=60)
    wait_for(lambda: unsettled(hp, "alice") == 0, timeout=30, message="the first turn done")
    original = "# Notes\n" + "".join(f"- an old observation number {i}\n" for i in range(100))
    notes.write_text(original)
    # Too long for every request, Claude Code's own compaction attempts of the conversation too, until the
    # harness's notes compaction ("compact this") comes.
    model_api.script("alice", [{"error": 400, "until": "compact this"},
                               {"text": "# Notes\n- compacted\n"},
                               {"text": "second done"}])
    sent = host.call("send", to="alice", body="second")["id"]
    wait_for(lambda: model_api.pending("alice") == 0, timeout=60, message="the compaction and the retry")
    requests = model_api.wait_requests("alice", len(model_api.requests("alice")))
    too_long, compaction, retry = requests[1], requests[-2], requests[-1]
    assert "first" in str(too_long["messages"]) and "first done" in str(too_long["messages"])  # --continue
    assert "compact this" in text_of(compaction["messages"])
    assert original in text_of(compaction["messages"]) and not [t for t in compaction["tools"] if "hyperhive" in t]
    assert "first done" not in str(retry["messages"])  # a new conversation ...
    assert f"#{sent} from operator" in str(retry["messages"])  # ... with the same wake prompt
    assert notes.read_text() == "# Notes\n- compacted\n"
    assert (notes.parent / "notes.md.prev").read_text() == original
    wait_for(lambda: unsettled(hp, "alice") == 0, timeout=30, message="acknowledged after the retry")
    assert not [b for b, _ in events_to(hp, "manager") if "turn failed" in b]


def test_a_turn_retried_after_prompt_too_long_counts_each_tool_call_once(claude_hive, model_api):
    """The retry's turn record carried the first session's tool calls too, which has its own record: the stats
    view's top tools counted them twice."""
    hp = claude_hive()
    wait_for(lambda: agent_state_dir(hp, "alice").is_dir(), timeout=30, message="alice's state")
    (agent_state_dir(hp, "alice") / "notes.md").write_text("# Notes\n" + "- an observation\n" * 50)
    model_api.script("alice", [hive("list_agents"), {"error": 400, "until": "compact this"},
                               {"text": "# Notes\n- compacted\n"}, hive("status"), {"text": "done"}])
    hp.host().call("send", to="alice", body="go")
    wait_for(lambda: model_api.pending("alice") == 0, timeout=90, message="the compaction and the retry")
    wait_for(lambda: unsettled(hp, "alice") == 0, timeout=30, message="acknowledged after the retry")
    turns = wait_for(lambda: [t for t in hp.host().call("turns", agent="alice")["turns"] if t["kind"] == "turn"]
                     if len(hp.host().call("turns", agent="alice")["turns"]) >= 3 else None,
                     timeout=30, message="both sessions and the compaction recorded")
    retry, first = turns[0], turns[-1]
    assert first["status"] == "too_long" and first["tools"] == {"mcp__hyperhive__list_agents": 1}, first
    assert retry["status"] == "ok" and retry["tools"] == {"mcp__hyperhive__status": 1}, retry
    top = {t["tool"]: t["calls"] for t in hp.host().call("report", agent="alice")["top_tools"]}
    assert top == {"mcp__hyperhive__list_agents": 1, "mcp__hyperhive__status": 1}, top
    # the turn's telemetry still counts what both of its sessions did
    calls = wait_for(lambda: stats(hp, "alice", "turn.tool_calls"), timeout=15, message="the turn's telemetry")
    assert calls[-1][1] == 2.0, calls


def test_a_turn_killed_at_its_timeout_counts_the_tokens_its_answers_streamed(claude_hive, model_api):
    """The CLI sums a session's usage only in its `result` event, which a turn killed at its timeout never
    prints: such a turn was stored as 0 tokens, so a token budget never saw what stuck turns spent."""
    hp = claude_hive({"alice": {"turnTimeoutSeconds": 8, "budget": {"dailyTokens": 4000}}, "bob": {}})
    usage = [{"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 1000,
              "cache_creation_input_tokens": 300},
             {"input_tokens": 7, "output_tokens": 50, "cache_read_input_tokens": 1300,
              "cache_creation_input_tokens": 40}]
    model_api.script("alice", [{**hive("list_agents"), "usage": usage[0]},
                               {"text": "looking", **hive("status"), "usage": usage[1]}, {"hang": 30}])
    host = hp.host()
    host.call("send", to="alice", body="go")
    [turn] = wait_for(lambda: host.call("turns", agent="alice")["turns"], timeout=60, interval=0.2,
                      message="the timed-out turn recorded")
    assert turn["status"] == "timeout" and "its cost is unknown" in turn["error"], turn
    # input and cache figures as the API answered; output as the stream showed it at each answer's start
    assert turn["tokens"]["input"] == 107 and turn["tokens"]["cache_read"] == 2300, turn["tokens"]
    assert turn["tokens"]["cache_write"] == 340 and turn["tokens"]["output"] >= 2, turn["tokens"]
    ready = hp.client("alice").call("turn_ready")  # 2,749 spent and about as many next: over 4,000
    assert ready["ready"] is False and "4,000" in ready["reason"], ready


def test_the_phrase_in_a_successful_turn_is_not_taken_for_the_apis_error(claude_hive, model_api):
    model_api.script("alice", [hive("recv"), {"text": "Prompt is too long, bob says about his essay"}])
    hp = claude_hive()
    hp.client("bob").call("send", to="alice", body="Prompt is too long: my essay was cut")
    model_api.wait_requests("alice", 2, timeout=60)
    wait_for(lambda: unsettled(hp, "alice") == 0, timeout=30, message="acknowledged")
    time.sleep(0.5)
    assert len(model_api.requests("alice")) == 2  # no compaction, no retry


def test_notes_compaction_shrinks_the_notes_and_a_failed_one_leaves_them_as_they_were(claude_hive, model_api):
    chunk = "- " + "a fact worth keeping for a while " * 12 + "\n"  # ~400 bytes: over the limit after each turn
    # The timeout bounds the hanging compaction; it leaves the turns room on a busy machine.
    hp = claude_hive({"alice": {"notesCompactBytes": 300, "turnTimeoutSeconds": 12}, "bob": {}})
    notes = agent_state_dir(hp, "alice") / "notes.md"
    prev = notes.with_name("notes.md.prev")
    compactions = [{"error": 500, "times": 2},  # the session fails
                   {"text": "   \n", "times": 2},  # blank (Claude Code asks once more on a blank answer)
                   {"hang": None},  # past the timeout
                   {"text": chunk * 9},  # not smaller
                   {"text": "```markdown\n# Notes\n- the gist\n```"}]  # fenced: the fence goes
    stream = TurnStream(hp.dashboard_url, "alice")
    host = hp.host()
    try:
        for turn, compaction in enumerate(compactions, start=1):
            model_api.script("alice", [tool_use("Write", file_path=str(notes), content=chunk * turn),
                                       {"text": "noted"}, {**compaction, "expect": "compact this"}])
            if turn > 1:  # the notes the turn finds are what the last compaction left, plus its own line
                assert notes.read_text() == chunk * (turn - 1)
            host.call("send", to="alice", body=f"turn {turn}")
            ends = wait_for(lambda: [e for e in claude_events(stream) if e.get("subtype") == "compaction_end"]
                            [turn - 1:], timeout=60, message=f"compaction {turn}")
            if turn < len(compactions):
                assert ends[0]["status"] == "failed", (turn, ends[0])
                assert notes.read_text() == chunk * turn and not prev.exists()
        assert ends[0]["status"] == "compacted"
        assert notes.read_text() == "# Notes\n- the gist\n"
        assert prev.read_text() == chunk * 5
        # the turn's notes.bytes is the size after its compaction
        wait_for(lambda: [v for _, v in stats(hp, "alice", "notes.bytes")][-1:] == [len("# Notes\n- the gist\n")],
                 message="notes.bytes after the compaction")
    finally:
        stream.close()


def test_recv_through_the_cli_peeks_at_once_and_parks_until_a_send(claude_hive, model_api):
    model_api.script("alice", [hive("recv"), hive("recv", wait_seconds=40), {"text": "got it"}])
    hp = claude_hive()
    hp.host().call("send", to="alice", body="wake up")
    peeked = model_api.wait_requests("alice", 2, timeout=60)[1]
    assert '"messages":[]' in last_tool_result(peeked).replace(" ", "")  # nothing else waiting: empty, at once
    time.sleep(1.5)
    assert len(model_api.requests("alice")) == 2  # the second recv is parked
    sent_at = time.time()
    hp.client("bob").call("send", to="alice", body="here is bob")
    woken = model_api.wait_requests("alice", 3, timeout=30)[2]
    assert woken["at"] >= sent_at and "here is bob" in last_tool_result(woken)
    wait_for(lambda: unsettled(hp, "alice") == 0, timeout=30, message="both acknowledged")
