"""The operator's review in a real browser: open a pending approval, read its diff, approve, and see the agent's
tag list show the deploy."""

from __future__ import annotations

import pytest

from browser import browser_page, chromium, console_errors, screenshot  # noqa: F401 (fixture)
from conftest import wait_for
from standins.support import AGENT_ENV, agent_nix, commit_change, standin_info, wait_status

pytestmark = pytest.mark.browser


def test_operator_reviews_and_approves_in_the_browser(start_hive, browser_page):
    hive = start_hive(agents={"alice": {}}, env=AGENT_ENV)
    url = hive.dashboard_url
    if not url:
        pytest.skip("no dashboard in this build")
    wait_for(lambda: standin_info(hive, "alice"), message="alice running")
    sha = commit_change(hive, "alice", agent_nix("Reviewed in a browser."), message="alice: reviewed prompt")
    approval_id = hive.client("manager").call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())  # "Approve #n? It is built and deployed now."

    page.goto(f"{url}/")
    pending = page.locator(f"text=#{approval_id}").first
    pending.wait_for()
    page.goto(f"{url}/approvals/{approval_id}")
    body = page.locator("#approval")
    body.wait_for()
    text = body.inner_text()
    assert "apply alice" in text and sha in text
    assert 'prompt = "Reviewed in a browser.";' in text  # the diff against what is deployed
    screenshot(page, "approval-pending")

    page.locator("#approval button:has-text('approve')").click()
    approval = wait_status(hive.host(), approval_id)
    assert approval["status"] == "deployed"
    wait_for(lambda: standin_info(hive, "alice")["deployed_sha"] == sha, message="alice on the approved commit")

    page.goto(f"{url}/agents/alice")
    tag = page.locator(f"a:has-text('deployed/{approval_id}')")
    tag.first.wait_for()
    assert page.locator("text=deployed/0").count() >= 1
    screenshot(page, "agent-deployed")
    page.goto(f"{url}/approvals/{approval_id}")
    assert f"deployed/{approval_id}" in page.locator("#approval").inner_text()
    assert console_errors(page) == []


def test_a_card_approves_the_diff_it_shows_and_takes_it_again_when_what_is_deployed_changes(start_hive,
                                                                                            browser_page):
    """Two proposals from the same deployed commit: once the first is deployed, the second card's diff (loaded
    before, and kept) showed nothing of the undoing its deploy would do. The card now loads its diff again when
    what is deployed changes, and its approve sends the base that diff was taken against (a stale one is refused:
    test_approvals.py)."""
    from standins.support import git, state_dir, two_changes_from_deployed

    hive = start_hive(agents={"alice": {}}, env=AGENT_ENV)
    url = hive.dashboard_url
    if not url:
        pytest.skip("no dashboard in this build")
    wait_for(lambda: standin_info(hive, "alice"), message="alice running")
    sd = state_dir(hive)
    deployed, fix, tweak = two_changes_from_deployed(hive, "alice", "# THE FIX")
    manager = hive.client("manager")
    first = manager.call("request_apply_commit", agent="alice", commit=fix)["approval_id"]
    second = manager.call("request_apply_commit", agent="alice", commit=tweak)["approval_id"]
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{url}/")
    card = f"article.approval[data-key='ap-{second}-pending']"
    page.locator(f"{card} pre.diff").wait_for()
    assert page.locator(f"{card} input[name=base]").input_value() == deployed
    assert "THE FIX" not in page.locator(f"{card} pre.diff").inner_text()
    hive.cli("approve", str(first))  # elsewhere, while this page stays open
    wait_for(lambda: "-# THE FIX" in page.locator(f"{card} pre.diff").inner_text(), timeout=20,
             message="the second card's diff taken again, showing the undoing")
    assert page.locator(f"{card} input[name=base]").input_value() == fix
    page.locator(f"{card} button:has-text('approve')").click()
    assert wait_status(hive.host(), second)["status"] == "deployed"
    assert git(sd / "applied" / "alice", "rev-parse", "main") == tweak
    assert console_errors(page) == []
