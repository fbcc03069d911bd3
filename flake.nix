{
  description = "chatmail relay for Delta Chat: a NixOS module (Postfix, Dovecot, chatmaild)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems =
        f:
        lib.genAttrs systems (
          system:
          f (
            import nixpkgs {
              inherit system;
              overlays = [ self.overlays.default ];
            }
          )
        );
    in
    {
      overlays.default = import ./pkgs/overlay.nix;
      # nixpkgs' dovecot_2_3 without the 500 ms IDLE notification delay; the module applies it to
      # its own Dovecot by default (services.chatmail.dovecotWithoutNotifyDelay).
      overlays.dovecot = import ./pkgs/dovecot/overlay.nix;

      nixosModules.chatmail = ./modules;
      nixosModules.default = self.nixosModules.chatmail;

      packages = forAllSystems (pkgs: {
        inherit (pkgs) chatmaild;
        default = pkgs.chatmaild;
        # The module's default Dovecot: `nix build .#dovecot` builds (or caches) it ahead.
        dovecot = import ./pkgs/dovecot { inherit (pkgs) dovecot_2_3; };
      });

      # `nix run .#dns-zone -- /etc/chatmail/chatmail.ini --dkim-key /var/lib/opendkim/keys/opendkim.private`
      # prints the relay's DNS zone; with `--check`, compares it with what DNS answers.
      apps = forAllSystems (pkgs: {
        dns-zone = {
          type = "app";
          program = "${pkgs.chatmaild}/bin/chatmail-dns-zone";
        };
      });

      checks = forAllSystems (pkgs: {
        # Builds the package and runs its tests from the source tree (pytestCheckHook).
        chatmaild = pkgs.chatmaild;
        # Runs the same tests against the installed package (catches packaging mistakes).
        chatmaild-pytest = pkgs.callPackage ./nixos-tests/chatmaild-pytest.nix {
          projectDir = ./pkgs/chatmaild;
        };
        basic = pkgs.callPackage ./nixos-tests/basic.nix { chatmailModule = self.nixosModules.default; };
        federation = pkgs.callPackage ./nixos-tests/federation.nix {
          chatmailModule = self.nixosModules.default;
        };
        realtime = pkgs.callPackage ./nixos-tests/realtime.nix {
          chatmailModule = self.nixosModules.default;
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt);

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ pkgs.chatmaild ];
          packages = [
            pkgs.nixfmt
            pkgs.postfix
            pkgs.dovecot_2_3
            pkgs.openssl
          ];
        };
      });
    };
}
