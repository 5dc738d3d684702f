"""The operator's console in headless Chromium against a real service: the review shows what the manager said,
and what became of it."""

from __future__ import annotations

import pytest

from browser import browser_page, chromium, console_errors, http, screenshot  # noqa: F401 (fixture)
from conftest import wait_for
from standins.support import AGENT_ENV, agent_nix, commit_change, standin_info, wait_status

pytestmark = pytest.mark.browser


@pytest.fixture
def hive(start_hive):
    hp = start_hive(agents={"alice": {}}, env=AGENT_ENV)
    wait_for(lambda: standin_info(hp, "alice"), message="alice running")
    return hp


def test_the_card_and_the_page_show_the_commit_the_reason_and_the_outcome(hive, browser_page):
    url = hive.dashboard_url
    sha = commit_change(hive, "alice", agent_nix("Only docs."),
                        message="alice: keep to docs/\n\nShe edited src/ twice this week.")
    approval_id = hive.client("manager").call("request_apply_commit", agent="alice", commit=sha,
                                              reason="alice strays outside docs/")["approval_id"]
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{url}/")
    card = page.locator(f'[data-key^="ap-{approval_id}-"]')
    card.locator("pre.diff").wait_for()
    said = card.locator('[data-role="proposal"]').inner_text()
    assert "alice: keep to docs/" in said and "She edited src/ twice this week." in said
    assert "alice strays outside docs/" in said and "manager <manager@hive>" in said
    screenshot(page, "console-approval-card")

    page.goto(f"{url}/approvals/{approval_id}")
    assert "alice strays outside docs/" in page.locator('#approval [data-role="proposal"]').inner_text()
    assert page.locator('#approval [data-role="outcome"]').count() == 0  # nothing happened yet
    page.locator("#approval button:has-text('approve')").click()
    assert wait_status(hive.host(), approval_id)["status"] == "deployed"
    page.goto(f"{url}/approvals/{approval_id}")
    outcome = page.locator('#approval [data-role="outcome"]').inner_text()
    assert outcome.startswith("Deployed") and f"deployed/{approval_id}" in outcome
    assert "you (the operator) approved it" in outcome
    when = page.locator('#approval [data-role="outcome"] time')
    assert when.get_attribute("datetime").endswith("Z") and "UTC" in when.get_attribute("title")
    screenshot(page, "console-approval-deployed")
    assert console_errors(page) == []


def test_a_real_claude_code_turn_is_rendered_line_by_line(claude_hive, model_api, browser_page):
    # alice may run only `git *`; her turn calls a hive tool, is refused a Bash command, then says she is done.
    hive = claude_hive({"alice": {"bashAllow": ["git *"]}})
    model_api.script("alice", [
        {"text": "Checking who is around.",
         "tools": [{"name": "mcp__hyperhive__list_agents", "input": {}},
                   {"name": "Bash", "input": {"command": "rm -rf /tmp/precious"}}]},
        {"text": "Done: the list is in, and I may not delete files."},
    ])
    page = browser_page
    page.goto(f"{hive.dashboard_url}/agents/alice")
    page.wait_for_selector('#live[data-state="live"]')
    hive.cli("send", "alice", "Who is around?")
    turns = page.locator("#turn-list")
    turns.locator('[data-kind="turn_end"]').wait_for(timeout=60_000)

    def lines(kind):
        return [t.strip() for t in turns.locator(f'[data-kind="{kind}"] .line').all_inner_texts()]

    assert any(t.endswith("turn 1 started · 1 message from operator") for t in lines("turn_start")), lines("turn_start")
    assert any("#" in t and "operator: Who is around?" in t for t in lines("wake"))
    assert "Checking who is around." in " ".join(lines("text"))
    assert "Done: the list is in, and I may not delete files." in " ".join(lines("text"))
    calls = lines("tool_use")
    assert any("⚙ list_agents (hyperhive)" in t for t in calls), calls
    assert any("⚙ Bash command=rm -rf /tmp/precious" in t for t in calls), calls
    results = lines("tool_result")
    assert any(t.startswith("↳ list_agents (hyperhive):") and "alice" in t for t in results), results
    denied = turns.locator('[data-kind="denied"]')
    assert denied.count() >= 1 and "Bash" in denied.first.inner_text()
    assert "rgb(255, 95, 109)" == denied.first.evaluate("e => getComputedStyle(e).color")  # red
    end = lines("turn_end")[-1]
    assert end.startswith("■ turn 1 ended · ok ·") and " s · 2 tool calls" in end, end
    assert "{" not in " ".join(lines("turn_end") + lines("turn_start") + lines("text"))  # no raw JSON
    screenshot(page, "console-live-turn")
    assert console_errors(page) == []


def test_the_header_and_the_tab_title_count_what_waits_live(start_broker, browser_page):
    hive = start_broker()
    url = hive.dashboard_url
    alice = hive.client("alice")
    page = browser_page
    from playwright.sync_api import expect

    page.goto(f"{url}/agents/bob")  # any page, not only /
    header = page.locator("#attention")
    assert header.locator('[data-att="questions"]').inner_text() == "0 questions"
    assert page.title() == "bob · hyperhive"
    assert page.locator("#notify-toggle").get_attribute("aria-pressed") == "false"  # off until turned on

    first = alice.call("ask_operator", question="Ship it?")["id"]
    header.locator('[data-att="questions"]', has_text="1 question").wait_for()
    expect(page).to_have_title("(1) bob · hyperhive")
    hive.client("manager").call("request_spawn", name="carol")
    header.locator('[data-att="approvals"]', has_text="1 approval").wait_for()
    expect(page).to_have_title("(2) bob · hyperhive")

    hive.cli("answer", str(first), "yes")
    header.locator('[data-att="questions"]', has_text="0 questions").wait_for()
    expect(page).to_have_title("(1) bob · hyperhive")

    # / puts what needs the operator first, under plain headings
    page.goto(f"{url}/")
    headings = [h.strip() for h in page.locator("main h2 .title").all_inner_texts()]
    assert headings[:3] == ["Questions for you", "Approvals waiting", "Your inbox"], headings
    # a screen reader hears the plain name (the leet one and the [01] index are aria-hidden)
    assert page.get_by_role("heading", name="Questions for you").count() == 1
    assert page.get_by_role("heading", name="M1ND H4S QU3STI0NS").count() == 0
    assert page.get_by_role("heading", name="Agents (3)").count() == 1  # manager, alice, bob
    assert page.title() == "(1) hyperhive"
    assert console_errors(page) == []


def test_buttons_follow_the_agents_state_and_say_what_they_do(hive, browser_page):
    url = hive.dashboard_url
    hive.cli("spawn", "carol")
    wait_for(lambda: standin_info(hive, "carol"), timeout=30, message="carol running")
    page = browser_page
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.goto(f"{url}/")

    def buttons(name):
        row = page.locator(f'#containers [data-key="a-{name}"]')
        row.wait_for()
        # the visible verb (each button also names its agent in visually hidden text: "kill alice")
        return sorted(t.split()[0] for t in row.locator("button").all_inner_texts())

    assert buttons("alice") == ["kill", "rebuild", "restart"]  # running, declared: no start, no destroy
    assert buttons("manager") == ["kill", "rebuild", "restart"]
    assert buttons("carol") == ["destroy", "kill", "rebuild", "restart"]  # spawned: destroy is offered

    page.locator('#containers [data-key="a-alice"] button:has-text("kill")').click()
    page.locator('#containers [data-key="a-alice"] form[data-state="stopped"]').wait_for()
    assert "Kill alice?" in asked[-1] and "messages to it wait" in asked[-1]
    assert buttons("alice") == ["rebuild", "start"]  # stopped: no kill

    page.locator('#containers [data-key="a-carol"] button:has-text("destroy")').click()
    page.locator('#kept [data-key="t-carol"]').wait_for()
    assert "Destroy carol?" in asked[-1] and "kept" in asked[-1]
    page.locator('#kept [data-key="t-carol"] button:has-text("revive")').click()
    queued = page.locator('#kept [data-key="t-carol"] a:has-text("revive queued")')
    queued.wait_for()
    approval = queued.get_attribute("href").rsplit("/", 1)[-1]
    page.locator(".toast.ok", has_text=f"revive carol queued: approve #{approval} to bring carol back").wait_for()
    assert page.locator('#kept [data-key="t-carol"] button:has-text("revive")').count() == 0  # not offered twice
    page.goto(f"{url}/agents/carol")
    assert page.locator("#agent a:has-text('revive queued')").count() == 1
    assert page.locator("#agent button:has-text('revive')").count() == 0
    assert console_errors(page) == []


def test_the_agent_and_approval_pages_follow_what_happens_live(hive, browser_page):
    url = hive.dashboard_url
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    focused = "() => document.activeElement.textContent.replace(/\\s+/g, ' ').trim()"

    page.goto(f"{url}/agents/alice")
    page.wait_for_selector('#live[data-state="live"]')
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    head = page.locator("#agent")
    head.locator("h1 .badge", has_text="running").wait_for()
    hive.cli("kill", "alice")  # elsewhere: the page follows, and offers start instead of kill
    head.locator("h1 .badge", has_text="stopped").wait_for()
    start = head.get_by_role("button", name="start alice", exact=True)
    start.wait_for()
    assert head.get_by_role("button", name="kill alice", exact=True).count() == 0
    start.focus()  # here, from the keyboard: the page follows too, and focus stays on a like (not a danger) button
    page.keyboard.press("Enter")
    head.locator("h1 .badge", has_text="running").wait_for()
    wait_for(lambda: page.evaluate(focused) == "restart alice", message="focus on restart alice")

    manager, host = hive.client("manager"), hive.host()
    first = manager.call("request_spawn", name="carol")["approval_id"]
    page.goto(f"{url}/approvals/{first}")
    page.wait_for_selector('#live[data-state="live"]')
    page.evaluate("window.__sameDocument = true")
    host.call("deny", id=first, note="not carol")  # elsewhere (the CLI's socket)
    page.locator("#approval h1 .badge", has_text="denied").wait_for()
    page.locator('#approval [data-role="outcome"]', has_text="not carol").wait_for()
    assert page.locator("#approval button").count() == 0  # nothing stale left to click
    second = manager.call("request_spawn", name="dave")["approval_id"]
    page.goto(f"{url}/approvals/{second}")
    page.wait_for_selector('#live[data-state="live"]')
    page.evaluate("window.__sameDocument = true")
    page.locator('#approval input[name="reason"]').fill("not dave either")
    page.keyboard.press("Enter")
    page.locator('#approval [data-role="outcome"]', has_text="not dave either").wait_for()
    assert page.locator("#approval button").count() == 0
    wait_for(lambda: page.evaluate("document.activeElement.id") == "approval-h", message="focus on the heading")
    assert page.evaluate("window.__sameDocument === true")
    assert console_errors(page) == []


def test_a_reply_in_thread_from_the_inbox_reaches_the_agent(start_broker, browser_page):
    hive = start_broker()
    alice = hive.client("alice")
    asked = alice.call("send", to="operator", body="May I rename docs/old.md?")["id"]
    page = browser_page
    page.goto(f"{hive.dashboard_url}/")
    page.wait_for_selector('#live[data-state="live"]')
    item = page.locator(f'#inbox [data-message-id="{asked}"]')
    assert "unread" in item.get_attribute("class") and item.locator(".tag", has_text="unread").count() == 1
    assert page.locator('#attention [data-att="inbox"]').inner_text() == "1 unread"
    assert page.locator("#containers th", has_text="unread / leased").count() == 1  # the 0 / 0 column, labelled

    item.locator("summary", has_text=f"reply to #{asked}").click()
    item.locator("textarea").fill("Yes, and update the links.")
    item.get_by_role("button", name="send reply").click()
    page.locator(f'#inbox [data-message-id="{asked}"].read').wait_for()
    page.locator('#attention [data-att="inbox"]', has_text="0 unread").wait_for()
    got = alice.call("recv", max=10)["messages"]
    reply = [m for m in got if m["from"] == "operator"]
    assert reply and reply[0]["in_reply_to"] == asked and reply[0]["body"] == "Yes, and update the links."

    second = alice.call("send", to="operator", body="Done.")["id"]
    fresh = page.locator(f'#inbox [data-message-id="{second}"].unread')
    fresh.wait_for()
    fresh.get_by_role("button", name="mark read").click()
    page.locator(f'#inbox [data-message-id="{second}"].read').wait_for()
    assert console_errors(page) == []


def test_mark_all_read_marks_only_what_the_page_showed(start_broker, browser_page):
    hive = start_broker()
    alice = hive.client("alice")
    shown = alice.call("send", to="operator", body="the build is green")["id"]
    page = browser_page
    page.route("**/api/messages/stream*", lambda route: route.abort())  # the page hears of nothing new
    page.goto(f"{hive.dashboard_url}/")
    page.locator(f'#inbox [data-message-id="{shown}"].unread').wait_for()
    unseen = alice.call("send", to="operator", body="the build is red again")["id"]  # after the page was rendered
    page.get_by_role("button", name="mark all read").click()
    page.locator(".toast.ok", has_text="marked 1 read").wait_for()
    inbox = {m["id"]: m["read"] for m in http(hive.dashboard_url, "GET", "/api/state").json()["inbox"]}
    assert inbox == {shown: True, unseen: False}


def test_the_agent_page_shows_the_proposed_and_the_applied_repo_apart(hive, browser_page):
    url = hive.dashboard_url
    manager, host = hive.client("manager"), hive.host()
    denied_sha = commit_change(hive, "alice", agent_nix("Too broad."), message="alice: too broad")
    denied = manager.call("request_apply_commit", agent="alice", commit=denied_sha)["approval_id"]
    host.call("deny", id=denied, note="narrower, please")
    deployed_sha = commit_change(hive, "alice", agent_nix("Just docs."), message="alice: just docs")
    deployed = manager.call("request_apply_commit", agent="alice", commit=deployed_sha)["approval_id"]
    host.call("approve", id=deployed)
    assert wait_status(host, deployed)["status"] == "deployed"
    pending_sha = commit_change(hive, "alice", agent_nix("Docs and site."), message="alice: docs and site")
    pending = manager.call("request_apply_commit", agent="alice", commit=pending_sha)["approval_id"]
    draft_sha = commit_change(hive, "alice", agent_nix("Docs, site, blog."), message="alice: blog too")

    page = browser_page
    page.goto(f"{url}/agents/alice")
    proposed = page.locator("#proposed-repo")
    assert "proposed repo" in proposed.locator("h3").text_content() and "agents/alice/config" in proposed.inner_text()
    assert "applied repo" in page.locator("#applied-repo h3").first.text_content()

    def mark(sha):
        return proposed.locator(f'li[data-sha="{sha}"] [data-role="mark"]').text_content().strip()

    assert mark(draft_sha) == "not yet proposed"
    assert mark(pending_sha) == f"proposed #{pending}"
    assert mark(deployed_sha) == f"deployed #{deployed}"
    assert proposed.locator(f'li[data-sha="{deployed_sha}"] .tag', has_text="running").count() == 1
    assert mark(denied_sha) == f"denied #{denied}"
    seed = proposed.locator("li").last
    assert seed.locator('[data-role="mark"]').text_content().strip() == "deployed deployed/0"  # the seed
    applied = page.locator("#applied-repo").inner_text()
    assert f"deployed/{deployed}" in applied and f"denied/{denied}" in applied and f"proposal/{pending}" in applied

    compare = page.locator("#compare")
    assert "proposed main against what is deployed" in compare.locator("h3").text_content()
    assert 'prompt = "Docs, site, blog.";' in compare.locator("pre.diff").inner_text()
    assert '-    prompt = "Just docs.";' in compare.locator("pre.diff").inner_text()
    screenshot(page, "console-agent-repos")
    assert console_errors(page) == []


def test_browser_notifications_are_opt_in(start_broker, browser_page):
    hive = start_broker()
    page = browser_page
    page.context.grant_permissions(["notifications"])
    # record what the page would show (Chromium headless has no notification centre to look at)
    page.add_init_script("""
        window.__shown = [];
        const Real = window.Notification;
        class Spy extends Real { constructor(t, o) { super(t, o); window.__shown.push([t, (o || {}).body]); } }
        Object.defineProperty(Spy, 'permission', { get: () => Real.permission });
        Spy.requestPermission = (...a) => Real.requestPermission(...a);
        window.Notification = Spy;
    """)
    page.goto(f"{hive.dashboard_url}/meta")
    toggle = page.locator("#notify-toggle")
    assert toggle.inner_text() == "notifications: off"
    alice = hive.client("alice")
    alice.call("ask_operator", question="First?")
    page.locator('#attention [data-att="questions"]', has_text="1 question").wait_for()
    assert page.evaluate("window.__shown") == []  # off by default: nothing shown

    toggle.click()
    page.locator("#notify-toggle", has_text="notifications: on").wait_for()
    alice.call("ask_operator", question="Second?")
    wait_for(lambda: page.evaluate("window.__shown.length") == 1, message="a notification")
    title, body = page.evaluate("window.__shown[0]")
    assert title == "hyperhive needs you" and "2 questions" in body
    page.reload()
    assert page.locator("#notify-toggle").inner_text() == "notifications: on"  # the choice is remembered
    assert console_errors(page) == []


def test_the_spawn_name_field_says_what_a_valid_name_is_and_keeps_what_was_typed(start_broker, browser_page):
    hive = start_broker()
    page = browser_page
    page.goto(f"{hive.dashboard_url}/")
    field = page.locator("#spawn-name")
    rule = page.locator("#spawn-name-rule").inner_text()
    assert "1 to 9 characters" in rule and "lowercase letter first" in rule
    assert "spawn-name-rule" in field.get_attribute("aria-describedby")
    field.fill("documentation")  # 13 characters: kept whole, and refused with the rule
    assert field.input_value() == "documentation"
    assert field.evaluate("e => e.validity.patternMismatch") is True
    assert field.evaluate("e => e.validationMessage") == '"documentation" is 13 characters: a name has at most 9'
    assert page.locator("#spawn-name-problem").inner_text() == '"documentation" is 13 characters: a name has at most 9'
    field.fill("Docs")
    assert page.locator("#spawn-name-problem").inner_text() == "a name starts with a lowercase letter"
    field.fill("docs-")  # its container's host name would end with '-'
    assert page.locator("#spawn-name-problem").inner_text() == "a name ends with a letter or digit"
    assert field.evaluate("e => e.validity.patternMismatch") is True
    assert "a letter or digit last" in rule
    field.fill("hive")  # the service's own name, refused by the server like the other reserved ones
    assert page.locator("#spawn-name-problem").inner_text() == '"hive" is reserved'
    assert "hive are reserved" in rule
    field.fill("documentation")
    page.get_by_role("button", name="spawn now").click()
    assert http(hive.dashboard_url, "GET", "/api/approvals?status=all").json()["approvals"] == []  # not sent
    assert console_errors(page) == []
