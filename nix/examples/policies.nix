# A hive with a restricted agent, an unrestricted one, extra MCP servers and non-default host settings: what the
# loader contract test checks field by field.
{
  stateDir = "/srv/hive";
  runDir = "/run/hive-test";
  operatorPronouns = "she/her";
  dashboard = {
    listen = { address = "::1"; port = 9090; };
    tokenFile = "/run/secrets/hyperhive-token";
  };
  broker = { maxMessageBytes = 4096; recvMaxWaitSeconds = 30; leaseSeconds = 120; };
  retention = { failedMaxAgeDays = 7; deniedMaxAgeDays = 3; dropIntermediateTags = false; };
  harness.claudeCommand = [ "python3" "/opt/fake_claude.py" ];
  manager = {
    name = "boss";
    prompt = "You run this hive.";
    bash.allow = [ "git *" ];
    model = "claude-opus-4-1";
  };
  agents = {
    alice = {
      allowedRecipients = [ "bob" "boss" "operator" ];
      bash.allow = [ "git *" "nix build .*" ];
      prompt = "You maintain the docs.";
      notesCompactBytes = 1024;
      turnTimeoutSeconds = 60;
      extraMcpServers.search = {
        command = "/bin/search-mcp";
        args = [ "--index" "/state/index" ];
        env.SEARCH_LIMIT = "10";
      };
    };
    bob = {
      allowedRecipients = null;
      privateUsers = false;
      model = "claude-sonnet-4-5";
      prompt = "You maintain the code.";
    };
  };
}
