"""axe-core in the dashboard's pages: WCAG 2.2 A/AA checks run inside headless Chromium.

axe-core comes from npm, pinned in the Makefile (``make axe`` installs it into the project-local npm prefix and
``make test`` passes its path in ``HYPERHIVE_AXE``). It is injected with ``page.evaluate`` (the DevTools protocol,
not a ``<script>`` the page loads), so the dashboard's Content-Security-Policy stays on while it runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from conftest import REPO_ROOT, require

AXE = Path(os.environ.get("HYPERHIVE_AXE")
           or REPO_ROOT / ".tools" / "npm" / "lib" / "node_modules" / "axe-core" / "axe.min.js")
# WCAG 2.0, 2.1 and 2.2 at levels A and AA, plus axe's best practices for landmarks, headings and regions.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
EXTRA_RULES = ["region", "page-has-heading-one", "landmark-one-main", "landmark-unique", "heading-order",
               "landmark-no-duplicate-banner", "landmark-no-duplicate-contentinfo", "skip-link",
               "scrollable-region-focusable"]


def axe_source() -> str:
    require(f"axe-core at {AXE}", AXE.is_file(), "run `make axe` (make test does), or set HYPERHIVE_AXE to axe.min.js")
    return AXE.read_text(encoding="utf-8")


def audit(page, context: str = "document") -> list[dict]:
    """The violations axe-core finds in the page as it is now (WCAG 2.2 A/AA and the extra rules)."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    result = page.evaluate(
        """async ([tags, extra]) => {
            const r = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
            const more = await axe.run(document, { runOnly: { type: 'rule', values: extra },
                                                   resultTypes: ['violations'] });
            const seen = new Set(r.violations.map((v) => v.id));
            const all = r.violations.concat(more.violations.filter((v) => !seen.has(v.id)));
            return all.map((v) => ({ id: v.id, impact: v.impact, help: v.help, tags: v.tags,
              nodes: v.nodes.map((n) => ({ target: n.target.join(' '), html: n.html.slice(0, 160),
                                           summary: n.failureSummary })) }));
        }""",
        [WCAG_TAGS, EXTRA_RULES])
    return result


def readable(violations: list[dict], where: str = "") -> str:
    """The violations as a report a person can act on."""
    lines = [f"{len(violations)} accessibility violation(s){' on ' + where if where else ''}:"]
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} [{', '.join(t for t in v['tags'] if t.startswith('wcag'))}]")
        for n in v["nodes"][:8]:
            lines.append(f"    at {n['target']}: {n['html']}")
            for s in (n["summary"] or "").splitlines()[:4]:
                lines.append(f"      {s}")
        if len(v["nodes"]) > 8:
            lines.append(f"    … and {len(v['nodes']) - 8} more")
    return "\n".join(lines)
