# Relay-to-relay delivery over HTTPS (upstream 1.10-1.12's /mxdeliv), for relays whose port 25
# is blocked: nginx passes POST /mxdeliv to chatmail-mxdeliv, which hands each message to a
# loopback smtpd with port 25's checks; and mail for relays whose port 25 this relay cannot reach
# goes to their /mxdeliv (Postfix's smtp_fallback_relay). render.nix renders all of it; the
# services are in chatmaild.nix.
{ config, lib, ... }:

let
  cfg = config.services.chatmail;
in
{
  options.services.chatmail.mxdeliv = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = cfg.nginx.enable;
      defaultText = lib.literalExpression "config.services.chatmail.nginx.enable";
      description = ''
        Whether other relays may deliver mail over HTTPS: `POST https://<domain>/mxdeliv` with
        the message as body and the envelope in `X-Mail-From` / `X-Mail-To` headers, as
        chatmail relays since 1.10 do when port 25 is blocked between them. nginx passes it to
        `chatmail-mxdeliv`, which hands it to Postfix on a loopback port with the checks of
        port 25 (encryption, DKIM); the answer's body is the SMTP reply.
      '';
    };
    fallback = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Whether mail for a relay whose port 25 this relay cannot reach (blocked, refused, no
        answer) goes to that relay's `https://<MX host>/mxdeliv` instead (Postfix's
        `smtp_fallback_relay`, served by `chatmail-mxdeliv`). Certificates are verified except
        for domains starting with `_` and IP literals, as upstream. Upstream tries HTTPS first;
        here SMTP comes first and HTTPS is the fallback.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.mxdeliv.enable -> cfg.nginx.enable;
        message = "services.chatmail.mxdeliv.enable needs nginx, which serves /mxdeliv; set services.chatmail.nginx.enable = true; or services.chatmail.mxdeliv.enable = false;";
      }
    ];
  };
}
