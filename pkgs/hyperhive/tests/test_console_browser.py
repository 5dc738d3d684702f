"""The operator's console in headless Chromium against a real service: the review shows what the manager said,
and what became of it."""

from __future__ import annotations

import pytest

from browser import browser_page, console_errors, http, screenshot  # noqa: F401 (fixture)
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
