"""The plugin manager: built-in plugins first (registered like datasette's defaults), then entry points."""

from __future__ import annotations

import importlib

import pluggy

from . import hookspecs

DEFAULT_PLUGINS = (
    "hyperhive.default_plugins.policy",
    "hyperhive.default_plugins.messaging",
    "hyperhive.default_plugins.backends",
    "hyperhive.default_plugins.questions",
    "hyperhive.default_plugins.lifecycle",
    "hyperhive.default_plugins.dashboard",
    "hyperhive.default_plugins.telemetry",
    "hyperhive.default_plugins.harness_ops",
)


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("hyperhive")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entry_points:
        pm.load_setuptools_entrypoints("hyperhive")
    return pm
