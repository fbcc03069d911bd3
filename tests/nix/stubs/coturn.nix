# nixpkgs' services.coturn options that modules/realtime.nix sets, with nixpkgs' names, types and
# defaults (nixos/modules/services/networking/coturn.nix).
{ lib, ... }:

let
  inherit (lib) mkOption types;
  option = type: default: mkOption { inherit type default; };
in
{
  options.services.coturn = {
    enable = option types.bool false;
    listening-port = option types.int 3478;
    min-port = option types.int 49152;
    max-port = option types.int 65535;
    use-auth-secret = option types.bool false;
    static-auth-secret-file = option (types.nullOr types.str) null;
    realm = option types.str "localhost";
    no-tls = option types.bool false;
    no-dtls = option types.bool false;
    no-tcp-relay = option types.bool false;
    no-cli = option types.bool false;
    extraConfig = option types.lines "";
  };
}
