"""lhotse's Fbank vs kaldi-native-fbank on the same audio, side by side; then the features
stage end to end on that audio as cuts.

    .venv/bin/python bench/features.py [--minutes 10] [--reps 3] [--jobs 2]

The audio: ``--minutes`` of the embedded default's source-domain utterances (WordNet sentences
read by espeak-ng voices, 16 kHz), ``--distinct`` of them synthesized and repeated in turn,
each utterance a separate input as each cut is in the stage. Extractors alone: each repetition
runs every variant once over all utterances, alternating their order, so load on the machine
hits them alike; the medians are printed as seconds per hour of audio, times real time, and
kaldi-native-fbank's time over lhotse's. Stage: the features stage's ``extract_features`` on
the utterances as wav files and cuts (reading audio, extracting, writing the lilcom archive and
the cuts), one run per extractor and ``num_jobs``.

The goal (the features issue): the stage >= 100x real time on 2 cores.
"""
import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from results_file import write_results  # noqa: E402
from local.embedded_corpus import SAMPLE_RATE, plan_corpus, synthesize  # noqa: E402
from speechtune.config import load_config  # noqa: E402
from speechtune.features.extractors import make_extractor  # noqa: E402
from speechtune.features.extract import extract_features  # noqa: E402
from speechtune.provenance import StageRun  # noqa: E402


def source_utterances(minutes: float, distinct: int, seed: int) -> List[np.ndarray]:
    """``minutes`` of audio: the source domain's first ``distinct`` train utterances, repeated."""
    plan = plan_corpus("source", load_config([])["corpus"]["source"], seed)["train"]
    voiced = [synthesize(plan.utterance(i)) for i in range(distinct)]
    utterances, samples = [], 0
    for audio in itertools.cycle(voiced):
        if samples >= minutes * 60 * SAMPLE_RATE:
            return utterances
        utterances.append(audio)
        samples += len(audio)


def write_cuts(utterances: List[np.ndarray], directory: Path) -> Path:
    """The utterances as wav files and a CutSet of them, as the prepare stage writes it."""
    cuts = []
    for i, audio in enumerate(utterances):
        wav = directory / f"utt{i:05d}.wav"
        sf.write(str(wav), audio, SAMPLE_RATE, subtype="PCM_16")
        recording = Recording.from_file(wav, recording_id=wav.stem)
        supervision = SupervisionSegment(wav.stem, wav.stem, 0.0, recording.duration, text="X")
        cuts.append(MonoCut(wav.stem, 0.0, recording.duration, 0, recording=recording, supervisions=[supervision]))
    path = directory / "bench_cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--distinct", type=int, default=24, help="utterances synthesized, then repeated")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="the stage's num_jobs for its parallel run")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    utterances = source_utterances(args.minutes, args.distinct, args.seed)
    # writable copies: synthesize returns read-only buffers, which torch warns about
    utterances = [np.array(audio) for audio in utterances]
    hours = sum(map(len, utterances)) / SAMPLE_RATE / 3600
    lhotse_fbank = make_extractor("lhotse-fbank", num_mel_bins=80)
    kaldi_native = make_extractor("kaldi-native-fbank", num_mel_bins=80)

    def extract_all(extractor, threads: int) -> Callable[[], None]:
        def run() -> None:
            torch.set_num_threads(threads)
            for audio in utterances:
                extractor.extract(audio, SAMPLE_RATE)
        return run

    variants: Dict[str, Callable[[], None]] = {
        "lhotse Fbank, 1 torch thread": extract_all(lhotse_fbank, 1),
        f"lhotse Fbank, {os.cpu_count()} torch threads": extract_all(lhotse_fbank, os.cpu_count()),
        "kaldi-native-fbank": extract_all(kaldi_native, 1),
    }
    times: Dict[str, List[float]] = {name: [] for name in variants}
    load = os.getloadavg()[0]  # other work on the machine slows the threaded variant most
    for rep in range(args.reps + 1):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in order:
            started = time.perf_counter()
            variants[name]()
            if rep > 0:  # the first round warms up allocators and caches
                times[name].append(time.perf_counter() - started)
    torch.set_num_threads(1)

    print(f"audio: {hours * 60:.1f} min in {len(utterances)} utterances ({args.distinct} source-domain "
          f"espeak-ng utterances, repeated), {SAMPLE_RATE} Hz; torch {torch.__version__}, "
          f"{os.cpu_count()} CPU cores, 1-minute load average {load:.1f} as timing began")
    print(f"{'extractor alone':<34} {'s per hour':>10} {'x real time':>12}   (median of {args.reps} alternating repetitions)")
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in median.items():
        print(f"{name:<34} {seconds / hours:>10.2f} {hours * 3600 / seconds:>12.0f}")
    ours = "lhotse Fbank, 1 torch thread"
    print(f"kaldi-native-fbank / lhotse Fbank (1 thread): {median['kaldi-native-fbank'] / median[ours]:.2f}x the time")

    print(f"{'stage end to end (one run each)':<34} {'s per hour':>10} {'x real time':>12}")
    stage_rt = {}
    with tempfile.TemporaryDirectory() as tmp:
        in_cuts = write_cuts(utterances, Path(tmp))
        for extractor, jobs in itertools.product(("lhotse-fbank", "kaldi-native-fbank"), sorted({1, args.jobs})):
            config = {"extractor": extractor, "num_mel_bins": 80}
            out_cuts = Path(tmp) / f"{extractor}-{jobs}" / "bench_cuts.jsonl.gz"
            started = time.perf_counter()
            extract_features(in_cuts, out_cuts, config, StageRun("features", config, args.seed), num_jobs=jobs)
            seconds = time.perf_counter() - started
            stage_rt[extractor, jobs] = hours * 3600 / seconds
            print(f"{f'{extractor}, num_jobs {jobs}':<34} {seconds / hours:>10.2f} {stage_rt[extractor, jobs]:>12.0f}",
                  flush=True)
    best = max(stage_rt[("lhotse-fbank", jobs)] for jobs in {1, args.jobs})
    print(f"goal: the stage (lhotse-fbank) >= 100x real time on {args.jobs} cores: "
          f"{'met' if best >= 100 else 'missed'} ({best:.0f}x)")
    write_results("features", {
        "audio_minutes": round(hours * 60, 2),
        "extractor_seconds_per_hour": {name: round(s / hours, 2) for name, s in median.items()},
        "kaldi_native_fbank_over_lhotse": round(median["kaldi-native-fbank"] / median[ours], 3),
        "stage_x_real_time": {f"{extractor}, num_jobs {jobs}": round(rt) for (extractor, jobs), rt in stage_rt.items()}})


if __name__ == "__main__":
    main()
