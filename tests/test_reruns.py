"""Reruns follow the config and the data, and a missing or half-made output is rebuilt:
real Snakemake on a finished tiny run (an 8 x 128 x 128 crop of the real VNC stack).

Each edit is dry-run against the finished run, and the jobs it schedules are compared
with what the edit affects (sam4em.settings.rule_settings is what the rules declare)."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from tests.conftest import job_counts, snakemake, snakemake_command

pytestmark = pytest.mark.slow  # real Snakemake runs of the whole pipeline

CLASSES = ("glia", "mito", "synapse")
# two inference blocks (z0y0x0, z1y0x0); the components blocks are the same two
COMPONENTS = {"components_label": 6, "components_contacts": 6, "components_merge": 3,
              "components_relabel": 6, "components": 3}  # fmt: skip
AFTER_COMPONENTS = {"analyze_objects": 2, "evaluate": 1, "report": 1, "layers": 1,
                    "annotate_next": 1}  # fmt: skip
AFTER_BLOCKS = {"stitch": 1, **COMPONENTS, **AFTER_COMPONENTS}
# a new import: everything of the dataset (the block jobs follow the new plan)
EVERYTHING = {"import_volume", "tile", "train_stage1", "train_stage2", "plan_blocks",
              "stitch", "components", "analyze_objects", "evaluate", "report", "layers",
              "annotate_next"}  # fmt: skip


def scheduled(repo: Path, workdir: Path, config: dict, text: str | None = None) -> dict:
    """The jobs (rule: count, without `all`) a dry run of `all` lists for ``config``."""
    cfg = workdir / "edited.yaml"
    cfg.write_text(text if text is not None else yaml.safe_dump(config))
    r = snakemake(repo, workdir, "-n", "all", config=cfg)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    if not counts:
        assert "Nothing to be done" in r.stdout + r.stderr
    return {k: v for k, v in counts.items() if k not in ("all", "total")}


def edited(config: dict, edit) -> dict:
    new = copy.deepcopy(config)
    edit(new)
    return new


def test_the_finished_run_has_nothing_to_do(repo, tiny_run):
    assert scheduled(repo, *tiny_run) == {}


def test_comments_and_key_order_schedule_nothing(repo, tiny_run):
    workdir, config = tiny_run
    reordered = dict(reversed(list(config.items())))
    text = "# a comment\n" + yaml.safe_dump(reordered, sort_keys=False).replace(
        "\nmodel:", "\n# another comment\nmodel:"
    )
    assert scheduled(repo, workdir, config, text) == {}


EDITS = {
    "components.threshold": (
        lambda c: c.update(components={"threshold": 0.9}),
        {**COMPONENTS, **AFTER_COMPONENTS},
    ),
    "train.stage2.lr": (
        lambda c: c["train"]["stage2"].update(lr=1e-3),
        {"train_stage2": 1, "predict_block": 2, **AFTER_BLOCKS},
    ),
    "train.stage2_min_gain": (  # the choice after stage 2: not stage 1
        lambda c: c.setdefault("train", {}).update(stage2_min_gain=-1.0),
        {"train_stage2": 1, "predict_block": 2, **AFTER_BLOCKS},
    ),
    "inference.tta": (
        lambda c: c["inference"].update(tta=True),
        {"predict_block": 2, **AFTER_BLOCKS},
    ),
    "evaluate.detection_tolerance": (
        lambda c: c.update(evaluate={"detection_tolerance": 5}),
        {"evaluate": 1, "report": 1},
    ),
    "analysis.shell_nm": (  # the synapses' contacts, not the mitos' distances
        lambda c: c.update(analysis={"shell_nm": 60}),
        {"analyze_objects": 1, "report": 1},
    ),
    "analysis.annotate_region_px": (  # the report's uncertainty check only
        lambda c: c.update(analysis={"annotate_region_px": 64}),
        {"report": 1},
    ),
    "analysis.annotate_box": (
        lambda c: c.update(analysis={"annotate_box": [2, 32, 32]}),
        {"annotate_next": 1, "report": 1},
    ),
}


@pytest.mark.parametrize("key", EDITS)
def test_an_edit_schedules_exactly_what_it_affects(repo, tiny_run, key):
    workdir, config = tiny_run
    edit, expected = EDITS[key]
    assert scheduled(repo, workdir, edited(config, edit)) == expected


def test_a_new_split_or_raw_path_schedules_the_whole_dataset(repo, tiny_run):
    workdir, config = tiny_run
    split = edited(config, lambda c: c["datasets"]["crop"]["split"].update(test=[7, 7]))
    assert set(scheduled(repo, workdir, split)) >= EVERYTHING
    shutil.copytree(workdir / "data" / "raw", workdir / "data" / "raw copy")
    try:
        moved = edited(config, lambda c: c["datasets"]["crop"].update(raw="data/raw copy"))
        assert set(scheduled(repo, workdir, moved)) >= EVERYTHING
    finally:
        shutil.rmtree(workdir / "data" / "raw copy")


def test_new_pixels_under_the_same_file_name_reimport(repo, tiny_run):
    workdir, config = tiny_run
    path = workdir / "data" / "raw" / "03.tif"
    original, stat = path.read_bytes(), path.stat()
    import tifffile

    tifffile.imwrite(path, 255 - tifffile.imread(path))
    try:
        assert set(scheduled(repo, workdir, config)) >= EVERYTHING
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert scheduled(repo, workdir, config) == {}  # the same files again: nothing


MISSING = {
    "blocks/z1y0x0.done": {"predict_block": 1, **AFTER_BLOCKS},
    "eval": {"evaluate": 1, "report": 1},
    "components/mito/z0y0x0.pairs.npy": {
        "components_contacts": 1,
        "components_merge": 1,
        "components_relabel": 2,
        "components": 1,
        **AFTER_COMPONENTS,
        "analyze_objects": 1,  # mito's; the synapses' reads synapse and glia objects only
    },  # fmt: skip
    "models/stage2.pt": {"train_stage2": 1, "predict_block": 2, **AFTER_BLOCKS},
}


@pytest.mark.parametrize("name", MISSING)
def test_a_missing_output_is_rebuilt_with_what_follows(repo, tiny_run, name, tmp_path):
    workdir, config = tiny_run
    path = workdir / "results" / "crop" / name
    path.rename(tmp_path / "aside")
    try:
        assert scheduled(repo, workdir, config) == MISSING[name]
    finally:
        (tmp_path / "aside").rename(path)


def _outputs(results: Path) -> dict[str, object]:
    """What a run leaves that must not depend on how it got there."""
    pred = zarr.open_group(str(results / "pred.zarr"), mode="r")
    inst = zarr.open_group(str(results / "instances.zarr"), mode="r")
    out: dict[str, object] = {}
    for cls in CLASSES:
        out[f"pred/{cls}"] = np.asarray(pred[cls]["0"])
        out[f"instances/{cls}"] = np.asarray(inst[cls]["0"])
        out[f"objects/{cls}"] = (results / "objects" / f"{cls}.csv").read_text()
    for name in ("metrics.csv", "metrics_per_slice.csv", "objects_matched.csv"):
        out[f"eval/{name}"] = (results / "eval" / name).read_text()
    for name in ("analysis/mito.csv", "analysis/synapse.csv", "annotate_next.csv"):
        out[name] = (results / name).read_text()
    return out


def _run_until(repo: Path, workdir: Path, cfg: Path, log_prefix: str) -> None:
    """Run `all`, and SIGKILL Snakemake and its jobs once a job of ``log_prefix`` has
    started (its log is written anew); then `--unlock`."""
    t0 = time.time()
    logs = workdir / "results" / "logs" / "crop"
    cmd = snakemake_command(repo, workdir, "all", config=cfg)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        while proc.poll() is None and time.time() - t0 < 600:
            if any(p.stat().st_mtime >= t0 for p in logs.glob(f"{log_prefix}*.log")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before a {log_prefix} job started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    r = snakemake(repo, workdir, "--unlock", config=cfg)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_killed_rerun_ends_equal_to_a_clean_run(repo, tiny_run, tmp_path):
    """An edit (TTA on) rerun, killed in a block job and again in the components jobs,
    then finished: the outputs equal a clean run of the new config, and nothing is left
    to do."""
    workdir = tmp_path / "rerun"  # a copy: the other tests keep the finished run
    shutil.copytree(tiny_run[0], workdir, symlinks=True)
    new = edited(tiny_run[1], EDITS["inference.tta"][0])
    cfg = workdir / "tta.yaml"
    cfg.write_text(yaml.safe_dump(new))
    _run_until(repo, workdir, cfg, "predict_block")
    _run_until(repo, workdir, cfg, "components_merge")
    r = snakemake(repo, workdir, "all", config=cfg)
    assert r.returncode == 0, r.stderr[-4000:]
    assert scheduled(repo, workdir, new) == {}
    clean = tmp_path / "clean"
    shutil.copytree(tiny_run[0] / "data", clean / "data")
    (clean / "config.yaml").write_text(yaml.safe_dump(new))
    r = snakemake(repo, clean, "all", config=clean / "config.yaml")
    assert r.returncode == 0, r.stderr[-4000:]
    got, want = _outputs(workdir / "results" / "crop"), _outputs(clean / "results" / "crop")
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            assert got[key] == value, key
