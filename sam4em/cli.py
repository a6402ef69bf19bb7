"""The ``sam4em`` command: one verb per pipeline stage (the Snakemake rules call these).

User errors (bad config, unreadable or mismatched input) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sam4em import __version__
from sam4em.errors import Sam4emError

log = logging.getLogger("sam4em")


def _cmd_check_config(args: argparse.Namespace) -> None:
    from sam4em.config import load_config

    config = load_config(args.config)
    names = ", ".join(config["datasets"])
    print(f"{args.config}: valid ({len(config['datasets'])} dataset(s): {names})")


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
    from sam4em.io.importer import import_dataset

    out = import_dataset(load_config(args.config), args.dataset, args.out)
    print(f"wrote {out}")


def _cmd_tile(args: argparse.Namespace) -> None:
    from sam4em.config import dataset, load_config, split_slices
    from sam4em.errors import ConfigError
    from sam4em.tiling.tiles import write_tiles

    config = load_config(args.config)
    try:
        slices = split_slices(dataset(config, args.dataset), args.split)
    except ConfigError as exc:
        raise ConfigError(f"datasets.{args.dataset}.{exc}") from None
    out = write_tiles(args.volume, args.split, slices, config["tiling"], args.out)
    print(f"wrote {out}")


def _cmd_plan_blocks(args: argparse.Namespace) -> None:
    from sam4em.blocks.plan import write_plan
    from sam4em.config import load_config
    from sam4em.io.zarr_store import open_group

    config = load_config(args.config)
    shape = open_group(args.volume)["raw"].shape
    blocks = write_plan(args.out, shape, config["inference"])
    print(f"wrote {args.out}: {len(blocks)} block(s) for volume {tuple(shape)}")


def _existing_volume(value: str) -> str:
    if not (Path(value) / "zarr.json").is_file():
        raise argparse.ArgumentTypeError(f"{value}: not a volume.zarr written by 'sam4em import'")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sam4em`` command."""
    parser = argparse.ArgumentParser(prog="sam4em", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sam4em {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], None], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("--config", default="config/config.yaml", help="config file (YAML)")
        return p

    add("check-config", _cmd_check_config, "validate a config file")

    p = add("fetch-demo", _cmd_fetch_demo, "make the VNC demo stack available under resources/")
    p.add_argument("--dest", help="destination folder (default: demo.dest)")
    p.add_argument("--local", action="append", help="local copy to use (repeatable)")
    p.add_argument("--url", help="archive URL to download when there is no local copy")
    p.add_argument("--sha256", help="expected content checksum of the image files")

    p = add("import", _cmd_import, "import a dataset's raw and labels into volume.zarr")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="output volume.zarr")

    p = add("tile", _cmd_tile, "cut one split of volume.zarr into training tiles")
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", required=True, choices=["train", "val", "test"])
    p.add_argument("--volume", required=True, type=_existing_volume)
    p.add_argument("--out", required=True, help="output tiles/{split}.zarr")

    p = add("plan-blocks", _cmd_plan_blocks, "cut the volume into inference blocks (blocks.json)")
    p.add_argument("--volume", required=True, type=_existing_volume)
    p.add_argument("--out", required=True, help="output blocks.json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sam4em`` command; returns the exit status."""
    args: Any = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except Sam4emError as exc:
        print(f"sam4em: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sam4em: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
