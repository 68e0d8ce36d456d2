"""Decoding speed: real-time factor of HLG 1-best and CTC greedy search, measured in one pass.

    .venv/bin/python bench/decode.py [--system finetuned] [--testsets target_test source_test] [--config PRESET]

Reads a built tree (run the main target first): ``exp/<system>/model.pt``, the lang dirs and
the test cuts. Both methods share each batch's network forward, which is counted in both;
HLG adds k2.intersect_dense_pruned + shortest_path, greedy an argmax (with phone units its
"words" are phone strings: only its time means anything here). Prints seconds of decoding
per second of audio (RTF, goal <= 0.05) and HLG/greedy. Threads: 2, as the pipeline's decode.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from results_file import write_results  # noqa: E402
from speechtune import experiment as ex  # noqa: E402
from speechtune.config import DEFAULT_CONFIG_PATH, load_config  # noqa: E402
from speechtune.data.cuts import load_cuts  # noqa: E402
from speechtune.decoding import decode_cuts, decode_loader, load_hlg, read_symbols  # noqa: E402
from speechtune.training.checkpoint import model_from_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="finetuned")
    parser.add_argument("--testsets", nargs="+", help="default: the config's")
    parser.add_argument("--config", type=Path, action="append", default=[], help="presets layered on the default")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config([DEFAULT_CONFIG_PATH, *args.config])
    params = config["decode"]
    model = model_from_checkpoint(Path(ex.system_dir(args.system)) / "model.pt")
    print(f"{'test set':<14} {'audio s':>8} {'HLG RTF':>8} {'greedy RTF':>10} {'HLG/greedy':>10}")
    figures = {}
    for testset in args.testsets or ex.testsets(config):
        domain = ex.testset_domain(testset)
        lang_dir = Path(ex.lang_dir(config, domain))
        cuts = load_cuts(Path(ex.feature_cuts(testset, ex.front_end(args.system))))
        _, seconds = decode_cuts(model, decode_loader(cuts, params), load_hlg(lang_dir, domain), read_symbols(lang_dir / "words.txt"),
                                 read_symbols(lang_dir / "tokens.txt"), params)
        audio = sum(cut.duration for cut in cuts)
        hlg, greedy = seconds["hlg"] / audio, seconds["greedy"] / audio
        print(f"{testset:<14} {audio:>8.1f} {hlg:>8.4f} {greedy:>10.4f} {hlg / greedy:>10.1f}")
        figures[testset] = {"audio_seconds": round(audio, 1), "hlg_rtf": round(hlg, 4), "greedy_rtf": round(greedy, 4)}
    print("goal: HLG RTF <= 0.05 on 2 cores")
    write_results("decode", {"system": args.system, "threads": 2, "testsets": figures})


if __name__ == "__main__":
    main()
