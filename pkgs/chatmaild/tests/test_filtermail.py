"""filtermail's rules as pure functions: outgoing/incoming verdicts, mailboxes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from chatmaild import testmail
from chatmaild.config import Config
from chatmaild.encryption import parse_entity
from chatmaild.filtermail import (
    ENCRYPTION_NEEDED_523,
    check_incoming,
    check_outgoing,
    check_sender_address,
    dot_stuffed,
    mailbox_accepts_cleartext,
    main,
    make_handler,
)

DOMAIN = "chat.example.org"
ALICE = f"alice1234@{DOMAIN}"
BOB = "bob@example.org"


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config(DOMAIN)


def outgoing(config: Config, message, mail_from: str = ALICE, rcpt_tos: list[str] | None = None) -> str | None:
    return check_outgoing(mail_from, rcpt_tos or [BOB], parse_entity(testmail.to_bytes(message)))


# --- outgoing


def test_outgoing_encrypted_passes(config: Config):
    assert outgoing(config, testmail.make_encrypted_message(ALICE, BOB)) is None


def test_outgoing_delta_chat_message_passes(config: Config):
    raw = (Path(__file__).parent / "mail-data" / "deltachat-2.65-encrypted.eml").read_bytes().replace(b"\n", b"\r\n")
    message = parse_entity(raw)
    assert check_outgoing("pvunqxiqg@chat.test", ["k5ck4ttz1@chat2.test"], message) is None
    forged = check_outgoing(ALICE, ["k5ck4ttz1@chat2.test"], message)
    assert forged == f"500 Invalid FROM <'pvunqxiqg@chat.test'> for <{ALICE!r}>"


def test_outgoing_cleartext_is_refused(config: Config):
    assert outgoing(config, testmail.make_plain_message(ALICE, BOB)) == ENCRYPTION_NEEDED_523
    assert ENCRYPTION_NEEDED_523 == "523 Encryption Needed: Invalid Unencrypted Mail"


def test_outgoing_armor_headers_are_refused(config: Config):
    armored = testmail.armor(testmail.make_openpgp_payload(), headers=[("Version", "x")])
    message = testmail.make_encrypted_message(ALICE, BOB, armored=armored)
    assert outgoing(config, message) == ENCRYPTION_NEEDED_523


def test_forged_from_is_refused_even_when_encrypted(config: Config):
    message = testmail.make_encrypted_message("forged@example.org", BOB)
    assert outgoing(config, message) == f"500 Invalid FROM <'forged@example.org'> for <{ALICE!r}>"


def test_from_comparison_ignores_case(config: Config):
    assert outgoing(config, testmail.make_encrypted_message(ALICE.upper(), BOB)) is None


def test_missing_from_is_refused(config: Config):
    raw = testmail.to_bytes(testmail.make_encrypted_message(ALICE, BOB))
    without_from = b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"From:"))
    assert check_outgoing(ALICE, [BOB], parse_entity(without_from)) == f"500 Invalid FROM <''> for <{ALICE!r}>"


def test_securejoin_request_passes(config: Config):
    assert outgoing(config, testmail.make_securejoin_request(ALICE, BOB)) is None
    assert outgoing(config, testmail.make_securejoin_request(ALICE, BOB, step="vg-request")) is None
    fake = testmail.make_securejoin_request(ALICE, BOB, text="Buy now!")
    assert outgoing(config, fake) == ENCRYPTION_NEEDED_523


def test_passthrough_lists_are_gone(make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture):
    """upstream 1.11: no address may send or receive cleartext by configuration; the keys are
    ignored with a warning that says so"""
    config = make_config(DOMAIN, passthrough_senders=f"passthrough@{DOMAIN}",
                         passthrough_recipients="privacy@example.org @open.example.net")
    assert not hasattr(config, "passthrough_senders")
    assert "passthrough_senders is no longer supported" in caplog.text
    assert "passthrough_recipients is no longer supported" in caplog.text
    sender = f"passthrough@{DOMAIN}"
    assert outgoing(config, testmail.make_plain_message(sender, BOB), mail_from=sender) == ENCRYPTION_NEEDED_523
    plain = testmail.make_plain_message(ALICE, "privacy@example.org")
    assert outgoing(config, plain, rcpt_tos=["privacy@example.org"]) == ENCRYPTION_NEEDED_523


def test_autocrypt_setup_message_only_to_oneself(config: Config):
    asm = testmail.make_autocrypt_setup_message(ALICE)
    assert outgoing(config, asm, rcpt_tos=[ALICE]) is None
    assert outgoing(config, asm, rcpt_tos=[BOB]) == ENCRYPTION_NEEDED_523
    assert outgoing(config, asm, rcpt_tos=[ALICE, BOB]) == ENCRYPTION_NEEDED_523
    plain_to_self = testmail.make_plain_message(ALICE, ALICE, subject="Hello")
    assert outgoing(config, plain_to_self, rcpt_tos=[ALICE]) == ENCRYPTION_NEEDED_523


def test_mdn_and_bounce_shapes_are_refused_outgoing(config: Config):
    assert outgoing(config, testmail.make_mdn(ALICE, BOB)) == ENCRYPTION_NEEDED_523
    assert outgoing(config, testmail.make_mailer_daemon_report(ALICE, BOB)) == ENCRYPTION_NEEDED_523


def test_sender_address_syntax():
    assert check_sender_address(ALICE) is None
    assert check_sender_address("no-at-sign") == "500 Invalid from address <'no-at-sign'>"
    assert check_sender_address("a@b@c") is not None


# --- incoming


def make_account(config: Config, addr: str, enforce: bool) -> None:
    maildir = config.mailboxes_dir / addr
    maildir.mkdir(parents=True)
    (maildir / "password").write_text("{SHA512-CRYPT}x")
    if enforce:
        (maildir / "enforceE2EEincoming").touch()


def incoming(config: Config, message, rcpt_tos: list[str]) -> str | None:
    entity = parse_entity(testmail.to_bytes(message))
    return check_incoming(rcpt_tos, entity, lambda rcpt: mailbox_accepts_cleartext(config, rcpt))


def test_incoming_cleartext_to_enforcing_account_is_refused(config: Config):
    make_account(config, ALICE, enforce=True)
    assert incoming(config, testmail.make_plain_message(BOB, ALICE), [ALICE]) == ENCRYPTION_NEEDED_523


def test_incoming_cleartext_allowed_without_enforce_file(config: Config):
    make_account(config, ALICE, enforce=False)
    assert incoming(config, testmail.make_plain_message(BOB, ALICE), [ALICE]) is None


def test_incoming_cleartext_to_unknown_account_passes(config: Config):
    """As upstream: only an existing account's enforce file refuses cleartext."""
    assert incoming(config, testmail.make_plain_message(BOB, ALICE), [ALICE]) is None
    assert mailbox_accepts_cleartext(config, "postmaster@" + DOMAIN)
    assert mailbox_accepts_cleartext(config, "../../etc@" + DOMAIN)
    assert mailbox_accepts_cleartext(config, "someone@elsewhere.org")


def test_incoming_one_enforcing_recipient_refuses_all(config: Config):
    make_account(config, ALICE, enforce=True)
    other = f"other1234@{DOMAIN}"
    make_account(config, other, enforce=False)
    assert incoming(config, testmail.make_plain_message(BOB, ALICE), [other, ALICE]) == ENCRYPTION_NEEDED_523


def test_incoming_case_and_detail_do_not_bypass(config: Config):
    make_account(config, ALICE, enforce=True)
    local, _, domain = ALICE.partition("@")
    for variant in (ALICE.upper(), f"{local}+tag@{domain}", f"{local.upper()}+x+y@{domain.upper()}"):
        assert not mailbox_accepts_cleartext(config, variant), variant


def test_incoming_encrypted_securejoin_bounce_pass(config: Config):
    make_account(config, ALICE, enforce=True)
    armored = testmail.armor(testmail.make_openpgp_payload(), headers=[("Version", "ProtonMail")])
    for message in (
        testmail.make_encrypted_message(BOB, ALICE),
        testmail.make_encrypted_message(BOB, ALICE, armored=armored),
        testmail.make_securejoin_request(BOB, ALICE),
        testmail.make_mailer_daemon_report("MAILER-DAEMON@example.org", ALICE),
    ):
        assert incoming(config, message, [ALICE]) is None


def test_incoming_mdn_and_asm_are_refused(config: Config):
    make_account(config, ALICE, enforce=True)
    assert incoming(config, testmail.make_mdn(BOB, ALICE), [ALICE]) == ENCRYPTION_NEEDED_523
    assert incoming(config, testmail.make_autocrypt_setup_message(ALICE), [ALICE]) == ENCRYPTION_NEEDED_523


def test_incoming_ignores_from_mismatch(config: Config):
    make_account(config, ALICE, enforce=True)
    assert incoming(config, testmail.make_encrypted_message("anyone@example.net", ALICE), [ALICE]) is None


# --- SMTP helpers and entry point


def test_dot_stuffing():
    assert dot_stuffed(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n"
    assert dot_stuffed(b".\r\n") == b"..\r\n"
    assert dot_stuffed(b"no final newline") == b"no final newline\r\n"
    assert dot_stuffed(b"") == b"\r\n"


def test_make_handler_ports(config: Config):
    assert make_handler(config, "outgoing")[1] == config.filtermail_smtp_port
    assert make_handler(config, "incoming")[1] == config.filtermail_smtp_port_incoming
    with pytest.raises(ValueError):
        make_handler(config, "sideways")


def test_main_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main([]) == 2
    assert main([str(tmp_path / "chatmail.ini"), "sideways"]) == 2
    assert main([str(tmp_path / "missing.ini"), "outgoing"]) == 1
    assert "usage: filtermail INI_PATH outgoing|incoming" in capsys.readouterr().err
