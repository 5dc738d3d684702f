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
    "hyperhive.default_plugins.insight",
    "hyperhive.default_plugins.insight_tools",
)
# What ``hyperhive mcp`` loads to offer plugin tools: the built-ins that add tools, light to import.
TOOL_PLUGINS = ("hyperhive.default_plugins.insight_tools",)


def make_plugin_manager(load_entry_points: bool = True, builtins: tuple[str, ...] = DEFAULT_PLUGINS
                        ) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("hyperhive")
    pm.add_hookspecs(hookspecs)
    for name in builtins:
        pm.register(importlib.import_module(name), name=name)
    if load_entry_points:
        pm.load_setuptools_entrypoints("hyperhive")
    return pm
