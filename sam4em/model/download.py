"""Download of the official SAM checkpoints, with an MD5 check (for users online)."""

from __future__ import annotations

import os
from pathlib import Path

from sam4em.errors import Sam4emError
from sam4em.io.atomic import remove_path
from sam4em.io.download import download, file_digest

#: official checkpoints: URL and the MD5 digest published with them
SAM_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "vit_b": (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "01ec64d29a2fca3f0661936605ae66f8",
    ),
    "vit_l": (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "0b3195507c641ddb6910d2bb5adee89c",
    ),
    "vit_h": (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "4b8939a88964f0f4ff5f5b2642c598a6",
    ),
}


def download_checkpoint(
    preset: str,
    dest_dir: str | os.PathLike[str],
    url: str | None = None,
    md5: str | None = None,
) -> Path:
    """Fetch the official checkpoint of ``preset`` into ``dest_dir`` (kept if already valid)."""
    if preset not in SAM_CHECKPOINTS and (url is None or md5 is None):
        raise Sam4emError(
            f"no official checkpoint for '{preset}' (known: {', '.join(SAM_CHECKPOINTS)})"
        )
    default_url, default_md5 = SAM_CHECKPOINTS.get(preset, (url, md5))
    url, md5 = url or default_url, md5 or default_md5
    target = Path(dest_dir) / url.rsplit("/", 1)[-1]
    if target.is_file() and file_digest(target, "md5") == md5:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        download(url, partial)
        actual = file_digest(partial, "md5")
        if actual != md5:
            raise Sam4emError(f"{url}: MD5 mismatch (expected {md5}, got {actual})")
        partial.replace(target)
    finally:
        remove_path(partial)
    return target
