"""What podkit/secrets.py promises, asserted so that a changed line fails a test.

Written against the mutants `make mutate` found alive (docs/testing.md). The
values are odd-looking on purpose: every registered secret is scrubbed from
every later log line of the test process, so a common word would mangle
other tests' records.
"""

from __future__ import annotations

import locale
from pathlib import Path

from podkit.secrets import SecretFile, redact_url, register_secret, scrub


def test_a_four_character_secret_is_scrubbed_and_a_three_character_one_is_not() -> None:
    register_secret("Q7#k")
    register_secret("J%2")
    assert scrub("a Q7#k b") == "a *** b"
    assert scrub("a J%2 b") == "a J%2 b"


def test_the_longest_secret_is_replaced_whole_when_a_shorter_one_begins_it() -> None:
    # Tried shortest first, "Kp7q" would match at the same place and leave
    # "-and-more" of the longer secret in the log.
    register_secret("Kp7q")
    register_secret("Kp7q-and-more")
    assert scrub("x Kp7q-and-more y Kp7q") == "x *** y ***"


def test_redact_url_hides_a_password_holding_at_signs_and_colons() -> None:
    assert redact_url("https://u:p@ss@h/x") == "https://u:***@h/x"
    assert redact_url("https://u:pa:ss@h:8443/") == "https://u:***@h:8443/"


def test_secret_file_keeps_whitespace_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "raw"
    path.write_text(" Wv8-raw \n")
    assert SecretFile(path, strip=False).value() == " Wv8-raw \n"
    assert SecretFile(path).value() == "Wv8-raw"


def test_changed_is_false_after_a_read_and_true_once_the_file_goes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    never_read = SecretFile(tmp_path / "absent")
    assert not never_read.changed()  # nothing read, nothing to differ from
    path.write_text("Hx3-token\n")
    s = SecretFile(path)
    assert s.changed()  # not read yet
    assert s.value() == "Hx3-token"
    assert not s.changed()
    path.unlink()
    assert s.changed()


def test_a_secret_file_is_utf_8_whatever_the_locale(tmp_path: Path) -> None:
    """A pod's LANG may be unset (the POSIX locale, ASCII): the token is still UTF-8."""
    path = tmp_path / "token"
    path.write_bytes("tøken-ü-Rw5\n".encode())
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        assert SecretFile(path).value() == "tøken-ü-Rw5"
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
