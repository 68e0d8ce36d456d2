# Reports: every system's scores side by side, and the alpha sweep's.


def report_inputs(systems):
    """Scores, hypotheses (for the bootstrap), training provenance and test cuts (for audio)."""
    return {
        "scores": [f"{ex.decode_dir(s, t, m)}/wer.json" for s in systems for t in TESTSETS for m in METHODS],
        "provenance": [f"{ex.system_dir(s)}/provenance.json" for s in systems],
        "cuts": [ex.feature_cuts(t) for t in TESTSETS],
    }


def report_outputs(name):
    return {"json": f"exp/{name}.json", "md": f"exp/{name}.md", "png": f"exp/{name}_wer.png",
            "html": f"exp/{name}.html"}


# Captions of `snakemake --report`.
CAPTIONS = os.path.join(workflow.basedir, "report")


rule report:
    """Every system's scores side by side: exp/report.{json,md,html} and a bar chart."""
    input:
        **report_inputs(SYSTEMS),
    output:
        **{**report_outputs("report"),
           "png": report("exp/report_wer.png", caption=f"{CAPTIONS}/wer.rst", category="Results"),
           "html": report("exp/report.html", caption=f"{CAPTIONS}/html.rst", category="Results")},
    params:
        systems=SYSTEMS,
    log:
        "logs/report/report.log",
    shell:
        "{PYTHON} -m stages.report exp --systems {params.systems} --testsets {TESTSETS} > {log} 2>&1"


rule alpha_sweep:
    """The default comparison plus fine-tuning at each alpha of alpha_sweep: the same report,
    exp/alpha_sweep.{json,md,html}, with WER against alpha plotted (exp/alpha_sweep_alpha.png)."""
    input:
        **report_inputs([*SYSTEMS, *SWEEP]),
    output:
        **report_outputs("alpha_sweep"),
        alpha=report("exp/alpha_sweep_alpha.png", caption=f"{CAPTIONS}/alpha.rst", category="Alpha sweep"),
    params:
        systems=[*SYSTEMS, *SWEEP],
    log:
        "logs/report/alpha_sweep.log",
    shell:
        "{PYTHON} -m stages.report exp --name alpha_sweep --systems {params.systems} --testsets {TESTSETS} "
        "> {log} 2>&1"
