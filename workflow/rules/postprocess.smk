# Instances: block-wise 3D connected components per class.


rule components:
    input:
        res("predictions.json"),  # pred.zarr is complete
    output:
        res("objects", "{cls}.csv"),  # instances.zarr/{cls} is complete
    params:
        pred=res("pred.zarr"),
        instances=res("instances.zarr"),
    log:
        f"{R}/logs/{{dataset}}/components_{{cls}}.log",
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    shell:
        "{SAM4EM} components --config {CONFIG_FILE:q} --pred {params.pred:q}"
        " --class {wildcards.cls:q} --out {params.instances:q} --objects {output:q} > {log:q} 2>&1"
