# The smallest hive: one agent with the defaults, the manager with its defaults.
{
  agents.alice = { };
}
