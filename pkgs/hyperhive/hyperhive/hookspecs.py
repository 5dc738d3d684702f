"""The hooks a hyperhive plugin can implement (pluggy project name ``hyperhive``).

Plugins are registered from the ``hyperhive`` entry-point group; the built-in features in
``hyperhive.default_plugins`` are plugins too.
"""

import pluggy

hookspec = pluggy.HookspecMarker("hyperhive")
hookimpl = pluggy.HookimplMarker("hyperhive")


@hookspec(firstresult=True)
def authorize_send(hive, sender, recipient, body):
    """Return a denial reason (str) to refuse ``sender`` sending ``body`` to ``recipient``, or None to allow."""


@hookspec
def message_stored(hive, message):
    """Observe a message or event (a dict as ``recv`` returns it) right after it was durably stored."""


@hookspec
def deploy_backends(hive):
    """Return a dict of backend name to a factory ``factory(hive) -> Backend``."""


@hookspec
def broker_ops(hive):
    """Return a dict of op name to ``Op`` (handler and the roles allowed to call it) for the sockets."""


@hookspec
def dashboard_blueprints(hive):
    """Return a list of flask blueprints to register on the dashboard."""


@hookspec
def harness_tools(role):
    """Return a list of extra MCP tools (``hyperhive.mcp.Tool``) offered to an agent of ``role``."""


@hookspec
def question_resolved(hive, question):
    """Observe an operator question that was answered, cancelled or expired (a dict as ``questions`` lists it)."""


@hookspec
def hive_started(hive):
    """Called once the service has opened its store and sockets."""


@hookspec
def hive_stopping(hive):
    """Called when the service begins to shut down."""


@hookspec
def config_changed(hive, old, new):
    """Called after a valid new config took effect."""
