"""Loading and validating the workflow configuration against the one JSON schema.

The schema (``resources/config.schema.yaml``, also reached as ``workflow/schemas/config.schema.yaml``)
is the single source of truth for keys, types and defaults; nothing here repeats a default.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from .errors import LoclensError


class ConfigError(LoclensError, ValueError):
    """A configuration that does not fit the schema; the message names the key and the problem."""


def schema() -> dict:
    text = resources.files("loclens").joinpath("resources/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_cls):
    """A validator that fills ``default`` values while validating (as snakemake.utils.validate)."""
    validate_props = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from validate_props(validator, properties, instance, sch)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


#: Dataset keys that only some sources take.
SOURCE_ONLY_KEYS = {"n_images": ("sample",), "columns": ("hf_parquet",), "repo": ("hf_parquet",)}


def _check_dataset_keys(config: dict) -> list[str]:
    problems = []
    for name, entry in sorted(config.get("datasets", {}).items()):
        source = dataset_source(name, entry)
        for key, sources in SOURCE_ONLY_KEYS.items():
            if key in entry and source not in sources:
                problems.append(f"  datasets.{name}.{key}: only for source {' or '.join(sources)}, not {source!r}")
    return problems


def _fill_and_check(instance, sch: dict, source: str, prefix: str = "") -> None:
    """Validate ``instance`` in place against ``sch``, filling defaults; ConfigError lists every
    wrong key (as ``<prefix>.<path>``) at once."""
    validator = _with_defaults(jsonschema.Draft202012Validator)(sch)
    # Two passes: defaults are inserted by the first, so nested defaults of inserted
    # objects (for example segment.medsam.otsu) are filled by the second.
    for _ in range(2):
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            lines = []
            for err in errors:
                where = ".".join([prefix, *(str(p) for p in err.path)] if prefix else [str(p) for p in err.path])
                lines.append(f"  {where or '<top level>'}: {err.message}")
            raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))


def validate(config: dict, source: str = "config") -> dict:
    """Return a validated copy of ``config`` with defaults filled; raise ConfigError otherwise."""
    config = copy.deepcopy(config)
    _fill_and_check(config, schema(), source)
    problems = _check_dataset_keys(config)
    if problems:
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(problems))
    return config


def section_schema(section: str) -> dict:
    """The schema of one config section (``render``, ``segment.medsam``), standalone."""
    root = schema()
    node = root
    for key in section.split("."):
        node = node["properties"][key]
    return {**copy.deepcopy(node), "$defs": root["$defs"]}


def validate_settings(settings: dict, section: str, command: str, shared: tuple[str, ...] = ()) -> dict:
    """A stage's ``--settings`` JSON (one config section, as the workflow passes it) validated
    against that section of the schema, defaults filled. ``shared``: keys of the parent section
    the stage also takes (a segmenter's settings carry ``segment.read_max_side``)."""
    sch = section_schema(section)
    parent = section.rsplit(".", 1)[0]
    for key in shared:
        sch.setdefault("properties", {})[key] = section_schema(f"{parent}.{key}")
    if not isinstance(settings, dict):
        raise ConfigError(
            f"loclens {command} --settings: must be a JSON object (the {section} section), got {type(settings).__name__}"
        )
    settings = copy.deepcopy(settings)
    _fill_and_check(settings, sch, f"loclens {command} --settings ({section} section)", prefix=section)
    return settings


def load(path: str | Path, overrides: dict | None = None) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    raw.update(overrides or {})
    return validate(raw, source=str(path))


def dataset_source(name: str, dataset_cfg: dict) -> str:
    """The reader a dataset entry uses: its ``source`` key, else its name."""
    return dataset_cfg.get("source", name)
