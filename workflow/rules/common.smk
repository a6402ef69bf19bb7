# Shared helpers: config validation, paths, per-dataset targets.
# Resources: every rule declares threads/mem_mb/runtime (and gpu=1 for the GPU rules);
# mem_mb grows with the attempt, so a retried job asks for more memory. Site specifics
# (partitions, accounts, GPU gres) live in the profiles.
# Reruns: every rule declares `params: settings=settings_of(rule)`, the digest of the
# settings its command reads (sam4em.settings.rule_settings), so Snakemake's params
# trigger reruns exactly the jobs a config edit affects; `all` asks for every output of
# the chain, so a missing one anywhere is rebuilt, and what follows it after it.

import shlex
import sys

from sam4em.analysis.settings import AnalysisSettings
from sam4em.blocks.plan import block_ids as sam4em_block_ids
from sam4em.config import validate_config, write_effective_config
from sam4em.crops import roles as sam4em_roles
from sam4em.data.importer import input_paths, inputs_fingerprint
from sam4em.data.settings import ImportSettings
from sam4em.postprocess.instances import component_block_ids as sam4em_component_block_ids
from sam4em.postprocess.settings import ComponentSettings
from sam4em.settings import check_stage_settings, rule_settings

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
ANALYSIS = AnalysisSettings.from_config(config)


wildcard_constraints:
    dataset="|".join(DATASETS),
    split="train|val|test",
    cls="|".join(config["classes"]),


def res(*parts, dataset="{dataset}"):
    """The path of one of a dataset's results: res("eval", "metrics.csv") is
    results/{dataset}/eval/metrics.csv (the wildcard unless ``dataset`` is given)."""
    return "/".join([R, dataset, *parts])


def settings_of(rule):
    """A rule's `params`: the digest of the settings its command reads, for one job."""
    return lambda wc: rule_settings(
        config, rule, wc.get("dataset"), wc.get("split"), wc.get("cls")
    )


def import_sources(wildcards):
    """A dataset's raw and label files or folders; the demo folder (fetch_demo's output)
    for paths inside it."""
    paths = input_paths(ImportSettings.from_config(config, wildcards.dataset))
    demo = [str(p).startswith(DEMO_DEST + "/") for p in paths]
    return list(dict.fromkeys(DEMO_DEST if d else str(p) for p, d in zip(paths, demo)))


def import_fingerprint(wildcards):
    """The names, sizes and times of the files a user's sources hold (none for the demo
    folder: fetch_demo checks its content)."""
    if DEMO_DEST in import_sources(wildcards):
        return "demo"
    return inputs_fingerprint(ImportSettings.from_config(config, wildcards.dataset))


def labelled_splits(dataset):
    """Roles that get training tiles (train and val, where a split range or crop has them)."""
    taken = sam4em_roles(config["datasets"][dataset])
    return [s for s in ("train", "val") if s in taken]


def model_for(dataset):
    """The checkpoint that predicts ``dataset``: its own, or inference.model_from's."""
    if "train" in labelled_splits(dataset):
        return f"{R}/{dataset}/models/stage2.pt"
    source = config["inference"]["model_from"]
    return f"{R}/{source}/models/stage2.pt" if source else None


def evaluated(dataset):
    """True when a dataset has a test split or test crop (it gets metrics and a report)."""
    return "test" in sam4em_roles(config["datasets"][dataset])


def dataset_targets(dataset):
    """Every output of one dataset's chain that the block plan does not decide, the
    intermediate ones included (Snakemake rebuilds a missing file only when something
    asks for it): volume, tiles, models, plan, predictions, each class's merge files and
    objects, the cross-class measures, metrics, report, viewer layers and the
    annotate-next list (nothing but tiles without a model)."""
    splits = labelled_splits(dataset)
    out = [res("volume.zarr", dataset=dataset)]
    out += expand(res("tiles", "{split}.zarr", dataset=dataset), split=splits)
    if not model_for(dataset):
        return out
    if "train" in splits:
        out += expand(res("models", "stage{stage}{suffix}", dataset=dataset), stage=(1, 2),
                      suffix=(".pt", "_history.csv", "_curves.png"))  # fmt: skip
    out += [res(name, dataset=dataset) for name in ("blocks.json", "predictions.json")]
    out.append(res("figures", "predictions.png", dataset=dataset))
    for cls in config["classes"]:
        names = ("merge.json", "final.npy", "table.csv")
        out += [res("components", cls, name, dataset=dataset) for name in names]
        out.append(res("objects", f"{cls}.csv", dataset=dataset))
    out += [res("analysis", f"{c}.csv", dataset=dataset) for c in ANALYSIS.analysed_classes()]
    if evaluated(dataset):
        names = ("metrics.csv", "metrics_per_crop.csv", "metrics_per_slice.csv",
                 "objects_matched.csv")  # fmt: skip
        out += [res("eval", name, dataset=dataset) for name in names]
        out.append(res("report.html", dataset=dataset))
        names = ("per_slice_dice.png", "object_sizes.png", "analysis.png", "overlays")
        out += [res("figures", "report", name, dataset=dataset) for name in names]
    out += [res(name, dataset=dataset) for name in ("layers.json", "annotate_next.csv")]
    return out


def planned_blocks(dataset):
    """The inference block ids of a dataset (known once the plan_blocks checkpoint has run)."""
    return sam4em_block_ids(checkpoints.plan_blocks.get(dataset=dataset).output[0])


def planned_component_blocks(dataset, cls):
    """The components block ids of one class of a dataset (likewise)."""
    plan = checkpoints.plan_blocks.get(dataset=dataset).output[0]
    return sam4em_component_block_ids(plan, ComponentSettings.from_config(config, cls))


def dataset_block_targets(dataset):
    """The per-block outputs of one dataset: each inference block's marker and each
    components block's files."""
    if not model_for(dataset):
        return []
    out = [res("blocks", f"{b}.done", dataset=dataset) for b in planned_blocks(dataset)]
    for cls in config["classes"]:
        out += [res("components", cls, f"{b}{ext}", dataset=dataset)
                for b in planned_component_blocks(dataset, cls)
                for ext in (".npz", ".pairs.npy", ".done")]  # fmt: skip
    return out
