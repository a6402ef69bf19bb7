"""Every `snakemake` and `sam4em` line the docs show works as typed.

The lines come from the shell blocks of README.md and config/README.md and from the
header of config/own-data.example.yaml, taken as a user types them after
`source .venv/bin/activate` in the project folder: here a folder laid out like the
project (workflow/, profiles/, config/config.yaml) around the finished pipeline run of
the default config, with the venv's bin first on the PATH and `snakemake --profile
slurm` installed as the README's set-up installs it. A file such as `my.yaml` is a
generated tiny config of real data. Whole-pipeline commands are dry-run (`-n`); the
cheap verbs run for real. A failing line fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, tiny_config, tiny_dataset

pytestmark = pytest.mark.slow  # the documented commands on a whole pipeline run

DOCS = ("README.md", "config/README.md")
EXAMPLE = "config/own-data.example.yaml"
USER_FILES = ("my.yaml",)  # config files the docs name: a generated one stands in
SERVES = "--serve"  # runs until Ctrl-C: started, read, stopped


def _shell_lines(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() in ("```bash", "```sh", "```shell") and not inside
            continue
        if inside:
            lines.append(line)
    return lines


def doc_commands() -> list[tuple[str, str]]:
    """(where, command) for every line of the docs that calls snakemake or sam4em, the
    comment after it dropped."""
    found = []
    for doc in DOCS:
        for line in _shell_lines((REPO / doc).read_text()):
            found.append((doc, line))
    header = [ln for ln in (REPO / EXAMPLE).read_text().splitlines() if ln.startswith("#   ")]
    found += [(EXAMPLE, ln.removeprefix("#").strip()) for ln in header]
    commands = []
    for where, line in found:
        command = re.split(r"\s#\s", f" {line} ", maxsplit=1)[0].strip()
        word = command.split(" ", 1)[0].removeprefix(".venv/bin/")
        if word in ("snakemake", "sam4em"):
            commands.append((where, command))
    return commands


COMMANDS = doc_commands()


def test_the_docs_show_the_commands_a_lab_types():
    typed = {c for _, c in COMMANDS}
    assert "snakemake --profile slurm all" in typed
    assert "snakemake --profile profiles/local all --configfile my.yaml" in typed
    # as typed after activating the venv, and never a target after --configfile
    assert not [c for c in typed if c.startswith(".venv/")]
    for command in typed:
        words = shlex.split(command)
        if "--configfile" in words:
            assert words.index("--configfile") == len(words) - 2, command


@pytest.fixture(scope="module")
def project(local_run, vnc, tmp_path_factory):
    """The finished default-config run, laid out as a project folder a user types in."""
    workdir, _, config = local_run
    for name in ("workflow", "profiles"):
        if not (workdir / name).exists():
            (workdir / name).symlink_to(REPO / name)
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    crops = yaml.safe_load((REPO / "config" / "crops.example.yaml").read_text())
    crops["train"] = config["train"]  # a dry run only, but keep it the tests' size
    (workdir / "config" / "crops.example.yaml").write_text(yaml.safe_dump(crops))
    tiny = tiny_config(tiny_dataset(workdir / "tiny data", vnc))
    tiny["results_dir"] = "results-tiny"
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    xdg = tmp_path_factory.mktemp("xdg")
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    r = subprocess.run(["sam4em", "install-profile", "--source", str(REPO / "profiles" / "slurm")],
                       cwd=workdir, env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return workdir, env


def _as_run(command: str) -> list[str]:
    words = shlex.split(command)
    words[0] = words[0].removeprefix(".venv/bin/")
    words = ["tiny.yaml" if w in USER_FILES else w for w in words]
    if words[0] == "snakemake" and not {"--unlock", "--report", "-n"} & set(words):
        words.insert(1, "-n")  # the whole pipeline: what it would run
    return words


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_a_documented_command_works_as_written(project, where, command):
    workdir, env = project
    words = _as_run(command)
    if SERVES in words:
        words += ["--port", "0"]
        proc = subprocess.Popen(words, cwd=workdir, env=env, stdout=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()
            assert proc.poll() is None and first.startswith("napari:"), (where, first)
            assert proc.stdout.readline().startswith("serving "), where
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        return
    r = subprocess.run(words, cwd=workdir, env=env, capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    assert r.returncode == 0, (where, words, (r.stdout + r.stderr)[-3000:])
    assert "Traceback" not in r.stderr, (where, r.stderr[-3000:])
