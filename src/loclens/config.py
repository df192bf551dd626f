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


def validate(config: dict, source: str = "config") -> dict:
    """Return a validated copy of ``config`` with defaults filled; raise ConfigError otherwise."""
    config = copy.deepcopy(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema())
    # Two passes: defaults are inserted by the first, so nested defaults of inserted
    # objects (for example segment.medsam.otsu) are filled by the second.
    for _ in range(2):
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
        if errors:
            lines = []
            for err in errors:
                where = ".".join(str(p) for p in err.path) or "<top level>"
                lines.append(f"  {where}: {err.message}")
            raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))
    problems = _check_dataset_keys(config)
    if problems:
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(problems))
    return config


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
