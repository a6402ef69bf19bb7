"""Behaviour of the assembled model (vit_tiny, CPU): training set, LoRA, memory, stages."""

from __future__ import annotations

import inspect

import pytest
import torch

from sam4em.errors import ConfigError
from sam4em.model.checkpoint import load_checkpoint, save_checkpoint, trainable_state
from sam4em.model.lora import lora_layers, merge_lora
from sam4em.model.model_config import ModelConfig
from sam4em.model.sam4em_model import SAM4EM, build_model
from sam4em.model.sam_weights import CheckpointError


def _tiles(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, size, size), generator=g) * 255


def _config(**kw) -> ModelConfig:
    return ModelConfig(img_size=64, **kw)


def _randomise_lora(model: SAM4EM) -> None:
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in lora_layers(model):
            for mod in layer.lora_B.values():
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.05)


def test_only_lora_memory_and_decoders_train():
    model = build_model(_config())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(
        "lora_" in n
        or n.startswith(
            (
                "memory_",
                "decoder1.",
                "decoder2.",
                "prompt_generator.",
                "no_mask_embed.",
                "high_res.",
            )
        )
        for n in trainable
    )
    assert any("lora_" in n for n in trainable)
    base_before = {
        n: p.detach().clone() for n, p in model.image_encoder.named_parameters() if "lora_" not in n
    }
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    outs = model.forward_sequence(_tiles().unsqueeze(1).repeat(1, 3, 1, 1, 1))
    loss = sum(o.stage1.mean() + o.stage2.mean() for o in outs)
    loss.backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
    touched = {
        n.split(".")[0]
        for n, p in model.named_parameters()
        if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert {
        "image_encoder",
        "memory_encoder",
        "memory_attention",
        "decoder1",
        "decoder2",
        "prompt_generator",
    } <= touched
    opt.step()
    for n, p in model.image_encoder.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base_before[n]), n


def test_full_encoder_training_option():
    model = build_model(_config(encoder_trainable="all"))
    assert not lora_layers(model)
    assert all(p.requires_grad for p in model.image_encoder.parameters())


@torch.no_grad()
def test_merged_lora_equals_unmerged():
    model = build_model(_config()).eval()
    _randomise_lora(model)
    x = _tiles()
    before = model(x).stage2
    assert merge_lora(model) == 6  # one qkv per block of vit_tiny
    after = model(x).stage2
    assert (before - after).abs().max().item() < 1e-4
    assert not torch.equal(before, build_model(_config()).eval()(x).stage2)  # LoRA mattered


@torch.no_grad()
def test_lora_targets_proj_and_mlp():
    from sam4em.model.model_config import LoraSettings

    model = build_model(_config(lora=LoraSettings(targets=("qkv", "proj", "mlp"))))
    names = {
        n.rsplit(".", 1)[-1]
        for n, m in model.image_encoder.vit.named_modules()
        if m in lora_layers(model)
    }
    assert names == {"qkv", "proj", "lin1", "lin2"}
    assert model.image_encoder.vit.patch_embed.proj.__class__.__name__ == "Conv2d"  # untouched


@torch.no_grad()
def test_memory_changes_output_and_slots_are_distinct():
    model = build_model(_config()).eval()
    a, b, c = _tiles(seed=1), _tiles(seed=2), _tiles(seed=3)
    bank1 = model.new_memory()
    model.step(a, bank1)
    model.step(b, bank1)
    bank2 = model.new_memory()
    model.step(b, bank2)
    model.step(b, bank2)
    out1, out2 = model.step(c, bank1).final, model.step(c, bank2).final
    assert (out1 - out2).abs().max().item() > 1e-6  # what the bank holds matters (at init,
    # before training, the BatchNorm high-res path outweighs the memory in the output)
    slots = [m for m, _ in bank1.read()]
    assert len(slots) == 3
    for i in range(len(slots)):
        for j in range(i + 1, len(slots)):
            assert not torch.allclose(slots[i], slots[j]), (i, j)
    assert [d for _, d in bank1.read()] == [1, 2, 3]


@torch.no_grad()
def test_bank_is_fifo_and_reset_restores_first_slice():
    model = build_model(_config()).eval()
    x = _tiles(seed=4)
    first = model.step(x, model.new_memory()).final
    plain = model(x).final  # 2D forward, memory off
    torch.testing.assert_close(first, plain)
    bank = model.new_memory()
    for s in range(6):
        model.step(_tiles(seed=10 + s), bank)
    assert len(bank) == model.config.memory.slots
    assert not torch.allclose(model.step(x, bank).final, first)
    bank.reset()
    torch.testing.assert_close(model.step(x, bank).final, first)


@torch.no_grad()
def test_stage2_depends_on_stage1():
    model = build_model(_config()).eval()
    x = _tiles()
    before = model(x)
    model.decoder1.mask_tokens.weight.add_(torch.randn_like(model.decoder1.mask_tokens.weight))
    after = model(x)
    assert (before.stage2 - after.stage2).abs().max().item() > 1e-4
    single = build_model(_config(two_stage=False)).eval()
    out = single(x)
    assert single.decoder2 is None and torch.equal(out.stage1, out.stage2)


def test_inference_entry_points_take_no_labels():
    for fn in (SAM4EM.forward, SAM4EM.step, SAM4EM.forward_sequence, SAM4EM.decode):
        params = set(inspect.signature(fn).parameters) - {"self"}
        # high_res: feature maps the model computes from the images themselves
        assert params <= {"images", "bank", "embeddings", "high_res"}, (fn.__name__, params)


@torch.no_grad()
def test_checkpoint_round_trip_is_exact(tmp_path):
    model = build_model(_config()).eval()
    _randomise_lora(model)
    with torch.no_grad():
        model.memory_attention.layers[0].gain_attn.fill_(0.5)
    path = save_checkpoint(model, tmp_path / "m.pt", extra={"step": 3})
    loaded, meta = load_checkpoint(path)
    loaded.eval()
    assert meta["extra"] == {"step": 3} and meta["classes"] == ["glia", "mito", "synapse"]
    assert set(meta["versions"]) >= {"torch", "peft", "segment-anything", "sam4em"}
    for name, tensor in trainable_state(model).items():
        assert torch.equal(tensor, trainable_state(loaded)[name]), name
    bank_a, bank_b = model.new_memory(), loaded.new_memory()
    x = _tiles()
    for _ in range(2):
        assert torch.equal(model.step(x, bank_a).final, loaded.step(x, bank_b).final)


def test_checkpoint_refuses_other_base_and_config(tmp_path):
    path = save_checkpoint(build_model(_config(seed=1)), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="model config differs .*img_size"):
        load_checkpoint(path, expect=ModelConfig(img_size=128, seed=1))
    with pytest.raises(CheckpointError, match="model config differs .*classes"):
        load_checkpoint(path, expect=_config(seed=1, classes=("mito",)))
    # same config, but the random base it was trained on no longer matches
    payload = torch.load(path, weights_only=True)
    payload["base"]["sha256"] = "0" * 64
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="trained on base weights"):
        load_checkpoint(tmp_path / "tampered.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt: cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_merged_model_cannot_be_saved(tmp_path):
    model = build_model(_config())
    merge_lora(model)
    with pytest.raises(ValueError, match="save before merging"):
        save_checkpoint(model, tmp_path / "m.pt")


def test_trained_set_is_what_requires_grad_at_build():
    model = build_model(_config())
    for name, p in model.named_parameters():
        assert model.is_trained(name) == p.requires_grad, name


def test_high_res_path_forms_masks_at_half_the_tile_and_is_one_switch():
    x = _tiles()
    on, off = build_model(_config()), build_model(_config(high_res=False))
    assert off.high_res is None and not any("high_res" in n for n, _ in off.named_parameters())
    embeddings, maps = on.encode(x)
    pe, dense = on.image_pe(), on.no_mask_embed.weight.reshape(1, -1, 1, 1)
    sparse = embeddings.new_zeros((2, 0, embeddings.shape[1]))
    fine = on.decoder1(embeddings, pe, sparse, dense, high_res=maps)
    coarse_embeddings, no_maps = off.encode(x)
    assert no_maps is None
    coarse = off.decoder1(coarse_embeddings, pe, sparse, dense)
    assert fine.logits.shape[-1] == 64 // 2 and coarse.logits.shape[-1] == 64 // 4
    # the path's maps reach both stages' masks: every level of it gets a gradient
    out = on(x)
    (out.stage1.sum() + out.stage2.sum()).backward()
    for name, p in on.high_res.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert out.low_res.shape[-1] == 64 // 4  # the memory still sees quarter-size masks
    # a checkpoint written before the path existed rebuilds without it
    assert ModelConfig.from_dict({"high_res": False}).high_res is False


def test_conv_stem_feeds_the_encoder_from_the_path_and_needs_random_init(tmp_path):
    config = _config(conv_stem=True, encoder_trainable="all")
    model = build_model(config)
    assert not hasattr(model.image_encoder.vit, "patch_embed")
    x = _tiles()
    out = model(x)
    out.final.sum().backward()
    # the encoder's tokens come from the path: its 1/8 level is trained through the ViT too
    assert model.image_encoder.stem.weight.grad.abs().sum() > 0
    embeddings, _ = model.encode(x)
    assert embeddings.shape == (2, config.vit.neck_dim, 4, 4)
    save_checkpoint(model.eval(), tmp_path / "stem.pt")
    loaded, _ = load_checkpoint(tmp_path / "stem.pt")
    assert torch.equal(model(x).final, loaded.eval()(x).final)
    with pytest.raises(ConfigError, match="conv_stem"):
        _config(conv_stem=True, high_res=False)
    with pytest.raises(ConfigError, match="random-initialised"):
        _config(conv_stem=True, checkpoint="sam_vit_b.pth")


def test_high_res_model_round_trips_through_a_checkpoint(tmp_path):
    model = build_model(_config()).eval()
    with torch.no_grad():
        for p in model.high_res.parameters():
            p.add_(0.01)
    save_checkpoint(model, tmp_path / "m.pt")
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    x = _tiles()
    assert torch.equal(model(x).final, loaded.eval()(x).final)


def test_batch_norm_path_keeps_its_running_statistics_in_the_checkpoint(tmp_path):
    model = build_model(_config())  # BatchNorm is the default
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 + 2 * 4  # the path's six convolutions, four in each decoder
    layer = build_model(_config(high_res_norm="layer"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in layer.modules())
    model.train()
    model(_tiles(4, seed=3))  # a training forward moves the running statistics
    model.eval()
    assert not torch.equal(norms[0].running_mean, torch.zeros_like(norms[0].running_mean))
    save_checkpoint(model, tmp_path / "bn.pt")
    loaded, _ = load_checkpoint(tmp_path / "bn.pt")
    x = _tiles(seed=5)
    assert torch.equal(model(x).final, loaded.eval()(x).final)
    # a checkpoint of the LayerNorm path refuses a BatchNorm config
    save_checkpoint(layer, tmp_path / "ln.pt")
    with pytest.raises(CheckpointError, match="high_res_norm"):
        load_checkpoint(tmp_path / "ln.pt", expect=_config())
    with pytest.raises(ConfigError, match="high_res_norm"):
        _config(high_res_norm="group")


@torch.no_grad()
def test_memory_prior_starts_neutral_then_carries_the_previous_masks(tmp_path):
    from sam4em.model.model_config import MemorySettings

    model = build_model(_config(memory=MemorySettings(high_res=True))).eval()
    assert model.memory_prior is not None and model.is_trained("memory_prior.encode.0.weight")
    a, b, c = _tiles(seed=1), _tiles(seed=2), _tiles(seed=3)

    def second_slice(previous):
        bank = model.new_memory()
        model.step(previous, bank)
        assert bank.last_masks is not None and bank.last_masks.shape[1] == 3
        return model.step(c, bank).final

    plain = build_model(_config()).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    bank = plain.new_memory()
    plain.step(a, bank)
    # zero-initialised output: a stage-1 model gains the module without any change
    torch.testing.assert_close(second_slice(a), plain.step(c, bank).final)
    g = torch.Generator().manual_seed(5)
    for conv in model.memory_prior.project:
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    assert (second_slice(a) - second_slice(b)).abs().max().item() > 1e-4
    # the first slice of a stack has no previous masks: unchanged
    torch.testing.assert_close(model.step(c, model.new_memory()).final, model(c).final)
    # a checkpoint of a model without it (older configs) still loads
    assert not ModelConfig.from_dict(_config().to_dict() | {"memory": {}}).memory.high_res


@pytest.mark.parametrize("trainable", ["lora", "all"])
def test_a_config_builds_the_same_weights_every_time(trainable):
    """Every initial weight, the LoRA adapters' included, follows model.seed: a retrained
    model (a rerun, a SLURM job) starts where the first one did."""
    first = build_model(_config(encoder_trainable=trainable)).state_dict()
    torch.rand(7)  # whatever ran before in the process
    again = build_model(_config(encoder_trainable=trainable)).state_dict()
    assert first.keys() == again.keys()
    assert any("lora_A" in k for k in first) == (trainable == "lora")
    for key, value in first.items():
        assert torch.equal(value, again[key]), key
    other = build_model(_config(encoder_trainable=trainable, seed=1)).state_dict()
    assert not all(torch.equal(v, other[k]) for k, v in first.items())


def _block_grads(block: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, bf16: bool):
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = block(x)
    y.float().backward(g)
    return y.detach().float(), block[0].weight.grad.clone(), x.grad


@pytest.mark.parametrize("bf16", [False, True])
def test_channels_last_norm_and_gelu_compute_what_torch_does_and_keep_the_layout(bf16):
    from sam4em.model import channels_last
    from sam4em.model.high_res import conv_block

    torch.manual_seed(0)
    x = torch.randn(4, 8, 32, 32).contiguous(memory_format=torch.channels_last)
    g = torch.randn(4, 8, 32, 32)
    init = conv_block(8, 8, norm="batch").state_dict()
    ref = conv_block(8, 8, norm="batch").double()
    ref.load_state_dict(init)
    y_ref, w_ref, x_ref = _block_grads(ref, x.double(), g.double(), False)
    errors = {}
    for name in ("torch", "ours"):
        block = conv_block(8, 8, norm="batch")
        assert isinstance(block[1], channels_last.BatchNorm2d)
        assert isinstance(block[2], channels_last.GELU)
        if name == "torch":  # the modules' parents: what PyTorch's own kernels give
            block[1].__class__, block[2].__class__ = torch.nn.BatchNorm2d, torch.nn.GELU
        block.load_state_dict(init)
        block.to(memory_format=torch.channels_last)
        y, w, xg = _block_grads(block, x, g, bf16)
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert xg.is_contiguous(memory_format=torch.channels_last)
        rel = lambda a, b: float((a.double() - b).norm() / b.norm())  # noqa: E731
        errors[name] = (rel(y, y_ref), rel(w, w_ref.double()), rel(xg, x_ref.double()))
        state = {k: v.double() for k, v in block.state_dict().items()}
        for key in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
            expected = ref.state_dict()[key].double()
            assert torch.allclose(state[key], expected, atol=1e-3 if bf16 else 1e-6), key
    tolerance = 0.02 if bf16 else 1e-5
    assert max(errors["ours"]) < tolerance, errors
    for ours, theirs in zip(errors["ours"], errors["torch"], strict=True):
        assert ours <= 1.2 * theirs + 1e-6, errors  # never less accurate than torch's kernels
    block.eval()  # running statistics in eval: the same as torch's module on an NCHW map
    plain = conv_block(8, 8, norm="batch")
    plain.load_state_dict(block.state_dict())
    plain[1].__class__ = torch.nn.BatchNorm2d
    with torch.no_grad():
        assert torch.allclose(block(x), plain.eval()(x.contiguous()), atol=1e-5)
