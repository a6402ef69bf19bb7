"""Loading and validating the configuration (``config/config.yaml``).

Validation has two layers: the JSON schema (``sam4em/schemas/config.schema.yaml``, shipped
in the package, checked with ``jsonschema``, which also fills in the defaults as
``snakemake.utils.validate`` would, without needing Snakemake) and checks that a schema
cannot express (classes named in labels, split ranges, block/chunk alignment).
Checks that need the data itself (files exist, ranges inside the volume, shapes agree)
happen when the data is read, in :mod:`sam4em.data.importer`.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from sam4em.crops import check_crops, dataset_crops, label_spec_classes, roles
from sam4em.errors import ConfigError
from sam4em.io.zarr_store import chunk_misfit

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


def schema_path() -> Path:
    """Location of the config JSON schema shipped with the package."""
    return Path(str(resources.files("sam4em") / "schemas" / "config.schema.yaml")).resolve()


def _key_path(parts: list[Any] | tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _strict_integer(checker: Any, instance: Any) -> bool:
    # JSON Schema counts 32.0 as an integer; Python code downstream (range, shapes) does not
    return isinstance(instance, int) and not isinstance(instance, bool)


_StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


def _filling_defaults(validator_class: Any) -> Any:
    """``validator_class`` that, as it checks an object, first sets each of its missing
    properties that has a ``default`` (a copy), so nested defaults fill in as well."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator: Any, props: dict, instance: Any, schema: dict) -> Any:
        if isinstance(instance, dict):
            for key, sub in props.items():
                if key not in instance and isinstance(sub, dict) and "default" in sub:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


_FillingValidator = _filling_defaults(_StrictValidator)


def _schema_error(config: dict[str, Any], schema: dict[str, Any]) -> str | None:
    validator = _StrictValidator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return None
    message = error.message
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        # A labels block: say which of the two forms was meant.
        message = "expected either {source, values} or {masks}, got keys " + ", ".join(
            sorted(error.instance)
        )
    elif error.validator == "oneOf" and "description" in error.schema:
        message = f"{error.instance!r} is not one of the forms: {error.schema['description']}"
    return f"{_key_path(list(error.absolute_path))}: {message}"


def validate_config(config: dict[str, Any], origin: str = "config") -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it.

    Raises :class:`ConfigError` with a one-line message naming the key.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{origin}: expected a mapping of keys, got {type(config).__name__}")
    tiling = config.get("tiling")
    if isinstance(tiling, dict) and "tile_size" in tiling:
        raise ConfigError(
            f"{origin}: tiling.tile_size was removed: tiles are the model's input, so their "
            "side is model.img_size (delete tiling.tile_size; set model.img_size instead)"
        )
    with open(schema_path()) as fh:
        schema = yaml.safe_load(fh)
    problem = _schema_error(config, schema)
    if problem:
        raise ConfigError(f"{origin}: {problem}")
    for _ in _FillingValidator(schema).iter_errors(config):
        pass  # none: the check above passed; the pass fills in the defaults
    _check_semantics(config, origin)
    return config


def _check_semantics(config: dict[str, Any], origin: str) -> None:
    classes = config["classes"]
    for name, ds in config["datasets"].items():
        key = f"datasets.{name}"
        labels = ds.get("labels") or {}
        named = labels.get("values") or labels.get("masks") or {}
        for cls in named:
            if cls not in classes:
                raise ConfigError(
                    f"{origin}: {key}.labels: class '{cls}' is not in classes {classes}"
                )
        split = ds.get("split") or {}
        if split and not labels:
            raise ConfigError(f"{origin}: {key}.split: a split needs labels, and none are set")
        for part, (first, last) in split.items():
            if first > last:
                raise ConfigError(
                    f"{origin}: {key}.split.{part}: first slice {first} > last {last}"
                )
        parts = [(p, split[p]) for p in SPLITS if p in split]
        for i, (a, (a0, a1)) in enumerate(parts):
            for b, (b0, b1) in parts[i + 1 :]:
                if a0 <= b1 and b0 <= a1:
                    raise ConfigError(
                        f"{origin}: {key}.split: {a} and {b} overlap at slices "
                        f"{max(a0, b0)}-{min(a1, b1)}"
                    )
        for spec in [c.labels for c in dataset_crops(ds, name) if c.labels]:
            for cls in label_spec_classes(spec):
                if cls not in classes:
                    raise ConfigError(
                        f"{origin}: {key}.crops: labels class '{cls}' is not in classes {classes}"
                    )
        try:
            check_crops(ds, name, classes)
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        if (
            ds.get("crops")
            and "train" not in roles(ds)
            and config.get("inference", {}).get("model_from") in (None, name)
        ):
            raise ConfigError(
                f"{origin}: {key}.crops: no crop has role train and inference.model_from "
                "names no other dataset: nothing would train the model that predicts it"
            )
        rr = ds.get("raw_range")
        if rr and rr[0] >= rr[1]:
            raise ConfigError(f"{origin}: {key}.raw_range: low {rr[0]} must be below high {rr[1]}")
    tiling, model = config["tiling"], config["model"]
    if tiling["stride"] > model["img_size"]:
        raise ConfigError(
            f"{origin}: tiling.stride: {tiling['stride']} is larger than the tile side "
            f"model.img_size {model['img_size']} (tiles would leave gaps)"
        )
    train = config["train"]
    for cls in train["balance"] or {}:
        if cls not in classes:
            raise ConfigError(f"{origin}: train.balance: class '{cls}' is not in classes {classes}")
    for name in train["pretrain_datasets"]:
        ds = config["datasets"].get(name)
        if ds is None or "train" not in roles(ds):
            raise ConfigError(
                f"{origin}: train.pretrain_datasets: '{name}' is not a configured dataset "
                "with a train split or train crops"
            )
    if model["conv_stem"] and (model["checkpoint"] or not model["high_res"]):
        raise ConfigError(
            f"{origin}: model.conv_stem: needs model.high_res and a random-initialised "
            "encoder (it replaces the patch embedding that official SAM weights need)"
        )
    slots = model["memory"]["slots"]
    if tiling["sequence_length"] < slots + 1:
        raise ConfigError(
            f"{origin}: tiling.sequence_length: {tiling['sequence_length']} is below "
            f"model.memory.slots + 1 = {slots + 1}: inference fills all {slots} memory slots, "
            "so training sequences must too"
        )
    if model["checkpoint"] is None and model["preset"] != "vit_tiny":
        log.warning(
            "model.preset %s without model.checkpoint: random initialisation", model["preset"]
        )
    inf = config["inference"]
    for key in ("inference", "components"):
        shape = config[key]["block_shape"]
        if shape and (why := chunk_misfit(shape, inf["chunks"])):
            raise ConfigError(
                f"{origin}: {key}.block_shape: {why} (inference.chunks; block cores must "
                "align with the chunk grid)"
            )
    if inf["tile_overlap"] is not None and inf["tile_overlap"] >= model["img_size"]:
        raise ConfigError(
            f"{origin}: inference.tile_overlap: {inf['tile_overlap']} must be smaller than "
            f"model.img_size {model['img_size']}"
        )
    for key in ("threshold", "min_voxels", "min_volume_nm3", "min_z", "open_nm", "close_nm"):
        value = config["components"][key]
        unknown = sorted(set(value) - set(classes)) if isinstance(value, dict) else []
        if unknown:
            raise ConfigError(
                f"{origin}: components.{key}: unknown class '{unknown[0]}' (classes: {classes})"
            )
    source = inf["model_from"]
    if source is not None:
        ds = config["datasets"].get(source)
        if ds is None or "train" not in roles(ds):
            raise ConfigError(
                f"{origin}: inference.model_from: '{source}' is not a configured dataset "
                "with a train split or train crops"
            )


def class_setting(value: Any, cls: str, default: Any) -> Any:
    """A per-class setting given either as one value or as ``{class: value}``."""
    if isinstance(value, dict):
        return value.get(cls, default)
    return default if value is None else value


def threshold_level(
    configured: float | None, cls: str, chosen: Mapping[str, float] | None = None
) -> int:
    """The uint8 probability at or above which a voxel belongs to ``cls``: the
    ``configured`` threshold when set, else the one ``chosen`` on val for the model
    (``pred.zarr``'s ``thresholds`` attribute, written by inference), else 0.5."""
    value = configured if configured is not None else (chosen or {}).get(cls, 0.5)
    return int(np.ceil(float(value) * 255))


def probability_level(
    config: dict[str, Any], cls: str, chosen: Mapping[str, float] | None = None
) -> int:
    """:func:`threshold_level` with ``components.threshold`` of ``config``. Every mask
    the project shows or scores is cut at this level."""
    return threshold_level(class_setting(config["components"]["threshold"], cls, None), cls, chosen)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    return validate_config(config if config is not None else {}, str(path))


def dataset(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The config block of dataset ``name``; a clear error if it is not configured."""
    try:
        return config["datasets"][name]
    except KeyError:
        known = ", ".join(config["datasets"])
        raise ConfigError(f"datasets.{name}: no such dataset (configured: {known})") from None


def split_slices(ds: dict[str, Any], split: str) -> range:
    """The z slices of ``split`` as a range (config ranges are inclusive)."""
    if split not in SPLITS:
        raise ConfigError(f"split '{split}': expected one of {', '.join(SPLITS)}")
    rng = (ds.get("split") or {}).get(split)
    if rng is None:
        raise ConfigError(f"split.{split}: not configured for this dataset")
    return range(rng[0], rng[1] + 1)


def write_effective_config(config: dict[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write the validated config (overrides included) to a content-addressed YAML file.

    Workflow jobs read this file, so every job sees exactly the config the workflow was
    started with; a changed config gets a new name and therefore a new command line.
    """
    import hashlib

    from sam4em.io.atomic import write_bytes_atomic

    text = yaml.safe_dump(config, sort_keys=True).encode()
    path = Path(folder) / f"config-{hashlib.sha256(text).hexdigest()[:12]}.yaml"
    if not path.is_file() or path.read_bytes() != text:
        write_bytes_atomic(path, text)
    return path
