# Two relays and a client: mail from each relay reaches the other over port 25 with verified
# TLS. Certificates come from a CA made at build time (tls.mode = "manual"), which every node
# trusts; there is no DNS, so Postfix finds the other relay through /etc/hosts.
{
  lib,
  testers,
  callPackage,
  python3,
  chatmaild,
  chatmailModule,
}:

let
  common = import ./common.nix {
    inherit
      lib
      python3
      chatmaild
      chatmailModule
      ;
  };
  domains = {
    relay1 = "chat1.test";
    relay2 = "chat2.test";
  };

  certificates = callPackage ./test-certificates.nix { domains = lib.attrValues domains; };

  relay =
    node:
    common.relay {
      inherit domains;
      domain = domains.${node};
      extraConfig = {
        security.pki.certificateFiles = [ "${certificates}/ca.pem" ];
        services.chatmail = {
          tls = {
            mode = "manual";
            certificateFile = "${certificates}/${domains.${node}}.pem";
            keyFile = "${certificates}/${domains.${node}}.key";
          };
          # No DNS here: A records from /etc/hosts instead of MX lookups.
          postfix.main.smtp_host_lookup = "native";
          # Nor DKIM records, which the receiving relay would look up (and refuse the mail
          # without); signing and verification between relays run on the local harness
          # (tests/harness/test_discovery.py).
          dkim.enable = false;
        };
      };
    };
in
testers.runNixOSTest {
  name = "chatmail-federation";

  nodes.relay1 = relay "relay1";
  nodes.relay2 = relay "relay2";
  nodes.client = common.client { inherit domains; };

  testScript = ''
    ${common.driverHelpers}

    start_all()
    wait_for_relay(relay1)
    wait_for_relay(relay2)

    with subtest("mail crosses between the relays both ways"):
        print(scenario("federation.py", "--from ${domains.relay1}", "--to ${domains.relay2}",
                       "--ca ${certificates}/ca.pem"))
  '';
}
