"""What podkit/secrets.py promises, asserted so that a changed line fails a test.

Written against the mutants `make mutate` found alive (docs/testing.md). The
values are odd-looking on purpose: every registered secret is scrubbed from
every later log line of the test process, so a common word would mangle
other tests' records.
"""

from __future__ import annotations

import locale
import os
from pathlib import Path

from podkit.secrets import SecretFile, credential_params, redact_url, register_secret, scrub


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


def test_a_secret_holding_a_shorter_one_inside_is_replaced_whole() -> None:
    # Longest first by length, not by text: in reverse text order "Zq9w" would go
    # before "Aa1-Zq9w-tail" and leave "Aa1-***-tail" (two pieces of the secret).
    register_secret("Zq9w")
    register_secret("Aa1-Zq9w-tail")
    assert scrub("x Aa1-Zq9w-tail y Zq9w") == "x *** y ***"


def test_redact_url_hides_a_password_holding_at_signs_and_colons() -> None:
    assert redact_url("https://u:p@ss@h/x") == "https://u:***@h/x"
    assert redact_url("https://u:pa:ss@h:8443/") == "https://u:***@h:8443/"


def test_redact_url_hides_token_like_query_values_and_keeps_the_rest_as_written() -> None:
    assert (
        redact_url("https://intake.example/v2/logs?dd-api-key=abc1&ddsource=pod%20kit")
        == "https://intake.example/v2/logs?dd-api-key=***&ddsource=pod%20kit"
    )
    assert (
        redact_url("https://u:p@h/x?sig=S%2Fg&sv=2020&Access_Token=t&author=bob#f")
        == "https://u:***@h/x?sig=***&sv=2020&Access_Token=***&author=bob#f"
    )
    # names that only look like one: a Redis key's name, where a secret file is,
    # a parameter without a value, and an empty one
    for url in (
        "redis://h:6379/0?key=mykey&value=1",
        "mysql://h:3306/?password_file=/run/pw",
        "http://h/x?token",
        "http://h/x?apikey=&a=1",
        "http://h/x?a=b=c",
    ):
        assert redact_url(url) == url
    assert redact_url("http://h/?APIKEY=1&client-secret=2&x_pwd=3&auth=4&Signature=5") == (
        "http://h/?APIKEY=***&client-secret=***&x_pwd=***&auth=***&Signature=***"
    )
    assert credential_params("a=1&private_key=k%2B&passwd=p&credentials=c&authorization=z") == [
        ("private_key", "k%2B"),
        ("passwd", "p"),
        ("credentials", "c"),
        ("authorization", "z"),
    ]


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


def test_a_slot_keeps_its_latest_two_values_and_lets_older_ones_go() -> None:
    """A renewed token (OAuth2, a GitHub App's) registers under a slot: a week of
    renewals must not pile up, but the value just replaced stays hidden a while."""
    slot = ("test renewals", "Zq9")
    tokens = [f"Zq9-renewed-{i:03d}" for i in range(200)]
    for token in tokens:
        register_secret(token, slot=slot)
    line = " ".join(tokens)
    words = scrub(line).split(" ")
    assert words[-2:] == ["***", "***"]
    assert words[:-2] == tokens[:-2]  # let go: no longer scrubbed, no longer held


def test_registering_the_current_value_again_keeps_the_previous_one() -> None:
    slot = "test same value"
    register_secret("Vb4-first", slot=slot)
    register_secret("Vb4-second", slot=slot)
    register_secret("Vb4-second", slot=slot)  # a file read again, unchanged
    assert scrub("Vb4-first Vb4-second") == "*** ***"
    register_secret("Vb4-first", slot=slot)  # an older value back: it is the newest now
    register_secret("Vb4-third", slot=slot)
    assert scrub("Vb4-first Vb4-second Vb4-third") == "*** Vb4-second ***"


def test_slots_are_apart_and_a_value_without_one_stays_for_good() -> None:
    register_secret("Yc5-fixed")
    register_secret("Yc5-fixed", slot="test slot a")
    register_secret("Yc5-a", slot="test slot a")
    register_secret("Yc5-a2", slot="test slot a")  # "Yc5-fixed" leaves slot a, not the set
    register_secret("Yc5-b", slot="test slot b")
    register_secret("Yc5-b2", slot="test slot b")
    register_secret("Yc5-b3", slot="test slot b")
    assert scrub("Yc5-fixed Yc5-a Yc5-a2 Yc5-b Yc5-b2 Yc5-b3") == "*** *** *** Yc5-b *** ***"


def test_a_short_value_in_a_slot_is_ignored_and_keeps_the_slot_as_it_was() -> None:
    register_secret("Pm6-one", slot="test short")
    register_secret("Pm6-two", slot="test short")
    register_secret("Pm", slot="test short")
    assert scrub("Pm6-one Pm6-two Pm") == "*** *** Pm"


def test_every_occurrence_of_every_secret_is_replaced() -> None:
    register_secret("Dg2-one")
    register_secret("Dg2-second")
    text = "Dg2-one,Dg2-second,Dg2-one;Dg2-second Dg2-oneDg2-one"
    assert scrub(text) == "***,***,***;*** ******"


def test_a_rotated_secret_file_keeps_its_latest_two_values_scrubbed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    s = SecretFile(path)
    values = [f"Fr3-rotated-{i}" for i in range(5)]
    for i, v in enumerate(values):
        path.write_text(v + "\n")
        os.utime(path, ns=(i * 10**9, i * 10**9))  # a changed signature however fast
        assert s.value() == v
    assert scrub(" ".join(values)).split(" ") == [*values[:3], "***", "***"]
