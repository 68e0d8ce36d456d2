"""What TTS trains on: each utterance's phones and mel frames (:mod:`speechtune.tts.features`),
as lhotse cuts, and batches of them::

    inventory = PhoneInventory.cmudict()
    lexicon = first_pronunciations(["TURN", "ON", "THE", "LIGHTS"])
    phones_of("TURN ON THE LIGHTS", lexicon)       # ['T', 'ER', 'N', '|', 'AA', 'N', ...]
    cuts = load_tts_cuts(Path("data/tts/fbank/voice_train_cuts.jsonl.gz"))
    for batch in tts_batches(cuts, inventory, speaker_rows(cuts), max_frames=6000, seed=1234, epoch=1):
        batch["phones"], batch["mels"], batch["speakers"]   # padded tensors, see tts_batch

The ``tts_data`` stage stores every cut's phones as the supervision's ``custom["phones"]``
(a string, word boundaries as ``|``). The pronunciations are the phone lang dir's: the lang
stage's own CMUdict lexicon (:func:`speechtune.lang.lang_dir.cmudict_lexicon`, stress removed),
each word's first variant, for any word (not only those of one domain's lang dir, and whatever
unit the recognizers use); a word CMUdict lacks cannot be said, so its utterance is skipped,
counted and logged there. The inventory is that lexicon's tokens (all of CMUdict's phones, the
lang dir's ``tokens.txt``), id 0 (the blank) padding, plus :data:`WORD_BOUNDARY`.
"""
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut

from speechtune.data.cuts import load_cuts
from speechtune.errors import StageError
from speechtune.features.extract import compute_features, output_paths
from speechtune.lang.lang_dir import BLANK, SPOKEN_NOISE, cmudict_lexicon
from speechtune.provenance import StageRun, atomic_file
from speechtune.tts.features import extractor

WORD_BOUNDARY = "|"


@dataclass(frozen=True)
class PhoneInventory:
    """The model's input symbols; a symbol's index is its id, 0 is padding."""

    symbols: Tuple[str, ...]

    @classmethod
    def cmudict(cls) -> "PhoneInventory":
        """CMUdict's phones with the phone lang dir's ids (``tokens.txt``), then the word boundary."""
        _, token_ids = cmudict_lexicon([])
        if token_ids.get(BLANK) != 0:
            raise StageError(f"the lang stage's phone tokens no longer start with '{BLANK} 0': TTS pads with id 0")
        return cls(tuple(sorted(token_ids, key=token_ids.get)) + (WORD_BOUNDARY,))

    @cached_property
    def ids(self) -> Dict[str, int]:
        return {symbol: i for i, symbol in enumerate(self.symbols)}

    def encode(self, phones: Sequence[str]) -> List[int]:
        unknown = sorted({phone for phone in phones if phone not in self.ids})
        if unknown:
            raise StageError(f"phones {unknown} are not in the model's inventory of {len(self.symbols)} symbols")
        return [self.ids[phone] for phone in phones]


def first_pronunciations(words: Iterable[str]) -> Dict[str, List[str]]:
    """``{word: phones}``: each word's first CMUdict pronunciation, as the lang stage's lexicon
    has it (words CMUdict lacks are absent). One CMUdict lookup for all the words."""
    lexicon: Dict[str, List[str]] = {}
    for word, phones in cmudict_lexicon(sorted(set(words)))[0]:
        lexicon.setdefault(word, phones)
    return lexicon


def phones_of(text: str, lexicon: Mapping[str, Sequence[str]]) -> Optional[List[str]]:
    """The phones of ``text`` with :data:`WORD_BOUNDARY` between words, or None where a word
    has no pronunciation in ``lexicon`` (:func:`first_pronunciations`) to say."""
    said: List[str] = []
    for word in text.split():
        pron = lexicon.get(word)
        if not pron or SPOKEN_NOISE in pron:
            return None
        said += ([WORD_BOUNDARY] if said else []) + list(pron)
    return said or None


def cut_phones(cut: Cut) -> List[str]:
    return cut.supervisions[0].custom["phones"].split()


def load_tts_cuts(path: Path) -> CutSet:
    """The ``tts_data`` stage's cuts (mels and phones), or a StageError naming the fix."""
    cuts = load_cuts(path)
    if not all(cut.supervisions and (cut.supervisions[0].custom or {}).get("phones") for cut in cuts):
        raise StageError(f"{path}: cuts without phones; point at the tts_data stage's output (data/tts/fbank/)")
    return cuts


def speakers_of(cuts: CutSet) -> List[str]:
    """The speaker ids of ``cuts``, sorted."""
    return sorted({cut.supervisions[0].speaker for cut in cuts})


def speaker_rows(cuts: CutSet, first_row: int = 0) -> Dict[str, int]:
    """Each speaker of ``cuts`` (sorted) and its row in the model's speaker table, from
    ``first_row`` on (a fine-tuned voice's row follows the pretrained voices')."""
    return {speaker: first_row + i for i, speaker in enumerate(speakers_of(cuts))}


def tts_batch(cuts: Sequence[Cut], inventory: PhoneInventory, speaker_row: Mapping[str, int]) -> Dict[str, Any]:
    """The training batch of ``cuts``: ``phones`` (N, L) long padded with 0, ``phone_lens``,
    ``mels`` (N, T, num_mels) padded with 0, ``mel_lens``, ``speakers`` (N,) rows of the speaker
    table, ``ids``."""
    phones = [torch.tensor(inventory.encode(cut_phones(cut)), dtype=torch.long) for cut in cuts]
    mels = [torch.from_numpy(np.asarray(cut.load_features(), dtype=np.float32)) for cut in cuts]
    return {
        "phones": torch.nn.utils.rnn.pad_sequence(phones, batch_first=True),
        "phone_lens": torch.tensor([len(p) for p in phones]),
        "mels": torch.nn.utils.rnn.pad_sequence(mels, batch_first=True),
        "mel_lens": torch.tensor([len(m) for m in mels]),
        "speakers": torch.tensor([speaker_row[cut.supervisions[0].speaker] for cut in cuts]),
        "ids": [cut.id for cut in cuts],
    }


def tts_batches(cuts: CutSet, inventory: PhoneInventory, speaker_row: Mapping[str, int], max_frames: int,
                seed: int, epoch: int, shuffle: bool = True) -> Iterator[Dict[str, Any]]:
    """One epoch of batches of at most ``max_frames`` padded mel frames each: cuts sorted by
    length into batches (little padding, so the decoder's steps are spent on speech), the
    batches in a seeded order per epoch. The same seed and epoch give the same batches."""
    by_length = sorted(cuts, key=lambda cut: (cut.num_frames, cut.id))
    groups: List[List[Cut]] = [[]]
    for cut in by_length:
        if groups[-1] and cut.num_frames * (len(groups[-1]) + 1) > max_frames:
            groups.append([])
        groups[-1].append(cut)
    if shuffle:
        random.Random(f"{seed}/{epoch}").shuffle(groups)
    for group in groups:
        yield tts_batch(group, inventory, speaker_row)


def prepare_tts_cuts(cuts: CutSet, out_cuts: Path, run: StageRun, num_jobs: int = 1,
                     skipped: Optional[Mapping[str, str]] = None) -> CutSet:
    """The ``tts_data`` stage: the phones of every cut's transcript into its supervision, its
    mel frames computed and stored beside ``out_cuts`` (``<prefix>_feats.lca``, as the features
    stage stores them). Cuts with a word that cannot be said are skipped, counted and logged
    with those already in ``skipped`` (id -> reason); ``<prefix>_skipped.txt`` lists them all."""
    skipped = dict(skipped or {})
    lexicon = first_pronunciations(word for cut in cuts for s in cut.supervisions for word in s.text.split())
    kept = []
    for cut in cuts:
        if cut.id in skipped:
            continue
        if len(cut.supervisions) != 1:
            skipped[cut.id] = f"{len(cut.supervisions)} supervisions (TTS needs one per cut)"
            continue
        phones = phones_of(cut.supervisions[0].text, lexicon)
        if phones is None:
            skipped[cut.id] = "a word CMUdict has no pronunciation for"
            continue
        supervision = cut.supervisions[0]
        supervision.custom = {**(supervision.custom or {}), "phones": " ".join(phones)}
        kept.append(cut)
    if not kept:
        raise StageError(f"no cut of {len(cuts)} can be said ({len(skipped)} skipped, e.g. "
                         f"{next(iter(skipped.values()), '')}); {out_cuts} would be empty")
    storage, provenance = output_paths(out_cuts)
    skipped_txt = out_cuts.with_name(out_cuts.name.replace("_cuts.jsonl.gz", "_skipped.txt"))
    with atomic_file(out_cuts) as tmp_cuts, atomic_file(skipped_txt) as tmp_skipped:
        with atomic_file(storage) as tmp_storage:
            with_mels = compute_features(CutSet.from_cuts(kept), extractor(), tmp_storage, storage, num_jobs)
            with_mels.to_file(tmp_cuts)
            out_cuts.unlink(missing_ok=True)  # the old manifest must not outlive its archive
        tmp_skipped.write_text("".join(f"{cut_id} {reason}\n" for cut_id, reason in sorted(skipped.items())),
                               encoding="utf-8")
    seconds = sum(cut.duration for cut in with_mels)
    run.log.info("%s: %d cuts, %.1f minutes, %d speakers; %d skipped (%s)", out_cuts, len(with_mels),
                 seconds / 60, len(speakers_of(with_mels)), len(skipped), skipped_txt)
    run.write_provenance(provenance, cuts=len(with_mels), minutes=round(seconds / 60, 3),
                         speakers=len(speakers_of(with_mels)), skipped=len(skipped), storage=str(storage))
    return with_mels
