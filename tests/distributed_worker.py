"""The training loop run by tests/test_distributed.py in one process or under torchrun, with
batch normalization frozen at its initial statistics, so that an utterance's output does not
depend on the others in its batch: two processes must then train exactly what one does.

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_worker.py CUTS LANG EXP
"""
import sys
from pathlib import Path

from lhotse import CutSet
from torch import nn

from speechtune.provenance import StageRun
from speechtune.training.loop import train
from speechtune.training.recipe import Recipe
from tests.tiny_training import LOSS, MODEL, TRAIN


class FrozenBatchNorm(Recipe):
    def train_mode(self, model: nn.Module) -> None:
        model.eval()  # dropout is 0: eval mode only freezes batch normalization


if __name__ == "__main__":
    cuts_path, lang_dir, exp_dir = (Path(arg) for arg in sys.argv[1:4])
    cuts = CutSet.from_file(cuts_path)
    train(StageRun("pretrain", {}, seed=3), exp_dir, lang_dir, cuts, cuts.subset(first=4),
          {**MODEL, "input_norm": "none", "num_tokens": 6}, LOSS, {**TRAIN, "max_duration": 3.0, "epochs": 2},
          FrozenBatchNorm())
