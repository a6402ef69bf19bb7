# Training tiles and z-sequences per split.


rule tile:
    input:
        f"{R}/{{dataset}}/volume.zarr",
    output:
        directory(f"{R}/{{dataset}}/tiles/{{split}}.zarr"),
    params:
        settings=settings_of("tile"),
    log:
        f"{R}/logs/{{dataset}}/tile_{{split}}.log",
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    shell:
        "{SAM4EM} tile --config {CONFIG_FILE:q} --dataset {wildcards.dataset:q} --split {wildcards.split:q}"
        " --volume {input:q} --out {output:q} > {log:q} 2>&1"
