"""What every stage CLI (``stages/<name>.py``) shares: its parser's config options, Kaldi-like
log lines, and clear, traceback-free errors.

A stage module is a parser and a call into the library::

    def get_parser() -> argparse.ArgumentParser:
        parser = stage_parser(__name__, __doc__)
        parser.add_argument(...)
        add_config_arguments(parser)
        return parser

    def main(argv: Optional[Sequence[str]] = None) -> None:
        args = get_parser().parse_args(argv)
        config = stage_config(args, "features")
        ...

    if __name__ == "__main__":
        run_cli(main)

Bad input raises ``StageError("<file>: <what is wrong>; <how to fix it>")``, which ``run_cli``
prints as one ``ERROR:`` line with exit status 1 (Snakemake then names the log).
"""
import argparse
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

from speechtune.config import DEFAULT_CONFIG_PATH, REPO_ROOT, get_section, load_config, validate_config
from speechtune.errors import ConfigError, StageError

if TYPE_CHECKING:
    import torch


def setup_logging(verbose: bool = False) -> None:
    """Log lines like Kaldi's: time, stage logger, level, message; to stderr (Snakemake's log:)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )


def run_cli(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; report StageError/ConfigError as one line and exit 1."""
    setup_logging()
    try:
        main()
    except (StageError, ConfigError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(1)


def stage_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """A stage's parser: ``python -m <module>``, the module docstring as its ``--help`` text."""
    if module == "__main__":  # run as `python -m stages.x`: its own name is in its spec
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` (repeatable), ``--config-json JSON`` and ``--seed`` to a stage's parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--config", type=Path, action="append", default=None, metavar="FILE",
        help=f"YAML config file; repeat to layer presets (default: {DEFAULT_CONFIG_PATH.relative_to(REPO_ROOT)})",
    )
    group.add_argument(
        "--config-json", metavar="JSON",
        help="this stage's resolved config section as JSON (what the Snakefile passes)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's seed)")


def add_threads_argument(parser: argparse.ArgumentParser, what: str = "torch threads") -> None:
    """Add ``--threads N``: the job's busy threads (Snakemake passes its rule's ``threads``, from
    the config's ``resources``). Not part of the stage's config, so it never changes a result's
    identity (the resume key) or reruns a stage."""
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help=f"{what} (default 1; never more than the machine's cores)")


def add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads`` and ``--device auto|cpu|cuda`` (:mod:`speechtune.devices`; the rules
    pass the config's ``device``): where a training or decoding stage computes. torch is imported
    by the stages that compute, not by every stage CLI (scoring and reports start without it)."""
    from speechtune.devices import DEVICES

    add_threads_argument(parser)
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA where torch and k2 have it, else the CPU (default auto)")


def compute_device(args: argparse.Namespace) -> "torch.device":
    """Set torch's threads from ``--threads`` (shared by torchrun's processes, where it started
    this one); the device ``--device`` asks for."""
    from speechtune.devices import select_device

    use_threads(max(1, args.threads // int(os.environ.get("WORLD_SIZE", 1))))
    return select_device(args.device)


def add_processes_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--processes N`` to a training stage (Snakemake passes its rule's ``processes``, from
    the config's ``resources``): data-parallel training, :mod:`speechtune.training.distributed`."""
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="train in N processes with torch DDP, started by torchrun (gloo on the CPU, NCCL "
                             "on GPUs: one process per GPU); they share --threads (default 1)")


def free_local_port() -> int:
    """A TCP port free on 127.0.0.1 now: torchrun's rendezvous, where several jobs may train on
    one machine at once (its --standalone always takes 29400)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_under_torchrun(args: argparse.Namespace, module: str, argv: Optional[Sequence[str]]) -> bool:
    """Where ``--processes`` asks for several and this process is not one of torchrun's: run
    ``python -m <module> <argv>`` in that many processes under torchrun, on this machine, and
    return True (the stage is done); False where this process trains itself."""
    if args.processes < 1:
        raise ConfigError(f"--processes {args.processes}: expected 1 or more")
    if args.processes == 1 or "WORLD_SIZE" in os.environ:
        return False
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
               str(args.processes), "--master_addr", "127.0.0.1", "--master_port", str(free_local_port()),
               "-m", module, *(sys.argv[1:] if argv is None else argv)]
    logging.getLogger("speechtune").info("training in %d processes: %s", args.processes, " ".join(command))
    if subprocess.run(command).returncode != 0:
        raise StageError(f"{module}: a training process under torchrun failed: its error is above")
    return True


def use_threads(threads: int) -> int:
    """Set torch's intra-op threads to ``threads``, at most the machine's cores; return them."""
    import torch

    threads = max(1, min(threads, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    return threads


def stage_config(args: argparse.Namespace, section: str) -> Dict[str, Any]:
    """The validated config section a stage works from, from either CLI route."""
    if args.config_json is not None:
        try:
            config = json.loads(args.config_json)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config-json is not valid JSON: {e}") from None
        validate_config(config, section=section, where="--config-json")
        return config
    return get_section(load_config(args.config or []), section)


def stage_sections(args: argparse.Namespace, names: Sequence[str]) -> Dict[str, Any]:
    """Several validated top-level sections, ``{name: section}``, for a stage that reads more
    than one (training reads ``model``, ``loss`` and its own). ``--config-json`` then holds
    exactly that mapping."""
    if args.config_json is None:
        config = load_config(args.config or [])
        return {name: config[name] for name in names}
    try:
        sections = json.loads(args.config_json)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config-json is not valid JSON: {e}") from None
    if not isinstance(sections, dict) or sorted(sections) != sorted(names):
        got = sorted(sections) if isinstance(sections, dict) else type(sections).__name__
        raise ConfigError(f"--config-json: expected the sections {sorted(names)}, got {got}")
    for name in names:
        validate_config(sections[name], section=name, where="--config-json")
    return sections


def stage_seed(args: argparse.Namespace) -> int:
    """The run's seed: ``--seed`` where given, else the top-level ``seed`` of the config files."""
    if args.seed is not None:
        return int(args.seed)
    if args.config_json is not None:
        raise ConfigError("--config-json needs --seed: the seed lives at the config's top level")
    return int(load_config(args.config or [])["seed"])
