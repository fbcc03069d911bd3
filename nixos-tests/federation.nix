# Two relays, a DNS server and a client: mail from each relay reaches the other over port 25,
# DKIM-signed and verified, with verified TLS, every name found through DNS as in production; and
# over HTTPS (/mxdeliv) while one relay's port 25 is refused.
#
# The DNS node serves both relay domains with BIND, from the records each relay's
# `chatmail-dns-zone` prints (A, AAAA, MX, MTA-STS, the DKIM key, ...): the test script collects
# them once each relay's OpenDKIM has made its key on first start, loads them, starts BIND, and
# has each relay check its zone against DNS (`chatmail-dns-zone --check`). So the test also
# proves the zone: Postfix finds the other relay by its MX record, and the receiving relay's
# filtermail refuses mail whose DKIM key it cannot find (554 5.7.1). Certificates come from a CA
# made at build time (tls.mode = "manual"), which every node trusts.
{
  lib,
  testers,
  callPackage,
  python3,
  bind,
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
  dnsNode = "dns";
  zoneDir = "/var/lib/chatmail-zones";
  # the MTA-STS id to publish (chatmail-dns-zone would otherwise look the current one up)
  stsId = "vmtest1";

  certificates = callPackage ./test-certificates.nix { domains = lib.attrValues domains; };

  relay =
    node:
    common.relay {
      inherit domains dnsNode;
      domain = domains.${node};
      extraConfig = {
        security.pki.certificateFiles = [ "${certificates}/ca.pem" ];
        services.chatmail.tls = {
          mode = "manual";
          certificateFile = "${certificates}/${domains.${node}}.pem";
          keyFile = "${certificates}/${domains.${node}}.key";
        };
        # Idle relay-to-relay connections stay cached for 30 s instead of 2 s, so that the reuse
        # check below does not depend on how fast the VMs are.
        services.chatmail.postfix.main = {
          smtp_connection_cache_time_limit = "30s";
          connection_cache_ttl_limit = "30s";
        };
      };
    };
in
testers.runNixOSTest {
  name = "chatmail-federation";

  nodes.relay1 = relay "relay1";
  nodes.relay2 = relay "relay2";
  nodes.client = common.client { inherit domains dnsNode; };
  # Authoritative for the relay domains (as a DNS provider would be), nothing else.
  nodes.${dnsNode} = {
    services.bind = {
      enable = true;
      zones = lib.mapAttrs' (
        _: domain:
        lib.nameValuePair domain {
          master = true;
          file = "${zoneDir}/${domain}.zone";
        }
      ) domains;
    };
    # started by the test script once the relays' zones are there
    systemd.services.bind.wantedBy = lib.mkForce [ ];
    networking.firewall.allowedUDPPorts = [ 53 ];
    networking.firewall.allowedTCPPorts = [ 53 ];
  };

  testScript =
    { nodes, ... }:
    let
      # (machine, facts) per relay; the facts as a Python dict literal (JSON)
      relays = lib.concatStringsSep ", " (
        lib.mapAttrsToList (
          node: domain:
          "(${node}, ${
            builtins.toJSON {
              inherit domain;
              ipv4 = nodes.${node}.networking.primaryIPAddress;
              ipv6 = nodes.${node}.networking.primaryIPv6Address;
              dkimKey = nodes.${node}.services.chatmail.rendered.discovery.opendkim.keyFile;
              ini = nodes.${node}.services.chatmail.rendered.paths.configFile;
              dnsZone = "${nodes.${node}.services.chatmail.package}/bin/chatmail-dns-zone";
              mailboxes = nodes.${node}.services.chatmail.mailboxesDir;
            }
          })"
        ) domains
      );
    in
    ''
      ${common.driverHelpers}
      ${builtins.readFile ./zone_file.py}
      import re

      relays = [${relays}]

      def dns_zone(r, *args):
          return (f"{r['dnsZone']} {r['ini']} --dkim-key {r['dkimKey']} --ipv4 {r['ipv4']}"
                  f" --ipv6 {r['ipv6']} --sts-id ${stsId} " + " ".join(args))

      start_all()
      for machine, r in relays:
          wait_for_relay(machine)
          # OpenDKIM makes its key on first start
          machine.wait_for_unit("opendkim.service")
          machine.wait_for_file(r["dkimKey"])

      with subtest("each relay's zone, as chatmail-dns-zone prints it, served by BIND"):
          ${dnsNode}.succeed("mkdir -p ${zoneDir}")
          for machine, r in relays:
              zone = zone_file(r["domain"], machine.succeed(dns_zone(r)))
              path = f"${zoneDir}/{r['domain']}.zone"
              ${dnsNode}.succeed(f"cat > {path} <<'EOF'\n{zone}EOF")
              ${dnsNode}.succeed(f"${bind}/bin/named-checkzone {r['domain']} {path}")
          ${dnsNode}.succeed("systemctl start bind.service")
          ${dnsNode}.wait_for_open_port(53)
          # every required record as DNS answers it to the relay
          for machine, r in relays:
              print(machine.succeed(dns_zone(r, "--check")))

      with subtest("mail crosses between the relays both ways, found by MX, DKIM-verified"):
          print(scenario("federation.py", "--from ${domains.relay1}", "--to ${domains.relay2}",
                         "--ca ${certificates}/ca.pem"))
          # the receiving relay's filtermail takes port 25 mail only with a valid DKIM signature of
          # the From domain (key from DNS; it runs without --skip-dkim); the copy keeps no trace
          # or DKIM headers (upstream 1.10+)
          for machine, r in relays:
              exec_start = machine.succeed("systemctl show -P ExecStart filtermail-incoming.service")
              assert "incoming-milter" in exec_start and "--skip-dkim" not in exec_start, exec_start
              stored = machine.succeed(
                  f"find {r['mailboxes']} -path '*/new/*' -type f"
                  " -o -path '*/cur/*' -type f | xargs zcat -f")
              assert stored.strip(), "nothing delivered"
              assert not re.search(r"^(Received|DKIM-Signature|Authentication-Results):", stored,
                                   re.MULTILINE | re.IGNORECASE), stored[:3000]

      with subtest("across relays: IDLE notified at once, the TLS connection between them reused"):
          print(scenario("idle.py", "--domain ${domains.relay1}", "--to ${domains.relay2}",
                         "--ca ${certificates}/ca.pem", "--count 5", "--faster-than 500"))
          # Postfix logs conn_use=N for the Nth message over one connection (through tlsproxy)
          relay1.succeed("journalctl -u postfix.service"
                         " | grep -E 'relay=${domains.relay2}.*conn_use=[2-9]'")

      with subtest("relay2's port 25 refused: relay1's mail arrives over HTTPS (/mxdeliv)"):
          refuse_25 = "INPUT 1 -p tcp --dport 25 -j REJECT --reject-with tcp-reset"
          relay2.succeed(f"iptables -I {refuse_25}")
          print(scenario("federation.py", "--from ${domains.relay1}", "--to ${domains.relay2}",
                         "--ca ${certificates}/ca.pem"))
          # Postfix could not connect and handed the message to its fallback relay,
          # chatmail-mxdeliv, which POSTed it to relay2's /mxdeliv (DKIM-verified there too)
          relay1.succeed("journalctl -u postfix.service"
                         " | grep -q 'Delivered over HTTPS to ${domains.relay2}'")
          relay2.succeed("journalctl -u postfix.service | grep -q 'postfix/mxdeliv/smtpd'")
          relay2.succeed("iptables -D INPUT 1")
    '';
}
