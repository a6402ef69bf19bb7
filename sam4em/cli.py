"""The ``sam4em`` command: one verb per pipeline stage (the Snakemake rules call these).

User errors (bad config, unreadable or mismatched input) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sam4em import __version__
from sam4em.errors import ConfigError, InputDataError, Sam4emError
from sam4em.progress import set_quiet
from sam4em.report import SERVE_HOST, SERVE_PORT

log = logging.getLogger("sam4em")
DEFAULT_CONFIG = "config/config.yaml"
DATASET_HELP = "dataset name (a key of the config's datasets)"
VOLUME_HELP = "volume.zarr written by import"


def _cmd_check_config(args: argparse.Namespace) -> None:
    from sam4em.config import load_config
    from sam4em.settings import check_stage_settings

    config = load_config(args.config)
    check_stage_settings(config, str(args.config))
    names = ", ".join(config["datasets"])
    print(f"{args.config}: valid ({len(config['datasets'])} dataset(s): {names})")


def _cmd_install_profile(args: argparse.Namespace) -> None:
    from sam4em.snakemake_profile import install_profile

    link, made = install_profile(args.source, args.name)
    name = link.name
    state = "linked" if made else "already linked"
    print(f"Snakemake profile '{name}' {state}: {link} -> {Path(args.source).resolve()}")
    print(f"(from the project folder: snakemake --profile {name} all)")


def _cmd_fetch_demo(args: argparse.Namespace) -> None:
    from sam4em.config import load_config
    from sam4em.data.demo import DEMO_SHA256, fetch_demo

    demo = load_config(args.config)["demo"]
    dest = fetch_demo(
        args.dest or demo["dest"],
        local_copies=args.local or demo["local_copies"],
        url=args.url or demo["url"],
        sha256=args.sha256 or demo["sha256"] or DEMO_SHA256,
    )
    print(f"demo data ready in {dest}")


def _cmd_import(args: argparse.Namespace) -> None:
    from sam4em.config import load_config
    from sam4em.data.importer import import_dataset
    from sam4em.data.settings import ImportSettings

    settings = ImportSettings.from_config(load_config(args.config), args.dataset)
    out = import_dataset(settings, args.out)
    print(f"wrote {out}")


def _cmd_tile(args: argparse.Namespace) -> None:
    from sam4em.config import dataset, load_config
    from sam4em.crops import roles
    from sam4em.tiling.settings import TilingSettings
    from sam4em.tiling.tiles import write_tiles

    config = load_config(args.config)
    if args.split not in roles(dataset(config, args.dataset)):
        raise ConfigError(
            f"datasets.{args.dataset}.split.{args.split}: not configured (no split range "
            f"or crop has role {args.split})"
        )
    out = write_tiles(args.volume, args.split, TilingSettings.from_config(config), args.out)
    print(f"wrote {out}")


def _cmd_plan_blocks(args: argparse.Namespace) -> None:
    from sam4em.blocks.plan import PlanSettings, write_plan
    from sam4em.config import load_config
    from sam4em.io.zarr_store import open_group

    config = load_config(args.config)
    shape = open_group(args.volume)["raw"].shape
    blocks = write_plan(args.out, shape, PlanSettings.from_config(config))
    print(f"wrote {args.out}: {len(blocks)} block(s) for volume {tuple(shape)}")


def _cmd_train(args: argparse.Namespace) -> None:
    from sam4em.config import load_config
    from sam4em.train.run_stage import run_stage
    from sam4em.train.settings import TrainSettings

    result = run_stage(
        TrainSettings.from_config(load_config(args.config), args.stage),
        train_tiles=args.train_tiles,
        val_tiles=args.val_tiles,
        out=Path(args.out),
        init=args.init,
        work_dir=Path(args.work_dir) if args.work_dir else None,
    )
    print(
        f"wrote {args.out}: {result.step} steps in {result.elapsed_s / 60:.1f} min, "
        f"best step {result.best_step} (mean val Dice {result.best_score:.4f})"
    )


def _cmd_predict_block(args: argparse.Namespace) -> None:
    from sam4em.config import load_config
    from sam4em.predict.block_job import predict_block
    from sam4em.predict.settings import InferenceSettings

    record = predict_block(
        InferenceSettings.from_config(load_config(args.config)),
        checkpoint=args.checkpoint,
        volume=args.volume,
        plan=args.plan,
        block_id=args.block,
        out=args.out,
        done=args.done or Path(args.out).parent / "blocks" / f"{args.block}.done",
    )
    print(f"block {record['block']}: done in {record['seconds']:.1f} s")


def _cmd_stitch(args: argparse.Namespace) -> None:
    from sam4em.predict.stitch import stitch

    markers = args.markers or Path(args.pred).parent / "blocks"
    record = stitch(args.volume, args.pred, args.plan, markers, args.summary, args.figure)
    print(f"stitched {record['blocks']} block(s) into {args.pred}")


def _cmd_components(args: argparse.Namespace) -> None:
    from sam4em.config import load_config
    from sam4em.postprocess.instances import ComponentJobs, components_for_class
    from sam4em.postprocess.settings import ComponentSettings
    from sam4em.predict.pred_store import require_complete

    config = load_config(args.config)
    if args.cls not in config["classes"]:
        raise ConfigError(f"--class: '{args.cls}' is not one of {config['classes']}")
    settings = ComponentSettings.from_config(config, args.cls)
    require_complete(args.pred)
    if args.step is None:
        if not args.objects:
            raise ConfigError("--objects is required unless --step is given")
        table = components_for_class(settings, args.pred, args.cls, args.out, args.objects)
        print(f"{args.cls}: {len(table)} object(s) in {args.out}/{args.cls}")
        return
    if not args.work:
        raise ConfigError("--step needs --work (the folder of the per-block files)")
    jobs = ComponentJobs(settings, Path(args.pred), args.cls, Path(args.out), Path(args.work))
    needs = {"label": "block", "contacts": "block", "relabel": "block", "finish": "objects"}
    if args.step in needs and not getattr(args, needs[args.step]):
        raise ConfigError(f"--step {args.step} needs --{needs[args.step]}")
    if args.step == "merge":
        print(f"{args.cls}: {jobs.merge()} object(s) after merging")
    elif args.step == "finish":
        table = jobs.finish(args.objects)
        print(f"{args.cls}: {len(table)} object(s) in {args.out}/{args.cls}")
    else:
        result = getattr(jobs, args.step)(args.block)
        print(f"{args.cls} {args.step} {args.block}: {'done' if result is None else result}")


def _cmd_analyze(args: argparse.Namespace) -> None:
    from sam4em.analysis.contacts import write_object_analysis
    from sam4em.analysis.settings import AnalysisSettings
    from sam4em.config import load_config
    from sam4em.io.zarr_store import VOLUME
    from sam4em.postprocess.settings import ComponentSettings

    config = load_config(args.config)
    settings = AnalysisSettings.from_config(config)
    if args.cls not in settings.analysed_classes():
        raise ConfigError(
            f"--class: '{args.cls}' is the first class of no pair in analysis.contacts or "
            f"analysis.distances (those are: {', '.join(settings.analysed_classes()) or 'none'})"
        )
    voxel = VOLUME.open(args.volume).attrs["sam4em"]["voxel_size_nm"]
    components = ComponentSettings.from_config(config, args.cls)
    table = write_object_analysis(
        settings, args.cls, args.instances, args.objects, voxel, components, args.out
    )
    print(f"{args.cls}: measured {len(table)} object(s) into {args.out}")


def _cmd_annotate_next(args: argparse.Namespace) -> None:
    from sam4em.analysis.settings import AnalysisSettings, labelled_crops
    from sam4em.config import load_config
    from sam4em.predict.pred_store import require_complete
    from sam4em.report.annotate_next import annotate_next
    from sam4em.report.viewer import read_layers

    config = load_config(args.config)
    require_complete(args.pred)
    settings = AnalysisSettings.from_config(config)
    crops = labelled_crops(config, args.dataset)
    table = annotate_next(
        settings, args.pred, args.instances, read_layers(args.results), crops, args.out
    )
    top = table.iloc[0] if len(table) else None
    where = (
        ""
        if top is None
        else f" (least sure: z {top['z0']}-{top['z1']}, y {top['y0']}, x {top['x0']}: "
        f"{top['uncertainty']:.3f} bits)"
    )
    print(f"wrote {args.out}: {len(table)} candidate crop(s){where}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from sam4em.config import load_config
    from sam4em.evaluate.run_evaluation import evaluate_dataset
    from sam4em.evaluate.settings import EvaluationSettings
    from sam4em.predict.pred_store import require_complete

    settings = EvaluationSettings.from_config(load_config(args.config), args.dataset)
    require_complete(args.pred)
    table = evaluate_dataset(
        settings, args.dataset, args.volume, args.pred, args.instances, args.out_dir
    )
    dice = table[table["metric"] == "dice"]
    print(", ".join(f"{r['class']} Dice {r['value']:.3f}" for _, r in dice.iterrows()))


def _cmd_report(args: argparse.Namespace) -> None:
    import yaml

    from sam4em.analysis.settings import AnalysisSettings
    from sam4em.config import load_config
    from sam4em.evaluate.settings import EvaluationSettings
    from sam4em.report.html_report import build_report

    config = load_config(args.config)
    settings = EvaluationSettings.from_config(config, args.dataset)
    text = yaml.safe_dump(config, sort_keys=False)
    analysis = AnalysisSettings.from_config(config)
    out = build_report(settings, args.dataset, args.results, args.out, args.figures, text, analysis)
    print(f"wrote {out}")


def _cmd_layers(args: argparse.Namespace) -> None:
    from sam4em.report.viewer import write_layers

    record = write_layers(args.volume, args.pred, args.instances, args.out)
    print(f"wrote {args.out}: {len(record['layers'])} layer(s)")


def _cmd_export_annotations(args: argparse.Namespace) -> None:
    from sam4em.report.paint import export_annotations

    if args.top < 1:
        raise ConfigError(f"--top: {args.top} must be at least 1")
    entries = export_annotations(args.results, args.top, args.out)
    print(f"wrote {len(entries)} crop(s) to paint into {args.out}")
    print(f"paint them:  sam4em view {args.out}")
    print(f"then paste {Path(args.out) / 'crops.yaml'} under datasets.NAME.crops of your config")


def _cmd_view(args: argparse.Namespace) -> None:
    from sam4em.report.paint import open_in_napari, read_manifest
    from sam4em.report.viewer import napari_command, neuroglancer_url, read_layers, serve

    manifest = read_manifest(args.results)
    if manifest is not None:
        open_in_napari(args.results, manifest)
        print(f"saved the painted labels into {args.results}/*/labels.tif")
        return
    record = read_layers(args.results)
    print(f"napari:       {napari_command(record, args.results)}")
    if not args.serve:
        url = neuroglancer_url(record, f"http://{args.host}:{args.port}")
        print(f"neuroglancer: {url}")
        print(f"              (serve the data first: sam4em view {args.results} --serve)")
        return
    try:
        server = serve(args.results, args.host, args.port)
    except OSError as exc:
        raise InputDataError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    host, port = server.server_address[:2]
    print(f"serving {args.results} on http://{host}:{port} (Ctrl-C stops)")
    print(f"neuroglancer: {neuroglancer_url(record, f'http://{host}:{port}')}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _store(kind_name: str) -> Callable[[str], str]:
    """An argparse type: the path of an existing store of kind ``kind_name`` (the
    :mod:`sam4em.io.zarr_store` constant), else a one-line usage error."""

    def check(value: str) -> str:
        from sam4em.io import zarr_store

        try:
            getattr(zarr_store, kind_name).check(value)
        except Sam4emError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    check.__name__ = kind_name.lower()
    return check


_existing_volume = _store("VOLUME")
_existing_pred = _store("PREDICTION")
_existing_instances = _store("INSTANCES")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sam4em`` command."""
    parser = _Parser(prog="sam4em", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sam4em {__version__}")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars; only warnings and errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], None], help: str, config: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        if config:
            p.add_argument(
                "--config",
                help=f"config file (YAML; default: {DEFAULT_CONFIG} in the current folder)",
            )
        return p

    add("check-config", _cmd_check_config, "validate a config file")

    p = add(
        "install-profile",
        _cmd_install_profile,
        "make a project profile a name Snakemake finds (snakemake --profile slurm)",
        False,
    )
    p.add_argument(
        "--source", default="profiles/slurm", help="the profile folder (default: profiles/slurm)"
    )
    p.add_argument("--name", help="the name to install it as (default: the folder's name)")

    p = add("fetch-demo", _cmd_fetch_demo, "make the VNC demo stack available under resources/")
    p.add_argument("--dest", help="destination folder (default: demo.dest)")
    p.add_argument("--local", action="append", help="local copy to use (repeatable)")
    p.add_argument("--url", help="archive URL to download when there is no local copy")
    p.add_argument("--sha256", help="expected content checksum of the image files")

    p = add("import", _cmd_import, "import a dataset's raw and labels into volume.zarr")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--out", required=True, help="output volume.zarr")

    p = add("tile", _cmd_tile, "cut one split of volume.zarr into training tiles")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--split", required=True, choices=["train", "val", "test"], help="which split")
    p.add_argument("--volume", required=True, type=_existing_volume, help=VOLUME_HELP)
    p.add_argument("--out", required=True, help="output tiles/{split}.zarr")

    p = add("train", _cmd_train, "fine-tune the model: stage 1 (2D) or stage 2 (3D memory)")
    p.add_argument(
        "--stage", type=int, choices=[1, 2], required=True, help="1: 2D; 2: 3D with memory"
    )
    p.add_argument("--train-tiles", nargs="+", required=True, help="train tile stores")
    p.add_argument("--val-tiles", nargs="*", default=[], help="val tile stores (model selection)")
    p.add_argument("--out", required=True, help="models/stage{1,2}.pt (the best checkpoint)")
    p.add_argument("--init", help="stage 2: the stage-1 checkpoint to start from")
    p.add_argument("--work-dir", help="where last.pt and best.pt live (default: next to --out)")

    p = add("plan-blocks", _cmd_plan_blocks, "cut the volume into inference blocks (blocks.json)")
    p.add_argument("--volume", required=True, type=_existing_volume, help=VOLUME_HELP)
    p.add_argument("--out", required=True, help="output blocks.json")

    p = add("predict-block", _cmd_predict_block, "predict one block of the plan into pred.zarr")
    p.add_argument("--checkpoint", required=True, help="trained model (models/stage2.pt)")
    p.add_argument("--volume", required=True, type=_existing_volume, help=VOLUME_HELP)
    p.add_argument("--plan", required=True, help="blocks.json")
    p.add_argument("--block", required=True, help="block id from blocks.json")
    p.add_argument("--out", required=True, help="pred.zarr (created by the first block)")
    p.add_argument(
        "--done", help="marker written last (default: blocks/{block}.done next to --out)"
    )

    p = add(
        "stitch",
        _cmd_stitch,
        "check all blocks are done; viewer levels, figure, summary, then mark it complete",
        False,
    )
    p.add_argument("--volume", required=True, type=_existing_volume, help=VOLUME_HELP)
    p.add_argument("--pred", required=True, type=_existing_pred, help="pred.zarr")
    p.add_argument("--plan", required=True, help="blocks.json")
    p.add_argument("--markers", help="folder of {block}.done (default: blocks/ next to --pred)")
    p.add_argument("--summary", required=True, help="output summary JSON")
    p.add_argument("--figure", required=True, help="output quick-look PNG")

    p = add("components", _cmd_components, "3D connected components of one class, block-wise")
    p.add_argument("--pred", required=True, type=_existing_pred, help="pred.zarr")
    p.add_argument("--class", dest="cls", required=True, help="class name")
    p.add_argument("--out", required=True, help="instances.zarr (the class array goes inside)")
    p.add_argument("--objects", help="output objects/{class}.csv (whole run and --step finish)")
    p.add_argument(
        "--step",
        choices=("label", "contacts", "merge", "relabel", "finish"),
        help="one job of the block-wise run (label, contacts, relabel: per --block; "
        "merge, finish: once); default: all of them",
    )
    p.add_argument("--block", help="block id (label, contacts, relabel)")
    p.add_argument("--work", help="folder of the per-block files (with --step)")

    p = add("evaluate", _cmd_evaluate, "metrics on the test slices (voxel, object, per slice)")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--volume", required=True, type=_existing_volume, help=VOLUME_HELP)
    p.add_argument("--pred", required=True, type=_existing_pred, help="pred.zarr")
    p.add_argument("--instances", required=True, type=_existing_instances, help="instances.zarr")
    p.add_argument("--out-dir", required=True, help="folder for metrics*.csv")

    p = add("analyze", _cmd_analyze, "cross-class measures of one class's objects")
    p.add_argument("--class", dest="cls", required=True, help="class name")
    p.add_argument("--volume", required=True, type=_existing_volume, help=VOLUME_HELP)
    p.add_argument("--instances", required=True, type=_existing_instances, help="instances.zarr")
    p.add_argument("--objects", required=True, help="the objects/ folder ({class}.csv)")
    p.add_argument("--out", required=True, help="output analysis/{class}.csv")

    p = add("annotate-next", _cmd_annotate_next, "rank the regions where the model is least sure")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--pred", required=True, type=_existing_pred, help="pred.zarr")
    p.add_argument("--instances", required=True, type=_existing_instances, help="instances.zarr")
    p.add_argument("--results", required=True, help="results/{dataset} folder (its layers.json)")
    p.add_argument("--out", required=True, help="output annotate_next.csv")

    p = add(
        "export-annotations",
        _cmd_export_annotations,
        "write the least sure candidate crops as EM + empty label images to paint",
        False,
    )
    p.add_argument("results", help="a dataset's results folder (its annotate_next.csv)")
    p.add_argument("--top", type=int, default=4, help="how many crops (default 4)")
    p.add_argument("--out", required=True, help="a new folder for the crops and crops.yaml")

    p = add("report", _cmd_report, "one self-contained HTML report of a dataset")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--results", required=True, help="results/{dataset} folder")
    p.add_argument("--out", required=True, help="output report.html")
    p.add_argument("--figures", required=True, help="folder for the report's PNG figures")

    p = add("layers", _cmd_layers, "list predicted objects as label images of volume.zarr", False)
    p.add_argument("--volume", required=True, type=_existing_volume, help=VOLUME_HELP)
    p.add_argument("--pred", required=True, type=_existing_pred, help="pred.zarr")
    p.add_argument("--instances", required=True, type=_existing_instances, help="instances.zarr")
    p.add_argument("--out", required=True, help="output layers.json")

    p = add("view", _cmd_view, "open a dataset's results in napari or neuroglancer", False)
    p.add_argument(
        "results",
        help="a dataset's results folder (results/{dataset}), or a folder written by "
        "export-annotations (opens its crops in napari to paint)",
    )
    p.add_argument("--serve", action="store_true", help="serve the folder for neuroglancer")
    p.add_argument("--host", default=SERVE_HOST, help="address to serve on (--serve)")
    p.add_argument(
        "--port", type=int, default=SERVE_PORT, help="port to serve on (0: any free one)"
    )
    return parser


def _one_line(exc: BaseException) -> str:
    """An error's message on one line (messages that quote other tools can span several)."""
    return " ".join(str(exc).split())


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"sam4em: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _config_path(given: str | None) -> str:
    """``--config`` as given, else the project layout's default in the current folder;
    a ConfigError saying where it looked when there is none."""
    if given is not None:
        return given
    if Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG
    raise ConfigError(
        f"no --config given and no {DEFAULT_CONFIG} in the current folder ({Path.cwd()}); "
        "run from the project folder or pass --config my.yaml"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sam4em`` command; returns the exit status."""
    args: Any = build_parser().parse_args(argv)
    set_quiet(args.quiet)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # what these libraries log or warn about reaches the user as sam4em's own one-line
    # error (a damaged TIFF) or is expected (files of other tools inside a zarr folder)
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"zarr(\.|$)")
    if os.environ.get("SLURM_JOB_ID"):  # recorded in each job's log
        partition = os.environ.get("SLURM_JOB_PARTITION", "?")
        print(f"sam4em: SLURM job {os.environ['SLURM_JOB_ID']}, partition {partition}",
              file=sys.stderr)  # fmt: skip
    try:
        if hasattr(args, "config"):
            args.config = _config_path(args.config)
        args.func(args)
    except (Sam4emError, OSError) as exc:  # OSError: a read-only folder, a full disk ...
        print(f"sam4em: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sam4em: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
