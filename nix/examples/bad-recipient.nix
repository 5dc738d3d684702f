# Broken on purpose: alice may send to "carl", who is not in the hive.
{
  agents.alice.allowedRecipients = [ "carl" "operator" ];
}
