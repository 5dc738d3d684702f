"""Accessibility of the operator's console: axe-core finds no WCAG 2.2 A/AA violation on any page, quiet or busy;
every action works from the keyboard and focus never falls back to <body>; every control shows a focus ring; the
palette keeps its contrast; headings and buttons have plain names."""

from __future__ import annotations

import pytest

import re
import time
from pathlib import Path

from axe import audit, readable
from browser import browser_page, chromium, console_errors, http  # noqa: F401 (fixture)
from conftest import wait_for
from standins.support import AGENT_ENV, commit_change, standin_info


def busy(hive) -> dict:
    """A hive with something everywhere: 60 messages, a 60-line diff, several questions, turns, notes, charts."""
    alice, bob, manager = hive.client("alice"), hive.client("bob"), hive.client("manager")
    for i in range(60):
        sender = (alice, bob, manager)[i % 3]
        sender.call("send", to="operator" if i % 2 else "manager" if sender is not manager else "alice",
                    body=f"message {i}: " + "the docs build is green again; " * (1 + i % 4))
    alice.call("ask_operator", question="Deploy the docs now?", options=["yes", "not yet"])
    bob.call("ask_operator", question="Which platforms should CI cover?", options=["linux", "macos", "windows"],
             multi=True)
    alice.call("ask_operator", question="Anything else today?\n" + "More context. " * 80)
    sha = commit_change(hive, "alice", "".join(f"option{i} = {i};\n" for i in range(60)), filename="big.nix",
                        message="alice: sixty options")
    approval = manager.call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    for turn in range(3):
        alice.call("turn_event", event={"type": "turn_start", "data": {"turn": turn, "from": "operator"}})
        for j in range(15):
            alice.call("turn_event", event={"type": "event", "data": {"event": {"type": "assistant", "message": {
                "content": [{"type": "text", "text": f"step {j} of turn {turn}: reading the docs"}]}}}})
        alice.call("turn_event", event={"type": "turn_end", "data": {"exit_status": 0, "duration_s": 3.5}})
    alice.call("stats", samples=[{"key": "turn.duration", "value": 1.0 + i} for i in range(5)])
    notes = hive.config.state_dir / "agents" / "alice" / "state" / "notes.md"
    notes.write_text("".join(f"- note {i}: remember the docs\n" for i in range(200)))
    return {"approval": approval, "sha": sha}


def pages(hive, approval: int | None, sha: str | None) -> list[str]:
    out = ["/", "/agents/alice", "/agents/manager", "/meta", "/stats", "/stats?agent=alice",
           "/approvals/777"]  # (the last: the error page)
    if sha:
        out.append(f"/agents/alice?rev={sha}#diff")
    if approval:
        out.append(f"/approvals/{approval}")
    return out




@pytest.mark.browser
@pytest.mark.parametrize("state", ["quiet", "busy"])
def test_every_page_meets_wcag_22_aa(start_broker, browser_page, state):
    hive = start_broker()
    seeded = busy(hive) if state == "busy" else {"approval": None, "sha": None}
    page = browser_page
    page.on("dialog", lambda dialog: dialog.dismiss())
    url = hive.dashboard_url
    if state == "busy":
        page.goto(f"{url}/")
        page.locator("#approvals pre.diff").first.wait_for()  # the card's diff, loaded beside the page
        page.locator("#flow-list .msg").nth(39).wait_for(state="attached")
    problems = []
    for path in pages(hive, seeded["approval"], seeded["sha"]):
        page.goto(f"{url}{path}")
        if path == "/":
            page.wait_for_selector('#live[data-state="live"]')
            if state == "busy":
                page.locator("#approvals pre.diff").first.wait_for()
        if path.startswith("/agents/alice") and state == "busy":
            page.locator("#turn-list li").nth(40).wait_for(state="attached")
            page.locator("#charts .chart").first.wait_for()
        if "#" in path:
            # the jump to #diff leaves the raw-file form half under the sticky header, where axe counts its
            # targets as obscured; a header covers whatever scrolls under it, so audit the page from its top
            page.evaluate("window.scrollTo(0, 0)")
        violations = audit(page)
        if violations:
            problems.append(readable(violations, f"{path} ({state})"))
    if state == "busy":  # reflow: a phone-sized window scrolls more regions, each must still take focus
        page.set_viewport_size({"width": 390, "height": 800})
        for path in ("/", f"/approvals/{seeded['approval']}"):
            page.goto(f"{url}{path}")
            if path == "/":
                page.locator("#approvals pre.diff").first.wait_for()
            violations = audit(page)
            if violations:
                problems.append(readable(violations, f"{path} ({state}, 390 pixels wide)"))
        # WCAG 1.4.10 (reflow): at 320 CSS pixels no page scrolls sideways; a wide table, diff or log scrolls in a
        # region of its own
        page.set_viewport_size({"width": 320, "height": 800})
        for path in pages(hive, seeded["approval"], seeded["sha"]):
            page.goto(f"{url}{path}")
            wide = page.evaluate("document.documentElement.scrollWidth")
            if wide > 320:
                problems.append(f"{path} ({state}, 320 pixels wide): the page is {wide} pixels wide")
    assert not problems, "\n\n".join(problems)
    assert console_errors(page, ignore=("404",)) == []


@pytest.mark.browser
def test_login_page_meets_wcag_22_aa(start_broker, hive_dir, browser_page):
    token_file = hive_dir / "token"
    token_file.write_text("correct horse battery staple")
    hive = start_broker(dashboard={"tokenFile": str(token_file)})
    page = browser_page
    page.goto(f"{hive.dashboard_url}/login")
    violations = audit(page)
    assert not violations, readable(violations, "/login")
    page.fill("#token", "wrong")
    page.keyboard.press("Enter")
    page.locator(".banner.bad", has_text="wrong token").wait_for()
    violations = audit(page)
    assert not violations, readable(violations, "/login after a wrong token")
    assert console_errors(page, ignore=("401",)) == []


# --- the keyboard alone -------------------------------------------------------------------------------------

FOCUSED = r"""() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const item = e.closest('[data-key]');
  // WCAG 2.2 2.4.11: what has focus is not hidden under the sticky header (or anything else)
  const r = e.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + Math.min(r.width / 2, 8), r.top + Math.min(r.height / 2, 6));
  const obscured = !(hit && (e.contains(hit) || hit.contains(e) || (e.labels && [...e.labels].some((l) => l.contains(hit)))));
  return { at: Array.prototype.indexOf.call(document.querySelectorAll('*'), e), obscured: obscured ? (hit ? hit.outerHTML.slice(0, 60) : 'off screen') : null, tag: e.tagName.toLowerCase(), id: e.id, text: ('value' in e && e.tagName !== 'BUTTON' ? e.value : e.textContent).replace(/\s+/g, ' ').trim(),
           label: e.getAttribute('aria-label') || '', key: item ? item.dataset.key : null,
           section: (e.closest('section') || {}).id || null };
}"""


def focused(page) -> dict | None:
    return page.evaluate(FOCUSED)


def tab_until(page, predicate, key: str = "Tab", limit: int = 120) -> dict:
    """Press Tab (or Shift+Tab) until the focused element satisfies ``predicate``; fail after ``limit`` presses."""
    seen = []
    for _ in range(limit):
        page.keyboard.press(key)
        now = focused(page)
        assert now is not None, f"focus fell to <body> after {seen}"
        assert not now["obscured"], f"focus on {now} is hidden under {now['obscured']}"
        seen.append((now["tag"], now["text"][:30] or now["label"]))
        if predicate(now):
            return now
    raise AssertionError(f"no such control within {limit} presses of {key}: {seen}")


def settled_focus(page, predicate, what: str, timeout: float = 10) -> dict:
    """Focus moves on its own after an action (the page refreshes); wait until it rests where it should."""
    got = []

    def ok():
        got.append(focused(page))
        return got[-1] is not None and predicate(got[-1])

    wait_for(ok, timeout=timeout, message=f"focus on {what} (last: {got[-1] if got else None})")
    assert not got[-1]["obscured"], f"focus on {got[-1]} is hidden under {got[-1]['obscured']}"
    return got[-1]


@pytest.mark.browser
def test_the_console_works_from_the_keyboard_and_keeps_focus(start_hive, browser_page):
    hive = start_hive(env=AGENT_ENV)  # agents run as stand-in processes that never receive: their events stay
    wait_for(lambda: all(standin_info(hive, n) for n in ("alice", "bob", "manager")), timeout=30,
             message="the agents to run")
    alice, bob, manager = hive.client("alice"), hive.client("bob"), hive.client("manager")
    q1 = alice.call("ask_operator", question="Deploy the docs now?", options=["yes", "not yet"])["id"]
    q2 = bob.call("ask_operator", question="Which runner?", options=["linux", "macos"])["id"]
    a1 = manager.call("request_spawn", name="carol")["approval_id"]
    a2 = manager.call("request_spawn", name="dave")["approval_id"]
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())  # "Approve #n? It is built and deployed now.", "Restart bob?"
    page.goto(f"{hive.dashboard_url}/")
    page.wait_for_selector('#live[data-state="live"]')
    page.locator(f'[data-key^="ap-{a2}-"] pre.diff').wait_for()
    page.locator('[data-key="a-bob"] .badge', has_text="running").wait_for()

    # A skip link takes the first Tab stops; Enter on it lands on the questions, the options come first.
    tab_until(page, lambda f: f["text"] == "skip to questions", limit=3)
    page.keyboard.press("Enter")
    assert focused(page)["id"] == "questions-h"
    now = tab_until(page, lambda f: f["key"] == f"q-{q1}", limit=3)  # (past "cancel all pending questions")
    assert now["text"] == "yes", now  # the first option, before the free-text field

    # Answer: the card goes; focus moves to the like control of the next card.
    page.keyboard.press("Enter")
    assert event_answer(alice, q1) == "yes"
    now = settled_focus(page, lambda f: f["key"] == f"q-{q2}", "the next question card")
    assert now["text"] == "linux", now
    page.locator(f'[data-key="q-{q1}"]').wait_for(state="detached")

    # Approve: focus goes on to the next approval's approve button.
    tab_until(page, lambda f: f["key"] == f"ap-{a1}-pending" and f["text"].startswith("approve"))
    page.keyboard.press("Enter")
    wait_for(lambda: http(hive.dashboard_url, "GET", f"/api/approvals/{a1}").json()["status"] != "pending",
             message="the approval to be resolved")
    now = settled_focus(page, lambda f: f["key"] == f"ap-{a2}-pending", "the next approval card")
    assert now["text"].startswith("approve"), now

    # Deny with a note: Tab to the note, type it, Enter; the last card goes, focus lands on the section heading.
    tab_until(page, lambda f: f["tag"] == "input" and f["key"] == f"ap-{a2}-pending", limit=3)
    page.keyboard.type("not dave, not today")
    page.keyboard.press("Enter")
    wait_for(lambda: http(hive.dashboard_url, "GET", f"/api/approvals/{a2}").json()["status"] == "denied",
             message="the denial")
    assert http(hive.dashboard_url, "GET", f"/api/approvals/{a2}").json()["note"] == "not dave, not today"
    settled_focus(page, lambda f: f["id"] == "approvals-h", "the approvals heading")

    # Restart an agent: its row is rendered again; focus stays on the same button in the new row.
    tab_until(page, lambda f: f["text"] == "restart bob")
    pid = standin_info(hive, "bob")["pid"]
    page.keyboard.press("Enter")
    wait_for(lambda: (standin_info(hive, "bob") or {}).get("pid") not in (None, pid), timeout=30,
             message="bob to run again as a new process")
    page.locator('[data-key="a-bob"] .badge', has_text="running").wait_for()
    now = settled_focus(page, lambda f: f["key"] == "a-bob", "bob's row")
    assert now["text"] == "restart bob", now

    # Send a message: back up (Shift+Tab) to the message box above the agents; after sending, focus is back in it.
    tab_until(page, lambda f: f["id"] == "compose-body", key="Shift+Tab")
    page.keyboard.type("keyboard only, thanks")
    tab_until(page, lambda f: f["text"].startswith("send"), limit=2)
    page.keyboard.press("Enter")
    settled_focus(page, lambda f: f["id"] == "compose-body", "the emptied message box")
    assert page.locator("#compose-body").input_value() == ""
    first = page.locator("#compose-to").input_value()
    sent = [m["body"] for m in hive.client(first).call("recv", wait_seconds=10, max=100)["messages"]]
    assert "keyboard only, thanks" in sent

    assert console_errors(page) == []


@pytest.mark.browser
def test_focus_after_kill_and_revive_never_lands_on_a_more_destructive_button(start_hive, browser_page):
    # Enter on "kill dave" used to leave focus on "destroy dave" (the like-styled button), so a second Enter
    # destroyed dave; "revive dave" left it on "purge dave"
    hive = start_hive(agents={"alice": {}}, env=AGENT_ENV)
    hive.cli("spawn", "dave")
    wait_for(lambda: standin_info(hive, "dave"), timeout=30, message="dave running")
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{hive.dashboard_url}/")
    page.wait_for_selector('#live[data-state="live"]')
    page.locator('[data-key="a-dave"] .badge', has_text="running").wait_for()

    page.get_by_role("button", name="kill dave", exact=True).focus()
    page.keyboard.press("Enter")
    page.locator('#containers [data-key="a-dave"] form[data-state="stopped"]').wait_for()
    now = settled_focus(page, lambda f: f["key"] == "a-dave", "dave's row")
    assert now["text"] == "start dave", now

    page.get_by_role("button", name="destroy dave", exact=True).click()
    page.locator('#kept [data-key="t-dave"]').wait_for()
    page.get_by_role("button", name="revive dave", exact=True).focus()
    page.keyboard.press("Enter")
    page.locator('#kept [data-key="t-dave"] a', has_text="revive queued").wait_for()
    now = settled_focus(page, lambda f: f["key"] == "t-dave", "dave's kept row")
    assert now["text"].startswith("revive queued"), now
    assert console_errors(page) == []


@pytest.mark.browser
def test_a_reply_from_the_keyboard_leaves_focus_in_the_inbox(start_broker, browser_page):
    # the replied message is read (a row of its own): focus went to the next message's reply box, hidden in its
    # closed <details>, and so fell to <body>
    hive = start_broker()
    alice = hive.client("alice")
    older = alice.call("send", to="operator", body="May I rename docs/old.md?")["id"]
    newer = alice.call("send", to="operator", body="And docs/older.md?")["id"]
    page = browser_page
    page.goto(f"{hive.dashboard_url}/")
    page.wait_for_selector('#live[data-state="live"]')
    page.locator(f'#inbox [data-message-id="{newer}"] summary').focus()
    page.keyboard.press("Enter")  # opens the reply box
    tab_until(page, lambda f: f["id"] == f"reply-{newer}", limit=3)
    page.keyboard.type("Yes to both.")
    tab_until(page, lambda f: f["text"].startswith("send reply"), limit=2)
    page.keyboard.press("Enter")
    page.locator(f'#inbox [data-message-id="{newer}"].read').wait_for()
    now = settled_focus(page, lambda f: f["section"] == "inbox", "the inbox")
    assert now["key"] == f"i{older}-u", now
    assert [m["body"] for m in alice.call("recv", max=10)["messages"]] == ["Yes to both."]
    assert console_errors(page) == []


def event_answer(client, question_id: int) -> str:
    from conftest import event_about

    return event_about(client, question_id)["data"]["answer"]


# --- names, focus rings and the palette ----------------------------------------------------------------------

PLAIN_HEADINGS = ["Questions for you", "Approvals waiting", "Your inbox", "Agents", "Drafts", "Destroyed agents, kept",
                  "Live message flow"]


@pytest.mark.browser
def test_headings_and_buttons_have_plain_names(start_hive, browser_page):
    hive = start_hive(env=AGENT_ENV)  # agents run (stand-in processes), so they offer kill and restart
    wait_for(lambda: all(standin_info(hive, n) for n in ("alice", "bob", "manager")), timeout=30,
             message="the agents to run")
    hive.client("alice").call("ask_operator", question="Ready?", options=["yes"])
    page = browser_page
    page.goto(f"{hive.dashboard_url}/")
    page.wait_for_selector('#live[data-state="live"]')
    page.locator('[data-key="a-bob"] .badge', has_text="running").wait_for()
    tree = page.locator("body").aria_snapshot()
    headings = re.findall(r'heading "([^"]*)" \[level=(\d)\]', tree)
    assert [h for h, level in headings if level == "1"] == ["hyperhive operator console"], headings
    for plain in PLAIN_HEADINGS:
        assert any(h.startswith(plain) for h, level in headings if level == "2"), (plain, headings)
    leet = [h for h, _ in headings if re.search(r"[A-Z][0-9]|[0-9][A-Z]", h)]
    assert leet == [], f"headings read digit by digit: {leet}"
    for agent in ("alice", "bob", "manager"):
        for verb in ("kill", "restart", "rebuild"):  # (start only on a stopped agent)
            assert page.get_by_role("button", name=f"{verb} {agent}", exact=True).count() == 1, (verb, agent)
    # kill asks first, like destroy; danger buttons are marked as such before any hover
    assert page.locator('button[formaction$="/alice/kill"]').get_attribute("data-confirm")
    kill = page.get_by_role("button", name="kill alice", exact=True)
    restart = page.get_by_role("button", name="restart alice", exact=True)
    assert kill.evaluate("e => getComputedStyle(e).color") != restart.evaluate("e => getComputedStyle(e).color")
    for path in ("/agents/alice", "/meta", "/approvals/" + str(
            hive.client("manager").call("request_spawn", name="carol")["approval_id"])):
        page.goto(f"{hive.dashboard_url}{path}")
        assert page.locator("h1").count() == 1, path
    assert console_errors(page) == []


RING = r"""() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const s = getComputedStyle(e);
  return { at: Array.prototype.indexOf.call(document.querySelectorAll('*'), e), what: e.outerHTML.slice(0, 100),
           style: s.outlineStyle, width: parseFloat(s.outlineWidth),
           color: s.outlineColor };
}"""


@pytest.mark.browser
def test_every_control_shows_a_focus_ring(start_broker, browser_page):
    hive = start_broker()
    hive.client("alice").call("ask_operator", question="Ready?", options=["yes", "no"])
    hive.client("bob").call("ask_operator", question="Which?", options=["a", "b"], multi=True)
    hive.client("manager").call("request_spawn", name="carol")
    page = browser_page
    page.goto(f"{hive.dashboard_url}/")
    page.wait_for_selector('#live[data-state="live"]')
    page.locator("#approvals pre.diff").wait_for()
    seen, missing = set(), []
    for _ in range(150):
        page.keyboard.press("Tab")
        ring = page.evaluate(RING)
        if ring is None or ring["at"] in seen:
            break
        seen.add(ring["at"])
        where = focused(page)
        assert not where["obscured"], f"focus on {where} is hidden under {where['obscured']}"
        if ring["style"] in ("none", "hidden") or ring["width"] < 2 or ring["color"] in (
                "rgba(0, 0, 0, 0)", "transparent"):
            missing.append(ring)
    assert len(seen) > 20
    assert missing == [], f"controls without a visible focus ring: {missing}"


@pytest.mark.browser
def test_focus_is_never_hidden_under_the_header_of_a_narrow_window(start_broker, browser_page):
    hive = start_broker()
    seeded = busy(hive)
    page = browser_page
    page.set_viewport_size({"width": 390, "height": 800})  # the header wraps to several lines
    for path in ("/", f"/approvals/{seeded['approval']}"):
        page.goto(f"{hive.dashboard_url}{path}")
        page.wait_for_selector('#live[data-state="live"]') if path == "/" else None
        seen = set()
        for _ in range(60):
            page.keyboard.press("Tab")
            where = focused(page)
            if where is None or where["at"] in seen:
                break
            seen.add(where["at"])
            assert not where["obscured"], f"{path}: focus on {where} is hidden under {where['obscured']}"
        assert len(seen) > 10, (path, seen)


@pytest.mark.browser
def test_a_long_option_wraps_inside_its_card(start_broker, browser_page):
    hive = start_broker()
    option = "Yes, but only after " + "the docs build, the link check and the spelling pass have all run " * 4 + "again"
    qid = hive.client("alice").call("ask_operator", question="Ship it?", options=[option[:300], "no"])["id"]
    page = browser_page
    for width in (1440, 320):
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(f"{hive.dashboard_url}/")
        button = page.locator(f'[data-question-id="{qid}"] button[name="choice"]').first
        card = page.locator(f'[data-question-id="{qid}"]').bounding_box()
        box = button.bounding_box()
        assert page.evaluate("document.documentElement.scrollWidth") <= width, width  # no sideways scroll
        assert box["x"] + box["width"] <= card["x"] + card["width"], (width, box, card)


@pytest.mark.browser
def test_why_an_agent_is_over_budget_is_in_its_row_not_only_in_a_tooltip(start_broker, browser_page):
    # the reason was only a title attribute: no keyboard or screen reader user could reach it from the home page
    hive = start_broker({"alice": {"budget": {"dailyUsd": 1.0}}, "bob": {}})
    alice = hive.client("alice")
    alice.call("turn_record", turn={
        "kind": "turn", "started_at": time.time() - 2, "ended_at": time.time() - 1, "status": "ok",
        "exit_status": 0, "model": "claude-sonnet-4-5", "wake": {"kind": "message", "from": "bob", "message_ids": []},
        "tokens": {"input": 1000, "output": 200, "cache_read": 0, "cache_write": 0}, "cost_usd": 0.6,
        "num_turns": 1, "duration_api_ms": 900.0, "tools": {}})
    reason = alice.call("turn_ready", wait_seconds=0)["reason"]
    page = browser_page
    page.goto(f"{hive.dashboard_url}/")
    flag = page.locator('tr[data-key="a-alice"] .flag', has_text="OVER BUDGET")
    assert reason and reason in flag.text_content(), (reason, flag.text_content())
    assert flag.is_visible() and "OVER BUDGET" in flag.inner_text()


@pytest.mark.browser
def test_the_spawn_form_fits_a_narrow_window(start_broker, browser_page):
    # at 320 pixels its name field was 36 pixels wide, its button 24, with the text spilling out
    hive = start_broker()
    page = browser_page
    page.set_viewport_size({"width": 320, "height": 800})
    page.goto(f"{hive.dashboard_url}/")
    form = page.locator("form.spawn")
    field, button = form.locator("#spawn-name").bounding_box(), form.get_by_role("button", name="spawn now")
    assert field["width"] >= 120, field
    assert button.evaluate("e => e.scrollWidth <= e.clientWidth"), button.bounding_box()  # its text inside it
    assert form.evaluate("e => e.scrollWidth <= e.clientWidth")
    box = form.bounding_box()
    for part in (field, button.bounding_box(), form.locator("#spawn-name-rule").bounding_box()):
        assert box["x"] <= part["x"] and part["x"] + part["width"] <= box["x"] + box["width"], (part, box)


@pytest.mark.browser
def test_a_message_that_scrolls_in_the_inbox_and_the_flow_has_a_name_in_each(start_broker, browser_page):
    # both copies were regions named "message #N" (axe: landmark-unique)
    hive = start_broker()
    hive.client("alice").call("send", to="operator", body="the build log, line by line:\n" + "a line of it\n" * 40)
    page = browser_page
    page.set_viewport_size({"width": 320, "height": 800})
    page.goto(f"{hive.dashboard_url}/")
    page.wait_for_selector('#live[data-state="live"]')
    names = page.locator('[role="region"][data-scroll-name]').evaluate_all("es => es.map((e) => e.ariaLabel)")
    assert len(names) >= 2 and len(set(names)) == len(names), names
    violations = audit(page)
    assert not violations, readable(violations, "/ (320 pixels wide, a long message to the operator)")


CSS = Path(__file__).resolve().parent.parent / "hyperhive" / "dashboard" / "static" / "hive.css"


def luminance(color: str) -> float:
    rgb = [int(color.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_palette_keeps_aa_contrast():
    """Text 4.5:1 and control borders and the focus ring 3:1 against every background the console paints, including
    the placeholders and the footer that axe-core does not check."""
    css = CSS.read_text()
    var = dict(re.findall(r"--([a-z0-9-]+):\s*(#[0-9a-fA-F]{6})", css))
    backgrounds = [var[k] for k in ("bg", "bg-2", "panel", "panel-2")]
    for name in ("text", "dim", "placeholder", "acc", "warn", "bad"):
        worst = min(contrast(var[name], bg) for bg in backgrounds)
        assert worst >= 4.5, f"--{name} {var[name]} is {worst:.2f}:1 on some panel"
    for name in ("ctl-line", "bad-line", "acc-line", "acc"):
        worst = min(contrast(var[name], bg) for bg in backgrounds)
        assert worst >= 3, f"--{name} {var[name]} is {worst:.2f}:1 on some panel (non-text contrast needs 3:1)"
    for selector in (".foot", "input::placeholder, textarea::placeholder"):
        rule = re.search(re.escape(selector) + r"\s*\{([^}]*)\}", css).group(1)
        color = re.search(r"(?<![-\w])color:\s*([^;]+);", rule).group(1).strip()
        assert color.startswith("var(--"), f"{selector} paints a literal colour {color}, outside the checked palette"
    assert re.search(r":focus-visible\s*\{\s*outline:\s*2px solid var\(--acc\)", css)



@pytest.mark.browser
def test_nothing_blinks_for_more_than_five_seconds(start_broker, browser_page):
    """WCAG 2.2.2: the logo's cursor and the STUCK flag stop within 5 s; nothing moves at all for reduced motion."""
    hive = start_broker()
    page = browser_page
    page.goto(f"{hive.dashboard_url}/")
    page.wait_for_selector('#live[data-state="live"]')
    timings = page.evaluate("""() => document.getAnimations().map((a) => ({
        name: a.animationName || a.constructor.name, on: a.effect.target.className || a.effect.target.tagName,
        end: a.effect.getComputedTiming().endTime }))""")
    assert timings, "the page has no animation to check"
    endless = [t for t in timings if not (t["end"] <= 5000)]
    assert endless == [], f"animations running longer than 5 seconds: {endless}"
    page.emulate_media(reduced_motion="reduce")
    page.reload()
    page.wait_for_selector('#live[data-state="live"]')
    assert page.evaluate("document.getAnimations().length") == 0
