# This agent's container. The manager proposes changes to this file; the operator approves them before they are
# built and deployed. Options: hyperhive's modules/agent.nix (`hyperhive.*`) and any NixOS option.
{ pkgs, ... }:
{
  hyperhive = {
    prompt = ''
      You are a new agent of this hive. Keep your notes in /state/notes.md, and ask the manager for work.
    '';

    # Whom this agent may send to: the manager (named "manager" unless the hive says otherwise) and the operator.
    allowedRecipients = [ "manager" "operator" ];

    # Commands Claude Code may run through Bash; anything else is refused.
    bash.allow = [ "git *" "ls *" "cat *" "rg *" ];

    packages = [ pkgs.ripgrep ];
  };
}
