"""Batches for training and validation, as icefall's ``asr_datamodule``: lhotse's samplers over
precomputed features, ``K2SpeechRecognitionDataset``, and the data augmentations a training
config may ask for::

    loader = make_loader(cuts, max_duration=30, shuffle=True, seed=1234, spec_augment=True)
    for batch in loader:
        log_probs = batch_log_probs(model, batch, device)     # (N, T', tokens)

Augmentations (keys of a training section; absent means off):

    spec_augment    lhotse's SpecAugment (time warp, frequency and time masks) on each batch
    noise_mix       ``{"prob", "snr_db": [low, high]}``: lhotse's CutMix of the noise stage's
                    cuts (:data:`NOISE_CUTS`, an extra input) into that fraction of the cuts
    speed_perturb   train on ``<subset>_sp``: the cuts plus copies at :data:`SPEED_FACTORS`
                    (lhotse's perturb_speed, extracted by the features stage)
"""
from typing import Any, Callable, List, Mapping, Optional

import torch
from lhotse import CutSet
from lhotse.dataset import CutMix, DynamicBucketingSampler, K2SpeechRecognitionDataset, SimpleCutSampler, SpecAugment
from torch import nn
from torch.utils.data import DataLoader

from speechtune.errors import StageError
from speechtune.training.distributed import World
from speechtune.training.inputs import ExtraInput

NOISE_CUTS = ExtraInput("noise_cuts", "cuts:noise", "noise cuts with features (noise_mix), from the noise stage")
SPEED_FACTORS = (0.9, 1.1)
SPEED_PERTURBED = "_sp"  # suffix of the subset holding the speed-perturbed copies
FILLER = "_filler"  # suffix of the cut a process takes where a batch has fewer cuts than processes


def share_of_batch(world: World) -> Callable[[CutSet], CutSet]:
    """What process ``world.rank`` trains on of each global batch: one of ``world.size`` equal
    parts of its cuts. Where there are fewer cuts than processes, those left over take a copy of
    the first, marked :data:`FILLER` (the loop gives it no weight)."""
    def share(cuts: CutSet) -> CutSet:
        if len(cuts) >= world.size:
            return cuts.split(world.size)[world.rank]
        if world.rank < len(cuts):
            return cuts.subset(cut_ids=[list(cuts.ids)[world.rank]])
        first = next(iter(cuts))
        return CutSet.from_cuts([first.with_id(first.id + FILLER)])

    return share


def is_filler(batch: Mapping[str, Any]) -> bool:
    """Whether this process's share of a batch is a :data:`FILLER` (see :func:`share_of_batch`)."""
    return any(cut.id.endswith(FILLER) for cut in batch["supervisions"].get("cut", []))


def augmentation_inputs(train_params: Mapping[str, Any]) -> List[ExtraInput]:
    """The extra inputs the augmentations of ``train_params`` need."""
    return [NOISE_CUTS] if train_params.get("noise_mix", {}).get("prob", 0) > 0 else []


def training_subset(train_params: Mapping[str, Any], subset: str) -> str:
    """The subset training reads for ``subset``: its speed-perturbed copy where asked for."""
    return subset + SPEED_PERTURBED if train_params.get("speed_perturb", False) else subset


def make_loader(cuts: CutSet, max_duration: float, shuffle: bool, seed: int, return_cuts: bool = False,
                spec_augment: bool = False, noise_mix: Optional[Mapping[str, Any]] = None,
                noise_cuts: Optional[CutSet] = None, world: World = World()) -> DataLoader:
    """Batches of up to ``max_duration`` seconds, bucketed by length (icefall's asr_datamodule);
    under 40 cuts there is nothing to bucket (lhotse needs two buckets of some size).
    ``spec_augment`` and ``noise_mix`` as in the module docstring (CutMix seeded with ``seed``).
    With several processes in ``world``, this process's share of every batch (the cuts listed in
    ``batch["supervisions"]["cut"]``)."""
    # Every process draws the batches one process would and trains on its share: the same steps
    # on the same utterances whatever the process count. (lhotse's distributed mode, every
    # world_size-th batch of max_duration / world_size seconds, packs other batches: other steps.)
    # Its world is given as one process, else lhotse reads torchrun's variables and shards.
    one_process = {"world_size": 1, "rank": 0}
    if len(cuts) >= 40:
        sampler = DynamicBucketingSampler(
            cuts, max_duration=max_duration, shuffle=shuffle, seed=seed,
            num_buckets=min(10, len(cuts) // 20), drop_last=False, **one_process,
        )
    else:
        sampler = SimpleCutSampler(cuts, max_duration=max_duration, shuffle=shuffle, seed=seed, **one_process)
    transforms = [SpecAugment()] if spec_augment else []
    cut_transforms = []
    if noise_mix and noise_mix["prob"] > 0:
        if noise_cuts is None:
            raise StageError(f"noise_mix.prob > 0 needs noise cuts: run the noise stage and pass {NOISE_CUTS.option}")
        cut_transforms.append(CutMix(noise_cuts, snr=tuple(noise_mix["snr_db"]), p=noise_mix["prob"],
                                     seed=seed, random_mix_offset=True, preserve_id=True))
    if world.size > 1:
        sampler.map(share_of_batch(world))
    dataset = K2SpeechRecognitionDataset(return_cuts=return_cuts or world.size > 1, cut_transforms=cut_transforms,
                                         input_transforms=transforms)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)


def batch_log_probs(model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
    """The model's log-probs (N, T', tokens) for a K2SpeechRecognitionDataset batch."""
    features = batch["inputs"].to(device)
    supervisions = batch["supervisions"]
    # Each utterance's valid frames: start + num_frames of its (only) supervision.
    lens = torch.zeros(features.size(0), dtype=torch.int64)
    for idx, start, frames in zip(supervisions["sequence_idx"], supervisions["start_frame"], supervisions["num_frames"]):
        lens[idx] = max(int(lens[idx]), int(start + frames))
    return model(features, lens.to(device))
