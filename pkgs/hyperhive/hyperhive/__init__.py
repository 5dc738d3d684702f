"""hyperhive: a contained, reviewable swarm of Claude Code agents on one NixOS host."""
