"""Notes compaction: when an agent's notes file outgrows its limit, a short secondary Claude session rewrites it.

The session gets the notes in a "compact this" prompt, no tools, and no conversation to continue; its answer
becomes the new notes. The previous version is kept next to it as ``notes.md.prev``. An answer that is empty,
not smaller than what it replaces, or comes from a failed or timed-out session leaves the notes untouched.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

log = logging.getLogger(__name__)

PROMPT_MARKER = "compact this"

SYSTEM_PROMPT = """\
You compact an agent's working notes. You get the whole notes file; you answer with its new text and nothing
else: no preamble, no explanation, no code fence around it. Keep what the agent needs to carry on: standing
instructions, open tasks and commitments, who asked for what, decisions and their reasons, facts it learned
that are expensive to find again. Drop what is finished, superseded or repeated. Keep Markdown headings.
"""


class RunOutcome(Protocol):
    ok: bool
    result_text: str | None
    reason: str


@dataclass
class CompactionResult:
    status: str  # "skipped" | "compacted" | "failed"
    reason: str
    before: int
    after: int


def prompt_for(notes: str, limit: int) -> str:
    size = len(notes.encode("utf-8"))
    return (f"{PROMPT_MARKER}: the notes file below is {size} bytes, over its limit of {limit} bytes. Rewrite it "
            f"to well under {limit // 2} bytes if you can, and answer with the new notes only; your answer "
            f"replaces the file as it is.\n\n<notes>\n{notes}\n</notes>\n")


_FENCE = re.compile(r"\A```[a-zA-Z]*\n(.*)\n```\s*\Z", re.S)


def clean_answer(text: str | None) -> str:
    text = (text or "").strip()
    fenced = _FENCE.match(text)
    if fenced:  # models wrap documents in a fence despite being told not to
        text = fenced.group(1).strip()
    return text + "\n" if text else ""


def compact_notes(notes_path: Path, limit: int, run: Callable[[str], RunOutcome], *,
                  force: bool = False) -> CompactionResult:
    """Compact ``notes_path`` if it is over ``limit`` bytes (or ``force``), with ``run(prompt)`` as the session."""
    try:
        original = notes_path.read_bytes()
    except FileNotFoundError:
        return CompactionResult("skipped", "no notes file", 0, 0)
    before = len(original)
    if before == 0 or (before <= limit and not force):
        return CompactionResult("skipped", f"{before} bytes, within the limit of {limit}", before, before)
    try:
        notes = original.decode("utf-8")
    except UnicodeDecodeError:
        notes = original.decode("utf-8", errors="replace")
    outcome = run(prompt_for(notes, limit))
    if not outcome.ok:
        return CompactionResult("failed", outcome.reason, before, before)
    answer = clean_answer(outcome.result_text).encode("utf-8")
    if not answer:
        return CompactionResult("failed", "the compaction answered nothing", before, before)
    if len(answer) >= before:
        return CompactionResult("failed", f"the compaction answered {len(answer)} bytes, not less than {before}",
                                before, before)
    if notes_path.read_bytes() != original:
        return CompactionResult("failed", "the notes changed while they were being compacted", before, before)
    prev = notes_path.with_name(notes_path.name + ".prev")
    tmp = notes_path.with_name(f".{notes_path.name}.compacting")
    prev_tmp = notes_path.with_name(f".{notes_path.name}.prev.tmp")
    prev_tmp.write_bytes(original)
    os.replace(prev_tmp, prev)
    tmp.write_bytes(answer)
    os.replace(tmp, notes_path)  # atomic: a crash leaves either the old notes or the new, never half
    log.info("compacted %s from %d to %d bytes (previous version in %s)", notes_path, before, len(answer), prev)
    return CompactionResult("compacted", "ok", before, len(answer))
