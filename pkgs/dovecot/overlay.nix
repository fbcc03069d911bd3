# nixpkgs' Dovecot 2.3 with ./no-notify-delay.patch: IDLE clients hear of new mail as soon as it
# is stored, not 500 ms later. The module applies this overlay to its own Dovecot package by
# default (services.chatmail.dovecotWithoutNotifyDelay); the flake exports it as
# overlays.dovecot. The passthru marker keeps the module from patching a package twice.
final: prev: {
  dovecot_2_3 = prev.dovecot_2_3.overrideAttrs (old: {
    patches = (old.patches or [ ]) ++ [ ./no-notify-delay.patch ];
    passthru = (old.passthru or { }) // {
      withoutNotifyDelay = true;
    };
  });
}
