# Cross-class measures of each analysed class's objects (analysis.contacts and
# analysis.distances: contact shells, nearest distances; sam4em.analysis.contacts), and
# the regions where the model is least sure (annotate_next.csv; sam4em.report.annotate_next).


def partner_objects(wildcards):
    """The object tables of a class and of every class it is measured against."""
    pairs = ANALYSIS.contacts + ANALYSIS.distances
    classes = [wildcards.cls] + [b for a, b in pairs if a == wildcards.cls]
    return [res("objects", f"{c}.csv") for c in dict.fromkeys(classes)]


rule analyze_objects:
    input:
        partner_objects,  # instances.zarr holds these classes
        volume=res("volume.zarr"),
    output:
        res("analysis", "{cls}.csv"),
    params:
        instances=res("instances.zarr"),
        objects=res("objects"),
        settings=settings_of("analyze_objects"),
    log:
        f"{R}/logs/{{dataset}}/analyze_objects_{{cls}}.log",
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    shell:
        "{SAM4EM} analyze --config {CONFIG_FILE:q} --class {wildcards.cls:q}"
        " --volume {input.volume:q} --instances {params.instances:q}"
        " --objects {params.objects:q} --out {output:q} > {log:q} 2>&1"


rule annotate_next:
    input:
        predictions=res("predictions.json"),  # pred.zarr is complete
        layers=res("layers.json"),  # the layers the links open; every class's objects
    output:
        res("annotate_next.csv"),
    params:
        pred=res("pred.zarr"),
        instances=res("instances.zarr"),
        results=res(),
        settings=settings_of("annotate_next"),
    log:
        f"{R}/logs/{{dataset}}/annotate_next.log",
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=30,
    shell:
        "{SAM4EM} annotate-next --config {CONFIG_FILE:q} --dataset {wildcards.dataset:q}"
        " --pred {params.pred:q} --instances {params.instances:q}"
        " --results {params.results:q} --out {output:q} > {log:q} 2>&1"
