# Metrics on the test slices and the per-dataset report.


rule evaluate:
    input:
        volume=f"{R}/{{dataset}}/volume.zarr",
        predictions=f"{R}/{{dataset}}/predictions.json",
        objects=expand(f"{R}/{{{{dataset}}}}/objects/{{cls}}.csv", cls=config["classes"]),
    output:
        metrics=f"{R}/{{dataset}}/eval/metrics.csv",
        per_slice=f"{R}/{{dataset}}/eval/metrics_per_slice.csv",
        matched=f"{R}/{{dataset}}/eval/objects_matched.csv",
    log:
        f"{R}/logs/{{dataset}}/evaluate.log",
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=60,
    shell:
        "{SAM4EM} evaluate --config {CONFIG_FILE} --dataset {wildcards.dataset}"
        " --volume {input.volume} --pred {R}/{wildcards.dataset}/pred.zarr"
        " --instances {R}/{wildcards.dataset}/instances.zarr"
        " --out-dir {R}/{wildcards.dataset}/eval > {log} 2>&1"


rule report:
    input:
        metrics=f"{R}/{{dataset}}/eval/metrics.csv",
        per_slice=f"{R}/{{dataset}}/eval/metrics_per_slice.csv",
    output:
        html=f"{R}/{{dataset}}/report.html",
        per_slice=report(
            f"{R}/{{dataset}}/figures/report/per_slice_dice.png", category="{dataset}"
        ),
        sizes=report(f"{R}/{{dataset}}/figures/report/object_sizes.png", category="{dataset}"),
        overlays=report(
            expand(f"{R}/{{{{dataset}}}}/figures/report/overlay_{{cls}}.png", cls=config["classes"]),
            category="{dataset}",
        ),
    log:
        f"{R}/logs/{{dataset}}/report.log",
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    shell:
        "{SAM4EM} report --config {CONFIG_FILE} --dataset {wildcards.dataset}"
        " --results {R}/{wildcards.dataset} --out {output.html}"
        " --figures {R}/{wildcards.dataset}/figures/report > {log} 2>&1"
