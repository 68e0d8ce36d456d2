"""Stage ``corpus``: synthesize the embedded default corpus (DESIGN.md) as Kaldi data dirs.

    python -m stages.corpus --domain source data/corpus/source --config config/config.yaml
    python -m stages.corpus --domain target data/corpus/target --config config/config.yaml

For each split of ``corpus.<domain>.splits`` this synthesizes utterances, in order, until the
split holds ``minutes`` of audio, and writes::

    data/corpus/target/
        train/wav.scp    tgt-spk01-train-00003 data/corpus/target/wav/train/tgt-spk01-train-00003.wav
        train/text       tgt-spk01-train-00003 TURN OFF THE KITCHEN LIGHTS
        train/utt2spk, train/spk2utt
        train/spk2voice  tgt-spk01 flite voice=awb duration_stretch=1.07 int_f0_target_mean=131
        dev/ ...  test/ ...
        wav/<split>/<utt>.wav    16 kHz mono 16-bit
        provenance.json          config, seed, tool versions, utterances and seconds per split

Paths in ``wav.scp`` are the final ones relative to the directory the stage runs from (the
repository root), as Kaldi expects. Who reads what, in which room, is decided in
``local.embedded_corpus``; the same seed gives byte-identical files.
"""
import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import soundfile as sf
from tqdm import tqdm

from local.embedded_corpus import (
    SAMPLE_RATE, SPLITS, SplitPlan, Utterance, check_environment, plan_corpus, synthesize,
    tool_versions,
)
from stages.cli import run_cli
from stages.config import add_config_arguments, stage_config, stage_seed
from stages.provenance import StageRun, atomic_dir


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stages.corpus",
        description="Synthesize the embedded default corpus of one domain as Kaldi data dirs "
                    "(one per split) with 16 kHz WAV audio.",
    )
    parser.add_argument("--domain", required=True, choices=sorted(SPLITS),
                        help="source: WordNet sentences, espeak-ng voices, clean; "
                             "target: smart-speaker commands, flite voices, reverb and noise")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="e.g. data/corpus/target")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="synthesizer processes run at once (default: the CPU count)")
    add_config_arguments(parser)
    return parser


def synthesize_split(
    plan: SplitPlan, minutes: float, wav_dir: Path, workers: int
) -> List[Tuple[Utterance, float]]:
    """Synthesize ``plan``'s utterances 0, 1, 2, ... into ``wav_dir`` until they add up to
    ``minutes``; return each kept utterance with its duration in seconds.

    Workers synthesize a chunk at a time, and the stopping point is decided in utterance order,
    so the result does not depend on which worker finished first; files synthesized past the
    stopping point are removed.
    """
    wanted = minutes * 60
    kept: List[Tuple[Utterance, float]] = []
    total = 0.0
    next_index = 0

    def write(utt: Utterance) -> float:
        audio = synthesize(utt)
        sf.write(wav_dir / f"{utt.id}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
        return len(audio) / SAMPLE_RATE

    wav_dir.mkdir(parents=True)
    progress_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]"
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=wanted, desc=f"{plan.domain}/{plan.split}", bar_format=progress_format) as progress:
        while total < wanted:
            chunk = [plan.utterance(i) for i in range(next_index, next_index + 4 * workers)]
            next_index += len(chunk)
            for utt, seconds in zip(chunk, pool.map(write, chunk)):
                if total >= wanted:
                    (wav_dir / f"{utt.id}.wav").unlink()
                    continue
                kept.append((utt, seconds))
                total += seconds
                progress.update(min(seconds, wanted - progress.n))
    return kept


def write_kaldi_dir(data_dir: Path, utterances: Iterable[Tuple[Utterance, float]], wav_dir: Path) -> None:
    """Write ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` and ``spk2voice``, sorted as Kaldi
    requires; ``wav_dir`` is where the audio will finally be."""
    utts = sorted((utt for utt, _ in utterances), key=lambda u: u.id)
    speakers = sorted({utt.speaker for utt in utts}, key=lambda s: s.id)
    data_dir.mkdir(parents=True)
    _write_table(data_dir / "wav.scp", [(u.id, str(wav_dir / f"{u.id}.wav")) for u in utts])
    _write_table(data_dir / "text", [(u.id, u.text) for u in utts])
    _write_table(data_dir / "utt2spk", [(u.id, u.speaker.id) for u in utts])
    _write_table(data_dir / "spk2utt", [
        (s.id, " ".join(u.id for u in utts if u.speaker == s)) for s in speakers
    ])
    _write_table(data_dir / "spk2voice", [(s.id, s.voice) for s in speakers])


def _write_table(path: Path, rows: Sequence[Tuple[str, str]]) -> None:
    path.write_text("".join(f"{key} {value}\n" for key, value in rows), encoding="utf-8")


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    section = f"corpus.{args.domain}"
    config = stage_config(args, section)
    seed = stage_seed(args)
    run = StageRun("corpus", config, seed)
    check_environment(args.domain, config)
    plans = plan_corpus(args.domain, config, seed)

    splits: Dict[str, Dict[str, float]] = {}
    with atomic_dir(args.out_dir) as tmp:
        for split, plan in plans.items():
            utterances = synthesize_split(
                plan, config["splits"][split]["minutes"], tmp / "wav" / split, args.jobs
            )
            write_kaldi_dir(tmp / split, utterances, args.out_dir / "wav" / split)
            seconds = sum(duration for _, duration in utterances)
            speakers = len({utt.speaker.id for utt, _ in utterances})
            splits[split] = {"utterances": len(utterances), "seconds": round(seconds, 3), "speakers": speakers}
            run.log.info("%s/%s: %d utterances, %.2f minutes, %d speakers",
                         args.domain, split, len(utterances), seconds / 60, speakers)
        run.write_provenance(tmp / "provenance.json", domain=args.domain,
                             tools=tool_versions(args.domain), splits=splits)


if __name__ == "__main__":
    run_cli(main)
