"""The dashboard in headless Chromium against a real service: live questions answered with a click, the operator's
message form, questions stored by older versions, the token login, a cross-site form, the agent page."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import shutil
import threading
import time

import pytest

from browser import browser_page, chromium, console_errors, http, screenshot  # noqa: F401 (fixture)
from conftest import HiveProcess, event_about, wait_for, write_config
from hyperhive.store import Store, run_sql

pytestmark = pytest.mark.browser


def open_home(page, url):
    page.goto(f"{url}/")
    page.wait_for_selector('#live[data-state="live"]')
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads


def still_same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def test_questions_appear_live_and_answers_reach_the_agent(start_broker, browser_page):
    hive = start_broker()
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    alice, bob = hive.client("alice"), hive.client("bob")
    open_home(page, hive.dashboard_url)
    assert page.locator("#questions .empty").is_visible()

    # An agent asks over its socket; the card appears without a reload; one click answers it.
    first = alice.call("ask_operator", question="Deploy the docs now?", options=["yes", "not yet"])["id"]
    card = page.locator(f'[data-question-id="{first}"]')
    card.wait_for(timeout=5000)
    assert "Deploy the docs now?" in card.inner_text() and "alice" in card.inner_text()
    card.get_by_role("button", name="not yet").click()
    event = event_about(alice, first)
    assert event["data"]["answer"] == "not yet" and event["data"]["question"] == "Deploy the docs now?"
    card.wait_for(state="detached")

    # A half-typed answer survives another question arriving (only new rows are added).
    second = bob.call("ask_operator", question="Which platforms should CI cover?",
                      options=["linux", "macos", "windows"], multi=True)["id"]
    multi = page.locator(f'[data-question-id="{second}"]')
    multi.wait_for()
    multi.get_by_label("linux").check()
    multi.get_by_label("windows").check()
    third = alice.call("ask_operator", question="Anything else today?")["id"]
    free = page.locator(f'[data-question-id="{third}"]')
    free.wait_for()
    free.locator('input[name="answer"]').fill("ship the docs")
    fourth = bob.call("ask_operator", question="Should I also update the changelog?")["id"]
    page.locator(f'[data-question-id="{fourth}"]').wait_for()
    assert free.locator('input[name="answer"]').input_value() == "ship the docs"
    assert multi.get_by_label("linux").is_checked() and multi.get_by_label("windows").is_checked()

    multi.get_by_role("button", name="send choices").click()
    assert event_about(bob, second)["data"]["answer"] == "linux, windows"
    free.locator('input[name="answer"]').press("Enter")
    assert event_about(alice, third)["data"]["answer"] == "ship the docs"
    page.locator(f'[data-question-id="{fourth}"]').get_by_role("button", name="cancel question").click()
    assert event_about(bob, fourth)["data"]["answer"] == "[cancelled]"
    page.locator("#questions .empty").wait_for(state="visible")

    # Answered elsewhere (over host.sock, like `hyperhive answer`): the card goes from the open page.
    late = alice.call("ask_operator", question="Answered elsewhere?", options=["a", "b"])["id"]
    late_card = page.locator(f'[data-question-id="{late}"]')
    late_card.wait_for()
    hive.host().call("answer", id=late, answer="a")
    late_card.wait_for(state="detached")
    assert still_same_document(page)
    screenshot(page, "dashboard-questions")
    assert console_errors(page) == []


def test_a_clicked_option_is_the_answer_whatever_is_typed_with_or_without_script(start_broker, chromium):
    hive = start_broker()
    alice = hive.client("alice")
    for script in (True, False):
        context = chromium.new_context(java_script_enabled=script)
        try:
            page = context.new_page()
            page.goto(f"{hive.dashboard_url}/")
            # half-typed, then the operator clicks an option after all: the option is the answer
            first = alice.call("ask_operator", question="Merge now?", options=["yes", "no"])["id"]
            if not script:
                page.reload()  # (no live update without the script)
            card = page.locator(f'[data-question-id="{first}"]')
            card.locator('input[name="answer"]').fill("yes if tests pa")
            card.get_by_role("button", name="no", exact=True).click()
            assert event_about(alice, first)["data"]["answer"] == "no", script
            # Enter in the text field sends what is typed (not the first option)
            second = alice.call("ask_operator", question="And after?", options=["yes", "no"])["id"]
            if not script:
                page.reload()
            card = page.locator(f'[data-question-id="{second}"]')
            card.locator('input[name="answer"]').fill("only if the tests pass")
            card.locator('input[name="answer"]').press("Enter")
            assert event_about(alice, second)["data"]["answer"] == "only if the tests pass", script
        finally:
            context.close()


def test_operator_message_form_reaches_the_agent_and_the_flow_is_live(start_broker, browser_page):
    hive = start_broker()
    page = browser_page
    open_home(page, hive.dashboard_url)
    page.select_option("#compose-to", "bob")
    page.fill("#compose-body", "Please look at the flaky test.\nThanks!")
    page.get_by_role("button", name="send →").click()
    result = hive.client("bob").call("recv", wait_seconds=10)
    assert [(m["from"], m["body"]) for m in result["messages"]] == [
        ("operator", "Please look at the flaky test.\nThanks!")]
    # (not wait_for_function: its polling evaluates the string in the page, which the dashboard's CSP refuses)
    from playwright.sync_api import expect

    expect(page.locator("#compose-body")).to_have_value("")
    # the next message goes to the same agent (only the body was cleared)
    assert page.locator("#compose-to").input_value() == "bob"
    page.fill("#compose-body", "And the docs too.")
    page.get_by_role("button", name="send →").click()
    result = hive.client("bob").call("recv", wait_seconds=10)
    assert [(m["from"], m["body"]) for m in result["messages"]] == [("operator", "And the docs too.")]

    # What agents send shows in the inbox and the live flow without a reload.
    hive.client("alice").call("send", to="operator", body="docs build is green again")
    page.locator("#inbox .msg", has_text="docs build is green again").wait_for()
    page.locator("#flow-list .msg", has_text="Please look at the flaky test.").wait_for()
    page.locator("#flow-list .msg", has_text="docs build is green again").wait_for()
    # An empty message is refused with a clear reason; nothing is sent.
    page.fill("#compose-body", "   ")
    page.get_by_role("button", name="send →").click()
    page.locator(".toast.bad", has_text="body").wait_for()
    assert still_same_document(page)
    assert console_errors(page, ignore=("400",)) == []


ODD_QUESTIONS = [
    # (asker, question, options column as an old version stored it, created_at)
    ("alice", "old row: options NULL", None, None),
    ("alice", "old row: options empty", "", None),
    ("bob", "old row: options not JSON", "yes|no", None),
    ("bob", "old row: options a JSON string", '"maybe"', None),
    ("alice", "old row: options with odd items", '[1, null, "ok", ""]', None),
    ("alice", "Ünïcödé ✓ — 日本語 🐝 עברית <b>not bold</b> & \"quotes\"", '["✓ oui", "✗ non"]', None),
    ("bob", "L" + "o" * 20000 + "ng question, the end", "[]", None),
    ("bob", "old row: created_at stored as text", "[]", "2024-01-01 10:00:00"),
    ("alice", "", "[]", None),
]


def test_questions_stored_by_older_versions_and_odd_ones_are_listed_and_rendered(hive_dir, browser_page):
    config = write_config(hive_dir)
    store = Store(hive_dir / "state" / "hive.db", target_version=1)  # the schema before multi and expires_at
    now = time.time()
    for i, (asker, question, options, created) in enumerate(ODD_QUESTIONS):
        run_sql(store, "INSERT INTO questions (asker, question, options, created_at, status) "
                       "VALUES (?, ?, ?, ?, 'pending')", (asker, question, options, created or now - 600 + i))
    store.close()
    hive = HiveProcess(config, args=("--no-agents",)).start()
    try:
        state = http(hive.dashboard_url, "GET", "/api/state").json()
        assert state["errors"] == []
        listed = {q["id"]: q for q in state["questions"]}
        assert sorted(listed) == list(range(1, len(ODD_QUESTIONS) + 1))
        for qid, (asker, question, options, _) in enumerate(ODD_QUESTIONS, start=1):
            if len(question) > 4000:  # a long one comes cut, with its whole length (and whole at its own URL)
                assert question.startswith(listed[qid]["question"]) and listed[qid]["question_chars"] == len(question)
                question = listed[qid]["question"]
            assert listed[qid]["question"] == question and listed[qid]["asker"] == asker
            assert listed[qid]["multi"] is False and listed[qid]["expires_at"] is None
        assert listed[1]["options"] == [] and listed[2]["options"] == []
        assert listed[3]["options"] == [] and listed[3]["options_raw"] == "yes|no" and listed[3]["decode_error"]
        assert listed[4]["options_raw"] == '"maybe"'
        assert listed[5]["options"] == ["1", "null", "ok"]
        assert listed[6]["options"] == ["✓ oui", "✗ non"]
        assert listed[8]["created_at"] == "2024-01-01 10:00:00"

        page = browser_page
        page.goto(f"{hive.dashboard_url}/")
        for qid, (_, question, _, _) in enumerate(ODD_QUESTIONS, start=1):
            card = page.locator(f'[data-question-id="{qid}"]')
            assert card.count() == 1, qid
            text = card.locator(".qtext").inner_text()
            assert text == question[:4000], (qid, text[:80])
        assert "yes|no" in page.locator('[data-question-id="3"]').inner_text()
        unicode_card = page.locator('[data-question-id="6"]')
        assert unicode_card.get_by_role("button", name="✓ oui").is_visible()
        assert page.locator("b", has_text="not bold").count() == 0  # shown as text, never as markup
        screenshot(page, "dashboard-odd-questions")

        unicode_card.get_by_role("button", name="✓ oui").click()
        assert event_about(hive.client("alice"), 6)["data"]["answer"] == "✓ oui"
        long_card = page.locator('[data-question-id="7"]')
        long_card.locator('input[name="answer"]').fill("too long to read, sorry")
        long_card.get_by_role("button", name="send").click()
        assert event_about(hive.client("bob"), 7)["data"]["answer"] == "too long to read, sorry"
        assert console_errors(page) == []
    finally:
        hive.stop()


def test_with_a_token_the_browser_must_log_in(start_broker, hive_dir, browser_page):
    token_file = hive_dir / "token"
    token_file.write_text("correct horse battery staple")
    hive = start_broker(dashboard={"tokenFile": str(token_file)})
    page = browser_page
    page.goto(f"{hive.dashboard_url}/agents/alice")
    assert "/login" in page.url
    assert page.locator("#containers").count() == 0
    response = page.request.get(f"{hive.dashboard_url}/api/state")
    assert response.status == 401  # no token, no data

    page.fill("#token", "wrong")
    page.get_by_role("button", name="log in →").click()
    page.locator(".banner.bad", has_text="wrong token").wait_for()
    page.fill("#token", "correct horse battery staple")
    page.get_by_role("button", name="log in →").click()
    page.wait_for_url(f"{hive.dashboard_url}/agents/alice")
    assert page.evaluate("document.cookie").find("hh_auth") == -1  # HttpOnly: scripts cannot read it
    page.goto(f"{hive.dashboard_url}/")
    page.wait_for_selector('#live[data-state="live"]')
    question = hive.client("alice").call("ask_operator", question="Logged in?", options=["yes"])["id"]
    page.locator(f'[data-question-id="{question}"]').get_by_role("button", name="yes").click()
    assert event_about(hive.client("alice"), question)["data"]["answer"] == "yes"
    page.get_by_role("button", name="log out").click()
    page.wait_for_url("**/login")
    assert page.request.get(f"{hive.dashboard_url}/api/state").status == 401
    assert console_errors(page, ignore=("401",)) == []


class _EvilSite(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):
        body = f"""<!doctype html><title>totally harmless</title>
<form id="forge" method="post" action="{self.target}/api/messages">
  <input name="to" value="alice"><input name="body" value="forged by another site">
  <button id="go" type="submit">win a prize</button>
</form>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_cross_site_post_is_refused(start_broker, browser_page):
    hive = start_broker()
    url = hive.dashboard_url
    handler = type("Evil", (_EvilSite,), {"target": url})
    evil = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        page = browser_page
        page.goto(f"{url}/")  # the operator has the dashboard open (its cookie is set)
        # "localhost" is another site than "127.0.0.1", like any web page the operator might visit
        page.goto(f"http://localhost:{evil.server_address[1]}/")
        with page.expect_response(f"{url}/api/messages") as response_info:
            page.click("#go")
        response = response_info.value
        assert response.status == 403
        assert "cross-site" in response.json()["error"]["message"]
        # and a script on that page cannot do it with fetch either
        page.goto(f"http://localhost:{evil.server_address[1]}/")
        page.evaluate("""url => fetch(url + '/api/messages', {method: 'POST', mode: 'no-cors',
            headers: {'Content-Type': 'text/plain'}, body: '{"to": "alice", "body": "forged by fetch"}'})
            .catch(() => null)""", url)
        time.sleep(0.3)
        assert hive.client("alice").call("recv")["messages"] == []
    finally:
        evil.shutdown()
        evil.server_close()


def test_agent_page_shows_telemetry_notes_turns_and_the_repo(start_broker, browser_page):
    hive = start_broker()
    url = hive.dashboard_url
    alice = hive.client("alice")
    now = time.time()
    samples = []
    for i in range(12):
        ts = now - 3000 + i * 240
        samples += [{"key": "turn.duration_s", "value": 2 + i % 4, "ts": ts},
                    {"key": "turn.tool_calls", "value": i % 3, "ts": ts},
                    {"key": "inbox.depth", "value": (i * 5) % 4, "ts": ts}]
    alice.call("stats", samples=samples)
    notes = hive.config.state_dir / "agents" / "alice" / "state" / "notes.md"
    notes.parent.mkdir(parents=True, exist_ok=True)
    notes.write_text("# Notes\n- the docs live in docs/\n- bob knows the build\n")

    page = browser_page
    page.goto(f"{url}/agents/alice")
    page.locator("#charts .chart").first.wait_for()
    assert sorted(page.locator("#charts .chart .key").all_inner_texts()) == [
        "inbox.depth", "turn.duration_s", "turn.tool_calls"]
    assert page.locator("#charts svg polyline").count() == 3
    assert "bob knows the build" in page.locator("#notes").inner_text()
    assert "deployed/0" in page.locator("#repo").inner_text()

    # The live turn stream: events sent by the harness show as they happen.
    page.wait_for_selector('#live[data-state="live"]')
    # (the shapes the harness publishes: a stream-json event of Claude Code sits in data.event)
    alice.call("turn_event", event={"type": "turn_start", "data": {"turn": 1, "pending": 1, "messages": [
        {"id": 7, "from": "bob", "kind": "message", "body": "the docs?"}]}})
    alice.call("turn_event", event={"type": "event", "data": {"event": {"type": "assistant", "message": {"content": [
        {"type": "text", "text": "Reading docs/index.md first."},
        {"type": "tool_use", "id": "toolu_1", "name": "mcp__hyperhive__send", "input": {"to": "bob", "body": "done"}}
    ]}}}})
    alice.call("turn_event", event={"type": "turn_end", "data": {"turn": 1, "ok": True, "exit_status": 0,
                                                                  "duration_s": 4.2, "tool_calls": 1}})
    page.locator("#turn-list", has_text="Reading docs/index.md first.").wait_for()
    page.locator("#turn-list", has_text="⚙ send (hyperhive) to=bob body=done").wait_for()
    page.locator("#turn-list", has_text="■ turn 1 ended · ok · 4.20 s · 1 tool call").wait_for()

    # The repo browser: a commit's diff, and a raw file.
    page.locator("#repo ol.log a").first.click()
    page.locator("#diff pre.diff").wait_for()
    assert "agent.nix" in page.locator("#diff").inner_text()
    screenshot(page, "dashboard-agent")
    with page.context.expect_page() as raw_info:
        page.locator("#rawfile button").click()
    raw = raw_info.value
    raw.wait_for_load_state()
    assert "hyperhive" in raw.content()
    assert console_errors(page) == []


def test_approval_cards_show_their_diff_and_deny_takes_a_note(start_broker, browser_page):
    hive = start_broker()
    url = hive.dashboard_url
    approval_id = hive.client("manager").call("request_spawn", name="carol")["approval_id"]
    page = browser_page
    open_home(page, url)
    card = page.locator(f'[data-key^="ap-{approval_id}-"]')
    card.locator("pre.diff").wait_for()
    assert "agent.nix" in card.locator(".diff-holder").inner_text()
    screenshot(page, "dashboard-home")
    card.locator('input[name="reason"]').fill("one more agent is too many today")
    card.get_by_role("button", name="deny").click()
    card.wait_for(state="detached")
    approval = http(url, "GET", f"/api/approvals/{approval_id}").json()
    assert approval["status"] == "denied" and approval["note"] == "one more agent is too many today"
    events = hive.client("manager").call("recv", max=20)["messages"]
    assert any("one more agent is too many today" in m["body"] for m in events)

    # The spawn form spawns at once, as `hyperhive spawn` does, after saying what it will do.
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.fill("#spawn-name", "dave")
    page.get_by_role("button", name="spawn now").click()
    page.locator('#containers [data-key="a-dave"]').wait_for()
    assert asked and "Spawn this agent now" in asked[0]
    assert not page.locator("#approvals .card", has_text="dave").count()
    assert still_same_document(page)
    assert console_errors(page) == []


def test_the_stand_in_model_is_labelled(start_hive, browser_page):
    if shutil.which("claude"):
        pytest.skip("claude is installed here, so agents do not run on the stand-in model")
    hive = start_hive(agents={"alice": {}})  # agents run, on the stand-in model
    wait_for(lambda: http(hive.dashboard_url, "GET", "/api/state").json()["standin_model"], timeout=20,
             message="the service to start agents on the stand-in model")
    page = browser_page
    page.goto(f"{hive.dashboard_url}/")
    banner = page.locator("#standin-banner")
    assert banner.is_visible() and "STAND-IN MODEL" in banner.inner_text()
    # inside a landmark of its own (axe's "region" rule), and the pages that show it pass WCAG 2.2 AA
    from axe import audit, readable

    for path in ("/", "/agents/alice"):
        page.goto(f"{hive.dashboard_url}{path}")
        assert page.get_by_role("complementary", name="stand-in model").is_visible()
        violations = audit(page)
        assert not violations, readable(violations, f"{path} with the stand-in banner")


def test_live_messages_show_bidi_controls_as_marks_and_come_cut_when_long(start_broker, browser_page):
    hive = start_broker()
    page = browser_page
    open_home(page, hive.dashboard_url)
    hive.client("alice").call("send", to="bob", body="report\u202efdp.exe")
    item = page.locator("#flow-list .msg", has_text="report")
    item.wait_for(timeout=10000)
    assert "report[U+202E]fdp.exe" in item.inner_text()
    assert "\u202e" not in page.locator("#flow-list").inner_text()

    long_id = hive.client("alice").call("send", to="bob", body="long " * 10_000)["id"]
    cut = page.locator(f'#flow-list [data-key="m{long_id}"] .note')
    cut.wait_for(timeout=10000)
    assert "50000 characters in all" in cut.inner_text()
    assert cut.locator("a").get_attribute("href") == f"/api/messages/{long_id}"
    assert len(page.locator(f'#flow-list [data-key="m{long_id}"] pre.body').inner_text()) <= 4000


def test_a_flood_of_questions_is_paged_and_cancelled_with_one_click(start_broker, browser_page):
    hive = start_broker(limits={"maxPendingQuestions": 100})
    page = browser_page
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    alice = hive.client("alice")
    ids = [alice.call("ask_operator", question=f"flood {i}?")["id"] for i in range(45)]
    open_home(page, hive.dashboard_url)
    assert page.locator("#questions .card.question").count() == 20
    assert "25 not shown" in page.locator("#questions .pager").inner_text()
    page.locator("#questions .pager a", has_text="more").click()
    page.wait_for_url("**questions_offset=20**")
    page.locator(f'[data-question-id="{ids[20]}"]').wait_for()
    assert page.locator(f'[data-question-id="{ids[0]}"]').count() == 0

    page.get_by_role("button", name="cancel all pending questions").click()
    page.locator(".toast.ok", has_text="cancelled 45 questions").wait_for()
    page.locator("#questions .card.question").first.wait_for(state="detached", timeout=10000)
    assert asked and "Cancel all 45 pending questions" in asked[-1]
    assert hive.host().call("questions")["questions"] == []
    statuses = {q["status"] for q in hive.host().call("questions", status="all")["questions"]}
    assert statuses == {"cancelled"}
