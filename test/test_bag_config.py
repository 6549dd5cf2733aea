"""The recorder's settings are declared once: config/recorder.yaml ("values shown are the
defaults") shows exactly RecorderConfig's defaults, and those record what the bag tools read."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from simreal_ros.bag.check import STAMPED_SENT_TOPIC
from simreal_ros.bag.config import RecorderConfig
from simreal_ros.settings import SettingError

YAML = Path(__file__).resolve().parent.parent / "config" / "recorder.yaml"


def test_shipped_recorder_yaml_values_are_the_code_defaults():
    text = YAML.read_text()
    assert "Values shown are the defaults" in text.splitlines()[0]
    values = yaml.safe_load(text)["recorder"]["ros__parameters"]
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(RecorderConfig()).items()}
    assert values == defaults
    assert RecorderConfig(**values) == RecorderConfig()  # and the file's values are valid settings


def test_default_topics_include_what_check_limits_reads():
    topics = RecorderConfig().topics
    assert STAMPED_SENT_TOPIC in topics  # 'simreal bag check-limits' reads the shield's stamped copy
    assert {"/forward_position_controller/commands", "/simreal/shield/shadow_command",
            "/simreal/shield/interventions"} <= set(topics)


@pytest.mark.parametrize("bad", [{"topics": ("relative",)}, {"topics": ("/a", "/a")}, {"topics": ()},
                                 {"flush_interval_s": 0.0}, {"flush_kib": True}, {"compression": "lz4"},
                                 {"queue_depth": 1.5}, {"topics": ("/a:sensor_msgs/JointState",)}])
def test_bad_settings_are_refused_by_name(bad):
    with pytest.raises(SettingError, match=next(iter(bad))):
        RecorderConfig(**bad)
