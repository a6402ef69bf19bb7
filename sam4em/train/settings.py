"""Training settings of one stage, read from the ``train`` block of the config."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sam4em.model.model_config import ModelConfig
from sam4em.train.augment import AugmentSettings


@dataclass(frozen=True)
class StageSettings:
    """Everything that shapes one stage's run (its fingerprint decides resuming)."""

    stage: int
    steps: int
    minutes: float | None
    batch_size: int
    lr: float
    lora_lr: float  # 0 freezes the encoder's trained part (LoRA or full encoder)
    memory_lr: float  # stage 2: the memory encoder and attention (trained from scratch)
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    val_every: int
    save_every: int
    log_every: int
    stage_weights: tuple[float, float]
    balance: dict[str, float]
    augment: AugmentSettings
    seed: int
    bf16: bool | None = None  # training steps in bf16 autocast; None: where native

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any], stage: int) -> StageSettings:
        """The settings of ``stage`` (1 or 2) in a validated project config."""
        train = config["train"]
        s = train[f"stage{stage}"]
        lora_lr = s["lora_lr"] if s["lora_lr"] is not None else s["lr"]
        balance = train["balance"]
        if balance is None:  # default: see synapses often when they are a class
            balance = {"synapse": 0.3} if "synapse" in config["classes"] else {}
        return cls(
            stage=stage,
            steps=s["steps"],
            minutes=s["minutes"],
            batch_size=s["batch_size"],
            lr=s["lr"],
            lora_lr=lora_lr,
            memory_lr=s["memory_lr"] if s.get("memory_lr") is not None else s["lr"],
            weight_decay=train["weight_decay"],
            warmup_steps=s["warmup_steps"],
            grad_clip=train["grad_clip"],
            val_every=s["val_every"],
            save_every=train["save_every"],
            log_every=train["log_every"],
            stage_weights=(train["loss"]["stage1_weight"], train["loss"]["stage2_weight"]),
            balance=dict(balance),
            augment=AugmentSettings(**train["augment"]),
            seed=train["seed"] + stage,
            bf16=None if train["bf16"] == "auto" else bool(train["bf16"]),
        )


@dataclass(frozen=True)
class TrainSettings:
    """What one training stage reads: its schedule and the model it trains."""

    stage: StageSettings
    model: ModelConfig
    # stage 2 only (None for stage 1, whose rule must not rerun when it changes): stage 2
    # is kept when it beats the stage-1 weights on val by this much
    min_gain: float | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any], stage: int) -> TrainSettings:
        """The settings of training ``stage`` (1 or 2) in a validated project config."""
        return cls(
            stage=StageSettings.from_config(config, stage),
            model=ModelConfig.from_config(config),
            min_gain=config["train"]["stage2_min_gain"] if stage == 2 else None,
        )
