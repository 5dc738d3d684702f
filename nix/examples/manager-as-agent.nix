# Broken on purpose: the manager's name is also declared as an agent.
{
  manager.name = "boss";
  agents.boss = { };
}
