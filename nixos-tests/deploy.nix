# Approve-and-deploy: the manager proposes a change to alice's configuration, the operator approves it over
# host.sock, the service builds the meta flake inside the VM and updates alice's container, and the proposal is
# tagged deployed/<id>. The VM carries the host's build dependencies so that the changed derivations can be built
# offline (as nixpkgs' own tests of in-VM rebuilds do).
{ pkgs, self, nixpkgs }:
pkgs.testers.runNixOSTest {
  name = "hyperhive-deploy";

  nodes.host = { lib, ... }: {
    imports = [ (import ./common.nix { inherit self nixpkgs; }) ];
    system.includeBuildDependencies = true;
    virtualisation.diskSize = lib.mkForce 20480;
    virtualisation.memorySize = lib.mkForce 6144;
  };

  testScript = { nodes, ... }:
    let
      cfg = nodes.host.hyperhive;
    in
    ''
      STATE = ${builtins.toJSON cfg.stateDir}
      PORT = ${toString cfg.dashboard.listen.port}
      NEW_PROMPT = "You maintain the docs and the changelog."

      ${builtins.readFile ./helpers.py}

      start_all()
      wait_for_hive()

      with subtest("before: alice runs her seeded configuration"):
          assert NEW_PROMPT not in host.succeed(inside("h-alice", "cat /etc/hyperhive/agent.json"))
          assert tags("alice", "deployed/0") == ["deployed/0"]
          generations_before = host.succeed("ls /nix/var/nix/profiles/per-container/h-alice").split()

      with subtest("the manager proposes, the operator approves, the container is rebuilt"):
          agent_nix = (
              "{ ... }:\n{\n  hyperhive = {\n"
              f"    prompt = \"{NEW_PROMPT}\";\n"
              "    allowedRecipients = [ \"manager\" \"operator\" ];\n"
              "    bash.allow = [ \"git *\" ];\n  };\n}\n")
          aid, sha = propose("alice", f"printf %s {shlex.quote(agent_nix)} > agent.nix", "alice also keeps the changelog")
          # Nothing is deployed before the operator says so.
          assert tags("alice", f"deployed/{aid}") == []
          host.succeed(f"hyperhive approve {aid}")
          host.wait_until_succeeds(f"git -C {STATE}/applied/alice tag -l deployed/{aid} | grep -q .", timeout=1800)
          assert tags("alice", f"failed/{aid}") == []
          assert main_sha("alice") == sha
          # The meta repo records the deploy.
          assert f"deployed/{aid}" in host.succeed(f"git -C {STATE}/meta log -1 --format=%s")

      with subtest("after: the container runs the approved configuration, and keeps it across a restart"):
          host.wait_until_succeeds(inside("h-alice", f"grep -q '{NEW_PROMPT}' /etc/hyperhive/agent.json"), timeout=120)
          generations_after = host.succeed("ls /nix/var/nix/profiles/per-container/h-alice").split()
          assert len(generations_after) > len(generations_before), generations_after
          host.succeed("systemctl restart container@h-alice.service")
          host.wait_until_succeeds(inside("h-alice", "systemctl is-active hive-agent.service"), timeout=300)
          host.succeed(inside("h-alice", f"grep -q '{NEW_PROMPT}' /etc/hyperhive/agent.json"))
          # bob was not touched.
          host.fail(inside("h-bob", f"grep -q '{NEW_PROMPT}' /etc/hyperhive/agent.json"))
    '';
}
