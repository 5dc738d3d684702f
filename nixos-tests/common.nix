# The host both VM tests boot: the hyperhive service, the manager and two agents in containers, the stand-in model.
{ self, nixpkgs }:
{ config, lib, pkgs, ... }:
let
  package = self.packages.${pkgs.stdenv.hostPlatform.system}.hyperhive;
  # The package is an application, not a module (python-packages-base.nix: `toPythonModule = x: x` for
  # buildPythonApplication, so it has no `pythonModule`): the package set's toPythonModule makes it importable.
  python = pkgs.python3.withPackages (ps: [ (ps.toPythonModule package) ]);
  # No model is reachable from the VM: the harness runs hyperhive's own scripted stand-in model (hyperhive.standin,
  # what a hive without `claude` uses), which takes Claude Code's command line and acts through the MCP tools.
  standinClaude = pkgs.writeShellScript "claude" ''
    exec ${python}/bin/python3 -m hyperhive.standin "$@"
  '';
in
{
  imports = [ self.nixosModules.hyperhive ];

  virtualisation = {
    memorySize = 4096;
    diskSize = 8192;
    cores = 2;
    # alice is user-namespaced (privateUsers), so nixos-containers.nix binds /nix/store into her container with
    # `:idmap`. qemu-vm.nix's default store is the host's over 9p, with an overlayfs on top when writable
    # (`/nix/.ro-store` + `/nix/.rw-store`): neither 9p nor an overlayfs mount can be id-mapped (overlayfs only
    # accepts id-mapped *layers*), so her container would not start. `useNixStoreImage` with `writableStore = false`
    # would give an id-mappable erofs store, but deploys write the store (flake inputs, builds). `useBootLoader`
    # builds a full disk image whose ext4 root holds the store itself ("If you want a full disk image with a
    # partition table and a root filesystem instead of only a store image, enable virtualisation.useBootLoader"):
    # writable, and ext4 supports id-mapped mounts (Linux 5.12+); mountHostNixStore defaults to false with it.
    useBootLoader = true;
  };

  # Deploys build the meta flake inside the VM, offline: nixpkgs is the host's own (pkgs.path, through
  # /etc/hyperhive/containers.json), in the image with hyperhive's flake source.
  nix.settings.substituters = lib.mkForce [ ];
  system.extraDependencies = [ nixpkgs.outPath self.outPath pkgs.path ];

  environment.systemPackages = [ pkgs.curl pkgs.git pkgs.jq ];

  # A test token in the store: fine for a VM test, never for a real secret (use a file outside the store).
  environment.etc."hyperhive/dashboard-token" = { text = "test-token-0123456789"; mode = "0400"; };

  hyperhive = {
    enable = true;
    dashboard.tokenFile = "/etc/hyperhive/dashboard-token";
    harness.claudeCommand = [ "${standinClaude}" ];
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
        # A host-only setting: it must survive an approved deploy (vm-deploy).
        packages = [ pkgs.jq ];
      };
      # Unrestricted, sharing host uids.
      bob = {
        privateUsers = false;
        prompt = "You maintain the code.";
      };
    };
  };
}
