"""The operator's console through its real entry points (the CLI and the JSON API of a running service): what
the manager said about a proposal, deny needing a note, one meaning for an operator's spawn, the inbox's replies,
and what `hyperhive list` shows."""

from __future__ import annotations

import pytest

from browser import http
from conftest import refused, wait_for
from standins.support import AGENT_ENV, agent_nix, commit_change, standin_info, wait_event, wait_status


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
    assert f"reason: (none given by manager)" in out.split(f"#{no_reason} ", 1)[1]

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
