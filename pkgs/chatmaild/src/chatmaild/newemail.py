"""``/new``: hand out credentials for a fresh random account.

Delta Chat scans ``DCACCOUNT:https://<domain>/new``, POSTs to that URL and receives
``{"email": ..., "password": ...}``; the account itself comes into being at its first login
(doveauth). A GET (a browser that followed the link) is redirected to the ``dcaccount:`` URL so
that Delta Chat opens it, as upstream's nginx does.

A relay without a publicly trusted certificate (``--self-signed``; always for a domain starting
with ``_``, upstream's convention) answers GET with credentials as well, and every answer also
carries ``dclogin_url``: a ``dclogin:`` URL with the credentials and ``ic=3`` (accept invalid
certificates), which the index page offers as link and QR code; Delta Chat would refuse the
``dcaccount:`` route there, since it checks the certificate of ``https://<domain>/new``.

Two ways to serve it (same answers):

- ``chatmail-newemail [INI]`` is a CGI program (upstream serves it through fcgiwrap);
- ``chatmail-newemail INI --listen 127.0.0.1:PORT`` is a small HTTP server for nginx to
  ``proxy_pass`` to, so that no CGI runner is needed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import socket
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TextIO
from urllib.parse import quote

from .accounts import creation_refusal
from .config import Config, nocreate_path, read_config

# where upstream's CGI script reads its configuration
DEFAULT_CONFIG_PATH = "/usr/local/lib/chatmaild/chatmail.ini"

# upstream's alphabets: lower case only in the localpart (Dovecot lower-cases user names)
LOCALPART_ALPHABET = string.ascii_lowercase + string.digits
PASSWORD_ALPHABET = string.ascii_letters + string.digits + string.punctuation
# upstream hands out passwords a little longer than the minimum
PASSWORD_EXTRA_LENGTH = 3

# the URL paths answered: upstream's, and the old one printed in early QR codes
PATHS = ("/new", "/cgi-bin/newemail.py")


def create_newemail_dict(config: Config) -> dict[str, str]:
    """Random credentials for a new account of ``config.mail_domain``."""
    localpart = "".join(
        secrets.choice(LOCALPART_ALPHABET) for _ in range(config.username_max_length)
    )
    password_length = config.password_min_length + PASSWORD_EXTRA_LENGTH
    password = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(password_length))
    return {"email": f"{localpart}@{config.mail_domain}", "password": password}


def dclogin_url(email: str, password: str) -> str:
    """A ``dclogin:`` URL that configures ``email`` in Delta Chat with invalid certificates
    accepted (``ic=3``, upstream's choice for self-signed relays)."""
    return f"dclogin:{quote(email, safe='@[]')}?p={quote(password, safe='')}&v=1&ic=3"


def self_signed(config: Config, flag: bool) -> bool:
    """Whether the relay's certificate is not publicly trusted: ``--self-signed``, or a domain
    starting with ``_`` (upstream derives its self-signed mode from that)."""
    return flag or config.mail_domain.startswith("_")


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


def _text_response(status: HTTPStatus, text: str, **headers: str) -> Response:
    return Response(status, text + "\n", {"Content-Type": "text/plain; charset=utf-8", **headers})


def respond(method: str, config: Config, nocreate: bool, self_signed: bool = False) -> Response:
    """The answer to a ``method`` request for ``/new``.

    ``nocreate`` tells whether the nocreate file exists (the caller looks, this stays pure);
    ``self_signed``: see the module's doc.
    """
    if method in ("GET", "HEAD") and not self_signed:
        url = f"dcaccount:https://{config.mail_domain}/new"
        return _text_response(HTTPStatus.MOVED_PERMANENTLY, url, Location=url)
    if method not in ("GET", "HEAD", "POST"):
        return _text_response(HTTPStatus.METHOD_NOT_ALLOWED, "use POST", Allow="GET, HEAD, POST")
    creds = create_newemail_dict(config)
    # the same rules doveauth applies when the account first logs in
    refusal = creation_refusal(config, creds["email"], creds["password"], nocreate)
    if refusal is not None:
        return _text_response(HTTPStatus.FORBIDDEN, f"no new accounts: {refusal}")
    if self_signed:
        creds["dclogin_url"] = dclogin_url(creds["email"], creds["password"])
    return Response(HTTPStatus.OK, json.dumps(creds), {"Content-Type": "application/json"})


def write_cgi_response(response: Response, out: TextIO) -> None:
    """Write ``response`` in CGI form (RFC 3875: a Status header instead of a status line)."""
    out.write(f"Status: {response.status.value} {response.status.phrase}\n")
    for name, value in response.headers.items():
        out.write(f"{name}: {value}\n")
    out.write("\n")
    out.write(response.body)
    out.flush()


def serve_cgi(config_path: str, environ: Mapping[str, str], out: TextIO, self_signed_flag: bool = False) -> None:
    # run by hand (no REQUEST_METHOD), the program prints fresh credentials as upstream's does
    method = environ.get("REQUEST_METHOD", "POST").upper()
    config = read_config(config_path)
    response = respond(method, config, nocreate_path().exists(), self_signed(config, self_signed_flag))
    write_cgi_response(response, out)


class NewEmailHandler(BaseHTTPRequestHandler):
    """Answers ``/new`` on a server whose ``config`` attribute holds the relay's Config."""

    server: NewEmailServer
    server_version = "chatmail-newemail"
    sys_version = ""

    def _answer(self) -> None:
        if self.path.split("?", 1)[0] not in PATHS:
            response = _text_response(HTTPStatus.NOT_FOUND, "not found")
        else:
            response = respond(self.command, self.server.config, nocreate_path().exists(),
                               self.server.self_signed)
        body = response.body.encode()
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # credentials must never be cached
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _answer


class NewEmailServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: Config, self_signed: bool = False) -> None:
        self.config = config
        self.self_signed = self_signed
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, NewEmailHandler)


def parse_listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` -> (host, port); raises ValueError."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    ipaddress.ip_address(host)  # a literal address: nginx proxies to a fixed one
    return host, int(port)


def _listen_address(text: str) -> tuple[str, int]:
    try:
        return parse_listen_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="chatmail-newemail",
        description="Hand out credentials for new accounts at /new: as a CGI program, "
        "or with --listen as an HTTP server for a reverse proxy.",
    )
    parser.add_argument("inipath", nargs="?", default=DEFAULT_CONFIG_PATH, help="chatmail.ini")
    parser.add_argument(
        "--listen",
        type=_listen_address,
        metavar="ADDR:PORT",
        help="serve HTTP on this address (e.g. 127.0.0.1:3691 or [::1]:3691) instead of CGI",
    )
    parser.add_argument(
        "--self-signed",
        action="store_true",
        help="the relay's certificate is not publicly trusted: answer GET too and add a "
        "dclogin: URL accepting invalid certificates (implied by a domain starting with _)",
    )
    args = parser.parse_args(argv)
    if args.listen is None:
        serve_cgi(args.inipath, os.environ, sys.stdout, args.self_signed)
        return
    config = read_config(args.inipath)
    with NewEmailServer(args.listen, config, self_signed(config, args.self_signed)) as server:
        host, port = server.server_address[:2]
        print(f"chatmail-newemail: serving on {host} port {port}", file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
