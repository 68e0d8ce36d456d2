"""Cuts -> features stored with lilcom, the cuts an icefall recipe trains from
(``K2SpeechRecognitionDataset`` + ``DynamicBucketingSampler``): what the ``features`` stage does::

    extract_features(Path("data/manifests/target_train_cuts.jsonl.gz"),
                     Path("data/fbank/target_train_cuts.jsonl.gz"), config["features"], run)

writes, beside the output cuts (whose name must end in ``_cuts.jsonl.gz``)::

    data/fbank/target_train_cuts.jsonl.gz    the input cuts, each with its Features manifest
    data/fbank/target_train_feats.lca        the feature matrices (lhotse LilcomChunkyWriter)
    data/fbank/target_train.provenance.json

``features.extractor`` picks the extractor (:mod:`speechtune.features.extractors`: lhotse's
Kaldi-compatible ``Fbank`` by default), ``features.num_mel_bins`` its size. ``num_jobs`` processes (the stage's
``--threads``) extract in parallel, each a share of the cuts into an archive of its own (lhotse's
``compute_and_store_features``); the shares are then concatenated into the one archive, and
the cuts keep the input's order. The features are deterministic (no dither): the seed is
only recorded.

``speed_factors`` (e.g. 0.9, 1.1) add a copy of every cut at each speed factor (lhotse's
``perturb_speed``: resampled audio, ids suffixed ``_sp0.9``), as icefall's recipes do for
their training sets; the copies are extracted and stored like the originals.

``front_end`` (a Kaldi model directory such as ``exp/kaldi_ko``) computes, instead of
``features.extractor``'s fbank, the input that model expects (``KaldiModelFrontEnd``: the MFCC
of its ``conf/mfcc.conf`` with its online i-vectors appended to every frame), e.g. into
``data/kaldi_ko/feats/target_train_cuts.jsonl.gz`` for fine-tuning an imported model.

Every input cut comes out with features or the stage fails: lhotse alone would drop a cut
whose audio cannot be read, with a warning; here the error names the cuts and their files.
Storage and cuts are written under temporary names and renamed only when both are complete
(the archive first, the cuts that index it last), so a failed run leaves neither.
"""
import logging
import multiprocessing
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import torch
from lhotse import CutSet, LilcomChunkyWriter
from lhotse.cut import Cut
from lhotse.features.base import FeatureExtractor
from lhotse.utils import fastcopy

from speechtune.data.cuts import load_cuts
from speechtune.errors import StageError
from speechtune.features.extractors import KaldiModelFrontEnd, KaldiModelFrontEndConfig, make_extractor
from speechtune.provenance import StageRun, atomic_file

log = logging.getLogger("speechtune.features")

CUTS_SUFFIX = "_cuts.jsonl.gz"


def output_paths(out_cuts: Path) -> Tuple[Path, Path]:
    """(feature archive, provenance) beside ``out_cuts``: ``X_cuts.jsonl.gz`` gives
    ``X_feats.lca`` and ``X.provenance.json``."""
    if not out_cuts.name.endswith(CUTS_SUFFIX) or out_cuts.name == CUTS_SUFFIX:
        raise StageError(
            f"{out_cuts}: the output cuts' name must end in '{CUTS_SUFFIX}' (e.g. "
            f"data/fbank/target_train{CUTS_SUFFIX}); the archive and provenance are named from it"
        )
    prefix = out_cuts.name[: -len(CUTS_SUFFIX)]
    return out_cuts.with_name(f"{prefix}_feats.lca"), out_cuts.with_name(f"{prefix}.provenance.json")


def _audio_files(cut: Cut) -> str:
    return ", ".join(source.source for source in cut.recording.sources)


def _merge_archives(cuts: Sequence[Cut], archive: Path, referenced_as: Path) -> List[Cut]:
    """Concatenate the archives ``cuts`` index into ``archive``; return the cuts pointing into it
    under the name ``referenced_as``.

    A LilcomChunkyWriter storage key is "<byte offset of the array>,<chunk sizes>...": only its
    first number depends on where the archive starts, so moving an archive to byte ``b`` of the
    merged one adds ``b`` to that number alone.
    """
    start = {}
    with open(archive, "wb") as out:
        for shard in sorted({cut.features.storage_path for cut in cuts}):
            start[shard] = out.tell()
            with open(shard, "rb") as f:
                shutil.copyfileobj(f, out)
    moved = []
    for cut in cuts:
        offset, *chunks = cut.features.storage_key.split(",")
        key = ",".join([str(int(offset) + start[cut.features.storage_path]), *chunks])
        features = fastcopy(cut.features, storage_path=str(referenced_as), storage_key=key)
        moved.append(fastcopy(cut, features=features))
    return moved


def compute_features(
    cuts: CutSet, extractor: FeatureExtractor, archive: Path, referenced_as: Path, num_jobs: int
) -> CutSet:
    """Extract and store every cut's features in ``archive`` (one LilcomChunkyWriter file) with
    ``num_jobs`` processes; return ``cuts`` in their order with Features that name the archive
    ``referenced_as`` (its final path). A StageError names the cuts whose audio failed."""
    # Named like atomic_file's temporaries of the archive, so a killed run's are removed by
    # the next run's atomic_file(storage).
    with tempfile.TemporaryDirectory(
        prefix=".tmp-", suffix=f"-{referenced_as.name}", dir=archive.parent
    ) as shard_dir:
        if num_jobs == 1:
            extracted = cuts.compute_and_store_features(
                extractor, Path(shard_dir) / "feats-0", num_jobs=1, storage_type=LilcomChunkyWriter
            )
        else:
            # spawn, as lhotse does: forking a process that has run torch can hang. One torch
            # thread per worker: the parallelism is across cuts.
            with ProcessPoolExecutor(
                num_jobs, mp_context=multiprocessing.get_context("spawn"),
                initializer=torch.set_num_threads, initargs=(1,),
            ) as executor:
                extracted = cuts.compute_and_store_features(
                    extractor, shard_dir, num_jobs=num_jobs, storage_type=LilcomChunkyWriter,
                    executor=executor,
                )
        by_id = {cut.id: cut for cut in extracted}
        failed = [cut for cut in cuts if cut.id not in by_id]
        if failed:
            listed = "; ".join(f"{cut.id} ({_audio_files(cut)})" for cut in failed[:5])
            more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise StageError(
                f"audio of {len(failed)} of {len(cuts)} cuts could not be read (lhotse's warnings "
                f"above say why): {listed}{more}; restore the files or rerun the prepare stage, "
                f"which skips unreadable audio"
            )
        return CutSet.from_cuts(_merge_archives([by_id[cut.id] for cut in cuts], archive, referenced_as))


def stage_extractor(config: Mapping[str, Any], sampling_rate: int, front_end: Optional[Path] = None) -> FeatureExtractor:
    """The extractor the stage computes with for audio at ``sampling_rate``: ``config``'s
    (``extractor``, ``num_mel_bins``), or the front end of the Kaldi model directory
    ``front_end``. Whatever recognizes with a trained model computes its features with this one."""
    if front_end is None:
        return make_extractor(config["extractor"], config["num_mel_bins"], sampling_rate)
    if not (Path(front_end) / "conf" / "mfcc.conf").is_file():
        raise StageError(f"--front-end {front_end}: no conf/mfcc.conf there; pass a Kaldi model directory "
                         "or the import stage's output (e.g. exp/kaldi_ko)")
    return KaldiModelFrontEnd(KaldiModelFrontEndConfig(model_dir=str(front_end)))


def extract_features(in_cuts: Path, out_cuts: Path, config: Mapping[str, Any], run: StageRun,
                     speed_factors: Sequence[float] = (), front_end: Optional[Path] = None,
                     num_jobs: int = 1) -> CutSet:
    """The stage: see the module docstring."""
    storage, provenance = output_paths(out_cuts)
    cuts = load_cuts(in_cuts, with_features=False)
    for factor in speed_factors:
        if factor <= 0:
            raise StageError(f"--speed-perturb {factor}: a speed factor must be positive")
    cuts = CutSet.from_cuts([*cuts, *(cut.perturb_speed(f) for f in speed_factors for cut in cuts)])
    extractor = stage_extractor(config, cuts[0].sampling_rate, front_end)
    # Per-cut tensors are small: a second intra-op thread slowed lhotse's Fbank 9x on 2-4 s
    # utterances on a quiet 2-core machine, 75x on a busy one (bench/features.py), so each
    # process computes on one.
    torch.set_num_threads(1)
    started = time.perf_counter()
    with atomic_file(out_cuts) as tmp_cuts:
        with atomic_file(storage) as tmp_storage:
            with_features = compute_features(cuts, extractor, tmp_storage, storage, num_jobs)
            with_features.to_file(tmp_cuts)
            # An older manifest must not outlive the archive it indexes, which is replaced next.
            out_cuts.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    hours = sum(cut.duration for cut in with_features) / 3600
    frames = sum(cut.num_frames for cut in with_features)
    log.info(
        "%s: %d cuts, %.3f h of audio -> %d frames x %d (%s) in %.1f s (%.0fx real time), %s",
        out_cuts, len(with_features), hours, frames, with_features[0].num_features,
        extractor.name, seconds, hours * 3600 / seconds, storage,
    )
    run.write_provenance(
        provenance, input=str(in_cuts), cuts=len(with_features), hours=round(hours, 4),
        frames=frames, extractor=extractor.to_dict(), storage=str(storage), speed_perturb=list(speed_factors),
    )
    return with_features
