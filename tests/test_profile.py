"""`sam4em install-profile`: the project's SLURM profile under the name Snakemake looks up."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO, assert_user_error


def _install(xdg, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg)}
    return subprocess.run([sys.executable, "-m", "sam4em", "install-profile", *args],
                          env=env, capture_output=True, text=True, cwd=REPO)  # fmt: skip


def _snakemake_finds(xdg, name: str) -> str:
    """The folder Snakemake itself resolves ``--profile name`` to (outside the project)."""
    code = ("from snakemake.cli import get_profile_dir; import sys; "
            "print(get_profile_dir(sys.argv[1])[0])")  # fmt: skip
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg)}
    r = subprocess.run([sys.executable, "-c", code, name], env=env, capture_output=True,
                       text=True, cwd=xdg)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return os.path.realpath(r.stdout.strip())


def test_the_profile_is_linked_where_snakemake_looks_names_up(tmp_path):
    r = _install(tmp_path)
    assert r.returncode == 0, r.stderr
    link = tmp_path / "snakemake" / "slurm"
    assert link.is_symlink() and os.path.realpath(link) == str(REPO / "profiles" / "slurm")
    assert "linked" in r.stdout and "snakemake --profile slurm all" in r.stdout
    assert _snakemake_finds(tmp_path, "slurm") == str(REPO / "profiles" / "slurm")
    again = _install(tmp_path)  # every `make install` runs it: a second time is fine
    assert again.returncode == 0 and "already linked" in again.stdout


def test_a_different_profile_of_that_name_is_left_alone(tmp_path):
    theirs = tmp_path / "snakemake" / "slurm"
    theirs.mkdir(parents=True)
    (theirs / "config.yaml").write_text("executor: slurm\njobs: 7\n")
    assert_user_error(
        _install(tmp_path), str(theirs), "different Snakemake profile", "not replaced"
    )
    assert (theirs / "config.yaml").read_text() == "executor: slurm\njobs: 7\n"
    assert not theirs.is_symlink()


def test_a_link_into_a_deleted_clone_is_replaced(tmp_path):
    link = tmp_path / "snakemake" / "slurm"
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "gone" / "profiles" / "slurm")
    r = _install(tmp_path)
    assert r.returncode == 0, r.stderr
    assert os.path.realpath(link) == str(REPO / "profiles" / "slurm")


def test_a_folder_without_a_profile_is_refused(tmp_path):
    assert_user_error(_install(tmp_path, "--source", str(tmp_path)), "not a Snakemake profile")
    assert not (tmp_path / "snakemake").exists()
