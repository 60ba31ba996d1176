"""podkit.checks: the JSONPath and Prometheus-sample conditions (reloader --verify-*, waitfor)."""

from __future__ import annotations

import pytest

from podkit.checks import ConditionError, JSONCondition, MetricCondition, as_time, load_json

DOC = {
    "status": "success",
    "data": {"reloadConfigSuccess": True, "lastConfigTime": "2026-12-04T21:00:00.123456789Z"},
    "items": [{"ready": 1}, {"ready": 0, "a.b": "x"}],
}


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ('$.status == "success"', True),
        ("$.status == 'success'", True),
        ('$.status != "success"', False),
        ("$.data.reloadConfigSuccess == true", True),
        ("$.data.reloadConfigSuccess", True),
        ("$.items[1].ready", False),
        ("$.items[-1].ready == 0", True),
        ('$.items[1]["a.b"] == "x"', True),
        ("$.items[0].ready >= 1", True),
        ("$.missing", False),
        ("$.missing != 1", True),
        ("$.status > 1", False),  # no ordering between a string and a number
        ('$.status == "a == b"', False),  # the operator inside quotes is a string
    ],
)
def test_json_conditions(text: str, holds: bool) -> None:
    assert JSONCondition.parse(text).test(DOC)[0] is holds


@pytest.mark.parametrize("bad", ["status == 1", "$.a ==", "$.a == UP", "$.a ~ 1", "$..a"])
def test_json_condition_errors(bad: str) -> None:
    with pytest.raises(ConditionError):
        JSONCondition.parse(bad)


EXPO = """# HELP prometheus_config_last_reload_successful Whether ...
# TYPE prometheus_config_last_reload_successful gauge
prometheus_config_last_reload_successful 1
prometheus_config_last_reload_successful_extra 0
up{job="api",instance="a:1"} 0
up{job="db",instance="b:1"} 1
nan_metric NaN
"""


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ("prometheus_config_last_reload_successful == 1", True),
        ("prometheus_config_last_reload_successful", True),
        ("prometheus_config_last_reload_successful_extra", False),
        ('up{job="db"} == 1', True),
        ('up{job="api"} >= 1', False),
        ("absent_metric == 0", False),
        ("nan_metric != 1", False),
    ],
)
def test_metric_conditions(text: str, holds: bool) -> None:
    assert MetricCondition.parse(text).test(EXPO)[0] is holds


def test_metric_condition_errors() -> None:
    for bad in ["1abc == 1", "up{job=db} == 1", "up == yes"]:
        with pytest.raises(ConditionError):
            MetricCondition.parse(bad)


def test_as_time_and_depth_cap() -> None:
    assert as_time("2026-12-04T21:00:00.123456789Z") == pytest.approx(1796418000.123456)
    assert as_time(12.5) == 12.5 and as_time(True) is None and as_time("soon") is None
    with pytest.raises(ValueError):
        load_json(b"[" * 100 + b"]" * 100)
    assert load_json(b'{"a": "[[[[["}') == {"a": "[[[[["}
