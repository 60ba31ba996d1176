"""What logship --parse json sends for lines whose JSON holds a lone surrogate.

An app's JSON may escape half a surrogate pair ("\\ud800"); json.loads makes
it a lone surrogate, which UTF-8 cannot hold. logship wrote it with
surrogatepass, i.e. as the bytes ED A0 80: the NDJSON body was no longer
UTF-8, and a receiver that checks (Elasticsearch refuses the whole bulk
request) lost every line of the batch over one value. It is now written as
the escape the app wrote, so the body is UTF-8 and the value survives.
"""

from __future__ import annotations

import json

import pytest
from podkit.sidecars.logship.route import RecordShape


@pytest.mark.parametrize(
    "line",
    [
        '{"s": "\\ud800x", "ok": "é"}',
        '{"s": "\\udfff", "nested": {"t": ["\\udbff\\udbff"]}}',
        '{"\\ud800key": 1}',
    ],
)
def test_a_lone_surrogate_is_sent_as_its_escape_in_utf8(line: str) -> None:
    shape = RecordShape({"app": "web"}, parse_json=True)
    body = shape.encode([line, "plain"], set(), "/logs/a.log", 0)
    text = body.decode("utf-8")  # strict: what a receiver that checks does
    first, second = (json.loads(x) for x in text.splitlines())
    want = json.loads(line)
    assert {k: v for k, v in first.items() if k not in ("time", "file", "labels")} == want
    assert second["message"] == "plain"
