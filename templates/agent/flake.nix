{
  description = "A hyperhive agent's configuration: the NixOS module of its container";

  # No inputs: the hive's meta flake combines this module with nixpkgs and hyperhive's agent module (which declares
  # the `hyperhive.*` options set in agent.nix) and sets the agent's name.
  outputs = { self }: {
    nixosModules.default = { imports = [ ./agent.nix ]; };
  };
}
