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
      CLAUDE_COMMAND = ${builtins.toJSON cfg.harness.claudeCommand}
      PICK_END = ${toString (import ../modules/lib.nix).uidRanges.pickEnd}

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

      with subtest("the deploy kept every host-only setting"):
          # alice's `packages` and the harness command come from the host, not from her config repo.
          host.succeed(inside("h-alice", "command -v jq"))
          host.fail(inside("h-bob", "command -v jq"))
          host.succeed(inside("h-alice", f"grep -qF {shlex.quote(json.dumps(CLAUDE_COMMAND[0]))} /etc/hyperhive/agent.json"))
          assert host.succeed(inside("h-alice", "hostname")).strip() == "h-alice"
          host.succeed(inside("h-alice", "systemctl is-active hive-agent.service"))

      with subtest("a spawned agent gets a declared one's network, user namespace and mounts"):
          host.succeed("hyperhive spawn zed --timeout 1800")
          conf = host.succeed("cat /etc/nixos-containers/h-zed.conf")
          assert "PRIVATE_NETWORK" not in conf, conf  # nixos-container create's private network, without NAT
          assert "SYSTEM_PATH=/nix/var/nix/profiles/system" in conf, conf
          assert "COPY_RESOLV_CONF=1" in conf, conf  # else the startScript copies no resolv.conf in
          host.wait_until_succeeds(inside("h-zed", "systemctl is-active hive-agent.service"), timeout=300)
          leader = host.succeed("machinectl show h-zed -p Leader --value").strip()
          zed_uid = int(host.succeed(f"stat -c %u /proc/{leader}").strip())
          assert zed_uid >= PICK_END, zed_uid
          host.fail(inside("h-zed", "test $(stat -c %u /nix/store/.) = 65534"))
          # Names resolve as on the host: its resolv.conf was copied in (useHostResolvConf in a container).
          assert (host.succeed(inside("h-zed", "cat /etc/resolv.conf"))
                  == host.succeed("cat /etc/resolv.conf")), "h-zed has not the host's resolv.conf"
          # The host's network: the same interfaces as the host (no veth of its own).
          assert (host.succeed(inside("h-zed", "ls /sys/class/net")).split()
                  == host.succeed("ls /sys/class/net").split())
          # Its socket and state are mounted; nobody else's.
          assert call("h-zed", "whoami")["name"] == "zed"
          host.succeed(inside("h-zed", "touch /state/probe"))
          host.fail(inside("h-zed", "test -e /agents"))
          # Its policy is the template's, read from its agent.nix by the module system: the broker enforces it.
          out = failing(client("h-zed", "send bob 'not allowed'"))
          assert "forbidden" in out, out
          host.succeed(client("h-zed", "send operator 'hello'"))
    '';
}
