"""Built-in policy: ``allowedRecipients`` restricts whom an agent may send to; the manager is unrestricted."""

from ..hookspecs import hookimpl


@hookimpl
def authorize_send(hive, sender, recipient, body):
    if sender in (hive.config.manager, "operator", "system"):
        return None
    agent = hive.agent_config(sender)
    if agent is None or agent.allowed_recipients is None:
        return None
    if recipient in agent.allowed_recipients:
        return None
    allowed = ", ".join(agent.allowed_recipients) or "nobody"
    return (f'{sender} may not send to "{recipient}": its allowedRecipients policy allows only {allowed}')
