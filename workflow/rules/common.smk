# Shared helpers: config validation, paths, per-dataset targets.
# Resources: every rule declares threads/mem_mb/runtime (and gpu=1 for the GPU rules);
# mem_mb grows with the attempt, so a retried job asks for more memory. Site specifics
# (partitions, accounts, GPU gres) live in the profiles.

import shlex
import sys

from sam4em.blocks.plan import block_ids as sam4em_block_ids
from sam4em.config import validate_config, write_effective_config
from sam4em.postprocess.instances import component_block_ids as sam4em_component_block_ids
from sam4em.postprocess.settings import ComponentSettings
from sam4em.settings import check_stage_settings

from sam4em.errors import Sam4emError

if not config:
    sys.exit(
        "sam4em: error: no config: run with a profile (`--profile profiles/local`, whose "
        "default is config/config.yaml) or name one with `--configfile my.yaml`"
    )
try:  # a bad config is one line naming the file, not a traceback
    _origin = ", ".join(map(str, workflow.configfiles)) or "config"
    validate_config(config, _origin)
    if workflow.is_main_process:  # once, before any job runs (jobs re-read this file)
        check_stage_settings(config, _origin)
except Sam4emError as exc:
    sys.exit(f"sam4em: error: {exc}")

R = config["results_dir"]
DATASETS = list(config["datasets"])
CONFIG_FILE = str(write_effective_config(config, ".snakemake/sam4em"))
# every rule calls the package with the interpreter that runs Snakemake
SAM4EM = f"{shlex.quote(sys.executable)} -m sam4em"
DEMO_DEST = config["demo"]["dest"].rstrip("/")


wildcard_constraints:
    dataset="|".join(DATASETS),
    split="train|val|test",
    cls="|".join(config["classes"]),


def res(*parts, dataset="{dataset}"):
    """The path of one of a dataset's results: res("eval", "metrics.csv") is
    results/{dataset}/eval/metrics.csv (the wildcard unless ``dataset`` is given)."""
    return "/".join([R, dataset, *parts])


def uses_demo_data(dataset):
    """True when a dataset reads from the demo folder, which fetch_demo provides."""
    ds = config["datasets"][dataset]
    labels = ds.get("labels") or {}
    paths = [ds["raw"], labels.get("source", ""), *(labels.get("masks") or {}).values()]
    return any(str(p).startswith(DEMO_DEST + "/") for p in paths)


def labelled_splits(dataset):
    """Splits that get training tiles (train and val, where configured)."""
    split = config["datasets"][dataset].get("split") or {}
    return [s for s in ("train", "val") if s in split]


def model_for(dataset):
    """The checkpoint that predicts ``dataset``: its own, or inference.model_from's."""
    if "train" in labelled_splits(dataset):
        return f"{R}/{dataset}/models/stage2.pt"
    source = config["inference"]["model_from"]
    return f"{R}/{source}/models/stage2.pt" if source else None


def dataset_targets(dataset):
    """Every final output of one dataset: its report when it has labels and a test
    split, else its predictions and instances, and its viewer layers (nothing but tiles
    without a model)."""
    ds = config["datasets"][dataset]
    tiles = expand(f"{R}/{dataset}/tiles/{{split}}.zarr", split=labelled_splits(dataset))
    if not model_for(dataset):
        return tiles
    layers = f"{R}/{dataset}/layers.json"
    if ds.get("labels") and "test" in (ds.get("split") or {}):
        return [*tiles, f"{R}/{dataset}/report.html", layers]
    return [
        *tiles,
        f"{R}/{dataset}/predictions.json",
        *expand(f"{R}/{dataset}/objects/{{cls}}.csv", cls=config["classes"]),
        layers,
    ]
