# Demo data and import into the canonical volume.zarr.


rule fetch_demo:
    output:
        directory(DEMO_DEST),
    params:
        settings=settings_of("fetch_demo"),
    log:
        f"{R}/logs/fetch_demo.log",
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=30,
    shell:
        "{SAM4EM} fetch-demo --config {CONFIG_FILE:q} --dest {output:q} > {log:q} 2>&1"


rule import_volume:
    input:
        import_sources,  # the dataset's raw and label files or folders
    output:
        directory(f"{R}/{{dataset}}/volume.zarr"),
    params:
        settings=settings_of("import_volume"),
        sources=import_fingerprint,  # new pixels under the same file names re-import
    log:
        f"{R}/logs/{{dataset}}/import_volume.log",
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=60,
    shell:
        "{SAM4EM} import --config {CONFIG_FILE:q} --dataset {wildcards.dataset:q} --out {output:q} > {log:q} 2>&1"
