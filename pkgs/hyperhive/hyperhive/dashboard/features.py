"""The feature modules the dashboard calls but does not own (spawn, approvals, repos), found when present.

A module not built into this tree is simply absent: its sections are empty and its actions say so clearly.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import not_found

_cache: dict[str, ModuleType | None] = {}

WHAT = {
    "spawn": "agent life cycle (start, kill, drafts, tombstones)",
    "approvals": "approvals",
    "repos": "the config repo browser",
    "telemetry": "telemetry",
}


def feature(name: str) -> ModuleType | None:
    if name not in _cache:
        full = f"hyperhive.{name}"
        try:
            _cache[name] = importlib.import_module(full)
        except ModuleNotFoundError as e:
            if e.name != full:
                raise
            _cache[name] = None
    return _cache[name]


def require(name: str, function: str):
    """``hyperhive.<name>.<function>``, or a not_found error saying the feature is not in this build."""
    module = feature(name)
    fn = getattr(module, function, None) if module is not None else None
    if fn is None:
        raise not_found(f"{WHAT.get(name, name)} is not available in this hyperhive "
                        f"(hyperhive.{name}.{function} is missing)")
    return fn
