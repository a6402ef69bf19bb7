# Block-wise inference (GPU rules, one job per block) and stitching.


wildcard_constraints:
    block=r"z\d+y\d+x\d+",


def block_markers(wildcards):
    """Every block's done marker; known once the plan_blocks checkpoint has run."""
    blocks = planned_blocks(wildcards.dataset)
    return expand(f"{R}/{wildcards.dataset}/blocks/{{block}}.done", block=blocks)


rule predict_block:
    input:
        model=lambda wc: model_for(wc.dataset),
        volume=f"{R}/{{dataset}}/volume.zarr",
        plan=f"{R}/{{dataset}}/blocks.json",
    output:
        res("blocks", "{block}.done"),  # this block's chunks of pred.zarr are written
    params:
        pred=res("pred.zarr"),
        settings=settings_of("predict_block"),
    log:
        f"{R}/logs/{{dataset}}/predict_block_{{block}}.log",
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=120,
    shell:
        "{SAM4EM} predict-block --config {CONFIG_FILE:q} --checkpoint {input.model:q}"
        " --volume {input.volume:q} --plan {input.plan:q} --block {wildcards.block:q}"
        " --out {params.pred:q} --done {output:q} > {log:q} 2>&1"


rule stitch:
    input:
        # the model too, so training shows in the DAG before the block plan exists
        model=lambda wc: model_for(wc.dataset),
        markers=block_markers,
        volume=f"{R}/{{dataset}}/volume.zarr",
        plan=f"{R}/{{dataset}}/blocks.json",
    output:
        summary=res("predictions.json"),  # marks pred.zarr complete (level 1 added)
        figure=res("figures", "predictions.png"),
    params:
        pred=res("pred.zarr"),
    log:
        f"{R}/logs/{{dataset}}/stitch.log",
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    shell:
        "{SAM4EM} stitch --volume {input.volume:q}"
        " --pred {params.pred:q} --plan {input.plan:q}"
        " --summary {output.summary:q} --figure {output.figure:q} > {log:q} 2>&1"
