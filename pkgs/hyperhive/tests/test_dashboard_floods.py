"""Floods against the operator's pages (issue 11), through the real service and dashboard: a thousand questions, a
full inbox and a huge commit leave `/`, `/api/state` and the approval page small (measured in bytes, not time), with
counts of what is not shown, the whole one request away, and controls to end the flood."""

from __future__ import annotations

import re

from browser import http
from standins.support import commit_change, state_dir

QUESTION = "Should I go on? " + "x" * 16_000  # each question near 16 KB: 1,000 of them were 16 MB on one page
MAX_HOME_BYTES = 600_000
MAX_STATE_BYTES = 400_000


def test_a_thousand_questions_and_a_full_inbox_keep_the_home_page_small(start_broker):
    hive = start_broker(limits={"maxPendingQuestions": 5000})
    url = hive.dashboard_url
    alice = hive.client("alice")
    ids = [alice.call("ask_operator", question=f"#{i} {QUESTION}")["id"] for i in range(1000)]
    for i in range(100):
        alice.call("send", to="operator", body=f"note {i} " + "y" * 16_000)

    home = http(url, "GET", "/")
    assert home.status == 200
    assert len(home.body) < MAX_HOME_BYTES, f"/ is {len(home.body)} bytes"
    assert "980 not shown" in home.text and "cancel all pending questions" in home.text
    assert "mark all read" in home.text and "100 unread" in home.text
    assert len(http(url, "GET", "/fragments/home").body) < MAX_HOME_BYTES

    reply = http(url, "GET", "/api/state")
    assert len(reply.body) < MAX_STATE_BYTES, f"/api/state is {len(reply.body)} bytes"
    state = reply.json()
    assert state["counts"]["questions"] == 1000 and state["pages"]["questions"]["not_shown"] == 980
    assert [q["id"] for q in state["questions"]] == ids[:20]
    first = state["questions"][0]
    assert first["question_chars"] == len(f"#0 {QUESTION}") and len(first["question"]) < 5000
    whole = http(url, "GET", f"/api/questions/{first['id']}").json()
    assert whole["question"] == f"#0 {QUESTION}"
    assert state["counts"]["inbox"] == 100 and len(state["inbox"]) == 50
    assert all(m["body_chars"] > 16_000 and len(m["body"]) < 5000 for m in state["inbox"])
    page2 = http(url, "GET", "/api/state?questions_offset=20&inbox_offset=50").json()
    assert [q["id"] for q in page2["questions"]] == ids[20:40]
    assert [m["body"].split()[1] for m in page2["inbox"]] == [str(i) for i in range(50)]
    assert page2["pages"]["questions"]["prev"] == 0 and page2["pages"]["questions"]["next"] == 40

    # the page's controls end the flood: one form post cancels every question, another marks the inbox read
    sid = re.search(r"hh_sid=([^;]+)", home.headers["Set-Cookie"]).group(1)
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', home.text).group(1)
    form = {"headers": {"Cookie": f"hh_sid={sid}"}}
    cancelled = http(url, "POST", "/api/questions/cancel", data={"csrf_token": csrf, "next": "/"}, **form)
    assert cancelled.status == 303
    # the asker hears [cancelled] for each; its quota is free again
    assert alice.call("ask_operator", question="after the flood?")["id"] > ids[-1]
    read = http(url, "POST", "/api/inbox/read", data={"csrf_token": csrf, "next": "/"}, **form)
    assert read.status == 303
    alice.call("send", to="operator", body="room again")
    state = http(url, "GET", "/api/state").json()
    assert state["counts"]["questions"] == 1 and state["counts"]["inbox_unread"] == 1


def test_a_huge_commit_gives_a_small_approval_page_and_the_whole_diff_as_text(start_broker):
    hive = start_broker()
    url = hive.dashboard_url
    manager = hive.client("manager")
    manager.call("request_spawn_draft", name="dora")
    lines = "".join(f"# line {i:07d} of a very large proposal, padded out to make it long\n" for i in range(60_000))
    sha = commit_change(hive, "dora", lines + "# THE LAST LINE\n", filename="big.nix")
    approval_id = manager.call("request_spawn_commit", name="dora", commit=sha)["approval_id"]

    card = http(url, "GET", f"/api/approvals/{approval_id}")
    assert len(card.body) < MAX_STATE_BYTES, f"/api/approvals/{approval_id} is {len(card.body)} bytes"
    data = card.json()
    assert data["diff_truncated"] is True and data["diff_chars"] > len(lines)
    assert "THE LAST LINE" not in data["diff"] and data["diff"].endswith("\n")
    page = http(url, "GET", f"/approvals/{approval_id}")
    assert page.status == 200 and len(page.body) < 2 * MAX_HOME_BYTES, f"approval page is {len(page.body)} bytes"
    assert "the diff is cut" in page.text and data["diff_url"] in page.text

    whole = http(url, "GET", data["diff_url"], timeout=60)
    assert whole.status == 200 and whole.headers["Content-Type"].startswith("text/plain")
    assert "+# THE LAST LINE" in whole.text and len(whole.text) == data["diff_chars"]
    assert whole.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_a_large_zero_blob_is_named_not_diffed_and_costs_the_service_little(start_broker):
    """A 64 MiB file of zeros packs to a few hundred KB; its diff, built and escaped whole, took the service 2 min
    and 5 GB. It is named with its size instead (and flagged large); the rest of the change is shown."""
    hive = start_broker()
    url = hive.dashboard_url
    manager = hive.client("manager")
    manager.call("request_spawn_draft", name="dora")
    config = state_dir(hive) / "agents" / "dora" / "config"
    with open(config / "zeros.bin", "wb") as f:
        f.truncate(64 << 20)
    sha = commit_change(hive, "dora", "# next to the zeros\n", filename="small.nix")
    approval_id = manager.call("request_spawn_commit", name="dora", commit=sha)["approval_id"]

    before = _peak_rss(hive.proc.pid)
    data = http(url, "GET", f"/api/approvals/{approval_id}", timeout=60).json()
    assert "binary/large: zeros.bin: 67108864 bytes" in data["diff"], data["diff"][:2000]
    assert "+# next to the zeros" in data["diff"] and "\\x00" not in data["diff"]
    assert ("large", "zeros.bin") in {(f["kind"], f["path"]) for f in data["flags"]}
    whole = http(url, "GET", f"/api/approvals/{approval_id}/diff", timeout=60).text
    assert whole == data["diff"]
    grew = _peak_rss(hive.proc.pid) - before
    assert grew < 200 << 20, f"the service grew by {grew >> 20} MiB"


def test_files_that_add_up_past_the_diff_limit_are_named_and_flagged_not_diffed(start_broker):
    """git diffs every file for --stat before it writes a byte: three 7 MiB files (each under the large-file
    limit) are diffed up to 16 MiB of input, and the rest is named with its size and flagged large."""
    hive = start_broker()
    url = hive.dashboard_url
    manager = hive.client("manager")
    manager.call("request_spawn_draft", name="dora")
    config = state_dir(hive) / "agents" / "dora" / "config"
    line = "# padding a file that is plain text all through\n"
    for name in ("a.nix", "b.nix"):
        (config / name).write_text(line * (7 * 1024 * 1024 // len(line)))
    sha = commit_change(hive, "dora", line * (7 * 1024 * 1024 // len(line)) + "# THE LAST FILE\n", filename="c.nix")
    approval_id = manager.call("request_spawn_commit", name="dora", commit=sha)["approval_id"]
    data = http(url, "GET", f"/api/approvals/{approval_id}", timeout=60).json()
    assert data["diff"].startswith("binary/large: c.nix: "), data["diff"][:300]
    assert ("large", "c.nix") in {(f["kind"], f["path"]) for f in data["flags"]}
    whole = http(url, "GET", f"/api/approvals/{approval_id}/diff", timeout=60).text
    assert "+# padding" in whole and "THE LAST FILE" not in whole and "a.nix" in whole and "b.nix" in whole


def test_a_file_made_a_directory_is_shown_when_the_file_is_named_not_diffed(start_broker):
    """A pathspec that leaves out a named path ``P`` leaves out ``P/...`` too: with data files taking the diff to
    16 MiB, the deployed agent.nix was named (not diffed) and the agent.nix/default.nix that replaced it -- what
    Nix imports for ./agent.nix -- was in neither the diff, its --stat nor the flags. It is shown."""
    import os

    from standins.support import git

    hive = start_broker()
    manager = hive.client("manager")
    config = state_dir(hive) / "agents" / "bob" / "config"
    limit = 16 * 1024 * 1024
    padding = limit - (config / "agent.nix").stat().st_size + 1  # the data alone fits; with agent.nix it does not
    line = "# a data file that is plain text all through\n"
    for name, size in (("aaa", padding // 2), ("aab", padding - padding // 2)):
        text = line * (size // len(line))
        (config / name).write_text(text + "#" * (size - len(text) - 1) + "\n")
    os.unlink(config / "agent.nix")
    (config / "agent.nix").mkdir()
    (config / "agent.nix" / "default.nix").write_text('{ ... }: { hyperhive.prompt = "THE HIDDEN PROMPT"; }\n')
    git(config, "add", "-A")
    git(config, "commit", "-q", "-m", "two data files")
    approval_id = manager.call("request_apply_commit", agent="bob", commit="main")["approval_id"]
    shown = hive.host().call("approval", id=approval_id)
    assert shown["diff"].startswith("binary/large: agent.nix: "), shown["diff"][:300]
    assert "+++ b/agent.nix/default.nix" in shown["diff"], shown["diff"][:2000]
    assert '+{ ... }: { hyperhive.prompt = "THE HIDDEN PROMPT"; }' in shown["diff"]
    assert "+# a data file" in shown["diff"]  # the rest is still diffed after it
    if hive.dashboard_url:
        whole = http(hive.dashboard_url, "GET", f"/api/approvals/{approval_id}/diff", timeout=60).text
        assert "THE HIDDEN PROMPT" in whole


def test_a_file_past_the_cut_of_the_diff_is_named_and_flagged(start_broker):
    """The files within 16 MiB are diffed, but git's output may be twice their size: 14 MiB of empty lines made
    28 MiB of "+" lines, the output was cut at 16 MiB, and the agent.nix change after them was in no diff and no
    flag (only a --stat line). What the cut leaves out is named at the top of the diff and flagged."""
    hive = start_broker()
    manager = hive.client("manager")
    config = state_dir(hive) / "agents" / "bob" / "config"
    for name in ("aaa", "aab"):
        (config / name).write_text("\n" * (7 * 1024 * 1024))
    text = (config / "agent.nix").read_text().replace("hyperhive = { };", 'hyperhive = { prompt = "PAST THE CUT"; };')
    sha = commit_change(hive, "bob", text)
    approval_id = manager.call("request_apply_commit", agent="bob", commit=sha)["approval_id"]
    shown = hive.host().call("approval", id=approval_id)
    head = shown["diff"][:1000]
    assert "not shown: agent.nix: past the 16 MiB the diff is cut at" in head, head
    assert "+++ b/aaa" in shown["diff"] and "what it leaves out is named at the top" in shown["diff"][-300:]
    assert "PAST THE CUT" not in shown["diff"] and "+++ b/agent.nix" not in shown["diff"]  # no half section
    assert ("large", "agent.nix") in {(f["kind"], f["path"]) for f in shown["flags"]}, shown["flags"]
    assert "!! LARGE: agent.nix is not shown in the diff" in hive.cli("pending").stdout


def _peak_rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


BIDI = "invoice\u202egnp.exe and \u2066isolated\u2069"


def test_bidi_controls_in_agent_text_are_shown_not_obeyed_on_the_pages(start_broker):
    hive = start_broker()
    url = hive.dashboard_url
    alice = hive.client("alice")
    alice.call("send", to="operator", body=BIDI)
    alice.call("ask_operator", question="open " + BIDI + "?", options=["yes\u202e", "no"])
    home = http(url, "GET", "/").text
    for c in ("\u202e", "\u2066", "\u2069"):
        assert c not in home, f"{c!r} reached the page"
    assert "invoice[U+202E]gnp.exe and [U+2066]isolated[U+2069]" in home
    assert "open invoice[U+202E]gnp.exe" in home and "yes[U+202E]" in home
