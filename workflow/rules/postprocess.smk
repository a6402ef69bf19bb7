# Instances: block-wise 3D connected components per class.


rule components:
    input:
        f"{R}/{{dataset}}/predictions.json",
    output:
        f"{R}/{{dataset}}/objects/{{cls}}.csv",
    log:
        f"{R}/logs/{{dataset}}/components_{{cls}}.log",
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    shell:
        "{SAM4EM} components --config {CONFIG_FILE} --pred {R}/{wildcards.dataset}/pred.zarr"
        " --class {wildcards.cls} --out {R}/{wildcards.dataset}/instances.zarr"
        " --objects {output} > {log} 2>&1"
