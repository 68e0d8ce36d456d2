# Config validation and what every rule file shares. What the systems, test sets and paths are
# comes from speechtune/experiment.py; a method's extra inputs from its registered declaration.
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
from local.embedded_corpus import check_unseen_split  # noqa: E402
from speechtune import experiment as ex  # noqa: E402
from speechtune.config import validate_config  # noqa: E402
from speechtune.finetuning import extra_inputs  # noqa: E402
from speechtune.training.batches import SPEED_FACTORS, SPEED_PERTURBED  # noqa: E402

validate_config(config, where="Snakemake config")
ex.check_config(config)  # a bad override or an unknown method fails here, before any job runs
check_unseen_split(config["corpus"])  # the unseen voice family reads no other split of either domain

PYTHON = sys.executable  # the venv that runs Snakemake runs every stage
DEVICE = config["device"]  # where training and decoding compute: a CLI option, so changing it reruns nothing

# Never more busy threads than the machine has cores, whatever --cores says: on 2 cores, two
# trainings of two torch threads each run 5-20x slower than one alone. Every rule that computes
# declares the threads it keeps busy as the resource cpu_threads, and all jobs together get the
# core count (`--resources cpu_threads=N` sets another limit).
CPU_THREADS = os.cpu_count() or 1
workflow.global_resources.setdefault("cpu_threads", CPU_THREADS)


def asked_resources(rule):
    """The config's `resources` entry of ``rule`` over its `default`."""
    return {**config["resources"]["default"], **config["resources"].get(rule, {})}


def rule_threads(rule):
    """The busy threads of one job of ``rule`` (Snakemake lowers them to --cores)."""
    return asked_resources(rule)["threads"]


def rule_resources(rule):
    """Snakemake resources of ``rule``'s jobs: mem_mb, runtime (minutes), gpus, and cpu_threads,
    its busy threads, at most the limit (a job must fit)."""
    asked = asked_resources(rule)
    return {"cpu_threads": min(asked["threads"], workflow.global_resources["cpu_threads"]),
            "mem_mb": asked["mem_mb"], "runtime": asked["runtime"], "gpus": asked["gpus"]}


# Data-parallel processes of a training job (`processes` in its resources: torch DDP under
# torchrun, sharing the job's threads). Passed like --device, so changing it reruns nothing.
PROCESSES = {rule: asked_resources(rule)["processes"] for rule in ("pretrain", "finetune", "scratch")}


SEED = config["seed"]
SYSTEMS = ex.system_names(config)
SWEEP = list(ex.sweep_variants(config))
FINE_TUNED = ex.fine_tuned_systems(config)
TESTSETS = ex.testsets(config)
METHODS = ex.decode_methods(config)


def one_of(names):
    """A wildcard constraint matching exactly these names."""
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    domain=one_of(ex.DOMAINS),
    split=one_of(sorted({split for domain in ex.DOMAINS for split in ex.splits(config, domain)})),
    system=one_of(ex.trainable_systems(config)),
    testset=one_of(TESTSETS),
    method="hlg|greedy",
    feature_dir=one_of(ex.FEATURE_DIRS.values()),
    subset=one_of([*ex.subsets(config), *(s + SPEED_PERTURBED for s in ex.subsets(config))]),


def section(*keys):
    """A config section as JSON for a stage's --config-json (and for Snakemake's params check)."""
    value = config
    for key in keys:
        value = value[key]
    return json.dumps(value, sort_keys=True)


def training_config(system):
    """The sections a system's training stage reads, as JSON for --config-json."""
    return json.dumps(ex.training_sections(config, system), sort_keys=True)


def extra_arguments(wildcards, input):
    """The stage options for the extra inputs the system's method declares (e.g. rehearsal's
    source cuts and lang dir, noise mixing's noise cuts)."""
    specs = extra_inputs(ex.training_sections(config, wildcards.system)["finetune"])
    return " ".join(f"{spec.option} {input[spec.name]}" for spec in specs)
