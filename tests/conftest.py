"""Shared fixtures: paths, the real VNC stack, running the CLI as users do."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import xdist_groups
from tests.slurm_background import SlurmRun

REPO = Path(__file__).resolve().parents[1]
SHARED_VNC = REPO.parent / "shared" / "data" / "drosophila-vnc"


@pytest.fixture
def http_folder(tmp_path):
    """(folder, base URL) of a static HTTP server on a loopback port, serving the folder."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def vnc() -> Path:
    """The real Drosophila VNC stack beside the checkout (../shared/data/drosophila-vnc)."""
    if not (SHARED_VNC / "stack1" / "raw").is_dir():
        pytest.skip(f"real VNC data not found at {SHARED_VNC}")
    return SHARED_VNC


def vnc_dataset(vnc: Path) -> dict[str, Any]:
    """The config block of the real VNC stack 1 with the demo's classes and split."""
    return {
        "raw": str(vnc / "stack1" / "raw"),
        "labels": {
            "source": str(vnc / "stack1" / "labels"),
            "values": {"glia": 159, "mito": 191, "synapse": 223},
        },
        "voxel_size": [50, 4.6, 4.6],
        "split": {"train": [0, 13], "val": [14, 15], "test": [16, 19]},
    }


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sam4em ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "sam4em", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def write_config(path: Path, datasets: dict[str, Any], **overrides: Any) -> Path:
    """Write a config file with the given datasets and top-level overrides."""
    config: dict[str, Any] = {"classes": ["glia", "mito", "synapse"], "datasets": datasets}
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


#: a page is self-contained when it fetches nothing: no image, script or stylesheet from
#: elsewhere (plain links, which nothing follows by itself, are allowed)
SELF_CONTAINED = r"""(src=|<link[^>]*href=)["']?(https?:)?//"""


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A user error: exit 2, one line on stderr naming what is wrong, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("sam4em: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake_command(
    repo: Path, workdir: Path, *args: str, config: Path | None = None, profile: Path | None = None
) -> list[str]:
    """The command line that runs Snakemake on the project's workflow in ``workdir``
    (local profile and 2 cores by default)."""
    cmd = [
        *SNAKEMAKE,
        "--snakefile", str(repo / "workflow" / "Snakefile"),
        "--directory", str(workdir),
        "--profile", str(profile or repo / "profiles" / "local"),
        *(["--cores", "2"] if profile is None else []),
        *args,
    ]  # fmt: skip
    if config is not None:  # last: --configfile takes every word after it
        cmd += ["--configfile", str(config)]
    return cmd


def snakemake(
    repo: Path,
    workdir: Path,
    *args: str,
    config: Path | None = None,
    profile: Path | None = None,
    timeout: float = 1800,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run Snakemake on the project's workflow in ``workdir`` (local profile by default)."""
    cmd = snakemake_command(repo, workdir, *args, config=config, profile=profile)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def local_run(repo, vnc, tmp_path_factory):
    """The default config's whole pipeline run once with Snakemake (short training)."""
    workdir = tmp_path_factory.mktemp("wf")
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    config["demo"]["local_copies"] = [str(vnc)]
    # a short training run: this test is about the workflow, not accuracy
    config["train"]["stage1"].update(steps=20, val_every=10, warmup_steps=2, minutes=None)
    config["train"]["stage2"].update(steps=1, val_every=1, warmup_steps=1, minutes=None)
    config["inference"]["tta"] = False  # 8x the inference work, tested on its own
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    r = snakemake(repo, workdir, "all", config=cfg)
    assert r.returncode == 0, r.stderr[-4000:]
    return workdir, cfg, config


def job_counts(output: str) -> dict[str, int]:
    """The last "Job stats" table of a Snakemake run or dry run: {rule: jobs}; {} when
    there is nothing to be done."""
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


TINY_CROP = (slice(0, 8), slice(704, 832), slice(256, 384))  # all three classes inside


def tiny_dataset(folder: Path, vnc: Path) -> dict[str, Any]:
    """Write an 8 x 128 x 128 crop of the real VNC stack 1 as slice folders (raw TIFFs,
    label PNGs) under ``folder`` and return its dataset config block (paths relative to
    ``folder``'s parent, where Snakemake runs)."""
    from sam4em.data.demo import write_crop

    write_crop(vnc / "stack1", folder, *TINY_CROP)
    return {
        "raw": f"{folder.name}/raw",
        "labels": {
            "source": f"{folder.name}/labels",
            "values": {"glia": 159, "mito": 191, "synapse": 223},
        },
        "voxel_size": [50, 4.6, 4.6],
        "split": {"train": [0, 3], "val": [4, 5], "test": [6, 7]},
    }


@pytest.fixture(scope="session")
def tiny_run(repo, vnc, tmp_path_factory):
    """(folder, config) of a finished local run of every stage on the tiny crop (the
    rerun and SLURM tests; a test that changes it puts it back)."""
    workdir = tmp_path_factory.mktemp("tiny")
    config = tiny_config(tiny_dataset(workdir / "data", vnc))
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    r = snakemake(repo, workdir, "all", config=cfg)
    assert r.returncode == 0, r.stderr[-4000:]
    return workdir, config


def tiny_config(dataset: dict[str, Any]) -> dict[str, Any]:
    """The smallest config that runs every stage: 64 px vit_tiny tiles, a few training
    steps, two inference blocks of 4 x 128 x 128."""
    return {
        "results_dir": "results",
        "classes": ["glia", "mito", "synapse"],
        "datasets": {"crop": dataset},
        "storage": {"chunks": [2, 64, 64]},
        "tiling": {"stride": 32, "scale": 1.0, "sequence_length": 3},
        "model": {"preset": "vit_tiny", "img_size": 64, "memory": {"slots": 2}},
        "train": {
            "stage1": {"steps": 4, "val_every": 2, "warmup_steps": 1, "minutes": None,
                       "batch_size": 2},
            "stage2": {"steps": 2, "val_every": 1, "warmup_steps": 1, "minutes": None,
                       "batch_size": 1},
        },
        "inference": {"block_shape": [4, 128, 128], "chunks": [1, 64, 64], "tta": False,
                      "warmup": 1},
    }  # fmt: skip


#: the SLURM integration run, when this process started it
SLURM_RUN: list[SlurmRun] = []


def slurm_folder(config: pytest.Config) -> Path:
    """The folder of the SLURM run, which every process of the session finds."""
    return xdist_groups.session_folder(config) / "slurm"


def _start_slurm(config: pytest.Config, ids: list[str]) -> None:
    """Start the SLURM run in the background (once), when a test of ``test_slurm.py`` is
    among the collected ``ids`` (see :mod:`tests.slurm_background`)."""
    if SLURM_RUN or not any("test_slurm.py" in i for i in ids):
        return
    folder = slurm_folder(config)
    folder.mkdir(parents=True)
    run = SlurmRun(folder)
    SLURM_RUN.append(run)
    if not (SHARED_VNC / "stack1" / "raw").is_dir():
        run.skip(f"real VNC data not found at {SHARED_VNC}")
        return
    tiny = tiny_config(tiny_dataset(run.project / "data", SHARED_VNC))
    (run.project / "config").mkdir()
    (run.project / "config" / "config.yaml").write_text(yaml.safe_dump(tiny))
    run.start()


def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker takes its share of the cores (tests/xdist_groups.py)."""
    xdist_groups.share_cores(config)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each module's tests with its xdist group (tests/xdist_groups.py); an xdist
    worker also puts the long work first."""
    groups = xdist_groups.groups_of(items)
    for item, group in groups.items():
        item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(config, "workerinput"):
        items[:] = xdist_groups.run_order(items, groups)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Without xdist: start the SLURM run before the first test. An xdist worker leaves it
    to the controller, which sees every worker's collection, and writes its groups for the
    controller's scheduler before reporting its collection."""
    config, items = session.config, session.items
    if hasattr(config, "workerinput"):
        groups = {item.nodeid: str(mark.args[0]) for item in items
                  if (mark := item.get_closest_marker("xdist_group"))}  # fmt: skip
        xdist_groups.write_groups(config, groups)
    else:
        _start_slurm(config, [item.nodeid for item in items])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under xdist, the controller starts the SLURM run once a worker has collected; the
    tests are handed out after that."""
    _start_slurm(node.config, ids)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` with the groups the workers wrote (tests/xdist_groups.py)."""
    if config.getvalue("dist") == "loadgroup":
        return xdist_groups.make_scheduler(config, log)
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the SLURM run if this process started it and it is still going, and the test
    cluster."""
    for run in SLURM_RUN:
        run.stop()


#: the crops dataset's boxes (offset, shape) and roles inside a 12 x 256 x 256 volume
CROPS = [
    ("a", (0, 16, 16), (4, 96, 96), "train"),
    ("b", (0, 140, 120), (4, 96, 96), "train"),  # partly painted: the right half ignored
    ("v", (5, 80, 80), (3, 96, 96), "val"),
    ("t", (9, 64, 64), (3, 128, 128), "test"),
]
CROP_VALUES = {"glia": 159, "mito": 191, "synapse": 223}
CROP_IGNORE = 1  # a value the VNC label images never hold (255 is one of theirs)


def crop_labels(truth: Any, offset: tuple[int, ...], shape: tuple[int, ...]) -> Any:
    """The painter's labels of a box: the truth label image inside it."""
    return truth[tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))].copy()


def crops_dataset(folder: Path, vnc: Path) -> dict[str, Any]:
    """A 12 x 256 x 256 piece of the real VNC stack 1 (raw only, as slice TIFFs) with four
    labelled crops, each with its own label TIFF cut from the annotation (crop b painted
    only on its left half, the rest CROP_IGNORE); paths relative to ``folder``'s parent.
    The whole annotation stays in ``folder/truth.tif`` (the painter's, never configured)."""
    import numpy as np
    import tifffile

    from sam4em.data.demo import write_crop

    write_crop(vnc / "stack1", folder, slice(0, 12), slice(600, 856), slice(200, 456))
    from PIL import Image

    truth = np.stack([np.asarray(Image.open(p)) for p in sorted((folder / "labels").glob("*.png"))])
    tifffile.imwrite(folder / "truth.tif", truth, photometric="minisblack")
    entries = []
    for name, offset, shape, role in CROPS:
        labels = crop_labels(truth, offset, shape)
        if name == "b":
            labels[..., shape[2] // 2 :] = CROP_IGNORE
        tifffile.imwrite(folder / f"crop_{name}.tif", labels, photometric="minisblack")
        spec = {"source": f"{folder.name}/crop_{name}.tif", "values": dict(CROP_VALUES),
                "ignore": CROP_IGNORE}  # fmt: skip
        entries.append({"name": name, "offset": list(offset), "shape": list(shape),
                        "role": role, "labels": spec})  # fmt: skip
    return {"raw": f"{folder.name}/raw", "voxel_size": [50, 4.6, 4.6], "crops": entries}
