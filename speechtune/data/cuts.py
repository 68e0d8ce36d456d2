"""Reading a cut manifest a stage depends on: the one ``load_cuts``, whose errors say which
stage writes the missing or unusable file::

    cuts = load_cuts(Path("data/manifests/target_train_cuts.jsonl.gz"), with_features=False)  # audio
    cuts = load_cuts(Path("data/fbank/target_train_cuts.jsonl.gz"))                           # features
    train, valid = split_validation(cuts, 0.2, seed=1234)
    cuts_fingerprint(cuts)      # changes with any cut, transcript or feature file
"""
import hashlib
import json
import random
from pathlib import Path
from typing import Tuple

from lhotse import CutSet

from speechtune.errors import StageError
from speechtune.provenance import file_sha256


def load_cuts(path: Path, with_features: bool = True) -> CutSet:
    """An eager, non-empty CutSet: with features where ``with_features`` (training, decoding),
    else with audio at one sample rate (feature extraction); or a StageError naming the fix."""
    path = Path(path)
    writer = "features" if with_features else "prepare"
    if not path.is_file():
        raise StageError(f"{path} is missing: run the {writer} stage for it first")
    try:
        cuts = CutSet.from_file(path).to_eager()
    except Exception as e:  # gzip, JSON and lhotse errors for a truncated or foreign file
        raise StageError(f"{path} is not a readable cut manifest ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:120]}); rerun the {writer} stage that writes it") from None
    if len(cuts) == 0:
        raise StageError(f"{path} holds no cuts: the {writer} stage wrote an empty subset")
    if with_features:
        if not all(cut.has_features for cut in cuts):
            raise StageError(f"{path}: cuts without features; point at data/fbank/, not data/manifests/")
        return cuts
    no_audio = [cut.id for cut in cuts if not cut.has_recording]
    if no_audio:
        raise StageError(f"{path}: {len(no_audio)} cuts have no recording (first: {no_audio[0]}); "
                         f"features are computed from audio")
    rates = sorted({cut.sampling_rate for cut in cuts})
    if len(rates) > 1:
        raise StageError(f"{path}: cuts at several sample rates {rates}; resample them to one "
                         f"(prepare.sample_rate) first")
    return cuts


def split_validation(cuts: CutSet, fraction: float, seed: int) -> Tuple[CutSet, CutSet]:
    """(train, valid): a seeded random ``fraction`` of the cuts held out for validation."""
    shuffled = cuts.shuffle(rng=random.Random(seed))
    num_valid = max(1, round(fraction * len(cuts)))
    ids = [cut.id for cut in shuffled]
    return cuts.subset(cut_ids=ids[num_valid:]), cuts.subset(cut_ids=ids[:num_valid])


def cuts_fingerprint(cuts: CutSet) -> str:
    """A hash of what training on ``cuts`` depends on: every cut's id, extent and supervisions
    (text, speaker), where its features are, and the bytes of every feature file they point into."""
    digest = hashlib.sha256()
    storage = set()
    for cut in cuts:
        features = cut.features if cut.has_features else None
        digest.update(json.dumps([
            cut.id, round(cut.start, 4), round(cut.duration, 4),
            [[s.id, s.text, s.speaker, round(s.start, 4), round(s.duration, 4)] for s in cut.supervisions],
            [features.storage_path, features.storage_key, features.num_frames] if features else None,
        ]).encode())
        if features:  # one archive (lilcom chunky, HDF5) or a directory of one file per key
            path = Path(features.storage_path)
            storage.add(path if path.is_file() else path / features.storage_key)
    for path in sorted(storage):
        digest.update(f"{path}\0{file_sha256(path)}".encode())
    return digest.hexdigest()


def nested_subset(cuts: CutSet, minutes: float, seed: int) -> CutSet:
    """The first ``minutes`` of ``cuts`` in an order fixed by ``seed`` and the cut ids alone:
    for one seed a smaller subset is always part of a larger one (a learning curve's points
    are nested), whatever order the manifest lists the cuts in."""
    order = sorted(cuts, key=lambda cut: hashlib.sha256(f"{seed}/{cut.id}".encode()).hexdigest())
    chosen, seconds = [], 0.0
    for cut in order:
        if seconds >= minutes * 60:
            break
        chosen.append(cut)
        seconds += cut.duration
    return CutSet.from_cuts(chosen)
