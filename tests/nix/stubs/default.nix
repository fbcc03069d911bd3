# The stub modules that stand in for nixpkgs' NixOS modules, with one of the two services.dovecot2
# generations ("pr500271" or "typed"; see dovecot-<generation>.nix).
dovecotGeneration: [
  ./nixos.nix
  ./acme.nix
  ./postfix.nix
  ./opendkim.nix
  ./nginx.nix
  ./coturn.nix
  (./. + "/dovecot-${dovecotGeneration}.nix")
]
