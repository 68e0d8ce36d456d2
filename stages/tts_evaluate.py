"""Stage ``tts_evaluate``: judge one TTS system's syntheses of the target voice's test sentences
(:func:`speechtune.tts.evaluation.evaluate_synthesis`)::

    python -m stages.tts_evaluate exp/tts/finetuned/synth data/tts/fbank/voice_test_cuts.jsonl.gz \\
        data/tts/fbank/source_train_cuts.jsonl.gz exp/finetuned/model.pt data/lang_phone_target \\
        exp/tts/finetuned/eval.json --config config/config.yaml

writes ``eval.json``: mel-cepstral distortion to the voice's own recordings; intelligibility as
%WER by our ASR system (its ``model.pt`` with the target domain's lang dir and LM: the synth dir
recognized as the decode stage recognizes a test set, :mod:`speechtune.deployment.recognize`)
and by Whisper tiny.en;
speaker similarity to the target voice and to the nearest source voice (resemblyzer);
DNSMOS P.835's predicted quality; and the attention health the synthesize stage measured. Means
come with 95% bootstrap intervals over utterances. Measures whose optional package is missing
(``make setup TTS_EVAL=1``) are recorded as skipped, with the reason, and logged. Reads the
config's ``prepare``, ``features`` and ``decode`` sections (the recognizer's audio, features and
search).
"""
import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf

from speechtune.cli import add_config_arguments, add_threads_argument, run_cli, stage_parser, stage_sections, stage_seed
from speechtune.data.tables import read_table
from speechtune.deployment.recognize import recognize
from speechtune.deployment.system import deployed_system, lang_files
from speechtune.errors import StageError
from speechtune.provenance import StageRun, atomic_file
from speechtune.tts.data import load_tts_cuts
from speechtune.tts.evaluation import evaluate_synthesis

SOURCE_RECORDINGS_PER_VOICE = 3  # the centroid of a source voice: its first recordings
SECTIONS = ["prepare", "features", "decode"]  # what the recognizer needs
DOMAIN = "target"  # the syntheses are the target domain's sentences: its words and LM


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("synth_dir", type=Path, help="the tts_synthesize stage's output, e.g. exp/tts/finetuned/synth")
    parser.add_argument("references", type=Path, help="the voice's test cuts (its recordings of the same sentences)")
    parser.add_argument("source_cuts", type=Path, help="the pretraining voices' cuts (speaker similarity's other side)")
    parser.add_argument("recognizer", type=Path, help="our ASR system's model.pt that transcribes the syntheses, "
                        "e.g. exp/finetuned/model.pt")
    parser.add_argument("lang", type=Path,
                        help="the target domain's lang dir (its LM's HLG), e.g. data/lang_phone_target")
    parser.add_argument("out_json", type=Path, help="e.g. exp/tts/finetuned/eval.json")
    add_threads_argument(parser)
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_sections(args, SECTIONS)
    run = StageRun("tts_evaluate", config, stage_seed(args))
    recognizer_name = args.recognizer.parent.name
    built_by = {args.recognizer: args.recognizer, **{path: args.lang for path in lang_files(args.lang, DOMAIN)}}
    for needed, built in built_by.items():
        if not needed.is_file():
            raise StageError(f"{needed} is missing: the syntheses are recognized by a trained ASR system with the "
                             f"target's lang dir; build it with `.venv/bin/snakemake --cores 8 {built}`")
    recognizer = deployed_system(recognizer_name, DOMAIN, args.recognizer, args.lang, config)
    texts = read_table(args.synth_dir / "text", missing="run the tts_synthesize stage first")
    audio = {utt: sf.read(str(args.synth_dir / "wav" / f"{utt}.wav"), dtype="float32")[0] for utt in texts}
    references = load_tts_cuts(args.references)
    missing = sorted(set(texts) - set(references.ids))
    if missing:
        raise StageError(f"{args.references} has no recording of {len(missing)} synthesized sentences (first: "
                         f"{missing[0]}): synthesize the same test set the references are")
    source_voices: Dict[str, List[np.ndarray]] = defaultdict(list)
    for cut in load_tts_cuts(args.source_cuts):
        speaker = cut.supervisions[0].speaker
        if len(source_voices[speaker]) < SOURCE_RECORDINGS_PER_VOICE:
            source_voices[speaker].append(cut.load_audio()[0])
    # A synthesis that stopped at once is too short for the recognizer to take: no words, which
    # its WER counts as deletions (and attention health as a stop-token error).
    min_samples = config["prepare"]["min_duration"] * config["prepare"]["sample_rate"]
    heard = [utt for utt in sorted(texts) if len(audio[utt]) >= min_samples]
    hyps = {utt: [] for utt in texts}
    if heard:
        hyps.update(recognize([args.synth_dir / "wav" / f"{utt}.wav" for utt in heard],
                              recognizer))
    if len(heard) < len(texts):
        run.log.warning("%d of %d syntheses are under %.2f s: recognized as no words", len(texts) - len(heard),
                        len(texts), config["prepare"]["min_duration"])
    result = evaluate_synthesis(audio, texts, {utt: references[utt].load_audio()[0] for utt in texts},
                                source_voices, hyps, threads=args.threads)
    synthesis = json.loads((args.synth_dir / "synthesis.json").read_text())
    result = {"system": args.synth_dir.parent.name, "recognizer": recognizer_name, **result,
              "attention": synthesis["attention"]}
    for measure, value in result.items():
        if isinstance(value, dict) and "skipped" in value:
            run.log.warning("%s skipped: %s", measure, value["skipped"])
    run.log.info("%s: MCD %.2f dB (DTW penalty %.3f), %s %%WER %.1f, attention diagonality %.3f", args.synth_dir,
                 result["mcd_db"]["mean"], result["mcd_alignment_penalty"]["mean"], recognizer_name,
                 result["asr_wer"]["wer"], result["attention"]["mean_diagonality"])
    with atomic_file(args.out_json) as tmp:
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    run_cli(main)
