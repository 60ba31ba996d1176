"""podkit.configfile: one YAML reader whose errors name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from podkit.adapters.metrics.json_exporter import load_modules
from podkit.adapters.metrics.mapper import load_mapping_file

from podkit import UsageError, configfile

MAPPING = """\
defaults:
  observer_type: histogram
mappings:
- match: "a.*"
  name: "a"
- match: "b.*"
  name: "b"
  summary_options:
    max_age: soon
"""


def write(tmp_path: Path, text: str, name: str = "f.yml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_lines_of_keys_and_items(tmp_path: Path) -> None:
    cfg = configfile.load(write(tmp_path, MAPPING), "--x")
    assert cfg.data["mappings"][1]["name"] == "b"
    assert cfg.line("defaults.observer_type") == 2
    assert cfg.line(("mappings", 1)) == 6
    assert cfg.line("mappings[1].summary_options.max_age") == 9
    # A key the file does not have: the line of its nearest ancestor.
    assert cfg.line("mappings[1].labels.code") == 6


def test_a_checker_error_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, MAPPING)
    with pytest.raises(UsageError) as exc:
        load_mapping_file(path, "--statsd-mapping")
    msg = str(exc.value)
    assert msg.startswith(f"--statsd-mapping {path}:9: mappings[1].summary_options.max_age: ")
    # An unknown key too, on its own line.
    path = write(tmp_path, MAPPING.replace("  summary_options:", "  scal: 2\n  summary_options:"))
    with pytest.raises(UsageError, match=rf"{path}:8: mappings\[1\]\.scal: unknown key"):
        load_mapping_file(path, "--statsd-mapping")


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    # PyYAML keeps the last silently; statsd_exporter's strict loader refuses.
    path = write(tmp_path, 'mappings:\n- match: "a.*"\n  name: a\n  name: b\n')
    with pytest.raises(
        UsageError, match=r":4: mappings\[0\]\.name: given twice \(first on line 3\)"
    ):
        configfile.load(path, "--m")


def test_syntax_errors_and_unreadable_files(tmp_path: Path) -> None:
    path = write(tmp_path, "mappings:\n- match: a\n  name: [b\n")
    with pytest.raises(UsageError, match=rf"^--m {path}:4:1: did not find expected"):
        configfile.load(path, "--m")
    with pytest.raises(UsageError, match="cannot read"):
        configfile.load(str(tmp_path / "absent.yml"), "--m")
    (tmp_path / "bin.yml").write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="not UTF-8"):
        configfile.load(str(tmp_path / "bin.yml"), "--m")
    assert configfile.load(write(tmp_path, ""), "--m").data is None


def test_merge_keys_and_other_messages(tmp_path: Path) -> None:
    text = "base: &b\n  x: 1\nthing:\n  <<: *b\n  y: 2\n"
    cfg = configfile.load(write(tmp_path, text), "--m")
    assert cfg.data["thing"] == {"x": 1, "y": 2}
    with pytest.raises(UsageError, match=r"^--m .*f\.yml: something odd$"), cfg.located():
        raise UsageError("something odd")
    with pytest.raises(UsageError, match=r"^--m .*f\.yml:5: thing\.y: bad$"), cfg.located():
        raise UsageError("thing.y: bad")


def test_warnings_are_located_too(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  timer_type: summary\n  observer_type: histogram\n")
    mapper = load_mapping_file(path, "--statsd-mapping")
    assert mapper.warnings == [
        f"--statsd-mapping {path}:1: defaults: both timer_type (deprecated) and "
        "observer_type given; observer_type wins"
    ]


def test_json_exporter_modules_file(tmp_path: Path) -> None:
    text = "modules:\n  default:\n    metrics:\n    - name: x\n      pth: '{.a}'\n"
    path = write(tmp_path, text)
    with pytest.raises(UsageError, match=rf"^--cfg {path}:5: modules\.default\.metrics\[0\]\.pth"):
        load_modules(path, "--cfg")
