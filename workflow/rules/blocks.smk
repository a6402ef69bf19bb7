# The block plan: a checkpoint, since the number of inference jobs depends on it.


checkpoint plan_blocks:
    input:
        f"{R}/{{dataset}}/volume.zarr",
    output:
        f"{R}/{{dataset}}/blocks.json",
    params:
        settings=settings_of("plan_blocks"),
    log:
        f"{R}/logs/{{dataset}}/plan_blocks.log",
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=10,
    shell:
        "{SAM4EM} plan-blocks --config {CONFIG_FILE:q} --volume {input:q} --out {output:q} > {log:q} 2>&1"
