"""``hyperhive agent`` run by hand (``serve --no-agents``), with the real Claude Code CLI against the stand-in
Messages API: its command line, clear refusals, and what happens to the messages of a turn when the harness is
stopped, killed, or the service goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import claude_env, wait_for
from harness_support import claude_children, db_rows, process_gone
from hyperhive.mcp import INSTRUCTIONS, RECV_CAP_SECONDS
from hyperhive.testing.messages_api import cli_context, context_cost


class OwnHarness:
    """``hyperhive agent`` as a child process of the test, running the real CLI against ``api``."""

    def __init__(self, hp, hive_dir: Path, api, claude: str, name: str, *args: str, agent: dict | None = None):
        self.dir = hive_dir / f"harness-{name}"
        self.dir.mkdir(exist_ok=True)
        self.state = self.dir / "state"
        config = {"name": name, "role": "manager" if name == "manager" else "agent", "manager": "manager",
                  "claudeCommand": [claude], "turnTimeoutSeconds": 20, **(agent or {})}
        (self.dir / "agent.json").write_text(json.dumps(config))
        env = {**os.environ, **claude_env(api, hive_dir), "HYPERHIVE_LOG": "info"}
        self.log = open(self.dir / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hyperhive", "agent", "--name", name, "--socket",
             str(hp.config.agent_socket(name)), "--agent-config", str(self.dir / "agent.json"), "--state-dir",
             str(self.state), *args], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def harnesses(model_api, claude_cli, hive_dir):
    started: list[OwnHarness] = []

    def start(hp, name: str, *args, **kw) -> OwnHarness:
        h = OwnHarness(hp, hive_dir, model_api, claude_cli, name, *args, **kw)
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


def agent_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hyperhive", "agent", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("content, problem", [
    (None, "agent config not found"),
    ("{not json", "not valid JSON"),
    ('{"name": "bob"}', 'the config is for "bob", but this harness runs as "alice"'),
    ('{"bashAllow": "git *"}', "bashAllow: must be a list"),
    ('{"extraMcpServers": {"hyperhive": {"command": "x"}}}', 'extraMcpServers.hyperhive: the name "hyperhive"'),
    ('{"claudeCommand": []}', "claudeCommand: must be a non-empty list"),
    ('{"turnTimeoutSeconds": 0}', "turnTimeoutSeconds: must be positive"),
])
def test_a_bad_agent_config_is_refused_naming_what_is_wrong(tmp_path, content, problem):
    config = tmp_path / "agent.json"
    if content is not None:
        config.write_text(content)
    result = agent_cli("--name", "alice", "--agent-config", str(config), "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 2
    assert problem in result.stderr and str(config) in result.stderr


def test_the_agent_config_comes_from_the_environment_when_not_given(tmp_path):
    result = agent_cli("--name", "alice", env={"HYPERHIVE_AGENT_CONFIG": str(tmp_path / "from-env.json")})
    assert result.returncode == 2 and "from-env.json: agent config not found" in result.stderr


def test_a_socket_of_another_agent_is_refused(start_broker, hive_dir, claude_cli):
    hp = start_broker()
    config = hive_dir / "alice.json"
    config.write_text(json.dumps({"name": "alice", "claudeCommand": [claude_cli]}))
    wrong = agent_cli("--name", "alice", "--agent-config", str(config), "--state-dir", str(hive_dir / "st"),
                      "--socket", str(hp.config.agent_socket("bob")))
    assert wrong.returncode == 2 and "speaks for 'bob', not for 'alice'" in wrong.stderr


def test_stopping_the_harness_mid_turn_kills_claude_and_gives_the_message_back_at_once(
        start_broker, harnesses, model_api):
    hp = start_broker()
    model_api.script("alice", [{"hang": None}])
    h = harnesses(hp, "alice")
    hp.host().call("send", to="alice", body="a long job")
    model_api.wait_requests("alice", 1, timeout=60, answered=False)  # the model is thinking, for ever
    claude = claude_children(h.proc.pid)
    assert claude, "no claude process under the harness"
    alice = hp.client("alice")
    assert alice.call("status") == {"unread": 0, "leased": 1}
    h.proc.send_signal(signal.SIGTERM)
    assert h.proc.wait(15) == 0
    assert all(process_gone(pid) for pid in claude)
    assert alice.call("status") == {"unread": 1, "leased": 0}


def test_the_heartbeat_keeps_a_long_turn_leased_and_a_killed_harness_lets_go_at_once(
        start_broker, harnesses, model_api):
    hp = start_broker()
    model_api.script("alice", [{"text": "slow but fine", "delay": 3.5}, {"hang": None}, {"text": "ok"}])
    h = harnesses(hp, "alice", "--lease-seconds", "1.5")
    alice = hp.client("alice")
    host = hp.host()
    host.call("send", to="alice", body="slow")
    model_api.wait_requests("alice", 1, timeout=60, answered=False)
    time.sleep(2.5)  # past the lease: without the heartbeat it would have lapsed
    assert alice.call("status") == {"unread": 0, "leased": 1}
    model_api.wait_requests("alice", 1)
    wait_for(lambda: alice.call("status") == {"unread": 0, "leased": 0}, timeout=30, message="acknowledged")

    sent = host.call("send", to="alice", body="this one outlives its harness")["id"]
    model_api.wait_requests("alice", 2, timeout=60, answered=False)
    claude = claude_children(h.proc.pid)
    os.kill(h.proc.pid, signal.SIGKILL)
    h.proc.wait(5)
    for pid in claude:  # what a dying container would take with it
        os.killpg(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: alice.call("status")["unread"] == 1, timeout=5, message="the message given back")
    assert time.monotonic() - killed_at < 4
    harnesses(hp, "alice", "--lease-seconds", "1.5")
    third = model_api.wait_requests("alice", 3, timeout=60)[2]
    assert f"#{sent} from operator" in str(third["messages"])


def test_a_harness_killed_mid_turn_takes_its_claude_with_it_and_the_message_gets_one_turn_only(
        start_broker, harnesses, model_api):
    """kill -9 (or the OOM killer) of the harness under `hyperhive up`: no cgroup takes the turn's claude with it.
    Left running, that claude went on sending as alice while the hive said she crashed, and alongside the turn
    the restarted harness ran for the same message."""
    hp = start_broker()
    model_api.script("alice", [
        {"tool": "mcp__hyperhive__send", "input": {"to": "operator", "body": "from the killed turn"}, "delay": 6},
        {"tool": "mcp__hyperhive__send", "input": {"to": "operator", "body": "from the turn after"}},
        {"text": "done"}])
    h = harnesses(hp, "alice")
    hp.host().call("send", to="alice", body="a job")
    model_api.wait_requests("alice", 1, timeout=60, answered=False)
    claude = claude_children(h.proc.pid)
    assert claude, "no claude process under the harness"
    os.kill(h.proc.pid, signal.SIGKILL)
    h.proc.wait(5)
    wait_for(lambda: all(process_gone(pid) for pid in claude), timeout=3, message="the turn's claude gone too")
    harnesses(hp, "alice")
    model_api.wait_requests("alice", 3, timeout=60)
    time.sleep(7)  # past the killed turn's delayed answer
    assert [b for (b,) in db_rows(hp, "SELECT body FROM messages WHERE recipient = 'operator' ORDER BY id")] == [
        "from the turn after"]
    assert hp.client("alice").call("status") == {"unread": 0, "leased": 0}


def test_the_harness_rides_out_a_restart_of_the_service(start_broker, harnesses, model_api):
    hp = start_broker()
    model_api.script("alice", [{"text": "ok"}, {"text": "ok again"}])
    harnesses(hp, "alice")
    hp.host().call("send", to="alice", body="before")
    model_api.wait_requests("alice", 1, timeout=60)
    alice = hp.client("alice")
    wait_for(lambda: alice.call("status") == {"unread": 0, "leased": 0}, timeout=30, message="acknowledged")
    hp.stop()
    hp.start()
    hp.host().call("send", to="alice", body="after the restart")
    second = model_api.wait_requests("alice", 2, timeout=60)[1]
    assert "after the restart" in str(second["messages"])


def test_a_turn_that_ends_while_the_service_is_down_is_acknowledged_once_it_is_back_not_run_again(
        start_broker, harnesses, model_api):
    """The ack after a good turn went out once (and once more on a fresh connection) and was dropped when the
    service was away (a restart of hyperhive.service during a long turn): the service requeued the messages at
    its start and the agent ran the finished turn again."""
    hp = start_broker()
    model_api.script("alice", [{"text": "done", "delay": 3}, {"text": "the same job again"}])
    h = harnesses(hp, "alice")
    hp.host().call("send", to="alice", body="a job")
    model_api.wait_requests("alice", 1, timeout=60, answered=False)
    hp.stop()
    claude = claude_children(h.proc.pid)
    wait_for(lambda: all(process_gone(pid) for pid in claude), timeout=30, message="the turn over")
    time.sleep(1)
    hp.start()
    alice = hp.client("alice")
    wait_for(lambda: alice.call("status") == {"unread": 0, "leased": 0}, timeout=30, message="acknowledged")
    time.sleep(3)
    assert len(model_api.requests("alice")) == 1
    assert db_rows(hp, "SELECT deliveries, acked_at IS NOT NULL FROM messages WHERE recipient = 'alice'") == [(1, 1)]


def test_a_restart_of_the_service_mid_turn_leaves_the_turns_messages_with_the_running_turn(
        start_broker, harnesses, model_api):
    """hyperhive.service restarted (a NixOS upgrade) during a long turn: the service requeued the turn's message at
    its start and the heartbeat's renewal found nothing leased, so another connection of the agent (the model's own
    `recv` through `hyperhive mcp`) was handed it again inside the same turn, and `status` showed it unread."""
    hp = start_broker()
    model_api.script("alice", [{"text": "done", "delay": 12}, {"text": "the same job again"}])
    h = harnesses(hp, "alice")  # the default lease: its heartbeat renews every 30 s
    sent = hp.host().call("send", to="alice", body="a long job")["id"]
    model_api.wait_requests("alice", 1, timeout=60, answered=False)
    hp.stop()
    hp.start()
    alice = hp.client("alice")
    wait_for(lambda: alice.call("status") == {"unread": 0, "leased": 1}, timeout=5,
             message="the running turn's message taken back by its harness")
    assert alice.call("recv")["messages"] == []  # not handed out twice
    assert claude_children(h.proc.pid), "the turn is still running"
    wait_for(lambda: alice.call("status") == {"unread": 0, "leased": 0}, timeout=30, message="acknowledged")
    time.sleep(2)
    assert len(model_api.requests("alice")) == 1
    assert db_rows(hp, "SELECT id, deliveries, acked_at IS NOT NULL FROM messages WHERE recipient = 'alice'") == [
        (sent, 1, 1)]


def test_once_handles_one_batch_and_exits(start_broker, harnesses, model_api):
    hp = start_broker()
    model_api.script("alice", [{"text": "ok"}])
    hp.host().call("send", to="alice", body="just this")
    h = harnesses(hp, "alice", "--once")
    assert h.proc.wait(60) == 0
    assert len(model_api.requests("alice")) == 1
    assert hp.client("alice").call("status") == {"unread": 0, "leased": 0}


def test_a_claude_command_that_does_not_exist_fails_the_turn_with_a_clear_reason(start_broker, harnesses):
    hp = start_broker()
    sent = hp.host().call("send", to="alice", body="anyone there?")["id"]
    h = harnesses(hp, "alice", "--once", agent={"claudeCommand": ["/no/such/claude"]})
    assert h.proc.wait(30) == 0
    log = (h.dir / "agent.log").read_text()
    assert "cannot run /no/such/claude" in log
    notice = wait_for(lambda: db_rows(hp, "SELECT body FROM messages WHERE recipient = 'manager'"),
                      message="the manager's notice")[0][0]
    assert "cannot run /no/such/claude" in notice
    alice = hp.client("alice")
    wait_for(lambda: alice.call("status") == {"unread": 1, "leased": 0}, message="the message back after 1s")
    assert [m["id"] for m in alice.call("recv")["messages"]] == [sent]


def test_a_harness_whose_parent_dies_stops_instead_of_lingering(start_broker, hive_dir, claude_cli):
    hp = start_broker()
    config = hive_dir / "alice.json"
    config.write_text(json.dumps({"name": "alice", "claudeCommand": [claude_cli]}))
    # A parent shell that starts the harness in the background, says its pid, and soon exits without stopping it.
    shell = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -m hyperhive agent --name alice --agent-config "{config}" '
                     f'--state-dir "{hive_dir / "st"}" --socket "{hp.config.agent_socket("alice")}" '
                     f'>/dev/null 2>&1 & echo $!; sleep 2'],
        capture_output=True, text=True, timeout=30)
    pid = int(shell.stdout.strip())
    assert not process_gone(pid)
    hp.stop()  # its parked recv ends; it finds its parent gone instead of waiting for the hive forever
    wait_for(lambda: process_gone(pid), timeout=20, message="the orphaned harness stopping")


def test_the_context_breakdown_of_a_real_cli_request_tells_the_hives_part_from_the_clis(
        start_broker, harnesses, model_api, hive_dir):
    """What ``make bench`` prints of a turn's cost in context, split from one real request of the CLI."""
    hp = start_broker()
    model_api.script("alice", [{"text": "ok"}])
    work = hive_dir / "alice-work"
    harnesses(hp, "alice", "--work-dir", str(work))
    hp.host().call("send", to="alice", body="what does a turn cost?")
    request = model_api.wait_requests("alice", 1, timeout=60)[0]
    system = (work / "system-prompt.md").read_text(encoding="utf-8")  # what the harness passed the CLI
    instructions = INSTRUCTIONS["agent"].format(cap=RECV_CAP_SECONDS)  # what `hyperhive mcp` tells an agent's CLI
    cost = context_cost(request, hive_system=system, hive_instructions=instructions)

    assert cost["body"] == len(request["raw"]) == int(request["headers"]["Content-Length"])
    hive = [t for t in request["tool_definitions"] if t["name"].startswith("mcp__hyperhive__")]
    assert {"mcp__hyperhive__send", "mcp__hyperhive__recv"} <= {t["name"] for t in hive}
    assert cost["hive_tools"]["names"] == [t["name"] for t in hive] and cost["hive_tools"]["count"] == len(hive)
    sent = [json.dumps(t, ensure_ascii=False, separators=(",", ":")).encode("utf-8") for t in hive]
    assert all(s in request["raw"] for s in sent)  # counted as the CLI serialized them, byte for byte
    assert cost["hive_tools"]["bytes"] == sum(len(s) for s in sent)
    assert {"Bash", "Read", "Write"} <= set(cost["builtin_tools"]["names"])
    assert cost["builtin_tools"]["count"] + len(hive) == len(request["tools"]) and cost["other_mcp_tools"]["count"] == 0
    assert cost["hive_tools"]["bytes"] + cost["builtin_tools"]["bytes"] + cost["system"] < cost["body"]

    texts = [b["text"] for b in request["system_blocks"]]
    assert "You are alice" in system and any(system in t for t in texts)
    assert cost["hive_system_found"] and cost["hive_system"] == len(system.encode("utf-8"))
    assert cost["cli_system"] == sum(len(t.encode("utf-8")) for t in texts) - cost["hive_system"] > 0
    added = "".join(cli_context(request["messages"]))
    assert cost["hive_instructions_found"] and instructions in added
    assert cost["hive_instructions"] == len(instructions.encode("utf-8")) < cost["cli_context"]
    assert "what does a turn cost?" in str(request["messages"]) and "what does a turn cost?" not in added

    elsewhere = context_cost(request, hive_system=system + "(not sent)", hive_instructions="(not sent either)")
    assert (elsewhere["hive_system"], elsewhere["hive_instructions"]) == (0, 0)
    assert not elsewhere["hive_system_found"] and elsewhere["cli_system"] == cost["system"]


def test_python_an_agent_writes_in_its_state_is_never_imported_by_its_tools_or_harness(claude_hive, model_api,
                                                                                         tmp_path):
    """An agent may write any file in its /state, where Claude Code starts the hive's MCP server (and hyperhive up
    its harness) with `python -m`: a `hyperhive/` or `json.py` there must not run, for an agent with no Bash."""
    from hyperhive.testing.messages_api import hive, tool_use

    hp = claude_hive({"alice": {"bashAllow": []}})
    state = hp.config.state_dir / "agents" / "alice" / "state"
    marker = tmp_path / "ran"
    plant = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    model_api.script("alice", [
        tool_use("Write", file_path=f"{state}/hyperhive/__init__.py", content=plant),
        tool_use("Write", file_path=f"{state}/hyperhive/__main__.py", content=plant),
        tool_use("Write", file_path=f"{state}/json.py", content=plant + "from _json import *\n"),
        {"text": "planted"},
        hive("send", to="operator", body="my tools still work"),
        {"text": "sent"},
    ])
    hp.host().call("send", to="alice", body="one")
    model_api.wait_requests("alice", 4, timeout=60)
    hp.host().call("send", to="alice", body="two")  # a new claude, a new MCP server, in the same /state
    wait_for(lambda: any(b == "my tools still work" for _, _, b in db_rows(
        hp, "SELECT sender, recipient, body FROM messages WHERE recipient = 'operator'")), timeout=60,
        message="alice's send through a fresh MCP server")
    hp.cli("restart", "alice")  # under hyperhive up the harness itself starts in the agent's state directory
    wait_for(lambda: len(db_rows(hp, "SELECT 1 FROM stats WHERE agent = 'alice' AND key = 'model.standin'")) >= 2,
             timeout=30, message="alice's harness back")
    assert not marker.exists()
