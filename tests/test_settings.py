"""Every ``--settings`` JSON a stage command takes is checked against its section of the schema."""

from __future__ import annotations

import json

import pytest

from loclens import cli, stages
from loclens.config import ConfigError, validate, validate_settings


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [
                "segment",
                "--records",
                "r",
                "--plan",
                "p",
                "--shard",
                "0",
                "--segmenter",
                "medsam",
                "--out",
                "o",
                "--settings",
                json.dumps({"read_max_side": 512, "otsu": {"kernal": 3}}),
            ],
            "segment.medsam.otsu: Additional properties are not allowed ('kernal' was unexpected)",
        ),
        (
            [
                "segment",
                "--records",
                "r",
                "--plan",
                "p",
                "--shard",
                "0",
                "--segmenter",
                "sam",
                "--out",
                "o",
                "--settings",
                json.dumps({"read_max_side": "big"}),
            ],
            "segment.sam.read_max_side: 'big' is not of type",
        ),
        (
            [
                "render",
                "--records",
                "r",
                "--plan",
                "p",
                "--shard",
                "s",
                "--seed",
                "0",
                "--config-hash",
                "h",
                "--out",
                "o",
                "--settings",
                json.dumps({"alhpa": {}}),
            ],
            "render: Additional properties are not allowed ('alhpa' was unexpected)",
        ),
        (
            [
                "evaluate",
                "--release",
                "r",
                "--datasets",
                "d",
                "--checkpoint",
                "c",
                "--out",
                "o",
                "--settings",
                json.dumps({"top_k": "five"}),
            ],
            "evaluate.top_k: 'five' is not of type",
        ),
        (
            ["tables", "--metrics", "m", "--out", "o", "--settings", json.dumps({"seeds": []})],
            "evaluate.seeds: [] should be non-empty",
        ),
    ],
)
def test_a_wrong_settings_key_fails_naming_the_command_and_the_key(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"loclens {argv[0]}: error: loclens {argv[0]} --settings" in err
    assert message in err


def test_the_settings_the_workflow_passes_are_valid_and_keep_their_values():
    config = validate({"datasets": {"sample": {}}, "segment": {"sam": {"enabled": True}}})
    for seg in stages.enabled_segmenters(config):
        settings = stages.segment_settings(config, seg)
        assert validate_settings(settings, f"segment.{seg}", "segment", shared=("read_max_side",)) == settings
    assert validate_settings(stages.render_settings(config), "render", "render") == config["render"]
    run = validate_settings(stages.evaluate_run_settings(config), "evaluate", "evaluate")
    assert run == config["evaluate"]  # the keys the run does not need are filled with their defaults
    with pytest.raises(ConfigError, match="must be a JSON object"):
        validate_settings([1], "render", "render")
