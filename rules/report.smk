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


rule time_to_target:
    """target_dev WER after every epoch of plain fine-tuning and of training from scratch, against
    training seconds: exp/time_to_target.{json,png}."""
    input:
        models=[f"{ex.system_dir(s)}/model.pt" for s in (ex.PLAIN, ex.SCRATCH)],
        lang=ex.lang_dir(config, "target"),
        cuts=ex.feature_cuts(ex.DEV_SET),
    output:
        json="exp/time_to_target.json",
        png="exp/time_to_target.png",
    params:
        cfg=section("decode"),
        systems=[ex.PLAIN, ex.SCRATCH],
    threads: rule_threads("time_to_target")
    resources:
        **rule_resources("time_to_target"),
    log:
        "logs/report/time_to_target.log",
    shell:
        "{PYTHON} -m stages.time_to_target exp {input.lang} {input.cuts} --systems {params.systems} --threads {threads} "
        "--config-json {params.cfg:q} --seed {SEED} > {log} 2>&1"


CURVE_POINTS = {name: [p.base, p.minutes, p.seed] for name, p in ex.learning_curve_points(config).items()}


rule learning_curve:
    """Each learning_curve system at each size of target_train and seed, on target_test:
    exp/learning_curve.{json,md,png}."""
    input:
        [f"{ex.decode_dir(system, ex.TARGET_TESTSET)}/wer.json" for system in CURVE_POINTS],
    output:
        json="exp/learning_curve.json",
        md="exp/learning_curve.md",
        png="exp/learning_curve.png",
    params:
        points=json.dumps(CURVE_POINTS),
    threads: rule_threads("learning_curve")
    resources:
        **rule_resources("learning_curve"),
    log:
        "logs/report/learning_curve.log",
    shell:
        "{PYTHON} -m stages.learning_curve exp --points {params.points:q} > {log} 2>&1"


# Shown first in report.html: time to target, and the learning curve where the config asks.
FINDINGS = ["exp/time_to_target.json", *(["exp/learning_curve.json"] if config["learning_curve"]["report"] else [])]


rule report:
    """Every system's scores side by side: exp/report.{json,md,html}, the gain/cost scatter, the
    time-to-target plot."""
    input:
        **report_inputs(SYSTEMS),
        findings=FINDINGS,
    output:
        **{**report_outputs("report"),
           "png": report("exp/report_wer.png", caption=f"{CAPTIONS}/wer.rst", category="Results"),
           "html": report("exp/report.html", caption=f"{CAPTIONS}/html.rst", category="Results")},
    params:
        systems=SYSTEMS,
    threads: rule_threads("report")
    resources:
        **rule_resources("report"),
    log:
        "logs/report/report.log",
    shell:
        "{PYTHON} -m stages.report exp --systems {params.systems} --testsets {TESTSETS} "
        "--findings {input.findings} > {log} 2>&1"


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
    threads: rule_threads("alpha_sweep")
    resources:
        **rule_resources("alpha_sweep"),
    log:
        "logs/report/alpha_sweep.log",
    shell:
        "{PYTHON} -m stages.report exp --name alpha_sweep --systems {params.systems} --testsets {TESTSETS} "
        "> {log} 2>&1"
