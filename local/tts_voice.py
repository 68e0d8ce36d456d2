"""The TTS target voice: one speaker of a family the source domain never has, reading the
target domain's commands, clean (the ``tts_corpus`` stage); and which source utterances were
read clean, the ones TTS pretraining learns voices from::

    plans = plan_voice(config["tts"]["voice"], config["corpus"]["target"], seed=1234)
    plans["train"].utterance(0)          # Utterance(id='tts-pico-en-GB-train-00000', ...)
    write_voice(config["tts"]["voice"], config["corpus"]["target"], Path("data/tts/voice"), 2, run)
    clean_source_ids(config["corpus"]["source"], Path("data/corpus/source"), seed=1234)

The voice reads the target domain's training sentences for ``train`` and its held-out test
sentences for ``test`` (the sentences ASR's target_test has, so synthesis is judged on commands
no system trained on). The family must read nothing in the source domain: a voice pretraining
heard would make fine-tuning's gain a memory, not an adaptation.
"""
import json
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Set

from local.embedded_corpus import (SplitPlan, families, plan_corpus, synthesize_split,
                                   target_sentences, tool_versions, write_kaldi_dir)
from local.voices import FAMILIES, Speaker
from speechtune.errors import ConfigError, StageError
from speechtune.provenance import StageRun, atomic_dir

SPLITS = ("train", "test")


def voice_speaker(voice: Mapping[str, Any]) -> Speaker:
    """The one speaker ``tts.voice`` describes (family, voice, fixed settings)."""
    settings = tuple(sorted((name, float(value)) for name, value in voice.get("settings", {}).items()))
    return Speaker(f"tts-{voice['family']}-{voice['voice']}", voice["family"], voice["voice"], settings)


def plan_voice(voice: Mapping[str, Any], target: Mapping[str, Any], seed: int) -> Dict[str, SplitPlan]:
    """train and test: the voice's speaker reading the target domain's train and test sentences."""
    sentences = target_sentences(target, seed)
    speaker = voice_speaker(voice)
    return {split: SplitPlan("tts", split, seed, [speaker], sentences[split]) for split in SPLITS}


def check_voice(voice: Mapping[str, Any], source: Mapping[str, Any]) -> None:
    """The voice's family reads nothing in the source domain, and its engine is installed."""
    if source.get("recipe", "embedded") == "embedded" and voice["family"] in families(source):
        raise ConfigError(
            f"tts.voice.family {voice['family']!r} reads the source domain (corpus.source.families), "
            f"which TTS pretrains on: pick a family the source does not list (e.g. pico)")
    problem = FAMILIES.get(voice["family"])().missing([voice["voice"]])
    if problem:
        raise StageError(f"the TTS voice ({voice['family']} {voice['voice']}): {problem}")


def write_voice(voice: Mapping[str, Any], corpus: Mapping[str, Any], out_dir: Path, jobs: int,
                run: StageRun) -> None:
    """Synthesize the voice's splits into ``out_dir`` (atomically): a Kaldi data dir per split,
    WAVs under ``wav/<split>/``, provenance.json (utterances and seconds per split)."""
    check_voice(voice, corpus["source"])
    plans = plan_voice(voice, corpus["target"], run.seed)
    splits: Dict[str, Dict[str, Any]] = {}
    with atomic_dir(out_dir) as tmp:
        for split, plan in plans.items():
            utterances = synthesize_split(plan, voice["minutes"][split], tmp / "wav" / split, jobs)
            write_kaldi_dir(tmp / split, utterances, out_dir / "wav" / split)
            seconds = sum(duration for _, duration in utterances)
            splits[split] = {"utterances": len(utterances), "seconds": round(seconds, 3)}
            run.log.info("tts voice/%s: %d utterances, %.2f minutes", split, len(utterances), seconds / 60)
        run.write_provenance(tmp / "provenance.json", speaker=voice_speaker(voice).description,
                             tools=tool_versions([voice["family"]]), splits=splits)


def clean_source_ids(source: Mapping[str, Any], corpus_dir: Path, seed: int, ids: Iterable[str]) -> Set[str]:
    """Those of ``ids`` (``<speaker>-<split>-<index>``, as the corpus stage names them) whose
    utterance was synthesized without a room (reverb and noise), by the plan the corpus stage
    drew; all of them where the source is a real corpus."""
    ids = list(ids)
    if source.get("recipe", "embedded") != "embedded":
        return set(ids)
    provenance = corpus_dir / "provenance.json"
    if not provenance.is_file():
        raise StageError(f"{provenance} is missing: run the corpus stage for the source domain first")
    skipped = json.loads(provenance.read_text()).get("skipped_families", [])
    plans = plan_corpus("source", source, seed, skip=skipped)
    clean = set()
    for utt_id in ids:
        _, split, index = utt_id.rsplit("-", 2)
        utt = plans[split].utterance(int(index))
        if utt.id != utt_id:
            raise StageError(f"{utt_id}: not the utterance the source corpus' plan has at that place "
                             f"({utt.id}); rerun the corpus stage with this config and seed")
        if utt.room is None:
            clean.add(utt_id)
    return clean
