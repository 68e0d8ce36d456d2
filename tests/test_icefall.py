"""A released icefall tdnn_lstm_ctc model as the pretrained system: its checkpoint (written here
by icefall's own module definition, copied below as the independent reference) loads strictly
and computes what icefall's module computes; damaged or foreign checkpoints are refused with
their keys listed; the lang dir imported from its icefall-layout lang_phone decodes words with
our HLG (and with the released one); fine-tuning starts from it and keeps icefall's keys."""
import json
import shlex
import subprocess
import types
from pathlib import Path
from typing import Dict, List

import k2
import pytest
import torch
import torch.nn as nn
import yaml

from speechtune.config import DEFAULT_CONFIG_PATH, load_config
from speechtune.decoding import decode_cuts, load_hlg, read_symbols
from speechtune.errors import StageError
from speechtune.finetuning import FineTuning
from speechtune.finetuning.pretrained import import_icefall_checkpoint
from speechtune.models import build_model
from speechtune.provenance import StageRun
from speechtune.training.checkpoint import load_checkpoint, model_from_checkpoint
from speechtune.training.loop import train
from stages import import_icefall
from tests.conftest import MAIN_TARGET, PRESETS, REPO_ROOT, SNAKEMAKE
from tests.tiny_training import LOSS, METHOD, TRAIN, feature_cuts


# --- icefall's egs/librispeech/ASR/tdnn_lstm_ctc/model.py (k2-fsa/icefall), verbatim but for
# --- docstrings: the reference for parameter names and for the function computed.
class TdnnLstm(nn.Module):
    def __init__(self, num_features: int, num_classes: int, subsampling_factor: int = 3) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.subsampling_factor = subsampling_factor
        self.tdnn = nn.Sequential(
            nn.Conv1d(in_channels=num_features, out_channels=500, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(num_features=500, affine=False),
            nn.Conv1d(in_channels=500, out_channels=500, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(num_features=500, affine=False),
            nn.Conv1d(in_channels=500, out_channels=500, kernel_size=3,
                      stride=self.subsampling_factor, padding=1),  # stride: subsampling_factor!
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(num_features=500, affine=False),
        )
        self.lstms = nn.ModuleList(
            [nn.LSTM(input_size=500, hidden_size=500, num_layers=1) for _ in range(5)]
        )
        self.lstm_bnorms = nn.ModuleList(
            [nn.BatchNorm1d(num_features=500, affine=False) for _ in range(5)]
        )
        self.dropout = nn.Dropout(0.2)
        self.linear = nn.Linear(in_features=500, out_features=self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tdnn(x)
        x = x.permute(2, 0, 1)  # (N, C, T) -> (T, N, C) -> how LSTM expects it
        for lstm, bnorm in zip(self.lstms, self.lstm_bnorms):
            x_new, _ = lstm(x)
            x_new = bnorm(x_new.permute(1, 2, 0)).permute(2, 0, 1)  # (T, N, C) -> (N, C, T) -> (T, N, C)
            x_new = self.dropout(x_new)
            x = x_new + x  # skip connections
        x = x.transpose(1, 0)  # (T, N, C) -> (N, T, C) -> linear expects "features" in the last dim
        x = self.linear(x)
        x = nn.functional.log_softmax(x, dim=-1)
        return x
# --- end of icefall's module


# A tiny lang_phone as icefall's prepare.sh + local/prepare_lang.py lay it out: the lexicon with
# prepare.sh's three entries, tokens "<eps>" + sorted phones + "#0".."#k", words "<eps>" + sorted
# words + "#0", "<s>", "</s>". The words are tiny_training's, so its cuts' texts are covered.
LEXICON = {"NET": "N EH1 T", "NO": "N OW1", "OFF": "AO1 F", "ON": "AA1 N", "TOE": "T OW1"}
PREPARE_SH = {"!SIL": "SIL", "<SPOKEN_NOISE>": "SPN", "<UNK>": "SPN"}
PHONES = sorted({p for pron in [*LEXICON.values(), *PREPARE_SH.values()] for p in pron.split()})
TOKENS = ["<eps>", *PHONES, "#0", "#1", "#2"]  # SPN twice (homophones): #1 and #2
WORDS = ["<eps>", *sorted([*LEXICON, *PREPARE_SH]), "#0", "<s>", "</s>"]
NUM_CLASSES = len(PHONES) + 1  # icefall: max phone id + 1
FEATURE_DIM = 80


def write_release(root: Path, lexicon_txt: bool) -> Path:
    """A released model's directory: exp/pretrained.pt ({"model": state_dict} of icefall's
    TdnnLstm, random weights and batch-norm statistics) and data/lang_phone."""
    lang = root / "data" / "lang_phone"
    lang.mkdir(parents=True)
    (lang / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(TOKENS)))
    (lang / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(WORDS)))
    entries = {**LEXICON, **PREPARE_SH} if lexicon_txt else LEXICON  # a bare lexicon lacks prepare.sh's
    (root / ("data/lang_phone/lexicon.txt" if lexicon_txt else "librispeech-lexicon.txt")).write_text(
        "".join(f"{w}\t{p}\n" for w, p in sorted(entries.items())))
    torch.manual_seed(0)
    reference = TdnnLstm(FEATURE_DIM, NUM_CLASSES)
    for name, buffer in reference.named_buffers():  # statistics a trained model would have
        if name.endswith("running_mean"):
            buffer.normal_(0, 0.5)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    (root / "exp").mkdir()
    torch.save({"model": reference.state_dict()}, root / "exp" / "pretrained.pt")
    return root


def lang_config(order: int = 2) -> Dict:
    config = load_config([DEFAULT_CONFIG_PATH])["lang"]
    return {**config, "unit": "phone", "lm": {"order": order}}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Dict[str, Path]:
    """A release, imported with the stage's CLI: exp/pretrained and a target lang dir (our LM
    and HLG, the release's tokens and lexicon), and tiny 80-dim target cuts."""
    root = tmp_path_factory.mktemp("icefall")
    released = write_release(root / "release", lexicon_txt=False)
    target = feature_cuts(root / "data", "tgt", 8, seed=2, dim=FEATURE_DIM)
    target.to_file(root / "target_cuts.jsonl.gz")
    import_icefall.main(["model", str(released / "exp/pretrained.pt"), str(released / "data/lang_phone"),
                         str(root / "exp/pretrained")])
    import_icefall.main(["lang", str(released / "data/lang_phone"), "--lexicon",
                         str(released / "librispeech-lexicon.txt"),
                         "--lm-text", f"target={root / 'target_cuts.jsonl.gz'}", str(root / "lang_phone_target"),
                         "--config-json", json.dumps(lang_config()), "--seed", "0"])
    return {"root": root, "released": released, "checkpoint": root / "exp/pretrained/model.pt",
            "lang": root / "lang_phone_target", "target": target}


def reference_model(release) -> TdnnLstm:
    model = TdnnLstm(FEATURE_DIM, NUM_CLASSES)
    model.load_state_dict(torch.load(release["released"] / "exp/pretrained.pt")["model"])
    return model.eval()


def test_released_checkpoint_loads_strictly_and_computes_icefalls_outputs(release) -> None:
    reference = reference_model(release)
    checkpoint = load_checkpoint(release["checkpoint"])
    assert list(checkpoint["model"]) == list(reference.state_dict())  # icefall's keys, in its order
    assert checkpoint["model_params"]["type"] == "icefall_tdnn_lstm_ctc"
    assert checkpoint["tokens"] == {t: i for i, t in enumerate(TOKENS[:NUM_CLASSES])}
    model = model_from_checkpoint(release["checkpoint"])  # strict load_state_dict, eval mode
    for frames in (31, 32, 33):  # every remainder of the stride
        features = torch.randn(2, frames, FEATURE_DIM)
        with torch.no_grad():
            ours = model(features, torch.tensor([frames, frames]))
            theirs = reference(features.transpose(1, 2))  # icefall's (N, C, T)
        assert ours.shape == theirs.shape == (2, model.output_lengths(frames), NUM_CLASSES)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert json.loads((release["checkpoint"].parent / "provenance.json").read_text())["train_seconds"] == 0.0


def test_a_damaged_checkpoint_names_its_missing_and_unexpected_keys(release, tmp_path) -> None:
    state = torch.load(release["released"] / "exp/pretrained.pt")["model"]
    del state["lstms.3.weight_hh_l0"], state["lstm_bnorms.1.running_mean"]
    state["linear.weight_extra"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "damaged.pt")
    with pytest.raises(StageError) as error:
        import_icefall_checkpoint(tmp_path / "damaged.pt", release["released"] / "data/lang_phone",
                                  tmp_path / "exp", StageRun("import", {}, 0))
    message = str(error.value)
    for fragment in (str(tmp_path / "damaged.pt"), "missing keys", "lstm_bnorms.1.running_mean",
                     "lstms.3.weight_hh_l0", "unexpected keys", "linear.weight_extra", "pretrained.pt"):
        assert fragment in message
    assert not (tmp_path / "exp").exists()  # nothing a later stage would trust


def test_another_architecture_or_another_lang_dir_is_refused(release, tmp_path) -> None:
    conformer = {"encoder_embed.conv.0.weight": torch.zeros(8, 1, 3, 3),
                 "encoder.layers.0.self_attn.in_proj_weight": torch.zeros(12, 4),
                 "encoder_output_layer.1.weight": torch.zeros(5, 4)}
    torch.save({"model": conformer}, tmp_path / "conformer.pt")
    run = StageRun("import", {}, 0)
    with pytest.raises(StageError, match=r"not a tdnn_lstm_ctc checkpoint.*encoder_embed.*conformer"):
        import_icefall_checkpoint(tmp_path / "conformer.pt", release["released"] / "data/lang_phone",
                                  tmp_path / "exp", run)
    other_lang = tmp_path / "lang_phone"
    other_lang.mkdir()
    (other_lang / "phones.txt").write_text("<eps> 0\nA 1\nB 2\n#0 3\n")  # older releases' name
    with pytest.raises(StageError, match=f"{NUM_CLASSES} outputs but .*phones.txt has 3 tokens"):
        import_icefall_checkpoint(release["released"] / "exp/pretrained.pt", other_lang, tmp_path / "exp", run)


def forced_log_probs(tokens: List[str]) -> torch.Tensor:
    """(1, T, NUM_CLASSES) log-probs that put each token on two frames, a blank after each."""
    frames = []
    for token in tokens:
        frames += [TOKENS.index(token)] * 2 + [0]
    log_probs = torch.full((1, len(frames), NUM_CLASSES), -20.0)
    log_probs[0, torch.arange(len(frames)), torch.tensor(frames)] = 0.0
    return log_probs.log_softmax(dim=-1)


class ForcedOutput(nn.Module):
    """Returns the given log-probs whatever the input: what decoding makes of a known output."""

    subsampling_factor = 3

    def __init__(self, log_probs: torch.Tensor) -> None:
        super().__init__()
        self.log_probs = log_probs
        self.unused = nn.Parameter(torch.zeros(1))  # decoding asks a model's device

    def forward(self, features: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        return self.log_probs

    def output_lengths(self, frames: int) -> int:
        return (frames + 2) // 3


def batch_of(features: torch.Tensor) -> Dict:
    """A K2SpeechRecognitionDataset-shaped batch of whole utterances."""
    n, frames, _ = features.shape
    return {"inputs": features, "supervisions": {
        "cut": [types.SimpleNamespace(id=f"utt{i}") for i in range(n)], "sequence_idx": torch.arange(n),
        "start_frame": torch.zeros(n, dtype=torch.int64), "num_frames": torch.full((n,), frames)}}


DECODE = {"search_beam": 20.0, "output_beam": 8.0, "min_active_states": 30, "max_active_states": 10000}


def test_the_imported_lang_dir_decodes_words_with_its_hlg(release) -> None:
    lang = release["lang"]
    assert (lang / "tokens.txt").read_text().split() == " ".join(f"{t} {i}" for i, t in enumerate(TOKENS)).split()
    assert read_symbols(lang / "words.txt").get("<UNK>") == WORDS.index("<UNK>")  # the release's ids
    assert "!SIL SIL" in (lang / "lexicon.txt").read_text()  # prepare.sh's entries added
    # icefall's L: silence between words is optional, no word of its own (not "!SIL").
    L = k2.arc_sort(k2.Fsa.from_dict(torch.load(lang / "L.pt")))
    tokens = k2.linear_fsa([TOKENS.index(t) for t in ["SIL", "N", "OW1", "SIL", "T", "OW1", "SIL"]])
    best = k2.shortest_path(k2.create_fsa_vec([k2.intersect(L, tokens, treat_epsilons_specially=True)]), True)
    assert [WORDS[i] for i in k2.get_aux_labels(best)[0]] == ["NO", "TOE"]
    hlg = load_hlg(lang, "target")
    words = read_symbols(lang / "words.txt")
    # The release's optional silence between words (icefall's L) is in HLG: SIL is no word.
    forced = ForcedOutput(forced_log_probs(["N", "OW1", "SIL", "T", "OW1", "AO1", "F"]))
    hyps, _ = decode_cuts(forced, [batch_of(torch.zeros(1, 3 * forced.log_probs.size(1), FEATURE_DIM))],
                          hlg, words, None, DECODE)
    assert hyps["hlg"] == {"utt0": ["NO", "TOE", "OFF"]}
    # The imported network itself decodes through the same graph into words of words.txt.
    model = model_from_checkpoint(release["checkpoint"])
    hyps, _ = decode_cuts(model, [batch_of(torch.randn(3, 60, FEATURE_DIM))], hlg, words, None, DECODE)
    assert sorted(hyps["hlg"]) == ["utt0", "utt1", "utt2"]
    assert all(word in LEXICON for hyp in hyps["hlg"].values() for word in hyp)


def test_the_released_hlg_is_used_when_asked(release, tmp_path) -> None:
    released_lang = tmp_path / "lang_phone"
    released_lang.mkdir()
    for name in ("tokens.txt", "words.txt", "lexicon.txt"):
        text = (release["lang"] / name).read_text()
        (released_lang / name).write_text(text)
    hlg = k2.arc_sort(k2.ctc_topo(NUM_CLASSES - 1))  # any FSA: what matters is which file decodes
    torch.save(hlg.as_dict(), released_lang / "HLG.pt")
    import_icefall.main(["lang", str(released_lang), "--released-hlg", "--lm-text",
                         f"target={release['root'] / 'target_cuts.jsonl.gz'}", str(tmp_path / "out"),
                         "--config-json", json.dumps(lang_config()), "--seed", "0"])
    assert (tmp_path / "out/lm_target/HLG.pt").read_bytes() == (released_lang / "HLG.pt").read_bytes()
    assert not (tmp_path / "out/lm_target/G.pt").exists()  # no LM of ours was trained


def test_fine_tuning_starts_from_the_icefall_model_and_keeps_its_keys(release) -> None:
    # Two steps of one utterance each: the LSTMs are icefall's size (10M parameters).
    params = {**TRAIN, **METHOD, "epochs": 1, "max_duration": 1.0, "lr": 0.001}
    method = FineTuning(release["checkpoint"], params, release["lang"], FEATURE_DIM)
    assert method.start.same_tokens  # the output layer is the release's, kept
    exp_dir = release["root"] / "finetuned"
    target = release["target"]
    train(StageRun("finetune", {}, seed=5), exp_dir, release["lang"], target.subset(first=2),
          target.subset(first=1), method.model_params, LOSS, params, recipe=method)
    start = load_checkpoint(release["checkpoint"])["model"]
    tuned = load_checkpoint(exp_dir / "model.pt")
    assert list(tuned["model"]) == list(reference_model(release).state_dict())
    assert tuned["model_params"]["type"] == "icefall_tdnn_lstm_ctc"
    moved = [name for name, value in start.items()
             if value.is_floating_point() and not torch.equal(value, tuned["model"][name])]
    assert "linear.weight" in moved and "lstms.0.weight_ih_l0" in moved and "tdnn.0.weight" in moved


def test_the_preset_asks_for_the_models_features_and_its_architecture() -> None:
    config = load_config([DEFAULT_CONFIG_PATH, REPO_ROOT / "config" / "icefall_librispeech.yaml"])
    assert config["pretrained"]["source"] == "icefall"
    assert (config["features"]["extractor"], config["features"]["num_mel_bins"]) == ("lhotse-fbank", 80)
    assert config["prepare"]["sample_rate"] == 16000 and config["lang"]["unit"] == "phone"
    # The scratch system is icefall's architecture too: the same keys as the reference.
    scratch = build_model({**config["model"], "feature_dim": FEATURE_DIM, "num_tokens": NUM_CLASSES})
    assert list(scratch.state_dict()) == list(TdnnLstm(FEATURE_DIM, NUM_CLASSES).state_dict())
    adapted = build_model({**config["model"], "feature_dim": FEATURE_DIM, "num_tokens": NUM_CLASSES,
                           "adapter": {"type": "lhuc", "dim": 0, "domain": "target"}})
    assert sorted(set(adapted.state_dict()) - set(scratch.state_dict())) == [f"adapters.{i}.scale" for i in range(5)]


def test_the_pipeline_imports_the_release_in_place_of_pretrain_and_lang(release, tmp_path) -> None:
    """The preset's rules, planned by Snakemake (-n): import and the lang dirs over the release's
    phones instead of pretraining, and their shell commands parse with the stage's parser."""
    released = release["released"]
    override = tmp_path / "release.yaml"
    override.write_text(yaml.safe_dump({"pretrained": {
        "checkpoint": str(released / "exp/pretrained.pt"), "lang_dir": str(released / "data/lang_phone"),
        "lexicon": str(released / "librispeech-lexicon.txt")}}))
    result = subprocess.run(SNAKEMAKE + ["-n", "-p", "--nolock", MAIN_TARGET, "-d", str(tmp_path / "run"),
                                         "--configfile", *PRESETS, str(REPO_ROOT / "config/icefall_librispeech.yaml"),
                                         str(override)], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "rule import_icefall:" in output and "rule icefall_lang:" in output
    assert "rule pretrain:" not in output and "rule lang:" not in output
    commands = [line.split(">")[0] for line in output.splitlines() if "-m stages.import_icefall" in line]
    assert len(commands) == 3  # the model, the source and the target lang dirs
    for command in commands:
        argv = shlex.split(command)
        args = import_icefall.get_parser().parse_args(argv[argv.index("stages.import_icefall") + 1:])
        assert args.lang_dir == released / "data/lang_phone"
        assert args.command == "model" or args.lexicon == released / "librispeech-lexicon.txt"
