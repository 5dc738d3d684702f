# Broken on purpose: an agent name with a capital letter. Rendering must fail naming hyperhive.agents."Bad".name.
{
  agents.Bad = { };
}
