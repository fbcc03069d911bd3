# The relay's Dovecot: nixpkgs' 2.3 series with Lua (the LMTP push-notification script needs the
# mail_lua and push_notification_lua plugins), by default without the 500 ms IDLE notification
# delay (./overlay.nix; not applied twice to a dovecot_2_3 that has it already).
#
#   import ./pkgs/dovecot { inherit (pkgs) dovecot_2_3; withoutNotifyDelay = true; }
{
  dovecot_2_3,
  withoutNotifyDelay ? true,
}:

let
  patched = (import ./overlay.nix { } { inherit dovecot_2_3; }).dovecot_2_3;
  dovecot =
    if withoutNotifyDelay && !(dovecot_2_3.withoutNotifyDelay or false) then patched else dovecot_2_3;
in
dovecot.override { withLua = true; }
