"""Mailbox life cycle against real Postfix, Dovecot and chatmaild daemons (issue 7).

Push notifications (IMAP METADATA through chatmail-metadata, Dovecot's LMTP Lua script, a fake
notification service in the client namespace), expiry (chatmail-expire on backdated files), quota,
the per-sender rate limit and last-login tracking.

Runs one relay of its own, with a small mailbox quota (`--setting max_mailbox_size=...`), next to
the session's relays. Client steps run in the client namespace (scenarios/mailbox.py); the relay's
files are read and backdated from here, as its operator would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from chatmaild.expire import LARGE_MESSAGE_SIZE
from chatmaild.metadata import METADATA_FILE_NAME
from chatmaild.notifier import QUEUE_DIR_NAME
from harness_lib import (
    SCENARIOS,
    UP_TIMEOUT,
    harness_state_dir,
    load_local_relay,
    run_local_relay,
    scrape_metrics,
)

DOMAIN = "_life.test"
MAILBOX_LIMIT_KIB = 1000
CLIENT = SCENARIOS / "mailbox.py"
STEP_TIMEOUT = 60
DELIVERY_TIMEOUT = 20.0
DAY = 86400

lr = load_local_relay()


@dataclass
class LifeRelay:
    state: Path
    prefix: str
    relay_dir: Path
    ca: str
    rendered: dict

    @property
    def netns(self) -> str:
        return f"{self.prefix}r1"

    @property
    def client_netns(self) -> str:
        return f"{self.prefix}client"

    @property
    def mailboxes(self) -> Path:
        return self.relay_dir / "mailboxes"

    def local_relay(self, *args: str, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
        return run_local_relay("--state", str(self.state), *args, timeout=timeout)

    def client(self, *args: str) -> dict:
        """Run one mailbox.py step in the client namespace; its JSON result."""
        result = self.local_relay("exec", "--", sys.executable, str(CLIENT), "--domain", DOMAIN,
                                  "--ca", self.ca, *args)
        assert result.returncode == 0, f"client {args[0]} failed:\n{result.stdout}{result.stderr}"
        return json.loads(result.stdout.splitlines()[-1])

    def log(self, name: str) -> str:
        path = self.relay_dir / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def as_vmail_in_relay(self, argv: list[str]) -> list[str]:
        return lr.in_netns(self.netns, *lr.as_service_user(*argv))


@dataclass(frozen=True)
class Account:
    addr: str
    password: str


def new_account(relay: LifeRelay) -> Account:
    """A fresh account: created by its first IMAP login."""
    account = Account(f"a{secrets.token_hex(4)}@{DOMAIN}", secrets.token_hex(8))
    relay.client("inbox", account.addr, account.password)
    return account


def wait_until(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(interval)


def message_files(maildir: Path) -> dict[str, Path]:
    """The inbox's message files by base name (the part before ":", kept from new/ to cur/)."""
    return {path.name.split(":")[0]: path for sub in ("new", "cur")
            for path in (maildir / sub).glob("*") if path.is_file()}


class NotifyEndpoint:
    """The fake notification service: mailbox.py notify-endpoint in the client namespace,
    recording each POST body."""

    def __init__(self, relay: LifeRelay) -> None:
        self.relay = relay
        self.record = relay.state / "notifications.jsonl"
        self.record.touch()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = lr.in_netns(self.relay.client_netns, sys.executable, CLIENT, "notify-endpoint",
                              "--port", str(lr.NOTIFY_PORT), "--record", self.record)
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().startswith("listening"), "endpoint did not start"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def bodies(self) -> list[str]:
        return [json.loads(line)["body"] for line in self.record.read_text().splitlines()]

    def wait_for(self, token: str, count: int = 1, timeout: float = DELIVERY_TIMEOUT) -> None:
        wait_until(lambda: self.bodies().count(token) >= count, timeout,
                   f"notification #{count} for {token}")


@pytest.fixture(scope="module")
def relay() -> Iterator[LifeRelay]:
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces, Postfix, Dovecot)")
    state = harness_state_dir()
    prefix = f"cml{secrets.token_hex(2)}-"
    try:
        up = run_local_relay("--state", str(state), "up", "--domains", DOMAIN, "--prefix", prefix,
                             "--setting", f"max_mailbox_size={MAILBOX_LIMIT_KIB}K",
                             timeout=UP_TIMEOUT)
        assert up.returncode == 0, up.stdout + up.stderr
        relay_dir = state / "relays" / DOMAIN
        rendered = json.loads((relay_dir / "rendered.json").read_text())
        yield LifeRelay(state, prefix, relay_dir, str(state / "ca" / "ca.pem"), rendered)
    finally:
        run_local_relay("--state", str(state), "down", "--wipe", timeout=120)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def endpoint(relay: LifeRelay) -> Iterator[NotifyEndpoint]:
    service = NotifyEndpoint(relay)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def send(relay: LifeRelay, sender: Account, to: Account, count: int = 1, size: int = 600) -> list[dict]:
    return relay.client("send", sender.addr, sender.password, to.addr, "--count", str(count),
                        "--size", str(size))["replies"]


def deliver(relay: LifeRelay, sender: Account, to: Account, size: int = 600) -> str:
    """Send one message and wait until it is in TO's maildir; the base name of its file."""
    before = set(message_files(relay.mailboxes / to.addr))
    (reply,) = send(relay, sender, to, size=size)
    assert reply["code"] == 250, reply
    new = wait_until(lambda: set(message_files(relay.mailboxes / to.addr)) - before,
                     DELIVERY_TIMEOUT, f"delivery to {to.addr}")
    (name,) = new
    return name


def restart_metadata_daemon(relay: LifeRelay) -> None:
    """Stop chatmail-metadata and start it again with render's command line."""
    old = lr.read_pid(relay.relay_dir / "run" / "metadata.pid")
    restart = relay.local_relay("restart", "metadata")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert old is not None and not lr.alive(old)
    assert lr.read_pid(relay.relay_dir / "run" / "metadata.pid") != old


# --- push notifications -------------------------------------------------------------------------


def test_token_set_over_imap_and_notified_on_delivery(relay: LifeRelay, endpoint: NotifyEndpoint) -> None:
    alice, bob = new_account(relay), new_account(relay)
    token = f"token-{secrets.token_hex(8)}"
    capabilities = relay.client("set-token", alice.addr, alice.password, token)["capabilities"]
    assert {"XDELTAPUSH", "XCHATMAIL", "METADATA", "QUOTA"} <= set(capabilities)
    stored = json.loads((relay.mailboxes / alice.addr / METADATA_FILE_NAME).read_text())
    assert token in stored["devicetoken"]

    # a message to oneself wakes nobody: the sending device has it already
    deliver(relay, alice, alice)
    deliver(relay, bob, alice)
    endpoint.wait_for(token)
    time.sleep(1)  # a second notification, if any, would have come by now
    assert endpoint.bodies().count(token) == 1


def test_token_survives_a_restart_of_the_daemon(relay: LifeRelay, endpoint: NotifyEndpoint) -> None:
    alice, bob = new_account(relay), new_account(relay)
    token = f"token-{secrets.token_hex(8)}"
    relay.client("set-token", alice.addr, alice.password, token)
    restart_metadata_daemon(relay)
    assert token in relay.client("get-tokens", alice.addr, alice.password)["metadata"]
    deliver(relay, bob, alice)
    endpoint.wait_for(token)


def test_notification_retried_while_the_service_is_down(relay: LifeRelay, endpoint: NotifyEndpoint) -> None:
    alice, bob = new_account(relay), new_account(relay)
    token = f"token-{secrets.token_hex(8)}"
    relay.client("set-token", alice.addr, alice.password, token)
    endpoint.stop()
    queue = relay.mailboxes / QUEUE_DIR_NAME
    deliver(relay, bob, alice)
    failed = f"notifying {alice.addr} failed"
    wait_until(lambda: failed in relay.log("metadata"), DELIVERY_TIMEOUT, "a failed attempt")
    assert any(token in path.read_text() for path in queue.iterdir())  # kept for the retry
    started = time.monotonic()
    endpoint.start()
    endpoint.wait_for(token, timeout=30)  # first retry after 8 s (chatmail-metadata's default)
    print(f"notification arrived {time.monotonic() - started:.1f}s after the service came back")
    wait_until(lambda: not any(token in p.read_text() for p in queue.iterdir()), 5,
               "the delivered notification to leave the queue")


# --- expiry -------------------------------------------------------------------------------------


def backdate(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when))


def run_expire(relay: LifeRelay, *extra: str) -> subprocess.CompletedProcess:
    argv = relay.rendered["jobs"]["expire"]  # [chatmail-expire, INI, --remove]
    command = argv if not extra else [arg for arg in argv if arg != "--remove"] + list(extra)
    return subprocess.run(relay.as_vmail_in_relay(command), capture_output=True, text=True,
                          timeout=STEP_TIMEOUT, check=False)


def test_expiry_removes_exactly_what_is_due(relay: LifeRelay) -> None:
    settings = relay.rendered["settings"]
    reader, writer = new_account(relay), new_account(relay)
    inactive, active = new_account(relay), new_account(relay)
    old = deliver(relay, writer, reader)
    recent = deliver(relay, writer, reader)
    # stored gzip-compressed (zlib_save): random armored data shrinks to about 3/4
    large = deliver(relay, writer, reader, size=LARGE_MESSAGE_SIZE * 3 // 2)
    fresh = deliver(relay, writer, reader)
    relay.client("inbox", reader.addr, reader.password)  # seen: new/ -> cur/
    files = message_files(relay.mailboxes / reader.addr)
    assert files[large].stat().st_size > LARGE_MESSAGE_SIZE and files[large].parent.name == "cur"
    backdate(files[old], settings["delete_mails_after"] + 1)
    backdate(files[recent], settings["delete_mails_after"] - 1)
    backdate(files[large], settings["delete_large_after"] + 1)
    backdate(relay.mailboxes / inactive.addr / "password", settings["delete_inactive_users_after"] + 1)
    backdate(relay.mailboxes / active.addr / "password", settings["delete_inactive_users_after"] - 1)

    dry = run_expire(relay, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    would = [line.removeprefix("would remove ") for line in dry.stdout.splitlines()
             if line.startswith("would remove ")]
    assert sorted(would) == sorted(
        [str(files[old]), str(files[large]), str(relay.mailboxes / inactive.addr)]), dry.stdout
    assert set(message_files(relay.mailboxes / reader.addr)) == {old, recent, large, fresh}

    done = run_expire(relay)
    assert done.returncode == 0, done.stderr
    assert set(message_files(relay.mailboxes / reader.addr)) == {recent, fresh}
    assert not (relay.mailboxes / inactive.addr).exists()
    assert (relay.mailboxes / active.addr / "password").exists()
    assert (relay.mailboxes / writer.addr / "password").exists()
    listed = relay.client("inbox", reader.addr, reader.password)["messages"]
    assert len(listed) == 2, listed


# --- quota, rate limit, last login --------------------------------------------------------------


def delivered_or_bounced(relay: LifeRelay, sender: Account, recipient: Account, size: int) -> bool:
    """Send one message; True once it is in the recipient's maildir, False once the sender has
    a bounce (accepted at submission either way: LMTP refuses it after queueing)."""
    before = len(message_files(relay.mailboxes / recipient.addr))
    (reply,) = send(relay, sender, recipient, size=size)
    assert reply["code"] == 250, reply

    def outcome() -> str | None:
        if len(message_files(relay.mailboxes / recipient.addr)) > before:
            return "delivered"
        if relay.client("inbox", sender.addr, sender.password)["messages"]:
            return "bounced"
        return None

    return wait_until(outcome, DELIVERY_TIMEOUT, "delivery or bounce") == "delivered"


def test_full_mailbox_refuses_delivery_and_the_sender_gets_a_bounce(relay: LifeRelay) -> None:
    recipient, sender = new_account(relay), new_account(relay)
    # armored (4/3): a third of the quota each. Dovecot counts the uncompressed size of the
    # gzip-stored mail (pkgs/chatmaild/tests/test_dovecot_quota.py): the third does not fit,
    # although compressed (about 3/4) it would.
    message_size = MAILBOX_LIMIT_KIB * 1024 // 4
    delivered = 0
    while delivered_or_bounced(relay, sender, recipient, message_size):
        delivered += 1
        assert delivered < 8, "eight messages of a third of the quota each were all delivered"
    assert delivered == 2
    inbox = relay.client("inbox", sender.addr, sender.password)
    (report,) = inbox["messages"]
    assert f"<mailer-daemon@{DOMAIN}>" in report["from"].lower(), report
    assert "Quota exceeded: the mailbox of the recipient is full" in "".join(inbox["bodies"])
    quota = relay.client("inbox", recipient.addr, recipient.password)
    assert quota["quota_roots"] == ["User quota"]
    (storage,) = [q for q in quota["quotas"] if q["resource"] == "STORAGE"]
    assert storage["limit"] == MAILBOX_LIMIT_KIB
    # the stored size (LF line ends) is a little below RFC822.SIZE (CRLF), far above gzip's
    sizes = sum(m["size"] for m in quota["messages"])
    assert 0.95 * sizes / 1024 < storage["usage"] <= sizes / 1024 + 1, (storage, sizes)
    print(f"{delivered} messages delivered, quota {storage['usage']}/{storage['limit']} KiB")


def test_eleventh_message_of_a_burst_is_deferred(relay: LifeRelay) -> None:
    burst = relay.rendered["settings"]["max_user_send_burst_size"]
    sender, recipient = new_account(relay), new_account(relay)
    replies = send(relay, sender, recipient, count=burst + 1)
    assert [r["code"] for r in replies] == [250] * burst + [450], replies
    assert replies[-1]["message"].startswith("4.7.1"), replies[-1]


def test_login_records_the_day_of_the_last_login(relay: LifeRelay) -> None:
    account = new_account(relay)
    password_file = relay.mailboxes / account.addr / "password"
    backdate(password_file, 30)
    relay.client("inbox", account.addr, account.password)
    today = int(time.time()) // DAY * DAY
    wait_until(lambda: int(password_file.stat().st_mtime) == today, 10, "last login day = today")


# --- quota that makes room (upstream 1.10) ------------------------------------------------------


def quota_usage_kib(relay: LifeRelay, account: Account) -> int:
    quota = relay.client("inbox", account.addr, account.password)
    (storage,) = [q for q in quota["quotas"] if q["resource"] == "STORAGE"]
    return storage["usage"]


def relay_metrics(relay: LifeRelay) -> dict[str, float]:
    url = json.loads((relay.state / "relays.json").read_text())["relays"][0]["metrics_url"]
    return scrape_metrics(relay.netns, url)


# Stored, a message of this payload takes about 23 % of the quota (armored: 4/3): three stay
# below the 75 % that triggers quota expiry, a fourth goes over it.
QUARTER_MESSAGE = MAILBOX_LIMIT_KIB * 1024 * 17 // 100


def fill_with(relay: LifeRelay, sender: Account, recipient: Account, count: int) -> list[str]:
    """Deliver COUNT messages of QUARTER_MESSAGE; their file names (a bounce instead: a timeout)."""
    return [deliver(relay, sender, recipient, size=QUARTER_MESSAGE) for _ in range(count)]


def removals(relay: LifeRelay, account: Account) -> int:
    return relay.log("dovecot").count(f"quota-expire: removed 1 message(s) from {account.addr}")


def test_mail_older_than_a_day_makes_room_and_the_sender_gets_no_bounce(relay: LifeRelay) -> None:
    recipient, sender = new_account(relay), new_account(relay)
    metrics_before = relay_metrics(relay)
    old = fill_with(relay, sender, recipient, 3)
    usage = quota_usage_kib(relay, recipient)
    assert 0.6 * MAILBOX_LIMIT_KIB < usage < 0.75 * MAILBOX_LIMIT_KIB, usage
    for path in message_files(relay.mailboxes / recipient.addr).values():
        backdate(path, 2)

    # each of these takes the mailbox over 75 %: Dovecot runs chatmail-quota-expire, which removes
    # the oldest message (older than a day) to get back to 70 %. Dovecot does not wait for the
    # script: the next message is sent once it is done, as mail that does not come in a burst of
    # more than the free quarter is (a burst may still find the mailbox full and bounce).
    recent = []
    for count in (1, 2, 3):
        recent += fill_with(relay, sender, recipient, 1)
        wait_until(lambda: removals(relay, recipient) >= count, DELIVERY_TIMEOUT, f"removal {count}")
    files = message_files(relay.mailboxes / recipient.addr)
    assert set(files) == set(recent), f"old left: {set(files) & set(old)}"
    # six messages of 23 % each reached the mailbox, the sender has no bounce
    assert relay.client("inbox", sender.addr, sender.password)["messages"] == []
    assert quota_usage_kib(relay, recipient) <= 0.75 * MAILBOX_LIMIT_KIB

    # mail younger than a day is never removed: over 75 % with it alone, nothing goes
    newest = fill_with(relay, sender, recipient, 1)
    time.sleep(1)  # a removal, if any, would have happened by now
    assert set(message_files(relay.mailboxes / recipient.addr)) == set(recent + newest)
    assert quota_usage_kib(relay, recipient) > 0.75 * MAILBOX_LIMIT_KIB
    assert removals(relay, recipient) == 3

    counted = wait_until(lambda: (m := relay_metrics(relay))["quota_expire_removed_files"]
                         >= metrics_before["quota_expire_removed_files"] + 3 and m,
                         DELIVERY_TIMEOUT, "the removals counted")
    assert counted["quota_expire_runs"] - metrics_before["quota_expire_runs"] >= 3


def test_daily_expiry_makes_room_too(relay: LifeRelay) -> None:
    recipient, sender = new_account(relay), new_account(relay)
    # three messages of 24.5 %: over the 70 % the expiry aims at, below the 75 % that triggers
    names = [deliver(relay, sender, recipient, size=MAILBOX_LIMIT_KIB * 1024 * 18 // 100) for _ in range(3)]
    assert 0.70 * MAILBOX_LIMIT_KIB < quota_usage_kib(relay, recipient) < 0.75 * MAILBOX_LIMIT_KIB
    files = message_files(relay.mailboxes / recipient.addr)
    for age, name in zip((3, 2, 0), names):
        backdate(files[name], age)
    done = run_expire(relay)
    assert done.returncode == 0, done.stderr
    assert f"quota-expire: removed 1 message(s) from {recipient.addr}" in done.stderr
    # the oldest went; Dovecot counts the mailbox anew (its quota cache was removed)
    assert set(message_files(relay.mailboxes / recipient.addr)) == set(names[1:])
    assert quota_usage_kib(relay, recipient) <= 0.70 * MAILBOX_LIMIT_KIB
