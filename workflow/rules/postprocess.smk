# Instances: block-wise 3D connected components per class, as map / reduce / map jobs
# (sam4em.postprocess.instances): label and contacts per block, one merge, relabel per
# block, one finish. The SLURM profile groups the per-block jobs so that small blocks
# do not flood the scheduler.


def component_files(pattern):
    """Input function: ``pattern`` (with {block}) for every components block."""
    return lambda wc: expand(
        res("components", wc.cls, pattern, dataset=wc.dataset),
        block=planned_component_blocks(wc.dataset, wc.cls),
    )


COMPONENTS = (
    "{SAM4EM} components --config {CONFIG_FILE:q} --pred {params.pred:q}"
    " --class {wildcards.cls:q} --out {params.instances:q} --work {params.work:q}"
)


rule components_label:
    input:
        res("predictions.json"),  # pred.zarr is complete
        plan=f"{R}/{{dataset}}/blocks.json",
    output:
        res("components", "{cls}", "{block}.npz"),
    params:
        pred=res("pred.zarr"),
        instances=res("instances.zarr"),
        work=res("components", "{cls}"),
        settings=settings_of("components_label"),
    log:
        f"{R}/logs/{{dataset}}/components_label_{{cls}}_{{block}}.log",
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=30,
    shell:
        COMPONENTS + " --step label --block {wildcards.block:q} > {log:q} 2>&1"


rule components_contacts:
    input:
        component_files("{block}.npz"),
    output:
        res("components", "{cls}", "{block}.pairs.npy"),
    params:
        pred=res("pred.zarr"),
        instances=res("instances.zarr"),
        work=res("components", "{cls}"),
        settings=settings_of("components_contacts"),
    log:
        f"{R}/logs/{{dataset}}/components_contacts_{{cls}}_{{block}}.log",
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=30,
    shell:
        COMPONENTS + " --step contacts --block {wildcards.block:q} > {log:q} 2>&1"


rule components_merge:
    input:
        component_files("{block}.npz"),
        component_files("{block}.pairs.npy"),
    output:
        merge=res("components", "{cls}", "merge.json"),  # the class array exists, empty
        final=res("components", "{cls}", "final.npy"),
        table=res("components", "{cls}", "table.csv"),
    params:
        pred=res("pred.zarr"),
        instances=res("instances.zarr"),
        work=res("components", "{cls}"),
        settings=settings_of("components_merge"),
    log:
        f"{R}/logs/{{dataset}}/components_merge_{{cls}}.log",
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    shell:
        COMPONENTS + " --step merge > {log:q} 2>&1"


rule components_relabel:
    input:
        res("components", "{cls}", "{block}.npz"),
        res("components", "{cls}", "merge.json"),
        res("components", "{cls}", "final.npy"),
    output:
        res("components", "{cls}", "{block}.done"),  # its chunks of the class array
    params:
        pred=res("pred.zarr"),
        instances=res("instances.zarr"),
        work=res("components", "{cls}"),
        settings=settings_of("components_relabel"),
    log:
        f"{R}/logs/{{dataset}}/components_relabel_{{cls}}_{{block}}.log",
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=30,
    shell:
        COMPONENTS + " --step relabel --block {wildcards.block:q} > {log:q} 2>&1"


rule components:
    input:
        component_files("{block}.done"),
        merge=res("components", "{cls}", "merge.json"),
        table=res("components", "{cls}", "table.csv"),
    output:
        res("objects", "{cls}.csv"),  # instances.zarr/{cls} is complete
    params:
        pred=res("pred.zarr"),
        instances=res("instances.zarr"),
        work=res("components", "{cls}"),
        settings=settings_of("components"),
    log:
        f"{R}/logs/{{dataset}}/components_{{cls}}.log",
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    shell:
        COMPONENTS + " --step finish --objects {output:q} > {log:q} 2>&1"
