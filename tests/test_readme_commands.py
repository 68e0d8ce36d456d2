"""Every command README.md and docs/*.md show in their ``sh`` code blocks runs as written, in a
copy of the working tree with nothing built (the state of a clean clone after set-up), and the
commands in each stage module's docstring parse with that stage's own parser.

How a command is run, so that the whole file takes a minute or two:
- ``make run ...``: as written, with ``-n`` added to SNAKEMAKE_ARGS (Snakemake builds the whole
  DAG and runs nothing); set-up runs too (it installs nothing where the venv is current).
  KALDI_KO and TTS_EVAL are set empty in the environment, so that asking for the Korean model
  or the TTS judges does not download them here: the command line itself is README's.
- ``.venv/bin/snakemake ...``: as written, plus ``-n``.
- anything else (``python -m stages.x --help``, ``speechtune status``): as written.
A command marked ``[not run by tests: <why>]`` in its comment is left out and listed in the
test's output with the reason (``pytest -rs`` shows them).
"""
import importlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from tests.conftest import REPO_ROOT

NOT_RUN = re.compile(r"\[not run by tests: ([^\]]+)\]")
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
STAGES = sorted(p.stem for p in (REPO_ROOT / "stages").glob("*.py") if p.stem != "__init__")


def code_block_commands(markdown: str) -> Iterator[Tuple[int, str]]:
    """(line number, command) for every command of every ``sh`` code block, continuation
    lines joined, comments kept (the marker lives there)."""
    in_block, pending, start = False, "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.startswith("```"):
            in_block = line.strip() in ("```sh", "```bash", "```shell")
            continue
        if not in_block or not (line.strip() or pending) or (not pending and line.lstrip().startswith("#")):
            continue  # outside a block, blank, or a comment line
        if not pending:
            start = number
        pending += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            yield start, pending.strip()
            pending = ""


def as_run_here(command: str) -> List[str]:
    """The argv that runs ``command`` here (module docstring): ``-n`` added to Snakemake."""
    words = shlex.split(command, comments=True)
    if words[:2] == ["make", "run"]:
        dry = [w for w in words if w.startswith("SNAKEMAKE_ARGS=")]
        rest = [w for w in words if not w.startswith("SNAKEMAKE_ARGS=")]
        args = dry[0].partition("=")[2] if dry else ""
        return rest + [f"SNAKEMAKE_ARGS=-n {args}".strip()]
    if words[0].endswith("bin/snakemake"):
        return words[:1] + ["-n"] + words[1:]
    return words


def readme_commands() -> List[Tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        for number, command in code_block_commands(document.read_text(encoding="utf-8")):
            found.append((f"{document.relative_to(REPO_ROOT)}:{number}", command))
    return found


@pytest.fixture(scope="module")
def fresh_tree(tmp_path_factory) -> Path:
    """The working tree as a clean clone has it (tracked and untracked, not ignored files) with
    the venv that set-up built: no data/, exp/ or logs/."""
    # The venv current first: set-up in the copy would otherwise install into the shared venv
    # from the copy's paths (scripts and the editable install left pointing into a temporary dir).
    subprocess.run(["bash", "tools/setup.sh"], cwd=REPO_ROOT, check=True, capture_output=True)
    tree = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    (tree / ".venv").symlink_to(REPO_ROOT / ".venv")
    return tree


@pytest.mark.parametrize("where, command", readme_commands(), ids=[w for w, _ in readme_commands()])
def test_readme_command_runs_as_written(where: str, command: str, fresh_tree: Path) -> None:
    reason = NOT_RUN.search(command)
    if reason:
        pytest.skip(f"{where}: `{command.split('#')[0].strip()}` not run: {reason.group(1)}")
    env = dict(os.environ, KALDI_KO="", TTS_EVAL="")
    result = subprocess.run(as_run_here(command), cwd=fresh_tree, capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, f"{where}: `{command}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_the_command_check_catches_a_broken_command(tmp_path: Path) -> None:
    """The Makefile of commit 509a392 put the target after SNAKEMAKE_ARGS, so README's
    ``make run SNAKEMAKE_ARGS="--configfile config/tiny.yaml"`` read the target as a config file:
    the same check fails on it."""
    markdown = '```sh\nmake run SNAKEMAKE_ARGS="--configfile config/tiny.yaml"   # tiny\n```\n'
    [(_, command)] = list(code_block_commands(markdown))
    assert as_run_here(command) == ["make", "run", "SNAKEMAKE_ARGS=-n --configfile config/tiny.yaml"]
    old_makefile = tmp_path / "Makefile"
    old_makefile.write_text(".PHONY: run\nrun:\n\t" + str(REPO_ROOT / ".venv/bin/snakemake") +
                            " -s " + str(REPO_ROOT / "Snakefile") + " --cores 1 $(SNAKEMAKE_ARGS) exp/finetuned/wer.txt\n")
    shutil.copytree(REPO_ROOT / "config", tmp_path / "config")
    result = subprocess.run(as_run_here(command), cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "exp/finetuned/wer.txt" in result.stdout + result.stderr


def test_continuation_lines_and_markers_are_read() -> None:
    markdown = ("```sh\n.venv/bin/snakemake --cores 8 \\\n    fbank   # features\n#   a comment line\n"
                "sbatch run.sh   # [not run by tests: a cluster submission]\n```\nmake run\n")
    commands = [c for _, c in code_block_commands(markdown)]
    assert commands == [".venv/bin/snakemake --cores 8      fbank   # features",
                        "sbatch run.sh   # [not run by tests: a cluster submission]"]
    assert as_run_here(commands[0]) == [".venv/bin/snakemake", "-n", "--cores", "8", "fbank"]
    assert NOT_RUN.search(commands[1]).group(1) == "a cluster submission"


def docstring_commands(stage: str) -> Iterator[str]:
    doc = importlib.import_module(f"stages.{stage}").__doc__ or ""
    for _, command in code_block_commands("```sh\n" + "\n".join(
            line.strip() for line in doc.splitlines() if line.startswith("    ")) + "\n```\n"):
        if command.startswith(f"python -m stages.{stage} "):
            yield command


@pytest.mark.parametrize("stage", STAGES)
def test_stage_help_and_docstring_commands_parse(stage: str, capsys) -> None:
    """``--help`` works, and each usage line of the docstring is a valid call of the stage's
    parser (a line holding ``...`` is an excerpt and is not parsed)."""
    module = importlib.import_module(f"stages.{stage}")
    with pytest.raises(SystemExit) as exited:
        module.get_parser().parse_args(["--help"])
    assert exited.value.code == 0 and f"python -m stages.{stage}" in capsys.readouterr().out
    for command in docstring_commands(stage):
        if " ... " in f"{command} ":
            continue
        argv = shlex.split(command, comments=True)[3:]
        try:
            module.get_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"stages/{stage}.py docstring: `{command}` does not parse:\n{capsys.readouterr().err}")


def test_console_script_and_benchmarks_have_help() -> None:
    for command in ([str(REPO_ROOT / ".venv/bin/speechtune"), "--help"],
                    *([str(REPO_ROOT / ".venv/bin/python"), str(p), "--help"]
                      for p in sorted((REPO_ROOT / "bench").glob("*.py")) if "__main__" in p.read_text())):
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
        assert result.returncode == 0 and "usage" in result.stdout.lower(), f"{command}: {result.stderr[-1000:]}"
