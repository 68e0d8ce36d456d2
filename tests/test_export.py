"""``speechtune export``: the tiny pipeline's fine-tuned model as ONNX (the session's ``built``,
read only) computes what torch computes on the test set's features and decodes to the same
words through the pipeline's HLG 1-best; a model whose graph cannot follow the input's length
(the imported kaldi_nnet3 type, or any forward that loops in Python) is refused with the reason."""
import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from speechtune.__main__ import main
from speechtune.data.cuts import load_cuts
from speechtune.decoding import decode_cuts, decode_loader, load_hlg, read_symbols
from speechtune.deployment.onnx_export import OnnxAcousticModel, export_acoustic_model
from speechtune.deployment.recognize import recognize
from speechtune.deployment.system import find_system
from speechtune.config import DEFAULT_CONFIG_PATH, load_config
from speechtune.errors import StageError
from speechtune.kaldi.nnet3 import read_nnet3
from speechtune.models import build_model
from speechtune.models.kaldi_nnet3 import KaldiNnet3Model
from speechtune.scoring.wer import score
from speechtune.training.checkpoint import model_from_checkpoint
from tests.conftest import PRESETS
from tests.test_kaldi_nnet3 import synthetic_text

CONFIG = [option for preset in PRESETS for option in ("--config", preset)]


@pytest.fixture
def in_the_tree(built: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(built)  # cut manifests name their feature files relative to it
    return built


def test_onnx_model_computes_and_decodes_as_torch(in_the_tree: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "finetuned"
    main(["export", *CONFIG, "--system", "finetuned", str(out)])
    assert "model.onnx (tdnnf, 80-dim kaldi-fbank at 16000 Hz, subsampling 3)" in capsys.readouterr().out
    lang = Path("data/lang_phone_target")
    for name in ("tokens.txt", "words.txt", "lm_target/HLG.pt"):
        assert (out / name).read_bytes() == (lang / name).read_bytes(), name
    info = json.loads((out / "model.json").read_text())
    assert info["subsampling_factor"] == 3 and info["sample_rate"] == 16000 and info["blank_id"] == 0
    assert info["features"]["dim"] == 80 and info["features"]["settings"]["num_filters"] == 80
    assert info["inputs"]["x"]["shape"] == ["N", "T", 80] and info["outputs"]["log_probs"]["shape"][2] == info["num_tokens"]
    assert "log_probs" in (out / "README.md").read_text() and (out / "provenance.json").is_file()
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert meta["subsampling_factor"] == "3" and meta["feature_dim"] == "80" and meta["vocab_size"] == str(info["num_tokens"])

    # The test set's features, batched as the decode stage batches them: onnxruntime = torch.
    params = load_config([DEFAULT_CONFIG_PATH, *map(Path, PRESETS)])["decode"]
    cuts = load_cuts(Path("data/fbank/target_test_cuts.jsonl.gz"))
    torch_model = model_from_checkpoint(Path("exp/finetuned/model.pt"))
    onnx_model = OnnxAcousticModel(out / "model.onnx")
    worst = 0.0
    for batch in decode_loader(cuts, params):
        features = batch["inputs"]
        lens = torch.full((features.size(0),), features.size(1))
        with torch.no_grad():
            expected = torch_model(features, lens)
        got = onnx_model(features, lens)
        assert got.shape == expected.shape
        worst = max(worst, float((got - expected).abs().max()))
    print(f"ONNX vs torch on target_test: max |difference| {worst:.3g}")
    assert worst < 1e-4

    # Both through the same HLG 1-best: torch with the lang dir, ONNX with the exported files.
    refs = {cut.id: cut.supervisions[0].text.split() for cut in cuts}
    torch_hyps, _ = decode_cuts(torch_model, decode_loader(cuts, params), load_hlg(lang, "target"),
                                read_symbols(lang / "words.txt"), None, params)
    onnx_hyps, _ = decode_cuts(onnx_model, decode_loader(cuts, params), load_hlg(out, "target"),
                               read_symbols(out / "words.txt"), None, params)
    assert onnx_hyps == torch_hyps
    torch_wer, onnx_wer = (score(refs, hyps["hlg"], {})[0] for hyps in (torch_hyps, onnx_hyps))
    print(f"target_test WER: torch {torch_wer.wer:.2f}, ONNX {onnx_wer.wer:.2f}")
    assert onnx_wer == torch_wer


def test_onnx_model_recognizes_audio_as_the_checkpoint(in_the_tree: Path, tmp_path: Path) -> None:
    """The source domain's export in place of the checkpoint in ``recognize``: the words of the
    source test set, which the tiny model does recognize some of, are the same."""
    out = tmp_path / "source"
    main(["export", *CONFIG, "--system", "finetuned", "--domain", "source", str(out)])
    system = find_system(load_config([DEFAULT_CONFIG_PATH, *map(Path, PRESETS)]), "finetuned", domain="source")
    data_dir = [Path("data/corpus/source/test")]
    with_torch = recognize(data_dir, system)
    with_onnx = recognize(data_dir, system, model=OnnxAcousticModel(out / "model.onnx"))
    assert with_onnx == with_torch and sum(map(len, with_torch.values())) >= 3
    with pytest.raises(StageError, match="exists and is not an earlier export"):
        main(["export", *CONFIG, str(tmp_path)])


class FrozenLength(nn.Module):
    """A model whose forward loops over frames in Python: tracing unrolls it for one length."""

    subsampling_factor = 1
    params = {"type": "frame_loop"}

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.linear(x[:, t]) for t in range(x.size(1))], dim=1).log_softmax(-1)

    def output_lengths(self, num_frames: torch.Tensor) -> torch.Tensor:
        return num_frames


def test_models_that_cannot_follow_the_input_length_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"model type frame_loop cannot be exported to ONNX here; .*does not follow "
                                         r"the input's length \(at T=57, traced at T=120"):
        export_acoustic_model(FrozenLength(), tmp_path / "loop.onnx", feature_dim=4)
    (tmp_path / "final.txt").write_text(synthetic_text(xent=False))
    nnet = KaldiNnet3Model.from_nnet3(read_nnet3(tmp_path / "final.txt"))
    tuned = build_model({**nnet.params, "ivector_in_features": True, "feature_dim": 4, "num_tokens": 5})
    with pytest.raises(StageError, match=r"model type kaldi_nnet3 cannot be exported to ONNX here; decode it with "
                                         r"`speechtune recognize`"):
        export_acoustic_model(tuned, tmp_path / "kaldi.onnx", feature_dim=4)
