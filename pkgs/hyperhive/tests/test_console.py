"""The operator's console through its real entry points (the CLI and the JSON API of a running service): what
the manager said about a proposal, deny needing a note, one meaning for an operator's spawn, the inbox's replies,
and what `hyperhive list` shows."""

from __future__ import annotations

import time

import pytest

from browser import http
from conftest import refused, wait_for
from standins.support import AGENT_ENV, agent_nix, commit_change, standin_info, wait_status


@pytest.fixture
def hive(start_hive):
    hp = start_hive(env=AGENT_ENV)
    wait_for(lambda: all(standin_info(hp, n) for n in ("manager", "alice", "bob")), message="agents running")
    return hp


def test_the_review_shows_the_commit_and_the_managers_reason(hive):
    sha = commit_change(hive, "alice", agent_nix("Tighter docs."),
                        message="alice: tighten the docs prompt\n\nThe old prompt let alice wander off.")
    manager = hive.client("manager")
    approval_id = manager.call("request_apply_commit", agent="alice", commit=sha,
                               reason="alice keeps editing files outside docs/")["approval_id"]
    no_reason = manager.call("request_apply_commit", agent="alice", commit=sha)["approval_id"]

    a = hive.host().call("approval", id=approval_id)
    assert a["reason"] == "alice keeps editing files outside docs/"
    assert a["commit"]["subject"] == "alice: tighten the docs prompt"
    assert a["commit"]["body"] == "The old prompt let alice wander off."
    assert a["commit"]["author"] == "manager <manager@hive>"
    assert a["commit"]["date"].endswith("Z")

    out = hive.cli("pending").stdout
    block = out.split(f"#{approval_id} ", 1)[1].split(f"#{no_reason} ", 1)[0]
    assert "commit: alice: tighten the docs prompt" in block
    assert "The old prompt let alice wander off." in block
    assert "author: manager <manager@hive>" in block and " UTC" in block
    assert "reason: alice keeps editing files outside docs/" in block
    assert "reason: (none given by manager)" in out.split(f"#{no_reason} ", 1)[1]

    # a reason that is not a string is refused, naming it
    assert '"reason"' in refused(lambda: manager.call("request_apply_commit", agent="alice", commit=sha,
                                                      reason=["x"]), "bad_request")


def test_deny_needs_a_note_in_the_cli_and_the_page_alike(hive):
    sha = commit_change(hive, "alice", agent_nix("Denied twice."), message="alice: a change to deny")
    approval_id = hive.client("manager").call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    cli = hive.cli("deny", str(approval_id), "--note", "  ", check=False)
    assert cli.returncode != 0 and "note" in cli.stderr
    page = http(hive.dashboard_url, "POST", f"/api/approvals/{approval_id}/deny", json={})
    assert page.status == 400 and "note" in page.error["message"]
    assert hive.host().call("approval", id=approval_id)["status"] == "pending"
    ok = http(hive.dashboard_url, "POST", f"/api/approvals/{approval_id}/deny", json={"reason": "not now"})
    assert ok.status == 200 and ok.json()["note"] == "not now"


def test_an_operator_spawn_means_the_same_in_the_page_and_the_cli(hive):
    cli = hive.cli("spawn", "carol").stdout
    assert "deployed" in cli
    page = http(hive.dashboard_url, "POST", "/api/spawn", json={"name": "dave"})
    assert page.status == 201, page.text
    approval = page.json()
    assert approval["kind"] == "spawn" and approval["requested_by"] == "operator"
    done = wait_status(hive.host(), approval["id"])
    assert done["status"] == "deployed"
    assert not [a for a in hive.host().call("pending")["approvals"] if a["agent"] in ("carol", "dave")]


def test_the_header_names_a_crashed_agent(hive):
    import os
    import signal

    assert http(hive.dashboard_url, "GET", "/api/attention").json()["crashed"] == []
    os.kill(standin_info(hive, "bob")["pid"], signal.SIGKILL)
    wait_for(lambda: http(hive.dashboard_url, "GET", "/api/attention").json()["crashed"] == ["bob"], timeout=15,
             message="bob reported as crashed")
    page = http(hive.dashboard_url, "GET", "/meta").text  # every page's header
    assert 'data-att="crashed"' in page and 'href="/agents/bob">bob</a>' in page


# --- the CLI a new user meets ---------------------------------------------------------------------------------

def _cli(*args, cwd, env_extra=None, timeout=60):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HYPERHIVE_CONFIG"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "hyperhive", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _as_toml(hive, directory):
    import json

    import tomli_w

    from hyperhive.cli.service import _drop_nulls

    raw = json.loads(hive.config_path.read_text())
    raw["stateDir"] = str(hive.config.state_dir)
    raw["runDir"] = str(hive.config.run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hive.toml").write_text(tomli_w.dumps(_drop_nulls(raw)))
    return directory / "hive.toml"


def test_operator_verbs_find_hive_toml_and_list_shows_what_the_dashboard_shows(hive, tmp_path):
    here = tmp_path / "myhive"
    _as_toml(hive, here)
    commit_change(hive, "alice", agent_nix("Stale on purpose."), message="alice: not proposed yet")
    hive.cli("kill", "bob")
    hive.cli("send", "bob", "are you there?")
    hive.cli("send", "bob", "hello?")

    out = _cli("list", cwd=here)  # no --config, no $HYPERHIVE_CONFIG: ./hive.toml, as `up` uses
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["AGENT", "ROLE", "STATE", "DEPLOYED", "UNREAD", "LEASED", "LAST", "TURN", "FLAGS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"manager", "alice", "bob"}
    bob = rows["bob"].split()
    waiting = hive.client("bob").call("status")  # the two messages and the event of the kill
    assert waiting["unread"] >= 2
    assert bob[1:4] == ["agent", "stopped", "deployed/0"] and bob[5:7] == [str(waiting["unread"]), "0"], rows["bob"]
    assert "no turn yet" in rows["bob"]
    assert "STALE" in rows["alice"] and "STALE" not in rows["bob"]

    # a failure names the file used and how it was found
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    none = _cli("list", cwd=empty)
    assert none.returncode != 0 and "/etc/hyperhive/hive.json" in none.stderr and "default" in none.stderr
    down = tmp_path / "down"
    toml = _as_toml(hive, down)
    toml.write_text(toml.read_text().replace(str(hive.config.run_dir), str(tmp_path / "no-run")))
    refused_ = _cli("pending", cwd=down)
    assert refused_.returncode != 0 and "./hive.toml in the current directory" in refused_.stderr, refused_.stderr


def test_client_help_lists_every_op_with_its_arguments(start_broker, tmp_path):
    hive = start_broker()
    help_text = _cli("client", "--help", cwd=tmp_path).stdout
    known = set()
    for who in ("alice", "manager"):
        message = refused(lambda: hive.client(who).call("no_such_op"), "bad_request")
        known |= {op.strip() for op in message.split("known: ", 1)[1].rstrip(")").split(",")}
    assert {"send", "recv", "request_apply_commit"} <= known
    for op in known:
        assert f"  {op}(" in help_text, f"{op} missing from `hyperhive client --help`"
    assert "send(to, body" in help_text and "request_apply_commit(agent, commit, reason?)" in help_text
    assert "recv(wait_seconds?" in help_text and "ask_operator(question, options?" in help_text


@pytest.mark.repo  # the venv's hyperhive script, as `make up` makes it (the build sandbox has none)
def test_up_prints_a_command_that_works_as_printed(tmp_path):
    import os
    import shlex
    import signal
    import subprocess
    import sys
    from pathlib import Path

    here = tmp_path / "hive"
    here.mkdir()
    (here / "hive.toml").write_text('version = 1\nbackend = "local"\nstateDir = "state"\nmanager = "manager"\n'
                                    '[dashboard]\nlisten = "127.0.0.1:0"\n')
    hyperhive = Path(sys.executable).parent / "hyperhive"
    env = {k: v for k, v in os.environ.items() if k != "HYPERHIVE_CONFIG"}
    env.update(AGENT_ENV)
    proc = subprocess.Popen([str(hyperhive), "up"], cwd=here, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        banner = []
        for line in proc.stdout:
            banner.append(line)
            if line.startswith("Ctrl-C"):
                break
        tries = [line for line in banner if line.strip().startswith("try:")]
        assert tries, "".join(banner)
        command = tries[0].split("try:", 1)[1].strip()
        assert command.startswith(str(hyperhive.resolve())), command  # the venv's, not a bare `hyperhive`
        ran = subprocess.run(shlex.split(command), cwd="/", capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in env.items() if k != "PATH"} | {"PATH": "/usr/bin:/bin"})
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.splitlines()[0].startswith("AGENT") and "manager" in ran.stdout
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)


def test_a_busy_dashboard_port_names_dashboard_listen(tmp_path):
    import socket

    from conftest import HiveProcess, write_config

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        config = write_config(tmp_path, dashboard={"listen": f"127.0.0.1:{port}"})
        process = HiveProcess(config, args=("--no-agents",))
        with pytest.raises(RuntimeError) as failed:
            process.start(timeout=20)
        assert f"dashboard.listen = 127.0.0.1:{port}" in str(failed.value)
        assert str(config) in str(failed.value)
    finally:
        busy.close()


def refused_start(process) -> str:
    """What a service that must not start said; stopped even when it did start, so a failing test leaves nothing
    running."""
    with pytest.raises(RuntimeError) as failed:
        try:
            process.start(timeout=20)
        finally:
            process.stop()
    return str(failed.value)


def test_a_second_service_on_the_same_hive_stops_and_the_first_goes_on(start_broker):
    """A second `hyperhive serve` (or `up`) of a running hive stops at once, naming the one that runs it. Before,
    it took over the sockets, removed them when it stopped (on the busy dashboard port), and put the messages the
    agents had leased back in the queue: the running hive lost every socket."""
    from conftest import HiveProcess

    hive = start_broker()
    hive.client("alice").call("send", to="bob", body="leased before the second start")
    assert len(hive.client("bob").call("recv", max=1)["messages"]) == 1
    refusal = refused_start(HiveProcess(hive.config_path, args=("--no-agents",)))
    assert f"another hyperhive service (pid {hive.proc.pid}) runs this hive" in refusal
    assert str(hive.config.state_dir / "service.lock") in refusal
    # the first goes on: its sockets answer, bob's lease stands, the operator's CLI reaches it
    assert hive.client("bob").call("status") == {"unread": 0, "leased": 1}
    assert hive.host().call("whoami")["name"] == "operator"
    assert "alice" in hive.cli("list").stdout
    hive.stop()
    third = HiveProcess(hive.config_path, args=("--no-agents",))  # once it has stopped, the hive is free
    third.start(timeout=30)
    try:
        assert third.client("bob").call("status") == {"unread": 1, "leased": 0}  # requeued by the next start
    finally:
        third.stop()


def test_a_second_hive_on_the_same_run_directory_stops_and_the_first_goes_on(start_broker, tmp_path):
    """Two hives (two state directories) configured with one runDir: the second would put its sockets over the
    first's. It stops, naming the run directory's lock."""
    from conftest import HiveProcess, write_config

    hive = start_broker()
    refusal = refused_start(HiveProcess(write_config(tmp_path, runDir=str(hive.config.run_dir)), args=("--no-agents",)))
    assert f"another hyperhive service (pid {hive.proc.pid}) has its sockets in this run directory" in refusal
    assert str(hive.config.run_dir / "service.lock") in refusal
    assert hive.client("alice").call("whoami")["name"] == "alice" and "bob" in hive.cli("list").stdout


def test_one_log_line_per_refused_and_per_accepted_reload(start_broker):
    import json
    import os
    import signal

    hive = start_broker()
    path = hive.config_path
    good = json.loads(path.read_text())
    path.write_text('{"version": 1, "agents": {"Bad Name": {}}}')
    wait_for(lambda: "refused the new config" in hive.log(), timeout=15, message="the refusal logged")
    os.kill(hive.proc.pid, signal.SIGHUP)  # asked again: the same refused file is not refused again
    good["agents"]["carol"] = {}
    path.write_text(json.dumps(good))
    wait_for(lambda: "config reloaded" in hive.log(), timeout=15, message="the reload logged")
    os.kill(hive.proc.pid, signal.SIGHUP)
    hive.client("carol").call("whoami")  # the reload took effect
    log = hive.log()
    assert log.count("refused the new config") == 1, log
    assert log.count("config reloaded") == 1, log


def test_a_reply_in_thread_names_the_message_it_answers(start_broker):
    hive = start_broker()
    alice, bob = hive.client("alice"), hive.client("bob")
    asked = alice.call("send", to="operator", body="Which branch do I base the docs on?")["id"]
    other = bob.call("send", to="operator", body="bob here")["id"]
    inbox = hive.cli("inbox").stdout
    assert f"#{asked} UNREAD" in inbox

    sent = hive.cli("send", "alice", "main, always", "--reply-to", str(asked)).stdout
    assert f"in reply to #{asked}" in sent
    got = alice.call("recv", max=10)["messages"]
    reply = [m for m in got if m["from"] == "operator"][0]
    assert reply["in_reply_to"] == asked and reply["body"] == "main, always"
    inbox = hive.cli("inbox").stdout
    assert f"#{asked} UNREAD" not in inbox and f"#{other} UNREAD" in inbox  # answered is read

    # a reply can only answer a message its sender received from its recipient
    assert "cannot reply" in refused(lambda: bob.call("send", to="alice", body="x", in_reply_to=asked),
                                     "not_found")
    assert "send the reply to bob" in refused(
        lambda: hive.host().call("send", to="alice", body="x", in_reply_to=other), "bad_request")
    # agents reply in thread too, and the operator sees it
    alice.call("send", to="operator", body="thanks", in_reply_to=reply["id"])
    assert f"(re #{reply['id']})" in hive.cli("inbox").stdout


def test_an_agent_replies_in_thread_through_its_mcp_tools(start_broker):
    from harness_support import McpPeer

    hive = start_broker()
    asked = hive.cli("send", "alice", "Is the changelog done?").stdout.split("#")[1].split()[0]
    peer = McpPeer(hive.config.agent_socket("alice"))
    try:
        peer.initialize()
        got = peer.call("recv", {})["result"]["structuredContent"]["messages"]
        assert [m["id"] for m in got] == [int(asked)]
        answer = peer.call("send", {"to": "operator", "body": "Yes, merged.", "in_reply_to": int(asked)})
        assert answer["result"]["isError"] is False, answer
    finally:
        peer.close()
    inbox = hive.cli("inbox").stdout
    assert f"(re #{asked})" in inbox and "Yes, merged." in inbox


def test_reading_the_config_does_not_make_the_service_read_it_again(start_broker):
    """The service watches its config file; its own reads of it (opened, closed without writing) are not changes.
    Reacting to them made one edit turn into a reload every 50 ms, forever."""
    import json
    import os

    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    hive = start_broker()
    path = hive.config_path
    reads = []

    class Count(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.event_type == "opened" and os.fsdecode(event.src_path) == str(path):
                reads.append(event)

    observer = Observer()
    observer.schedule(Count(), str(path.parent), recursive=False)
    observer.start()
    try:
        config = json.loads(path.read_text())
        config["agents"]["carol"] = {}
        path.write_text(json.dumps(config))
        wait_for(lambda: "config reloaded" in hive.log(), timeout=15, message="the reload logged")
        hive.client("carol").call("whoami")
        time.sleep(1)  # the events of the one write (modified, closed) are handled by now
        settled = len(reads)
        time.sleep(1.5)  # a service that reacts to its own reads would have read it ~30 times more by now
        assert len(reads) == settled, f"the config was read {len(reads) - settled} times with nothing changed"
    finally:
        observer.stop()
        observer.join(5)
