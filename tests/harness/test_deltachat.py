"""Delta Chat core (deltachat-rpc-server) end to end against two local relays."""

from __future__ import annotations

from pathlib import Path

from harness_lib import LocalRelays

E2E_CLIENT = Path(__file__).resolve().parent / "deltachat_e2e.py"


def test_securejoin_encrypted_chat_and_cleartext_refused(relays: LocalRelays) -> None:
    result = relays.run_client(E2E_CLIENT, "--domains", "chat.test,chat2.test", "--ca", relays.ca)
    assert result.returncode == 0, f"Delta Chat end to end failed:\n{result.stdout}{result.stderr}"
    for expected in ("Secure-Join: joiner done", "received 'hello", "refused on submission (523)",
                     "over port 25 refused (523)"):
        assert expected in result.stdout, f"missing step {expected!r}:\n{result.stdout}"
