# Dual-stage fine-tuning. GPU rules: they declare gpu=1 (the profiles route them).


def stage1_train_tiles(wildcards):
    names = [wildcards.dataset] + [
        d for d in config["train"]["pretrain_datasets"] if d != wildcards.dataset
    ]
    return [f"{R}/{d}/tiles/train.zarr" for d in names]


def val_tiles(wildcards):
    return [f"{R}/{wildcards.dataset}/tiles/val.zarr"] if "val" in labelled_splits(
        wildcards.dataset
    ) else []


rule train_stage1:
    input:
        train=stage1_train_tiles,
        val=val_tiles,
    output:
        model=f"{R}/{{dataset}}/models/stage1.pt",
        history=f"{R}/{{dataset}}/models/stage1_history.csv",
        curves=f"{R}/{{dataset}}/models/stage1_curves.png",
    params:
        settings=settings_of("train_stage1"),
    log:
        f"{R}/logs/{{dataset}}/train_stage1.log",
    threads: 4
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=720,
    shell:
        "{SAM4EM} train --stage 1 --config {CONFIG_FILE:q} --train-tiles {input.train:q}"
        " --val-tiles {input.val:q} --out {output.model:q} > {log:q} 2>&1"


rule train_stage2:
    input:
        init=f"{R}/{{dataset}}/models/stage1.pt",
        train=f"{R}/{{dataset}}/tiles/train.zarr",
        val=val_tiles,
    output:
        model=f"{R}/{{dataset}}/models/stage2.pt",
        history=f"{R}/{{dataset}}/models/stage2_history.csv",
        curves=f"{R}/{{dataset}}/models/stage2_curves.png",
    params:
        settings=settings_of("train_stage2"),
    log:
        f"{R}/logs/{{dataset}}/train_stage2.log",
    threads: 4
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=720,
    shell:
        "{SAM4EM} train --stage 2 --config {CONFIG_FILE:q} --init {input.init:q}"
        " --train-tiles {input.train:q} --val-tiles {input.val:q} --out {output.model:q} > {log:q} 2>&1"
