# The NixOS VM tests, wired into the flake's `checks.<system>` (run them with `nix flake check` or
# `nix build .#checks.x86_64-linux.vm-hive`).
{ pkgs, self, nixpkgs }:
{
  # Messaging across containers, a policy denial, a deny, a build failure, user namespaces, the dashboard.
  vm-hive = import ./hive.nix { inherit pkgs self nixpkgs; };
  # Approve-and-deploy: the container is rebuilt from the meta flake inside the VM (needs build dependencies).
  vm-deploy = import ./deploy.nix { inherit pkgs self nixpkgs; };
}
