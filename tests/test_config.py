"""Configuration: one schema, defaults filled, wrong keys and types named."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO

from loclens.config import ConfigError, load, validate


def test_default_config_is_valid_and_filled():
    config = load(REPO / "config.yaml")
    assert config["segment"]["medsam"]["otsu"]["min_area_fraction"] == 0.005
    minimal = validate({"datasets": {"sample": {}}})
    assert minimal["render"]["alpha"] == {"mean": 0.5, "std": 0.1, "min": 0.2, "max": 0.8}
    assert minimal["segment"]["medsam"]["prompts"] == ["expert", "sam", "otsu", "chest"]
    assert minimal["datasets"]["sample"]["lang"] == "en"
    # config.yaml documents every key the schema knows at the top level.
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert set(schema["properties"]) == set(yaml.safe_load((REPO / "config.yaml").read_text()))


def test_unknown_key_and_wrong_type_are_named():
    with pytest.raises(ConfigError, match=r"render: Additional properties are not allowed \('colour' was unexpected\)"):
        validate({"datasets": {"sample": {}}, "render": {"colour": 1}})
    with pytest.raises(ConfigError, match=r"seed: 'zero' is not of type 'integer'"):
        validate({"datasets": {"sample": {}}, "seed": "zero"})
    with pytest.raises(ConfigError, match="split: 'random' is not one of"):
        validate({"datasets": {"sample": {}}, "split": "random"})


def test_prompt_sources_narrow_to_what_can_run():
    from loclens.stages import context_segmenters, segment_settings

    off = validate({"datasets": {"sample": {}}})
    assert segment_settings(off, "medsam")["prompts"] == ["expert", "otsu", "chest"]  # SAM is off: no SAM boxes
    assert context_segmenters(off, "medsam") == []
    on = validate({"datasets": {"sample": {}}, "segment": {"sam": {"enabled": True}}})
    assert segment_settings(on, "medsam")["prompts"] == ["expert", "sam", "otsu", "chest"]
    assert context_segmenters(on, "medsam") == ["sam"]
    only_sam = validate({"datasets": {"sample": {}}, "segment": {"medsam": {"prompts": ["sam"]}}})
    with pytest.raises(ValueError, match=r"no source can produce boxes \(sam needs segment.sam.enabled: true\)"):
        segment_settings(only_sam, "medsam")
    typo = validate({"datasets": {"sample": {}}, "segment": {"medsam": {"prompts": ["otsu", "expret"]}}})
    with pytest.raises(
        ValueError, match=r"unknown prompt source\(s\) \['expret'\]; known: \['chest', 'expert', 'otsu', 'sam'\]"
    ):
        segment_settings(typo, "medsam")
