# Shared by the VM tests: a relay node, the client's tools and how it runs the scenarios.
{
  lib,
  python3,
  chatmaild,
  chatmailModule,
}:

rec {
  # The scenarios (nixos-tests/scenarios, shared with the local harness) need imapclient and
  # chatmaild.testmail.
  clientPython = python3.withPackages (ps: [
    ps.imapclient
    (ps.toPythonModule chatmaild)
  ]);
  scenarioDir = "/etc/chatmail-scenarios";
  # The client's own name for EHLO (its host name is not an FQDN).
  clientFqdn = "client.test";

  # How a node finds the relays: every relay domain in /etc/hosts, or, given dnsNode (the name
  # of the node serving the relays' zones), DNS as in production. The test instrumentation
  # empties networking.nameservers with mkOverride 150; an ordinary definition (priority 100)
  # takes precedence over it.
  nameResolution =
    {
      nodes,
      domains,
      dnsNode,
    }:
    if dnsNode == null then
      {
        networking.hosts = lib.mapAttrs' (
          node: domain: lib.nameValuePair nodes.${node}.networking.primaryIPAddress [ domain ]
        ) domains;
      }
    else
      { networking.nameservers = [ nodes.${dnsNode}.networking.primaryIPAddress ]; };

  relay =
    {
      domain,
      domains,
      dnsNode ? null,
      extraConfig ? { },
    }:
    { nodes, ... }:
    {
      imports = [
        chatmailModule
        extraConfig
      ];
      services.chatmail = {
        enable = true;
        inherit domain;
        openFirewall = true;
      };
      virtualisation.memorySize = 1536;
    }
    // nameResolution { inherit nodes domains dnsNode; };

  client =
    {
      domains,
      dnsNode ? null,
    }:
    { nodes, ... }:
    {
      environment.systemPackages = [ clientPython ];
      environment.etc."chatmail-scenarios".source = ./scenarios;
    }
    // nameResolution { inherit nodes domains dnsNode; };

  # Python (test driver) helpers: wait for a relay, run a scenario on the client.
  driverHelpers = ''
    def wait_for_relay(machine):
        for unit in ("postfix.service", "doveauth.service", "filtermail.service",
                     "filtermail-incoming.service", "chatmail-metadata.service"):
            machine.wait_for_unit(unit)
        for port in (25, 143, 465, 587, 993):
            machine.wait_for_open_port(port)
        # filtermail's milters (no TCP port: Postfix talks to them on unix sockets)
        for socket in ("/run/filtermail/outgoing.sock", "/run/filtermail/incoming.sock"):
            machine.wait_for_file(socket)

    def scenario(script, *args):
        return client.succeed(
            "python3 ${scenarioDir}/" + script + " " + " ".join(args)
            + " --helo ${clientFqdn} 2>&1"
        )
  '';
}
