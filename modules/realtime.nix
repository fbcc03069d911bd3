# Calls and realtime apps: coturn on port 3478 with time-limited credentials from a shared secret
# (handed to Delta Chat by chatmail-metadata through chatmail-turn-credentials), and iroh-relay
# behind nginx. Everything comes from render.nix: services.chatmail.rendered.realtime
# (render-realtime.nix) and, for the credentials daemon, rendered.systemdUnits.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.chatmail;
  realtime = cfg.rendered.realtime;
  generatedSecret = "/var/lib/chatmail-turn/static-auth-secret";
  # systemd hands the secret to each service as a credential: the file may be root's alone
  secretCredential = "turn-secret:${cfg.rendered.realtime.paths.turnSecretFile}";
  secretUnit = lib.optional (cfg.turn.staticAuthSecretFile == null) "chatmail-turn-secret.service";
in
{
  options.services.chatmail = {
    turn = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Whether the relay runs a TURN server for calls (coturn on UDP and TCP port 3478,
          relayed addresses from {option}`services.chatmail.turn.minPort`–`maxPort` over UDP),
          as upstream chatmail relays do. Delta Chat asks for credentials over IMAP
          (`GETMETADATA "" /shared/vendor/deltachat/turn`) and gets
          `<domain>:3478:<username>:<password>`, valid for five days. They are TURN REST-API
          credentials made from a shared secret (coturn's `use-auth-secret`) by
          `chatmail-turn-credentials`. Relaying to loopback, private and reserved addresses
          is refused. Behind NAT, tell coturn its public address with
          `services.coturn.extraConfig = "external-ip=…"`.
        '';
      };
      staticAuthSecretFile = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
        example = "/run/secrets/turn-secret";
        description = ''
          File whose first line is the TURN server's shared secret (at least 16 characters;
          readable by root is enough, and keep it out of the Nix store). `null`: a random
          secret is generated at the first start into `${generatedSecret}`.
        '';
      };
      minPort = lib.mkOption {
        type = lib.types.port;
        default = 49152;
        description = "Lowest UDP port of relayed addresses (coturn `min-port`).";
      };
      maxPort = lib.mkOption {
        type = lib.types.port;
        default = 65535;
        description = "Highest UDP port of relayed addresses (coturn `max-port`).";
      };
    };

    irohRelay = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = cfg.nginx.enable;
        defaultText = lib.literalExpression "config.services.chatmail.nginx.enable";
        description = ''
          Whether the relay serves an iroh relay for realtime data of webxdc apps, as upstream
          chatmail relays do: `iroh-relay` on loopback behind nginx (`/relay`, `/ping`,
          `/generate_204` of `https://<domain>`), advertised to Delta Chat through IMAP
          metadata (chatmail.ini `iroh_relay = https://<domain>`). When false, no iroh relay is
          advertised, unless {option}`services.chatmail.settings` names another one as
          `iroh_relay`. Needs {option}`services.chatmail.nginx.enable`.
        '';
      };
      package = lib.mkPackageOption pkgs "iroh-relay" { };
      port = lib.mkOption {
        type = lib.types.port;
        default = 3340;
        description = "Loopback port of iroh-relay's HTTP server, to which nginx passes the iroh routes.";
      };
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      (lib.mkIf cfg.turn.enable {
        assertions = [
          {
            assertion = cfg.turn.minPort <= cfg.turn.maxPort && cfg.turn.minPort >= 1024;
            message = "services.chatmail.turn: minPort (${toString cfg.turn.minPort}) must be at least 1024 and at most maxPort (${toString cfg.turn.maxPort}); e.g. minPort = 49152; maxPort = 65535;";
          }
        ];

        services.coturn = realtime.turn.coturn // {
          enable = true;
          # nixpkgs' unit reads it in its preStart, as the turnserver user: from the credential
          static-auth-secret-file = "/run/credentials/coturn.service/turn-secret";
        };

        systemd.services =
          {
            coturn = {
              requires = secretUnit;
              after = secretUnit;
              serviceConfig.LoadCredential = [ secretCredential ];
            };
            chatmail-turn-credentials = {
              inherit (cfg.rendered.systemdUnits.chatmail-turn-credentials) description serviceConfig;
              wantedBy = [ "multi-user.target" ];
              requires = secretUnit;
              after = secretUnit;
              # chatmail-metadata asks it for every `turn` lookup
              before = [ "chatmail-metadata.service" ];
              restartTriggers = [ cfg.rendered.chatmailIni ];
            };
          }
          // lib.optionalAttrs (cfg.turn.staticAuthSecretFile == null) {
            # once: 32 random bytes as hex (coturn's config file takes the secret verbatim)
            chatmail-turn-secret = {
              description = "chatmail TURN secret, generated once";
              serviceConfig = {
                Type = "oneshot";
                RemainAfterExit = true;
                StateDirectory = "chatmail-turn";
                StateDirectoryMode = "0700";
                UMask = "0077";
              };
              script = ''
                if [ ! -s ${generatedSecret} ]; then
                  ${pkgs.coreutils}/bin/od -An -tx1 -N32 /dev/urandom | ${pkgs.coreutils}/bin/tr -d ' \n' > ${generatedSecret}.new
                  ${pkgs.coreutils}/bin/mv ${generatedSecret}.new ${generatedSecret}
                fi
              '';
            };
          };
      })

      (lib.mkIf cfg.irohRelay.enable {
        assertions = [
          {
            assertion = cfg.nginx.enable;
            message = "services.chatmail.irohRelay.enable needs services.chatmail.nginx.enable (nginx serves the iroh routes); set services.chatmail.irohRelay.enable = false; to run without nginx.";
          }
        ];

        environment.etc."chatmail/iroh-relay.toml".text = realtime.irohRelay.toml;

        systemd.services.iroh-relay = {
          description = "iroh relay for realtime apps (behind nginx)";
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" ];
          restartTriggers = [ realtime.irohRelay.toml ];
          serviceConfig = {
            ExecStart = "${lib.getExe cfg.irohRelay.package} --config-path ${realtime.paths.irohRelayConfig}";
            Restart = "on-failure";
            RestartSec = "5s";
            DynamicUser = true;
            NoNewPrivileges = true;
            CapabilityBoundingSet = "";
            PrivateTmp = true;
            PrivateDevices = true;
            ProtectSystem = "strict";
            ProtectHome = true;
            ProtectKernelTunables = true;
            ProtectKernelModules = true;
            ProtectControlGroups = true;
            RestrictNamespaces = true;
            LockPersonality = true;
            # only nginx, on loopback, talks to it
            IPAddressDeny = "any";
            IPAddressAllow = "localhost";
            RestrictAddressFamilies = [
              "AF_UNIX"
              "AF_INET"
              "AF_INET6"
            ];
            SystemCallArchitectures = "native";
            SystemCallFilter = [ "@system-service" ];
          };
        };
      })
    ]
  );
}
