"""Official SAM weights: loading equivalence, resizing to 512 px, clear errors, download."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry

from sam4em.errors import Sam4emError
from sam4em.model.checkpoint import load_checkpoint, save_checkpoint
from sam4em.model.download import download_checkpoint
from sam4em.model.model_config import ModelConfig
from sam4em.model.sam4em_model import build_model
from sam4em.model.sam_weights import CheckpointError


@pytest.fixture(scope="module")
def vit_b_file(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A vit_b state dict in SAM's official layout, written by the test."""
    torch.manual_seed(123)
    sam = sam_model_registry["vit_b"]().eval()
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_test.pth"
    torch.save(sam.state_dict(), path)
    return path, sam


def _grey(size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((1, 1, size, size), generator=g) * 255


@torch.no_grad()
@pytest.mark.slow  # two vit_b forwards at 1024 px
def test_vit_b_embeddings_equal_segment_anything_at_1024(vit_b_file):
    path, sam = vit_b_file
    model = build_model(ModelConfig(preset="vit_b", img_size=1024, checkpoint=str(path))).eval()
    x = _grey(1024)
    ours, _ = model.encode(x)
    theirs = sam.image_encoder((x.expand(-1, 3, -1, -1) - sam.pixel_mean) / sam.pixel_std)
    assert ours.shape == theirs.shape == (1, 256, 64, 64)
    assert (ours - theirs).abs().max().item() < 1e-4
    # the decoders started from SAM's mask decoder where shapes allow
    torch.testing.assert_close(
        model.decoder1.transformer.layers[0].self_attn.q_proj.weight,
        sam.mask_decoder.transformer.layers[0].self_attn.q_proj.weight,
    )
    torch.testing.assert_close(
        model.decoder2.mask_tokens.weight, sam.mask_decoder.mask_tokens.weight[:3]
    )
    torch.testing.assert_close(
        model.pe_layer.positional_encoding_gaussian_matrix,
        sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
    )
    assert model.base_identity["md5"] == hashlib.md5(path.read_bytes()).hexdigest()


@torch.no_grad()
def test_vit_b_at_512_is_interpolated(vit_b_file):
    path, sam = vit_b_file
    model = build_model(ModelConfig(preset="vit_b", img_size=512, checkpoint=str(path))).eval()
    vit = model.image_encoder.vit
    assert vit.pos_embed.shape == (1, 32, 32, 768)
    expected = F.interpolate(
        sam.image_encoder.pos_embed.permute(0, 3, 1, 2),
        size=(32, 32),
        mode="bicubic",
        align_corners=False,
    ).permute(0, 2, 3, 1)
    torch.testing.assert_close(vit.pos_embed, expected)
    glob = vit.blocks[2].attn  # a global-attention block: table resized 127 -> 63
    assert glob.rel_pos_h.shape == (63, 64)
    win = vit.blocks[0].attn  # windowed blocks keep their 27-entry tables
    torch.testing.assert_close(win.rel_pos_h, sam.image_encoder.blocks[0].attn.rel_pos_h)
    out = model(_grey(512))
    assert model.encode(_grey(512))[0].shape == (1, 256, 32, 32)
    assert out.stage1.shape == out.stage2.shape == (1, 3, 512, 512)
    assert torch.isfinite(out.stage2).all()


def test_checkpoint_of_another_model_type_is_refused(vit_b_file):
    path, _ = vit_b_file
    with pytest.raises(CheckpointError, match="is a vit_b model, config expects vit_l"):
        build_model(ModelConfig(preset="vit_l", img_size=256, checkpoint=str(path)))


def test_truncated_and_foreign_files_are_refused(vit_b_file, tmp_path):
    path, _ = vit_b_file
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match="truncated.pth: cannot read SAM checkpoint"):
        build_model(ModelConfig(preset="vit_b", checkpoint=str(truncated)))
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pth: not a SAM checkpoint"):
        build_model(ModelConfig(preset="vit_b", checkpoint=str(foreign)))
    with pytest.raises(CheckpointError, match="not found"):
        build_model(ModelConfig(preset="vit_b", checkpoint=str(tmp_path / "absent.pth")))


def test_trained_checkpoint_is_small_and_bound_to_its_base(vit_b_file, tmp_path):
    path, _ = vit_b_file
    config = ModelConfig(preset="vit_b", img_size=256, checkpoint=str(path))
    model = build_model(config)
    saved = save_checkpoint(model, tmp_path / "trained.pt")
    assert saved.stat().st_size < path.stat().st_size / 4
    # the same base loads; a different base file is refused
    loaded, _ = load_checkpoint(saved)
    torch.testing.assert_close(
        loaded.image_encoder.vit.blocks[0].attn.qkv.base_layer.weight,
        model.image_encoder.vit.blocks[0].attn.qkv.base_layer.weight,
    )
    other = tmp_path / "other_vit_b.pth"
    state = torch.load(path, weights_only=True)
    state["image_encoder.neck.0.weight"] = state["image_encoder.neck.0.weight"] + 1
    torch.save(state, other)
    with pytest.raises(CheckpointError, match="trained on base weights"):
        load_checkpoint(saved, base_checkpoint=other)


def test_download_checks_md5(http_folder, tmp_path):
    www, url = http_folder
    payload = b"not really weights" * 1000
    (www / "sam_vit_b_x.pth").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    got = download_checkpoint("vit_b", tmp_path / "w", url=f"{url}/sam_vit_b_x.pth", md5=md5)
    assert got.read_bytes() == payload
    with pytest.raises(Sam4emError, match="MD5 mismatch"):
        download_checkpoint("vit_b", tmp_path / "w2", url=f"{url}/sam_vit_b_x.pth", md5="0" * 32)
    assert not list((tmp_path / "w2").glob("*"))
