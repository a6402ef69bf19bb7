"""The config's defaults are filled by sam4em's own validator (no Snakemake needed, as on
a bare GPU machine) exactly as Snakemake's schema validation fills them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from sam4em.config import schema_path, validate_config
from sam4em.errors import ConfigError
from tests.conftest import tiny_config, tiny_dataset

ROOT = Path(__file__).resolve().parents[1]


def _configs(tmp_path: Path, vnc: Path) -> dict[str, dict]:
    minimal = {"classes": ["mito"], "datasets": {"a": {"raw": "a.tif", "voxel_size": [1, 1, 1]}}}
    return {
        "default": yaml.safe_load((ROOT / "config" / "config.yaml").read_text()),
        "own-data example": yaml.safe_load((ROOT / "config/own-data.example.yaml").read_text()),
        "tiny": tiny_config(tiny_dataset(tmp_path / "crop", vnc)),
        "minimal": minimal,
    }


def test_defaults_equal_snakemakes(tmp_path: Path, vnc: Path) -> None:
    for name, config in _configs(tmp_path, vnc).items():
        ours = validate_config(copy.deepcopy(config), name)
        theirs = copy.deepcopy(config)
        validate(theirs, str(schema_path()), set_default=True)
        assert ours == theirs, name
        assert ours != config or name == "default", f"{name}: no default was filled in"
    assert ours["inference"]["tta"] is False and ours["train"]["stage1"]["batch_size"] > 0


def test_defaults_do_not_hide_errors() -> None:
    bad = {"classes": ["mito"], "datasets": {"a": {"raw": "a.tif", "voxel_size": [1, 1, 1]}},
           "inference": {"max_batch": "many"}}  # fmt: skip
    with pytest.raises(ConfigError, match="inference.max_batch"):
        validate_config(bad)
