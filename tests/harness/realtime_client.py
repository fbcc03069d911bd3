#!/usr/bin/env python3
"""Client side of the calls/realtime and web-page tests: run inside the harness's client namespace.

    local-relay exec -- VENV/bin/python tests/harness/realtime_client.py CHECK ARGS... --ca CA

Each check prints one JSON object on its last line; tests/harness/test_realtime.py judges it.

metadata DOMAIN         log in a new account, GETMETADATA "" of /shared/vendor/deltachat/turn
                        and …/irohrelay (what Delta Chat asks)
newemail-burst DOMAIN N GET https://DOMAIN/new N times at once: the statuses, one answer
dclogin URL             configure a Delta Chat core account from a dclogin: URL alone
get DOMAIN PATH...      GET https://DOMAIN/PATH: status, content type, body
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "nixos-tests" / "scenarios"))
import scenario_lib as lib  # noqa: E402
from realtime import deltachat_metadata  # noqa: E402

TIMEOUT = 30.0


def metadata(args: argparse.Namespace) -> dict:
    relay = lib.Relay(args.domain, args.ca)
    return deltachat_metadata(relay, lib.create_account(relay))


def fetch(url: str, ca: str, method: str = "GET") -> tuple[int, str, str]:
    context = ssl.create_default_context(cafile=ca)
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, context=context, timeout=TIMEOUT) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode(errors="replace")


def newemail_burst(args: argparse.Namespace) -> dict:
    url = f"https://{args.domain}/new"
    with ThreadPoolExecutor(args.count) as pool:
        answers = list(pool.map(lambda _: fetch(url, args.ca), range(args.count)))
    first_ok = next((json.loads(body) for status, _, body in answers if status == 200), None)
    return {"statuses": sorted(status for status, _, _ in answers), "credentials": first_ok}


def dclogin(args: argparse.Namespace) -> dict:
    from deltachat_rpc_client import DeltaChat, Rpc, JsonRpcError

    rpc_server = str(Path(sys.executable).parent / "deltachat-rpc-server")
    with tempfile.TemporaryDirectory() as accounts_dir, \
            Rpc(accounts_dir=accounts_dir, rpc_server_path=rpc_server) as rpc:
        account = DeltaChat(rpc).add_account()
        try:
            account._rpc.add_transport_from_qr(account.id, args.url)
        except JsonRpcError as error:
            return {"configured": False, "error": str(error)[:500]}
        transports = account.list_transports()
        return {"configured": account.is_configured(), "addr": transports[0]["addr"],
                "transports": transports}


def get(args: argparse.Namespace) -> dict:
    pages = {}
    for path in args.paths:
        status, content_type, body = fetch(f"https://{args.domain}{path}", args.ca)
        pages[path] = {"status": status, "content_type": content_type, "body": body}
    return pages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    lib.relay_arguments(parser)
    checks = parser.add_subparsers(dest="check", required=True)
    sub = checks.add_parser("metadata")
    sub.add_argument("domain")
    sub.set_defaults(handler=metadata)
    sub = checks.add_parser("newemail-burst")
    sub.add_argument("domain")
    sub.add_argument("count", type=int)
    sub.set_defaults(handler=newemail_burst)
    sub = checks.add_parser("dclogin")
    sub.add_argument("url")
    sub.set_defaults(handler=dclogin)
    sub = checks.add_parser("get")
    sub.add_argument("domain")
    sub.add_argument("paths", nargs="+")
    sub.set_defaults(handler=get)
    args = parser.parse_args()
    print(json.dumps(args.handler(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
