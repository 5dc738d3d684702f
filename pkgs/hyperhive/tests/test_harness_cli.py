"""``hyperhive agent`` run by hand (``serve --no-agents``): its command line, clear refusals, and what happens to
the messages of a turn when the harness is stopped, killed, or the service goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for
from harness_support import FAKE_COMMAND, db_rows, process_gone, runs, wait_runs


class OwnHarness:
    """``hyperhive agent`` as a child process of the test, with the fake claude and a script."""

    def __init__(self, hp, hive_dir: Path, name: str, script, *args: str, agent: dict | None = None):
        self.dir = hive_dir / f"harness-{name}"
        self.dir.mkdir(exist_ok=True)
        self.state = self.dir / "state"
        (self.dir / "script.json").write_text(json.dumps(script))
        config = {"name": name, "role": "manager" if name == "manager" else "agent", "manager": "manager",
                  "claudeCommand": FAKE_COMMAND, "turnTimeoutSeconds": 20, **(agent or {})}
        (self.dir / "agent.json").write_text(json.dumps(config))
        env = {**os.environ, "FAKE_CLAUDE_SCRIPT": str(self.dir / "script.json"),
               "FAKE_CLAUDE_LOG": str(hive_dir / "fake" / "{agent}"), "HYPERHIVE_LOG": "info"}
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
def harnesses():
    started: list[OwnHarness] = []

    def start(*args, **kw) -> OwnHarness:
        h = OwnHarness(*args, **kw)
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


def test_a_socket_of_another_agent_is_refused(start_broker, hive_dir):
    hp = start_broker()
    config = hive_dir / "alice.json"
    config.write_text(json.dumps({"name": "alice", "claudeCommand": FAKE_COMMAND}))
    wrong = agent_cli("--name", "alice", "--agent-config", str(config), "--state-dir", str(hive_dir / "st"),
                      "--socket", str(hp.config.agent_socket("bob")))
    assert wrong.returncode == 2 and "speaks for 'bob', not for 'alice'" in wrong.stderr


def test_stopping_the_harness_mid_turn_kills_claude_and_gives_the_message_back_at_once(
        start_broker, hive_dir, harnesses):
    hp = start_broker()
    h = harnesses(hp, hive_dir, "alice", [{"hang": True}])
    hp.host().call("send", to="alice", body="a long job")
    run = wait_for(lambda: [r for r in runs(hive_dir, "alice") if r.get("hung")], message="claude running")[0]
    alice = hp.client("alice")
    assert alice.call("status") == {"unread": 0, "leased": 1}
    h.proc.send_signal(signal.SIGTERM)
    assert h.proc.wait(15) == 0
    assert process_gone(run["pid"])
    assert alice.call("status") == {"unread": 1, "leased": 0}


def test_the_heartbeat_keeps_a_long_turn_leased_and_a_killed_harness_lets_go_within_a_lease(
        start_broker, hive_dir, harnesses):
    hp = start_broker()
    script = {"rules": [{"when": {"run": 1}, "steps": [{"sleep": 3.5}, {"say": "slow but fine"}]},
                        {"when": {"run": 2}, "steps": [{"hang": True}]}], "default": [{"say": "ok"}]}
    h = harnesses(hp, hive_dir, "alice", script, "--lease-seconds", "1.5")
    alice = hp.client("alice")
    host = hp.host()
    host.call("send", to="alice", body="slow")
    wait_runs(hive_dir, "alice", 1, finished=False)
    time.sleep(2.5)  # past the lease: without the heartbeat it would have lapsed
    assert alice.call("status") == {"unread": 0, "leased": 1}
    wait_runs(hive_dir, "alice", 1)
    wait_for(lambda: alice.call("status") == {"unread": 0, "leased": 0}, message="acknowledged")

    sent = host.call("send", to="alice", body="this one outlives its harness")["id"]
    hung = wait_for(lambda: [r for r in runs(hive_dir, "alice") if r.get("hung")], message="hanging")[0]
    os.kill(h.proc.pid, signal.SIGKILL)
    h.proc.wait(5)
    os.killpg(hung["pid"], signal.SIGKILL)  # what a dying container would take with it
    killed_at = time.monotonic()
    wait_for(lambda: alice.call("status")["unread"] == 1, timeout=5, message="the lease lapsing")
    assert time.monotonic() - killed_at < 4
    harnesses(hp, hive_dir, "alice", script, "--lease-seconds", "1.5")
    third = wait_runs(hive_dir, "alice", 3)[2]
    assert f"#{sent} from operator" in third["prompt"]


def test_the_harness_rides_out_a_restart_of_the_service(start_broker, hive_dir, harnesses):
    hp = start_broker()
    harnesses(hp, hive_dir, "alice", [{"say": "ok"}])
    hp.host().call("send", to="alice", body="before")
    wait_runs(hive_dir, "alice", 1)
    hp.stop()
    hp.start()
    hp.host().call("send", to="alice", body="after the restart")
    second = wait_runs(hive_dir, "alice", 2, timeout=30)[1]
    assert "after the restart" in second["prompt"]


def test_once_handles_one_batch_and_exits(start_broker, hive_dir, harnesses):
    hp = start_broker()
    hp.host().call("send", to="alice", body="just this")
    h = harnesses(hp, hive_dir, "alice", [{"say": "ok"}], "--once")
    assert h.proc.wait(30) == 0
    assert len(runs(hive_dir, "alice")) == 1
    assert hp.client("alice").call("status") == {"unread": 0, "leased": 0}


def test_a_claude_command_that_does_not_exist_fails_the_turn_with_a_clear_reason(start_broker, hive_dir, harnesses):
    hp = start_broker()
    sent = hp.host().call("send", to="alice", body="anyone there?")["id"]
    h = harnesses(hp, hive_dir, "alice", [], "--once", agent={"claudeCommand": ["/no/such/claude"]})
    assert h.proc.wait(30) == 0
    log = (h.dir / "agent.log").read_text()
    assert "cannot run /no/such/claude" in log
    notice = wait_for(lambda: db_rows(hp, "SELECT body FROM messages WHERE recipient = 'manager'"),
                      message="the manager's notice")[0][0]
    assert "cannot run /no/such/claude" in notice
    alice = hp.client("alice")
    wait_for(lambda: alice.call("status") == {"unread": 1, "leased": 0}, message="the message back after 1s")
    assert [m["id"] for m in alice.call("recv")["messages"]] == [sent]


def test_a_harness_whose_parent_dies_stops_instead_of_lingering(start_broker, hive_dir):
    hp = start_broker()
    config = hive_dir / "alice.json"
    config.write_text(json.dumps({"name": "alice", "claudeCommand": FAKE_COMMAND}))
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
