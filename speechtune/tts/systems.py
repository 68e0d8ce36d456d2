"""The three TTS systems, each what one stage trains, from the tts_data stage's cuts::

    pretrain_tts(Path("data/tts/fbank/source_train_cuts.jsonl.gz"), Path("exp/tts/pretrained"), tts, seed, run)
    finetune_tts(Path("data/tts/fbank/voice_train_cuts.jsonl.gz"), Path("exp/tts/finetuned"), tts, seed, run,
                 pretrained=Path("exp/tts/pretrained/model.pt"),
                 source_cuts=Path("data/tts/fbank/source_train_cuts.jsonl.gz"))   # rehearsal: alpha > 0
    scratch_tts(Path("data/tts/fbank/voice_train_cuts.jsonl.gz"), Path("exp/tts/scratch"), tts, seed, run)

- **pretrained**: every source voice, each a row of the speaker table, from nothing.
- **finetuned**: the pretrained model, one new row for the target voice (started at the mean
  of the pretrained voices), trained on the voice's minutes with ``tts.finetune``'s objective
  ``alpha * L_pre + (1 - alpha) * L_task`` (L_pre: the same loss on a batch of the source).
- **scratch**: the voice's minutes alone, from nothing (one speaker row).

``tts`` is the config's ``tts`` section: ``model`` (sizes over :class:`TacotronConfig`'s
defaults), ``max_frames`` (padded mel frames per batch), ``valid_fraction`` (held out from
each training set for the validation loss) and a section per system (``epochs``, ``lr``, ...:
the fields of :class:`~speechtune.tts.training.TtsTrainingParams`).
"""
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

from lhotse import CutSet

from speechtune.data.cuts import cuts_fingerprint, split_validation
from speechtune.errors import StageError
from speechtune.provenance import StageRun
from speechtune.tts.data import PhoneInventory, load_tts_cuts, speaker_rows, tts_batches
from speechtune.tts.model import TacotronConfig
from speechtune.tts.training import TtsTrainingParams, load_tts_model, train_tts

Batches = Callable[[int], Iterator[Dict[str, Any]]]


def _batches(cuts: CutSet, inventory: PhoneInventory, rows: Mapping[str, int], max_frames: int, seed: int,
             shuffle: bool = True) -> Batches:
    return lambda epoch: tts_batches(cuts, inventory, rows, max_frames, seed, epoch, shuffle)


def _params(tts: Mapping[str, Any], system: str, seed: int) -> TtsTrainingParams:
    return TtsTrainingParams(**tts[system], seed=seed)


def _from_nothing(system: str, train_cuts: Path, out_dir: Path, tts: Mapping[str, Any], seed: int,
                  run: StageRun) -> Dict[str, Any]:
    inventory = PhoneInventory.cmudict()
    cuts = load_tts_cuts(train_cuts)
    rows = speaker_rows(cuts)
    train, valid = split_validation(cuts, tts["valid_fraction"], seed)
    config = TacotronConfig(num_phones=len(inventory.symbols), num_speakers=len(rows), **tts["model"])
    run.log.info("%s: %d training and %d validation utterances of %d speakers", system, len(train), len(valid),
                 len(rows))
    return train_tts(out_dir, _batches(train, inventory, rows, tts["max_frames"], seed),
                     _batches(valid, inventory, rows, tts["max_frames"], seed, shuffle=False),
                     _params(tts, system, seed), config=config, data_fingerprint=cuts_fingerprint(cuts), run=run)


def pretrain_tts(train_cuts: Path, out_dir: Path, tts: Mapping[str, Any], seed: int,
                 run: StageRun) -> Dict[str, Any]:
    """The ``tts_pretrain`` stage: every voice of ``train_cuts``, from nothing."""
    return _from_nothing("pretrain", train_cuts, out_dir, tts, seed, run)


def scratch_tts(train_cuts: Path, out_dir: Path, tts: Mapping[str, Any], seed: int,
                run: StageRun) -> Dict[str, Any]:
    """The ``tts_scratch`` stage: the target voice's minutes alone, from nothing."""
    return _from_nothing("scratch", train_cuts, out_dir, tts, seed, run)


def finetune_tts(train_cuts: Path, out_dir: Path, tts: Mapping[str, Any], seed: int,
                 run: StageRun, pretrained: Path, source_cuts: Optional[Path] = None) -> Dict[str, Any]:
    """The ``tts_finetune`` stage: ``pretrained`` adapted to the voice of ``train_cuts``, with
    rehearsal on ``source_cuts`` (the pretraining data, same speaker rows) where alpha > 0."""
    inventory = PhoneInventory.cmudict()
    cuts = load_tts_cuts(train_cuts)
    rows = speaker_rows(cuts, first_row=load_tts_model(pretrained).config.num_speakers)
    train, valid = split_validation(cuts, tts["valid_fraction"], seed)
    params = _params(tts, "finetune", seed)
    rehearsal = None
    fingerprint = cuts_fingerprint(cuts)
    if params.alpha > 0:
        if source_cuts is None:
            raise StageError(f"tts.finetune.alpha = {params.alpha} rehearses the pretraining data: pass its cuts "
                             "(--source-cuts), or set alpha to 0 for plain fine-tuning")
        source = load_tts_cuts(source_cuts)
        rehearsal = _batches(source, inventory, speaker_rows(source), tts["max_frames"], seed + 1)
        fingerprint += cuts_fingerprint(source)
    run.log.info("finetune: %d training and %d validation utterances of %s (rows %s), alpha %.2f", len(train),
                 len(valid), ", ".join(rows), ", ".join(map(str, rows.values())), params.alpha)
    return train_tts(out_dir, _batches(train, inventory, rows, tts["max_frames"], seed),
                     _batches(valid, inventory, rows, tts["max_frames"], seed, shuffle=False), params,
                     init_from=pretrained, new_speakers=len(rows), pretraining_batches=rehearsal,
                     data_fingerprint=fingerprint, run=run)
