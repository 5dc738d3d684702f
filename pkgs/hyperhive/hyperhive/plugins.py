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


def direct_caller(pm: pluggy.PluginManager, name: str, defaults: tuple[str, ...] = DEFAULT_PLUGINS):
    """A callable for the hook ``name`` that skips pluggy's machinery when only built-in plugins implement it.

    For the hooks on the hot path of every send (``authorize_send``, ``message_stored``): with no plugin beyond
    the defaults, their functions are called directly, in pluggy's order and with its ``firstresult`` rule (no
    implementation at all costs nothing); as soon as another plugin implements the hook, pluggy calls it as
    usual. Plugins are registered when the service starts (entry points), so this is decided once.
    """
    hook = getattr(pm.hook, name)
    impls = hook.get_hookimpls()
    if any(pm.get_name(i.plugin) not in defaults or i.hookwrapper or getattr(i, "wrapper", False) for i in impls):
        return hook
    calls = [(i.function, tuple(i.argnames)) for i in reversed(impls)]  # pluggy calls the last registered first
    firstresult = bool(hook.spec and hook.spec.opts.get("firstresult"))

    def call(**kwargs):
        results = []
        for function, argnames in calls:
            result = function(*[kwargs[a] for a in argnames])
            if result is not None:
                if firstresult:
                    return result
                results.append(result)
        return None if firstresult else results

    return call
