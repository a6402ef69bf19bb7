"""Make a project profile reachable by name: ``snakemake --profile slurm``.

Snakemake looks a profile name up in the current folder, then in the user's config
folder (``$XDG_CONFIG_HOME/snakemake``, else ``~/.config/snakemake``), then in
``/etc/xdg/snakemake``. The set-up (``make install``) links the project's
``profiles/slurm`` into the user's folder, so a site's edits of
``profiles/slurm/config.yaml`` are what the short command uses. A different profile of
that name that is already there is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from sam4em.errors import OutputError


def user_profiles_dir() -> Path:
    """Where Snakemake looks profile names up for this user (its ``platformdirs`` rule)."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("snakemake", "snakemake"))


def install_profile(source: str | os.PathLike[str], name: str | None = None) -> tuple[Path, bool]:
    """Link the profile folder ``source`` as ``name`` (default: its folder name) into
    :func:`user_profiles_dir`. Returns the link and whether it was made now (False: it
    was there already). An OutputError when another profile of that name is there."""
    source = Path(source).resolve()
    if not (source / "config.yaml").is_file():
        raise OutputError(f"{source}: not a Snakemake profile (no config.yaml)")
    link = user_profiles_dir() / (name or source.name)
    if link.is_symlink() and Path(os.path.realpath(link)) == source:
        return link, False
    if link.is_symlink() and not link.exists():  # a link into a clone that is gone
        link.unlink()
    elif link.exists() or link.is_symlink():
        where = os.path.realpath(link)
        raise OutputError(
            f"{link}: a different Snakemake profile of that name is there ({where}); "
            f"not replaced: remove it to use this project's, or run snakemake --profile {source}"
        )
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(source, target_is_directory=True)
    return link, True
