# A host with the hyperhive service, the manager (hm1nd) and two agents (h-alice, h-bob) in containers, the stand-in
# model (hyperhive.standin) as `claude`: messages across containers, a policy denial, a denied and a failed proposal, user
# namespaces, and the dashboard's token. Expected values are read from the node's configuration.
{ pkgs, self, nixpkgs }:
pkgs.testers.runNixOSTest {
  name = "hyperhive";

  nodes.host = import ./common.nix { inherit self nixpkgs; };

  testScript = { nodes, ... }:
    let
      cfg = nodes.host.hyperhive;
    in
    ''
      STATE = ${builtins.toJSON cfg.stateDir}
      PORT = ${toString cfg.dashboard.listen.port}
      TOKEN = None
      ALICE_ALLOWED = ${builtins.toJSON cfg.agents.alice.allowedRecipients}
      ALICE_UID = ${toString nodes.host.containers."h-alice".privateUsers}
      BOB_PRIVATE = ${builtins.toJSON nodes.host.containers."h-bob".privateUsers}
      HOST_IP = ${builtins.toJSON nodes.host.networking.primaryIPAddress}
      ALICE_SYSTEM_PATH = ${builtins.toJSON nodes.host.containers."h-alice".path}
      PICK_END = ${toString (import ../modules/lib.nix).uidRanges.pickEnd}
      WORKDIR = ${builtins.toJSON nodes.host.systemd.services.hyperhive.serviceConfig.WorkingDirectory}
      RUN = ${builtins.toJSON cfg.runDir}

      ${builtins.readFile ./helpers.py}

      start_all()
      wait_for_hive()
      TOKEN = host.succeed("cat ${cfg.dashboard.tokenFile}").strip()

      with subtest("each container speaks for itself through its own socket"):
          assert call("h-alice", "whoami")["name"] == "alice"
          assert call("h-bob", "whoami")["name"] == "bob"
          assert call("hm1nd", "whoami") == {"name": ${builtins.toJSON cfg.manager.name}, "role": "manager"}
          host.succeed(inside("h-alice", "test -S /run/hive/mcp.sock"))
          # No other agent's socket, nor the host's, is reachable from a container.
          host.fail(inside("h-alice", "ls /run/hyperhive"))
          host.fail(inside("h-alice", "test -e /run/hive/host.sock"))

      with subtest("bob sends to alice across containers, alice receives and acknowledges"):
          # Park alice's harness so that the message waits for the client below.
          host.succeed(inside("h-alice", "systemctl stop hive-agent.service"))
          sent = call("h-bob", "send", to="alice", body="hello from bob")
          got = call("h-alice", "recv", wait_seconds=5, max=5)
          bodies = [(m["from"], m["body"]) for m in got["messages"]]
          assert ("bob", "hello from bob") in bodies, got
          assert any(m["id"] == sent["id"] for m in got["messages"])
          call("h-alice", "ack", ids=[m["id"] for m in got["messages"]])
          assert call("h-alice", "status")["leased"] == 0
          # Nothing is left for alice once acknowledged.
          assert call("h-alice", "recv", wait_seconds=0)["messages"] == []

      with subtest("alice's policy refuses a recipient outside her list and allows one inside"):
          assert "bob" not in ALICE_ALLOWED and "operator" in ALICE_ALLOWED
          out = failing(client("h-alice", "send bob 'not allowed'"))
          assert "forbidden" in out and "bob" in out, out
          host.succeed(client("h-alice", "send operator 'status report'"))
          inbox = json.loads(host.succeed("hyperhive inbox --json"))
          assert any(m["from"] == "alice" and m["body"] == "status report" for m in inbox["messages"]), inbox
          # bob is unrestricted.
          host.succeed(client("h-bob", "send operator 'bob here'"))

      with subtest("the harness runs a turn with the stand-in model and acknowledges"):
          host.succeed("hyperhive send alice 'please write a note'")
          assert call("h-alice", "status")["unread"] >= 1
          host.succeed(inside("h-alice", "systemctl start hive-agent.service"))
          host.wait_until_succeeds(
              client("h-alice", "status") + " | jq -e '.unread == 0 and .leased == 0'", timeout=120)
          host.succeed(inside("h-alice", "journalctl -u hive-agent.service | grep -i turn"))

      with subtest("with privateUsers, container root is an unprivileged uid on the host"):
          leader = host.succeed("machinectl show h-alice -p Leader --value").strip()
          assert host.succeed(f"stat -c %u /proc/{leader}").strip() == str(ALICE_UID)
          # Above systemd-nspawn's --private-users=pick region, so no picking container can take her range.
          assert ALICE_UID >= PICK_END
          assert host.succeed(inside("h-alice", "id -u")).strip() == "0"
          # Her state and credentials belong to that uid on the host, to root inside.
          host.succeed(f"test $(stat -c %u {STATE}/agents/alice/state) = {ALICE_UID}")
          host.succeed(f"test $(stat -c %u {STATE}/claude/alice) = {ALICE_UID}")
          host.succeed(inside("h-alice", "test $(stat -c %u /state) = 0 && touch /state/probe"))
          # bob shares host uids: his root is root.
          assert BOB_PRIVATE == "no"
          bob_leader = host.succeed("machinectl show h-bob -p Leader --value").strip()
          assert host.succeed(f"stat -c %u /proc/{bob_leader}").strip() == "0"
          # Alice's root cannot write what host root owns (the manager's mounts are not hers either).
          host.fail(inside("h-alice", "test -e /agents"))

      with subtest("a user-namespaced container sees the store id-mapped, and boots from its own profile"):
          # nixos-containers.nix binds /nix/store with :idmap for a numeric privateUsers: root's files are root's
          # inside (not nobody's, as without an id-mapped store).
          host.succeed(inside("h-alice", "test $(stat -c %u /nix/store/.) = 0"))
          host.fail(inside("h-alice", "test $(stat -c %u /nix/store/.) = 65534"))
          # SYSTEM_PATH is resolved inside the container: its own profile, not the host's per-container path.
          host.succeed(f"grep -qx 'SYSTEM_PATH={ALICE_SYSTEM_PATH}' /etc/nixos-containers/h-alice.conf")
          host.succeed(inside("h-alice", f"test -x {ALICE_SYSTEM_PATH}/init"))
          host.fail(inside("h-alice", "test -e /nix/var/nix/profiles/per-container"))
          assert (host.succeed(inside("h-alice", "readlink -f /run/current-system")).strip()
                  == host.succeed("readlink -f /nix/var/nix/profiles/per-container/h-alice/system").strip())

      with subtest("an agent's socket is reachable from its container only"):
          sock = f"{RUN}/agents/alice/mcp.sock"
          host.succeed(f"test $(stat -c %u {sock}) = {ALICE_UID} && test $(stat -c %a {sock}) = 600")
          assert call("h-alice", "whoami")["name"] == "alice"
          # Another local user gets nowhere near it.
          host.fail(f"setpriv --reuid=65534 --regid=65534 --clear-groups -- hyperhive client --socket {sock} call whoami '{{}}'")

      with subtest("the service builds in a writable working directory"):
          assert WORKDIR == STATE
          host.succeed(f"test $(systemctl show hyperhive.service -p WorkingDirectory --value) = {WORKDIR}")
          pid = host.succeed("systemctl show hyperhive.service -p MainPID --value").strip()
          host.succeed(f"nsenter -t {pid} -m -- touch {WORKDIR}/.probe && rm {WORKDIR}/.probe")
          # ProtectSystem=strict: / is read-only for the service (the working directory it used to get).
          host.fail(f"nsenter -t {pid} -m -- touch /.probe")

      with subtest("git identity is set for the user Claude runs as"):
          assert host.succeed(inside("h-alice", "git config user.email")).strip() == "alice@hyperhive.invalid"
          assert host.succeed(inside("h-bob", "git config user.name")).strip() == "bob (hyperhive)"

      with subtest("the manager's mounts: config repos read-write, applied and meta read-only"):
          host.succeed(inside("hm1nd", "touch /agents/.probe && rm /agents/.probe"))
          host.fail(inside("hm1nd", "touch /applied/.probe"))
          host.fail(inside("hm1nd", "touch /meta/.probe"))
          host.succeed(inside("hm1nd", "test -d /applied/alice/.git || test -e /applied/alice/HEAD"))

      with subtest("a denied proposal is tagged denied/ and changes nothing"):
          before = main_sha("alice")
          aid, sha = propose("alice", "echo '# a comment' >> agent.nix", "add a comment")
          assert quarantine_tags("alice", f"proposal/{aid}") == [f"proposal/{aid}"]
          host.fail(f"git -C {STATE}/applied/alice cat-file -e {sha}")  # nothing reaches applied/ before approval
          status, _ = api("POST", f"/api/approvals/{aid}/deny", token=TOKEN, body={"reason": "not now"})
          assert status == 200, status
          host.wait_until_succeeds(f"git -C {STATE}/quarantine/alice.git tag -l denied/{aid} | grep -q .", timeout=60)
          assert "not now" in host.succeed(f"git -C {STATE}/quarantine/alice.git tag -l -n9 denied/{aid}")
          assert tags("alice", f"deployed/{aid}") == []
          assert main_sha("alice") == before

      with subtest("links the manager plants in a proposed repo's .git bring nothing of the host into applied/"):
          # A repository only the host has; the link's target is resolved on the host, where the service reads.
          host.succeed("rm -rf /root/host-repo && git init -q -b main /root/host-repo"
                       " && echo HOST-ONLY > /root/host-repo/secret && git -C /root/host-repo add -A"
                       " && git -C /root/host-repo -c user.name=h -c user.email=h@h commit -qm secret")
          host_sha = host.succeed("git -C /root/host-repo rev-parse HEAD").strip()
          host.succeed(inside("hm1nd", "cd /agents/alice/config/.git && cp -a objects /tmp/objects.saved"
                                       " && cp -a refs /tmp/refs.saved && rm -rf objects refs"
                                       " && ln -s /root/host-repo/.git/objects objects && ln -s /root/host-repo/.git/refs refs"))
          out = failing(client("hm1nd", "call request_apply_commit '{\"agent\": \"alice\", \"commit\": \"main\"}'"))
          assert "symbolic link" in out and "HOST-ONLY" not in out, out
          host.fail(f"git -C {STATE}/applied/alice cat-file -e {host_sha}")
          host.fail(f"git -C {STATE}/quarantine/alice.git cat-file -e {host_sha}")
          host.succeed(inside("hm1nd", "cd /agents/alice/config/.git && rm objects refs"
                                       " && mv /tmp/objects.saved objects && mv /tmp/refs.saved refs"))

      with subtest("an approved proposal that does not build is tagged failed/ and rolled back"):
          before = main_sha("alice")
          # (a declared agent's seeded agent.nix sets no policy: the whole file is replaced by one that mistypes it)
          aid, _ = propose("alice", "printf '%s\\n' '{ ... }: { hyperhive.bash.allow = 42; }' > agent.nix",
                           "break the build")
          # `hyperhive approve` follows the deploy and exits non-zero when it fails, printing the build error.
          out = host.fail(f"hyperhive approve {aid} 2>&1")
          assert "failed" in out, out
          host.wait_until_succeeds(f"git -C {STATE}/applied/alice tag -l failed/{aid} | grep -q .", timeout=600)
          assert tags("alice", f"deployed/{aid}") == []
          assert main_sha("alice") == before
          # The container still runs what it ran.
          host.succeed(inside("h-alice", "systemctl is-active hive-agent.service"))

      with subtest("the dashboard answers on loopback with the token, refuses without it"):
          status, _ = api("GET", "/api/state", token=TOKEN)
          assert status == 200, status
          status, _ = api("GET", "/api/state")
          assert status in (401, 403), status
          status, _ = api("GET", "/api/state", token="wrong-token")
          assert status in (401, 403), status
          # Loopback only: not reachable on the VM's network address.
          host.fail(f"curl -sS --max-time 5 http://{HOST_IP}:{PORT}/api/state")
    '';
}
