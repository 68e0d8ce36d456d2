"""Tiny training data for tests: random features with transcripts of a char lexicon's words,
and the small model, loss and training settings that train on them in seconds."""
from pathlib import Path
from typing import Tuple

import numpy as np
from lhotse import CutSet, Features, MonoCut, NumpyFilesWriter, SupervisionSegment

FEATURE_DIM = 20
LOSS = {"type": "ctc", "output_beam": 10.0, "den_scale": 1.0, "ctc_weight": 0.0, "oov": "<UNK>"}
MODEL = {
    "type": "tdnnf", "feature_dim": FEATURE_DIM, "input_norm": "batchnorm", "num_layers": 4,
    "full_rate_layers": 2, "hidden_dim": 32, "bottleneck_dim": 12, "prefinal_dim": 16,
    "bypass_scale": 0.66, "subsampling_factor": 3, "dropout": 0.0,
}
TRAIN = {
    "epochs": 2, "lr": 0.003, "lr_decay": 0.9, "warmup_steps": 1, "weight_decay": 0.0, "grad_clip": 5.0,
    "max_duration": 1.5, "average_last": 1, "save_every_steps": 0,
}
METHOD = {
    "regularizer": {"type": "none", "alpha": 0.0}, "init_modules": ["*"], "freeze": [], "lr_factors": {},
    "adapter": {"type": "none", "dim": 0, "domain": "target"}, "spec_augment": False, "speed_perturb": False,
    "early_stopping_patience": 0, "model_selection": "last",
}
WORDS = ["ON", "OFF", "NO", "TOE", "NET"]


def feature_cuts(directory: Path, prefix: str, count: int, seed: int, dim: int = FEATURE_DIM,
                 frames_range: Tuple[int, int] = (60, 100)) -> CutSet:
    """``count`` cuts of random ``dim``-dim features (``frames_range`` frames: 0.6-1.0 s) with
    transcripts of lexicon words."""
    rng = np.random.default_rng(seed)
    cuts = []
    directory.mkdir(parents=True, exist_ok=True)
    with NumpyFilesWriter(directory / f"{prefix}_feats") as writer:
        for i in range(count):
            cut_id = f"{prefix}-{i:03d}"
            frames = int(rng.integers(*frames_range))
            key = writer.write(cut_id, rng.standard_normal((frames, dim)).astype(np.float32))
            duration = frames * 0.01
            features = Features(
                type="fbank", num_frames=frames, num_features=dim, frame_shift=0.01,
                sampling_rate=16000, start=0.0, duration=duration, storage_type=writer.name,
                storage_path=str(writer.storage_path), storage_key=key, recording_id=cut_id, channels=0,
            )
            text = " ".join(rng.choice(WORDS, size=2))
            supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=duration,
                                             text=text, speaker=prefix)
            cuts.append(MonoCut(id=cut_id, start=0.0, duration=duration, channel=0,
                                supervisions=[supervision], features=features))
    return CutSet.from_cuts(cuts)
