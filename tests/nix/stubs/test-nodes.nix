# What the VM tests' node configurations set beyond the module: options of nixpkgs' test framework
# (nixos/lib/testing/network.nix, qemu-vm.nix), of its test instrumentation, and of the DNS
# node's services.bind, with nixpkgs' types as far as the tests depend on them.
{ lib, ... }:

let
  inherit (lib) mkOption types;
in
{
  options = {
    virtualisation.memorySize = mkOption { type = types.int; };
    networking.primaryIPAddress = mkOption {
      type = types.str;
      default = "";
    };
    networking.primaryIPv6Address = mkOption {
      type = types.str;
      default = "";
    };
    networking.nameservers = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    services.bind = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      zones = mkOption {
        default = { };
        type = types.attrsOf (
          types.submodule {
            options = {
              master = mkOption { type = types.bool; };
              file = mkOption { type = types.either types.str types.path; };
            };
          }
        );
      };
    };
  };

  # as nixos/modules/testing/test-instrumentation.nix: no nameserver unless a node sets one
  config.networking.nameservers = lib.mkOverride 150 [ ];
}
