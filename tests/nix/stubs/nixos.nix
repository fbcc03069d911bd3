# The general NixOS options that modules/ and the service stubs set, declared with the types
# nixpkgs gives them (only as far as merging and checking values depend on them). The service
# modules are stubbed one per file beside this one (stubs/default.nix lists them).
{ lib, ... }:

let
  inherit (lib) mkOption types;
  listOfStr = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  freeform =
    options:
    types.submodule {
      freeformType = types.attrsOf types.anything;
      inherit options;
    };
  unitOption = types.oneOf [
    types.bool
    types.int
    types.str
    (types.listOf types.str)
  ];
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = listOfStr;

    systemd.services = mkOption {
      default = { };
      type = types.attrsOf (freeform {
        description = mkOption {
          type = types.str;
          default = "";
        };
        wantedBy = listOfStr;
        requiredBy = listOfStr;
        after = listOfStr;
        before = listOfStr;
        wants = listOfStr;
        requires = listOfStr;
        restartTriggers = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
        };
        script = mkOption {
          type = types.lines;
          default = "";
        };
        serviceConfig = mkOption {
          type = types.attrsOf unitOption;
          default = { };
        };
      });
    };
    systemd.timers = mkOption {
      default = { };
      type = types.attrsOf (freeform {
        wantedBy = listOfStr;
        timerConfig = mkOption {
          type = types.attrsOf unitOption;
          default = { };
        };
      });
    };
    systemd.tmpfiles.rules = listOfStr;

    users.users = mkOption {
      default = { };
      type = types.attrsOf (freeform {
        isSystemUser = mkOption {
          type = types.bool;
          default = false;
        };
        group = mkOption {
          type = types.str;
          default = "";
        };
        extraGroups = listOfStr;
      });
    };
    users.groups = mkOption {
      default = { };
      type = types.attrsOf (freeform { members = listOfStr; });
    };

    environment.etc = mkOption {
      default = { };
      type = types.attrsOf (freeform {
        text = mkOption {
          type = types.nullOr types.lines;
          default = null;
        };
      });
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };

    # nixpkgs: a freeform submodule whose values (int, string, bool) may be defined once per
    # priority
    boot.kernel.sysctl = mkOption {
      type = types.attrsOf (
        types.uniq (
          types.oneOf [
            types.int
            types.str
            types.bool
          ]
        )
      );
      default = { };
    };
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    networking.firewall.allowedUDPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    networking.firewall.allowedUDPPortRanges = mkOption {
      type = types.listOf (types.attrsOf types.port);
      default = [ ];
    };
    networking.hosts = mkOption {
      type = types.attrsOf (types.listOf types.str);
      default = { };
    };

    services.journald.storage = mkOption {
      type = types.enum [
        "persistent"
        "volatile"
        "auto"
        "none"
      ];
      default = "persistent";
    };
    services.journald.extraConfig = mkOption {
      type = types.lines;
      default = "";
    };

    security.pki.caBundle = mkOption {
      type = types.path;
      default = "/etc/ssl/certs/ca-certificates.crt";
    };
    security.pki.certificateFiles = mkOption {
      type = types.listOf types.path;
      default = [ ];
    };
    security.pam.services = mkOption {
      type = types.attrsOf (types.attrsOf types.anything);
      default = { };
    };
    # nixos/modules/security/dhparams.nix (the older dovecot2 module asks it for DH parameters)
    security.dhparams = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      params = mkOption {
        default = { };
        type = types.attrsOf (
          types.submodule (
            { name, ... }:
            {
              options.path = mkOption {
                type = types.path;
                readOnly = true;
                default = "/var/lib/dhparams/${name}.pem";
              };
            }
          )
        );
      };
    };

    networking.hostName = mkOption {
      type = types.str;
      default = "nixos";
    };
  };
}
