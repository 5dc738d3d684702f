"""Third-party plugins from the ``hyperhive`` entry-point group, loaded by the real service."""

from __future__ import annotations

import os
import textwrap

import pytest

from hyperhive.errors import HiveError
from hyperhive import hookspecs
from hyperhive.plugins import DEFAULT_PLUGINS, make_plugin_manager

PLUGIN = textwrap.dedent('''
    """A policy plugin as a third party would ship it: no secrets leave an agent."""
    from hyperhive.broker import Op
    from hyperhive.hookspecs import hookimpl

    @hookimpl
    def authorize_send(hive, sender, recipient, body):
        if "password" in body.lower():
            return f"{sender} may not send what looks like a password to {recipient}"

    @hookimpl
    def broker_ops(hive):
        return {"echo": Op(lambda hive, who, args: {"echo": args.get("text"), "by": who.name})}
''')


@pytest.fixture
def plugin_path(tmp_path):
    (tmp_path / "nosecrets.py").write_text(PLUGIN)
    dist = tmp_path / "hyperhive_nosecrets-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hyperhive-nosecrets\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hyperhive]\nnosecrets = nosecrets\n")
    return tmp_path


def test_an_entry_point_plugin_adds_a_policy_and_an_op(start_broker, plugin_path):
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")]))}
    hp = start_broker(env=env)
    alice = hp.client("alice")
    with pytest.raises(HiveError) as denied:
        alice.call("send", to="bob", body="the PASSWORD is hunter2")
    assert denied.value.code == "forbidden" and "looks like a password" in denied.value.message
    alice.call("send", to="bob", body="nothing to hide")
    assert [m["body"] for m in hp.client("bob").call("recv", max=5)["messages"]] == ["nothing to hide"]
    assert alice.call("echo", text="hi") == {"echo": "hi", "by": "alice"}
    # the built-in allowedRecipients policy still applies beside it
    with pytest.raises(HiveError) as refused:
        hp.client("alice").call("send", to="carl", body="x")
    assert refused.value.code == "not_found"


def test_built_in_plugins_are_registered_by_name():
    pm = make_plugin_manager(load_entry_points=False)
    assert [name for name in DEFAULT_PLUGINS if pm.get_plugin(name) is None] == []
    assert "hyperhive.default_plugins.policy" in {pm.get_name(p) for p in pm.get_plugins()}


def test_every_hook_has_a_one_line_docstring():
    hooks = [getattr(hookspecs, n) for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "hyperhive_spec")]
    assert len(hooks) >= 5
    for hook in hooks:
        assert hook.__doc__ and "\n" not in hook.__doc__.strip(), hook.__name__


def test_hooks_only_built_ins_implement_skip_pluggy_and_give_its_answers():
    from types import SimpleNamespace

    from hyperhive.hookspecs import hookimpl
    from hyperhive.plugins import direct_caller

    pm = make_plugin_manager(load_entry_points=False)
    policy = SimpleNamespace(config=SimpleNamespace(manager="manager"),
                             agent_config=lambda name: SimpleNamespace(allowed_recipients=["bob"]))
    direct = direct_caller(pm, "authorize_send")
    assert direct is not pm.hook.authorize_send  # only the built-in policy: called without pluggy
    for to in ("bob", "carl"):
        kwargs = dict(hive=policy, sender="alice", recipient=to, body="x")
        assert direct(**kwargs) == pm.hook.authorize_send(**kwargs)
    assert direct_caller(pm, "message_stored")(hive=policy, message={}) == []  # nobody implements it
    seen = []

    class Observer:
        @hookimpl
        def message_stored(self, hive, message):
            seen.append(message["id"])

    pm.register(Observer(), name="observer")
    stored = direct_caller(pm, "message_stored")
    assert stored is pm.hook.message_stored  # a plugin beyond the defaults: pluggy calls it as usual
    stored(hive=policy, message={"id": 7})
    assert seen == [7]
