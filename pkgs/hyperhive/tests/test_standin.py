"""The scripted stand-in model: a hive with no ``claude`` installed still lives, through the real MCP tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import wait_for
from harness_support import agent_state_dir, db_rows, stats


@pytest.fixture
def no_claude_env(tmp_path):
    """A PATH on which there is no ``claude``, whatever this machine has."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "bash", "sh", "env"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return {"PATH": f"{os.path.dirname(sys.executable)}:{bin_dir}"}


def operator_inbox(hp) -> list[dict]:
    return hp.host().call("inbox")["messages"]


def bodies(hp, sender: str, recipient: str) -> list[str]:
    return [b for (b,) in db_rows(hp, "SELECT body FROM messages WHERE sender = ? AND recipient = ? ORDER BY id",
                                  (sender, recipient))]


def test_an_agent_answers_the_operator_with_a_labelled_reply(start_hive, no_claude_env):
    hp = start_hive(env=no_claude_env)
    hp.host().call("send", to="alice", body="hello there")
    reply = wait_for(lambda: [m for m in operator_inbox(hp) if m["from"] == "alice"], timeout=30,
                     message="alice's answer")[0]
    assert reply["body"].startswith("[stand-in reply] alice got your message (\u201chello there\u201d)")
    assert "stand-in model" in reply["body"]
    notes = agent_state_dir(hp, "alice") / "notes.md"
    # the stand-in writes its notes after its reply is out
    wait_for(lambda: notes.exists() and "[stand-in] wrote to operator" in notes.read_text(), timeout=30,
             message="alice's notes")
    assert wait_for(lambda: [v for _, v in stats(hp, "alice", "model.standin")])[-1] == 1
    with urllib.request.urlopen(f"{hp.dashboard_url}/", timeout=10) as page:
        assert "STAND-IN MODEL" in page.read().decode()


def test_the_manager_routes_the_operators_message_and_the_exchange_ends(start_hive, no_claude_env):
    hp = start_hive(env=no_claude_env)
    hp.host().call("send", to="manager", body="bob, how is the build going?")
    wait_for(lambda: bodies(hp, "bob", "manager"), timeout=30, message="bob's answer to the manager")
    assert bodies(hp, "manager", "bob") == ["[stand-in] The operator asks you: bob, how is the build going?"]
    assert bodies(hp, "bob", "manager")[0].startswith("[stand-in reply] bob got your message")
    wait_for(lambda: len(bodies(hp, "manager", "operator")) == 2, message="the answer passed on to the operator")
    passed_on, answer = bodies(hp, "manager", "operator")
    assert passed_on == "[stand-in reply] Passed your message on to bob; their answers will come to you."
    assert answer.startswith("[stand-in reply] bob answered: bob got your message (\u201cThe operator asks you:")
    # A reply is never answered: once every inbox is settled, nothing more is sent.
    wait_for(lambda: db_rows(hp, "SELECT count(*) FROM messages WHERE acked_at IS NULL "
                                 "AND recipient != 'operator'")[0][0] == 0, timeout=30,
             message="every agent's message handled")
    count = db_rows(hp, "SELECT count(*) FROM messages")[0][0]
    time.sleep(1)
    assert db_rows(hp, "SELECT count(*) FROM messages")[0][0] == count == 5


def test_the_standin_compacts_notes_that_outgrew_their_limit(start_hive, no_claude_env):
    hp = start_hive({"alice": {"notesCompactBytes": 150}, "bob": {}}, env=no_claude_env)
    host = hp.host()
    notes = agent_state_dir(hp, "alice") / "notes.md"
    for i in range(3):
        host.call("send", to="alice", body=f"note number {i}")
        wait_for(lambda: len([m for m in operator_inbox(hp) if m["from"] == "alice"]) > i, timeout=30,
                 message=f"reply {i}")
    # Each turn reports notes.bytes after its compaction: once the third has, the notes are settled.
    sizes = wait_for(lambda: [v for _, v in stats(hp, "alice", "notes.bytes")][2:], timeout=30,
                     message="the third turn's telemetry")
    assert notes.with_name("notes.md.prev").exists()
    text = notes.read_text()
    assert sizes == [len(text.encode())]
    assert "(compacted by the stand-in model" in text and len(text.encode()) < 150
    assert len(notes.with_name("notes.md.prev").read_bytes()) > 150


def test_the_standin_takes_claudes_command_line_and_refuses_what_claude_would():
    run = subprocess.run([sys.executable, "-m", "hyperhive.standin", "--print", "--output-format", "stream-json"],
                         input="hi", capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "requires --verbose" in run.stderr
    run = subprocess.run([sys.executable, "-m", "hyperhive.standin", "--print", "--no-such-flag"],
                         input="hi", capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "--no-such-flag" in run.stderr
