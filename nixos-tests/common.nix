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

  # Every node resolves every relay domain through /etc/hosts.
  hostsFor =
    nodes: domains:
    lib.mapAttrs' (
      node: domain: lib.nameValuePair nodes.${node}.networking.primaryIPAddress [ domain ]
    ) domains;

  relay =
    {
      domain,
      domains,
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
      networking.hosts = hostsFor nodes domains;
      virtualisation.memorySize = 1536;
    };

  client =
    { domains }:
    { nodes, ... }:
    {
      networking.hosts = hostsFor nodes domains;
      environment.systemPackages = [ clientPython ];
      environment.etc."chatmail-scenarios".source = ./scenarios;
    };

  # Python (test driver) helpers: wait for a relay, run a scenario on the client.
  driverHelpers = ''
    def wait_for_relay(machine):
        for unit in ("postfix.service", "doveauth.service", "filtermail.service",
                     "filtermail-incoming.service", "chatmail-metadata.service"):
            machine.wait_for_unit(unit)
        for port in (25, 143, 465, 587, 993, 10080, 10081):
            machine.wait_for_open_port(port)

    def scenario(script, *args):
        return client.succeed(
            "python3 ${scenarioDir}/" + script + " " + " ".join(args)
            + " --helo ${clientFqdn} 2>&1"
        )
  '';
}
