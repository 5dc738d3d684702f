# The host both VM tests boot: the hyperhive service, the manager and two agents in containers, the fake `claude`.
{ self, nixpkgs }:
{ config, lib, pkgs, ... }:
let
  package = self.packages.${pkgs.stdenv.hostPlatform.system}.hyperhive;
  # The package is an application, not a module (python-packages-base.nix: `toPythonModule = x: x` for
  # buildPythonApplication, so it has no `pythonModule`): the package set's toPythonModule makes it importable.
  python = pkgs.python3.withPackages (ps: [ (ps.toPythonModule package) ]);
  # The fake Claude Code of the Python tests: same command line, starts the MCP server, scripted tool calls.
  fakeClaude = pkgs.writeShellScript "claude" ''
    exec ${python}/bin/python3 ${../pkgs/hyperhive/tests/fake_claude.py} "$@"
  '';
in
{
  imports = [ self.nixosModules.hyperhive ];

  virtualisation = {
    memorySize = 4096;
    diskSize = 8192;
    cores = 2;
  };

  # Deploys build the meta flake inside the VM, offline: nixpkgs comes from the store through the registry.
  nix.settings.substituters = lib.mkForce [ ];
  nix.registry.nixpkgs.flake = nixpkgs;
  system.extraDependencies = [ nixpkgs.outPath self.outPath ];

  environment.systemPackages = [ pkgs.curl pkgs.git pkgs.jq ];

  # A test token in the store: fine for a VM test, never for a real secret (use a file outside the store).
  environment.etc."hyperhive/dashboard-token" = { text = "test-token-0123456789"; mode = "0400"; };

  hyperhive = {
    enable = true;
    dashboard.tokenFile = "/etc/hyperhive/dashboard-token";
    harness.claudeCommand = [ "${fakeClaude}" ];
    manager = {
      prompt = "You run the test hive.";
      bash.allow = [ "git *" ];
    };
    agents = {
      # Restricted and user-namespaced (the default).
      alice = {
        allowedRecipients = [ "manager" "operator" ];
        bash.allow = [ "git *" ];
        prompt = "You maintain the docs.";
      };
      # Unrestricted, sharing host uids.
      bob = {
        privateUsers = false;
        prompt = "You maintain the code.";
      };
    };
  };
}
