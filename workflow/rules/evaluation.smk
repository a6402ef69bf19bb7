# Metrics on the test crops (a test split: whole planes) and the per-dataset report. pred.zarr and instances.zarr are
# stores shared by many jobs: predictions.json (stitch) and objects/{cls}.csv (components)
# are their completion markers.


def own_models(wildcards):
    """A dataset's checkpoints and training records, when it trains its own model."""
    if "train" not in labelled_splits(wildcards.dataset):
        return []
    return expand(
        res("models", "stage{stage}{suffix}", dataset=wildcards.dataset),
        stage=(1, 2),
        suffix=(".pt", "_history.csv", "_curves.png"),
    )


rule evaluate:
    input:
        volume=res("volume.zarr"),
        predictions=res("predictions.json"),
        objects=expand(res("objects", "{cls}.csv", dataset="{{dataset}}"), cls=config["classes"]),
    output:
        metrics=res("eval", "metrics.csv"),
        per_crop=res("eval", "metrics_per_crop.csv"),
        per_slice=res("eval", "metrics_per_slice.csv"),
        matched=res("eval", "objects_matched.csv"),
    params:
        pred=res("pred.zarr"),
        instances=res("instances.zarr"),
        out_dir=res("eval"),
        settings=settings_of("evaluate"),
    log:
        f"{R}/logs/{{dataset}}/evaluate.log",
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=60,
    shell:
        "{SAM4EM} evaluate --config {CONFIG_FILE:q} --dataset {wildcards.dataset:q}"
        " --volume {input.volume:q} --pred {params.pred:q} --instances {params.instances:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule report:
    input:
        metrics=res("eval", "metrics.csv"),
        per_crop=res("eval", "metrics_per_crop.csv"),
        per_slice=res("eval", "metrics_per_slice.csv"),
        volume=res("volume.zarr"),
        predictions=res("predictions.json"),  # pred.zarr (and its uncertainty) is complete
        objects=expand(res("objects", "{cls}.csv", dataset="{{dataset}}"), cls=config["classes"]),
        analysis=expand(
            res("analysis", "{cls}.csv", dataset="{{dataset}}"), cls=ANALYSIS.analysed_classes()
        ),
        annotate_next=res("annotate_next.csv"),
        models=own_models,
    output:
        html=res("report.html"),
        per_slice=report(res("figures", "report", "per_slice_dice.png"), category="{dataset}"),
        sizes=report(res("figures", "report", "object_sizes.png"), category="{dataset}"),
        # the cross-class histograms (a note when analysis configures no pairs)
        analysis=report(res("figures", "report", "analysis.png"), category="{dataset}"),
        # per labelled class (a partly labelled dataset has fewer): error map, uncertainty
        # and, for small objects, zoomed crops
        overlays=report(
            directory(res("figures", "report", "overlays")),
            patterns=["overlay_{cls}.png"],
            category="{dataset}",
        ),
    params:
        results=res(),
        figures=res("figures", "report"),
        settings=settings_of("report"),
    log:
        f"{R}/logs/{{dataset}}/report.log",
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    shell:
        "{SAM4EM} report --config {CONFIG_FILE:q} --dataset {wildcards.dataset:q}"
        " --results {params.results:q} --out {output.html:q}"
        " --figures {params.figures:q} > {log:q} 2>&1"


# Viewers: volume.zarr's OME labels group lists each class's objects (a link into
# instances.zarr) beside its annotation; layers.json is the marker that it is done.
rule layers:
    input:
        volume=res("volume.zarr"),
        predictions=res("predictions.json"),
        objects=expand(res("objects", "{cls}.csv", dataset="{{dataset}}"), cls=config["classes"]),
    output:
        res("layers.json"),
    params:
        pred=res("pred.zarr"),
        instances=res("instances.zarr"),
    log:
        f"{R}/logs/{{dataset}}/layers.log",
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "{SAM4EM} layers --volume {input.volume:q} --pred {params.pred:q}"
        " --instances {params.instances:q} --out {output:q} > {log:q} 2>&1"
