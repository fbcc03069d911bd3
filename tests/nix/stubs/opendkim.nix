# services.opendkim: option names, types and defaults, and what the real module sets (its unit with
# UMask 0077 and a RuntimeDirectory for the default socket, the key directory, the user). Checked on
# 2026-12-01 against nixos/modules/services/mail/opendkim.nix of a fork at commit 4aa6836a648c; that
# form also has `settings` (freeform strings), which sets `configFile` itself at normal priority.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  cfg = config.services.opendkim;
  defaultSocket = "local:/run/opendkim/opendkim.sock";
  option = type: default: mkOption { inherit type default; };
in
{
  options.services.opendkim = {
    enable = option types.bool false;
    configFile = option (types.nullOr types.path) null;
    domains = option types.str "csl:${config.networking.hostName}";
    group = option types.str "opendkim";
    keyPath = option types.path "/var/lib/opendkim/keys";
    selector = mkOption { type = types.str; };
    settings = option (types.submodule { freeformType = types.attrsOf types.str; }) { };
    socket = option types.str defaultSocket;
    user = option types.str "opendkim";
  };

  config = lib.mkIf cfg.enable {
    services.opendkim.configFile = lib.mkIf (cfg.settings != { }) (
      pkgs.writeText "opendkim.conf" (
        lib.concatStringsSep "\n" (lib.mapAttrsToList (name: value: "${name} ${value}") cfg.settings)
      )
    );
    environment.systemPackages = [ pkgs.opendkim ];
    systemd.services.opendkim = {
      description = "OpenDKIM signing and verification daemon";
      after = [ "network.target" ];
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        ExecStart = lib.concatStringsSep " " (
          [
            "${pkgs.opendkim}/bin/opendkim"
            "-f"
            "-l"
            "-p"
            cfg.socket
            "-d"
            cfg.domains
            "-k"
            "${cfg.keyPath}/${cfg.selector}.private"
            "-s"
            cfg.selector
          ]
          ++ lib.optionals (cfg.configFile != null) [
            "-x"
            cfg.configFile
          ]
        );
        User = cfg.user;
        Group = cfg.group;
        UMask = "0077";
        ReadWritePaths = [ cfg.keyPath ];
        RuntimeDirectory = lib.optional (cfg.socket == defaultSocket) "opendkim";
        StateDirectory = "opendkim";
        StateDirectoryMode = "0700";
        PrivateUsers = true;
        ProtectSystem = "strict";
      };
    };
    systemd.tmpfiles.rules = [ "d '${cfg.keyPath}' - ${cfg.user} ${cfg.group} - -" ];
    users.users = lib.optionalAttrs (cfg.user == "opendkim") { opendkim.group = cfg.group; };
    users.groups = lib.optionalAttrs (cfg.group == "opendkim") { opendkim = { }; };
  };
}
