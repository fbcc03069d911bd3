# Two relays and a client: mail from each relay reaches the other over port 25 with verified
# TLS. Certificates come from a CA made at build time (tls.mode = "manual"), which every node
# trusts; there is no DNS, so Postfix finds the other relay through /etc/hosts.
{
  lib,
  testers,
  runCommand,
  openssl,
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

  # Test-only keys (in the world-readable store).
  certificates = runCommand "chatmail-test-certificates" { nativeBuildInputs = [ openssl ]; } ''
    mkdir $out
    cd $out
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=chatmail test CA" -keyout ca-key.pem -out ca.pem
    ${lib.concatMapStrings (domain: ''
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=${domain}" -keyout ${domain}.key -out ${domain}.csr
      printf 'subjectAltName=DNS:${domain}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' > ${domain}.ext
      openssl x509 -req -in ${domain}.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -days 3650 -extfile ${domain}.ext -out ${domain}.pem
    '') (lib.attrValues domains)}
  '';

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
