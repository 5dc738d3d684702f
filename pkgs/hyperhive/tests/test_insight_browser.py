"""What the swarm costs and does, in a real browser: the stats view (a chart per series, windows that switch,
deploys marked), the cost column and the hive's cost today on the home page, the agent's log, model and
reminders on its page, and the before/after figures on a deployed approval."""

from __future__ import annotations

import re
import time

import pytest

from browser import browser_page, chromium, console_errors, screenshot  # noqa: F401 (fixture)
from standins.support import AGENT_ENV, agent_nix, commit_change, wait_status

pytestmark = pytest.mark.browser


def record(client, cost, started, status="ok", model="claude-sonnet-4-5"):
    client.call("turn_record", turn={
        "started_at": started, "ended_at": started + 2.0, "status": status, "model": model,
        "wake": {"kind": "message", "from": "bob"}, "cost_usd": cost,
        "tokens": {"input": 1000, "output": 100, "cache_read": 0, "cache_write": 0},
        "tools": {"Bash": 1, "mcp__hyperhive__list_agents": 1}})


def test_the_operator_reads_what_the_swarm_costs(start_hive, browser_page):
    hive = start_hive(agents={"alice": {}, "bob": {}}, env=AGENT_ENV)
    url = hive.dashboard_url
    alice = hive.client("alice")
    now = time.time()
    # before the deploy below, and today (UTC): the hive's cost today counts it (two hours ago was yesterday when
    # the test ran between midnight and two)
    record(alice, 0.40, max(now - 7200, now - now % 86400))
    sha = commit_change(hive, "alice", agent_nix("Cheaper now."), message="alice: cheaper prompt")
    approval_id = hive.client("manager").call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    hive.host().call("approve", id=approval_id)
    assert wait_status(hive.host(), approval_id)["status"] == "deployed"
    time.sleep(0.05)
    record(alice, 0.10, time.time())
    record(alice, 0.20, time.time(), status="failed")
    alice.call("remind", body="look at the build again", in_seconds=3600)
    page = browser_page

    page.goto(f"{url}/stats")
    charts = page.locator("svg.cost-chart")
    assert charts.count() == 3  # cost, tokens, turns
    assert page.locator("svg.cost-chart[data-series='cost_usd'] rect.bar").count() >= 24
    assert page.locator(f"svg.cost-chart line.deploy[data-tag='deployed/{approval_id}']").count() == 3
    # the charts stretch to the page: no text inside them (it would stretch too); times read as everywhere else
    assert page.locator("svg.cost-chart text").count() == 0
    foot = page.locator(".chart-box .chart-foot").first.inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\s+now", foot.strip()), foot
    bar_title = page.locator("svg.cost-chart[data-series='cost_usd'] rect.bar title").last.text_content()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:00:00 UTC: \$\d+\.\d{4}", bar_title), bar_title
    deploy_title = page.locator(f"svg.cost-chart line.deploy[data-tag='deployed/{approval_id}'] title").first
    assert re.search(r"deployed at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", deploy_title.text_content())
    assert "$0.7000" in page.locator("#stats-totals").inner_text()
    assert "claude-sonnet-4-5" in page.locator("#stats-models").inner_text()
    screenshot(page, "stats-24h")
    page.locator("button[name=window][value='7d']").click()
    page.wait_for_url("**window=7d**")
    assert page.locator("svg.cost-chart[data-series='turns'] rect.bar").count() in (7, 8)
    assert page.locator("button[name=window][value='7d']").get_attribute("aria-pressed") == "true"
    page.select_option("select[name=agent]", "bob")
    page.locator("button[name=window][value='24h']").click()
    page.wait_for_url("**agent=bob**")
    assert "$0.0000" in page.locator("#stats-totals [data-figure='cost']").inner_text()

    page.goto(f"{url}/")
    cell = page.locator("td[data-cost='alice']")
    cell.wait_for()
    assert cell.inner_text().startswith("$0.")
    assert "$0.7000" in page.locator("#hive-cost-today").inner_text()

    # the stand-in agent process prints nothing; a line as the harness would write it
    with open(hive.config.state_dir / "agents" / "alice" / "agent.log", "a") as f:
        f.write("2026-11-29 08:00:00,000 INFO hyperhive.harness: turn 3 ok\n")
    page.goto(f"{url}/agents/alice")
    assert "turn 3 ok" in page.locator("#log-lines").inner_text()
    page.locator("#log-follow").click()
    assert page.locator("#log-follow").get_attribute("aria-pressed") == "true"
    with open(hive.config.state_dir / "agents" / "alice" / "agent.log", "a") as f:
        f.write("a line written while the operator watches\n")
    page.locator("#log-lines:has-text('a line written while the operator watches')").wait_for()
    page.locator("#log-follow").click()
    assert "look at the build again" in page.locator("#reminder-list").inner_text()
    page.fill("#model-form input[name=model]", "claude-haiku-4-5")
    page.locator("#model-form button:has-text('set model')").click()
    page.wait_for_load_state()
    page.locator("#agent-model:has-text('claude-haiku-4-5')").wait_for()
    assert hive.host().call("model", name="alice")["override"] == "claude-haiku-4-5"
    screenshot(page, "agent-insight")

    page.goto(f"{url}/approvals/{approval_id}")
    before = page.locator("#impact-table tr[data-period='before']").inner_text()
    after = page.locator("#impact-table tr[data-period='after']").inner_text()
    assert "$0.4000" in before and "0%" in before
    assert "$0.1500" in after and "50%" in after
    # WCAG 1.4.10 (reflow): at 320 CSS pixels neither page scrolls sideways (the table scrolls in its own region,
    # a long tool name wraps)
    page.set_viewport_size({"width": 320, "height": 800})
    for path in (f"/approvals/{approval_id}", "/stats"):
        page.goto(f"{url}{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 320, path
    assert console_errors(page) == []


def test_the_stats_page_follows_new_turns_and_keeps_the_operators_choice_and_focus(start_broker, browser_page):
    """The header said LIVE, yet /stats showed the figures of when it was opened until the operator reloaded."""
    hive = start_broker({"alice": {}, "bob": {}})
    alice = hive.client("alice")
    record(alice, 0.40, time.time() - 60)
    page = browser_page
    page.goto(f"{hive.dashboard_url}/stats?agent=alice&window=7d")
    page.wait_for_selector('#live[data-state="live"]')
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    cost = page.locator("#stats-totals [data-figure='cost']")
    assert cost.inner_text() == "$0.4000"
    # the operator picks bob (not yet shown) and stays on the list while alice works
    page.select_option("select[name=agent]", "bob")
    page.locator("select[name=agent]").focus()

    record(alice, 0.25, time.time(), model="claude-haiku-4-5")
    page.locator("#stats-totals [data-figure='cost']", has_text="$0.6500").wait_for()
    assert page.locator("#stats-totals [data-figure='turns']").inner_text() == "2"
    assert "claude-haiku-4-5" in page.locator("#stats-models").inner_text()
    assert "$0.6500" in page.locator("svg.cost-chart[data-series='cost_usd']").get_attribute("aria-label")
    # read out once, politely, in words (not the page's HTML)
    news = page.locator("#live-news")
    assert news.get_attribute("aria-live") == "polite"
    assert news.inner_text() == "alice, last 7d: $0.6500 over 2 turns"
    # the window and agent shown are still those asked for; the unsent choice and the focus stayed
    assert "window=7d" in page.url and "agent=alice" in page.url
    assert page.locator("button[name=window][value='7d']").get_attribute("aria-pressed") == "true"
    assert page.evaluate("document.activeElement.name") == "agent"
    assert page.locator("select[name=agent]").input_value() == "bob"

    # a limit set for alice shows as over budget without a reload; focus on a window button stays there too
    page.locator("button[name=window][value='30d']").focus()
    hive.host().call("budget", agent="alice", usd=0.5)
    page.locator("#over-budget", has_text="alice").wait_for()
    assert page.evaluate("document.activeElement.value") == "30d"
    assert page.evaluate("window.__sameDocument === true")
    assert console_errors(page) == []


def test_the_model_budget_and_reminder_forms_answer_in_the_page(start_broker, browser_page):
    # they posted as plain forms: an error was a bare JSON page, a success the page again, at its top, focus lost
    hive = start_broker({"alice": {"budget": {"dailyUsd": 1.0}}})
    alice = hive.client("alice")
    record(alice, 0.60, time.time() - 10)  # the next turn would cross $1: over budget, the page offers to raise it
    reminder = alice.call("remind", body="look at the build again", in_seconds=3600)["id"]
    page = browser_page
    page.goto(f"{hive.dashboard_url}/agents/alice")
    page.wait_for_selector('#live[data-state="live"]')
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    focused = "() => document.activeElement.getAttribute('name')"

    field = page.locator("#model-form input[name=model]")
    field.press("Enter")  # no model: refused, said in the page
    page.locator(".toast.bad", has_text='give "model"').wait_for()
    field.fill("claude-haiku-4-5")
    field.press("Enter")
    page.locator(".toast.ok", has_text="model of alice: claude-haiku-4-5").wait_for()
    page.locator("#agent-model", has_text="set by the operator").wait_for()
    assert page.evaluate(focused) == "model"  # still in the field (the form was rendered again)
    page.locator("#model-form button", has_text="back to").click()
    page.locator("#agent-model", has_text="set by the operator").wait_for(state="detached")
    assert hive.host().call("model", name="alice")["override"] is None

    usd = page.locator("#budget-form input[name=usd]")
    usd.fill("lots")
    usd.press("Enter")
    page.locator(".toast.bad", has_text='"usd" must be a number').wait_for()
    usd.fill("5")
    usd.press("Enter")
    page.locator("#agent-budget", has_text="within its limit").wait_for()
    page.locator("#budget-form").wait_for(state="detached")

    page.get_by_role("button", name=f"cancel reminder {reminder} of alice").click()
    page.locator(".toast.ok", has_text=f"cancelled reminder #{reminder}").wait_for()
    page.locator("#insight .empty", has_text="no pending reminders").wait_for()
    assert page.evaluate("window.__sameDocument === true")
    assert console_errors(page, ignore=("400",)) == []


def test_an_agent_page_follows_a_limit_of_the_whole_hive_set_elsewhere(start_broker, browser_page):
    # the page refreshed its cost part only for events naming its agent: the hive's limit raised from the CLI or
    # another page left "OVER BUDGET" on it until a reload
    hive = start_broker({"alice": {}, "bob": {}}, budget={"dailyUsd": 1.0})
    bob = hive.client("bob")
    record(bob, 0.60, time.time() - 10)  # the next turn (about $0.60) would cross the hive's $1
    assert bob.call("turn_ready", wait_seconds=0)["ready"] is False
    page = browser_page
    page.goto(f"{hive.dashboard_url}/agents/bob")
    page.wait_for_selector('#live[data-state="live"]')
    assert "the hive has spent" in page.locator("#agent-budget").inner_text()
    hive.host().call("budget", usd=5)  # the whole hive's, as `hyperhive budget --usd 5` sets it
    page.locator("#agent-budget", has_text="within its limit").wait_for(timeout=10000)
    assert console_errors(page) == []


def test_the_budget_form_raises_the_limit_that_holds_the_agent_back(start_broker, browser_page):
    """When the hive's limit held an agent back, its page offered to raise the agent's own limit in dollars (which
    changed nothing: it stayed over); an agent over a token limit was offered dollars too."""
    hive = start_broker({"alice": {"budget": {"dailyTokens": 1500}}, "bob": {}}, budget={"dailyUsd": 1.0})
    alice, bob = hive.client("alice"), hive.client("bob")
    record(alice, 0.01, time.time() - 30)  # 1,100 tokens: the next (about as many) would cross alice's 1,500
    record(bob, 0.60, time.time() - 10)  # $0.61 spent: bob's next (about $0.60) would cross the hive's $1
    page = browser_page

    page.goto(f"{hive.dashboard_url}/agents/bob")
    page.wait_for_selector('#live[data-state="live"]')
    assert "the hive has spent" in page.locator("#agent-budget").inner_text()
    form = page.locator("#budget-form")
    assert form.locator("input[name=tokens]").count() == 0  # the hive has no token limit to raise
    usd = form.get_by_label("today's limit of the whole hive in USD")
    usd.fill("$5")
    usd.press("Enter")
    page.locator(".toast.ok", has_text="today's limit of the whole hive is now $5.00").wait_for()
    page.locator("#agent-budget", has_text="within its limit").wait_for()
    assert bob.call("turn_ready")["ready"] is True
    assert hive.client("manager").call("turn_ready")["ready"] is True  # the hive's limit, raised for everyone

    page.goto(f"{hive.dashboard_url}/agents/alice")
    page.wait_for_selector('#live[data-state="live"]')
    assert "1,500" in page.locator("#agent-budget").inner_text()
    form = page.locator("#budget-form")
    assert form.locator("input[name=usd]").count() == 0  # alice has no dollar limit: raising one would add it
    tokens = form.get_by_label("today's limit of alice in tokens")
    tokens.fill("1.5")
    tokens.press("Enter")
    page.locator(".toast.bad", has_text='"tokens" must be a whole number').wait_for()
    tokens.fill("20,000")
    tokens.press("Enter")
    page.locator(".toast.ok", has_text="today's limit of alice is now 20,000 tokens").wait_for()
    page.locator("#agent-budget", has_text="within its limit").wait_for()
    assert alice.call("turn_ready")["ready"] is True
    assert console_errors(page, ignore=("400",)) == []
