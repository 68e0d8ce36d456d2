"""Fine-tuning methods (speechtune.finetuning): the math of the regularizers, where rehearsal batches
come from, freezing, adapters, output-layer transfer, and alpha = 0 = plain fine-tuning --
on random features and a char lexicon written here, through the real training loop."""
import json
from typing import Dict

import pytest
import torch
from lhotse import CutSet
from lhotse.utils import fastcopy

from speechtune import experiment
from speechtune.config import DEFAULT_CONFIG_PATH, load_config
from speechtune.errors import StageError
from speechtune.finetuning import REGULARIZERS, FineTuning, Regularizer
from speechtune.finetuning.regularizers import kl_divergence, l2sp_penalty, regularized_objective
from speechtune.lang.graphs import build_graph_compiler
from speechtune.models import build_model
from speechtune.provenance import StageRun
from speechtune.training.batches import batch_log_probs, make_loader
from speechtune.training.inputs import ExtraInput
from speechtune.training.loop import averaged_epochs, train
from speechtune.training.losses import build_loss
from stages import finetune as finetune_stage
from stages import import_kaldi
from tests.test_kaldi_nnet3 import write_model_dir
from tests.tiny_training import FEATURE_DIM, LOSS, METHOD, MODEL, TRAIN, feature_cuts
from tests.test_losses import CHAR_LEXICON, write_char_lang_dir

@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Dict[str, object]:
    """A lang dir, source and target cuts, and a model 'pretrained' on the source cuts."""
    root = tmp_path_factory.mktemp("methods")
    lang = write_char_lang_dir(root / "lang", CHAR_LEXICON)
    source = feature_cuts(root / "data", "src", 12, seed=1)
    target = feature_cuts(root / "data", "tgt", 10, seed=2)
    params = {**MODEL, "num_tokens": 6}  # <blk> E F N O T
    run = StageRun("pretrain", {}, seed=3)
    train(run, root / "pretrained", lang, source, source.subset(first=3), params, LOSS, TRAIN)
    return {"root": root, "lang": lang, "source": source, "target": target,
            "pretrained": root / "pretrained" / "model.pt"}


def fine_tune(setup, name: str, seed: int = 5, **method) -> Dict[str, torch.Tensor]:
    """Fine-tune the pretrained model on the target cuts; return model.pt's weights."""
    params = {**TRAIN, **METHOD, **method}
    fine_tuning = FineTuning(setup["pretrained"], params, setup["lang"], FEATURE_DIM, source_inputs(setup))
    exp_dir = setup["root"] / name
    train(StageRun("finetune", {}, seed=seed), exp_dir, setup["lang"], setup["target"],
          setup["target"].subset(first=3), fine_tuning.model_params, LOSS, params, recipe=fine_tuning)
    return torch.load(exp_dir / "model.pt")["model"]


def source_inputs(setup) -> Dict[str, object]:
    """Rehearsal's extra inputs, by the names it declares."""
    return {"source_cuts": setup["source"], "source_lang": setup["lang"]}


def pretrained_weights(setup) -> Dict[str, torch.Tensor]:
    return torch.load(setup["pretrained"])["model"]


def test_kld_is_zero_for_identical_posteriors_and_positive_otherwise():
    torch.manual_seed(0)
    log_probs = torch.randn(2, 7, 5).log_softmax(-1)
    other = torch.randn(2, 7, 5).log_softmax(-1)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    assert kl_divergence(log_probs, log_probs, mask).item() == pytest.approx(0.0, abs=1e-6)
    kld = kl_divergence(log_probs, other, mask)
    assert kld.item() > 0
    # The masked frames (padding) do not count.
    changed = other.clone()
    changed[1, 5:] = torch.randn(2, 5).log_softmax(-1)
    assert kl_divergence(log_probs, changed, mask).item() == pytest.approx(kld.item())


def test_kld_regularizer_is_zero_at_the_pretrained_start_and_grows_as_the_model_moves(setup):
    params = {**METHOD, "regularizer": {"type": "kld", "alpha": 1.0}}
    method = FineTuning(setup["pretrained"], params, setup["lang"], FEATURE_DIM)
    model = build_model(method.model_params)
    method.prepare(model, LOSS, max_duration=1.5, seed=0)
    model.eval()  # the reference runs in eval mode: same batch-norm statistics
    batch = next(iter(make_loader(setup["target"], 3.0, shuffle=False, seed=0)))
    log_probs = batch_log_probs(model, batch, torch.device("cpu"))
    loss = torch.tensor(123.0)  # the task loss: alpha = 1 ignores it
    objective, terms = method.objective(model, batch, log_probs, loss, {"frames": 10})
    assert objective.item() == pytest.approx(0.0, abs=1e-5) and terms["kld"] == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        model.output.bias.add_(torch.randn_like(model.output.bias))
    objective, _ = method.objective(model, batch, batch_log_probs(model, batch, torch.device("cpu")), loss, {"frames": 10})
    assert objective.item() > 0.01


def test_l2sp_penalty_and_its_gradient():
    torch.manual_seed(0)
    model = build_model({**MODEL, "num_tokens": 6})
    reference = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert l2sp_penalty(model, reference).item() == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.output.weight.requires_grad = False  # frozen: not penalized
    penalty = l2sp_penalty(model, reference)
    expected = sum(((p - reference[n]) ** 2).sum() for n, p in model.named_parameters() if p.requires_grad)
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)
    penalty.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, 2 * (p.detach() - reference[name]), atol=1e-7), name


def test_regularized_objective_interpolates():
    pre, task = torch.tensor(2.0), torch.tensor(10.0)
    assert regularized_objective(0.0, pre, task).item() == 10.0
    assert regularized_objective(1.0, pre, task).item() == 2.0
    assert regularized_objective(0.25, pre, task).item() == pytest.approx(0.25 * 2 + 0.75 * 10)


def test_alpha_zero_equals_plain_fine_tuning(setup):
    plain = fine_tune(setup, "plain")
    for regularizer in ("kld", "l2sp", "rehearsal"):
        zero = fine_tune(setup, f"{regularizer}_a0", regularizer={"type": regularizer, "alpha": 0.0})
        for name in plain:
            assert torch.equal(plain[name], zero[name]), (regularizer, name)
    # ... and a positive alpha does change the result (the test above can fail).
    regularized = fine_tune(setup, "kld_a0.5", regularizer={"type": "kld", "alpha": 0.5})
    assert any(not torch.equal(plain[n], regularized[n]) for n in plain)


def test_l2sp_keeps_weights_nearer_the_pretrained_ones(setup):
    start = pretrained_weights(setup)
    plain = fine_tune(setup, "plain_far", lr=0.02)
    l2sp = fine_tune(setup, "l2sp_near", lr=0.02, regularizer={"type": "l2sp", "alpha": 0.9})

    def distance(state):
        return sum(((state[n] - start[n]) ** 2).sum().item() for n in start if start[n].is_floating_point()
                   and "running" not in n)
    assert distance(l2sp) < 0.5 * distance(plain)


def test_rehearsal_batches_come_from_the_source_set(setup):
    params = {**METHOD, "regularizer": {"type": "rehearsal", "alpha": 0.5}}
    method = FineTuning(setup["pretrained"], params, setup["lang"], FEATURE_DIM, source_inputs(setup))
    model = build_model(method.model_params)
    method.prepare(model, LOSS, max_duration=1.5, seed=0)
    loss_fn = build_loss(LOSS, build_graph_compiler(setup["lang"], LOSS), 3)
    for batch in make_loader(setup["target"], 1.5, shuffle=True, seed=0):
        log_probs = batch_log_probs(model, batch, torch.device("cpu"))
        loss, info = loss_fn(log_probs, batch["supervisions"])
        objective, terms = method.objective(model, batch, log_probs, loss, info)
        assert terms["rehearsal"] > 0
    source_ids = {cut.id for cut in setup["source"]}
    drawn = method.regularizer.source_cut_ids
    assert drawn and set(drawn) <= source_ids
    with pytest.raises(StageError, match="rehearsal needs --source-cuts, --source-lang"):
        FineTuning(setup["pretrained"], params, setup["lang"], FEATURE_DIM)


def test_frozen_parameters_do_not_move(setup):
    start = pretrained_weights(setup)
    tuned = fine_tune(setup, "frozen", freeze=["encoder.layers.[0-1].*", "input_norm.*"])
    for name, value in start.items():
        if name.startswith(("encoder.layers.0.", "encoder.layers.1.", "input_norm.")):
            assert torch.equal(tuned[name], value), name  # batch-norm statistics included
    assert not torch.equal(tuned["encoder.layers.2.affine.weight"], start["encoder.layers.2.affine.weight"])


@pytest.mark.parametrize("adapter", [{"type": "residual", "dim": 4, "domain": "target"},
                                     {"type": "lhuc", "dim": 0, "domain": "target"}])
def test_adapters_train_alone_and_the_other_domain_bypasses_them(setup, adapter):
    start = pretrained_weights(setup)
    tuned = fine_tune(setup, f"adapted_{adapter['type']}", adapter=adapter, lr=0.02)
    for name, value in start.items():
        assert torch.equal(tuned[name], value), name
    assert any(name.startswith("encoder.adapters.") for name in tuned)
    checkpoint = torch.load(setup["root"] / f"adapted_{adapter['type']}" / "model.pt")
    model = build_model(checkpoint["model_params"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    pretrained = build_model(torch.load(setup["pretrained"])["model_params"])
    pretrained.load_state_dict(start)
    pretrained.eval()
    features = torch.randn(1, 80, FEATURE_DIM)
    with torch.no_grad():
        model.select_domain("source")
        assert torch.equal(model(features), pretrained(features))
        model.select_domain("target")
        assert not torch.allclose(model(features), pretrained(features))
    trainable = json.loads((setup["root"] / f"adapted_{adapter['type']}" / "provenance.json").read_text())
    adapter_numbers = sum(v.numel() for n, v in tuned.items() if n.startswith("encoder.adapters."))
    assert trainable["trainable_parameters"] == adapter_numbers


def test_lr_factors_make_parameter_groups(setup):
    params = {**METHOD, "lr_factors": {"output.*": 2.0, "encoder.layers.0.*": 0.0}}
    method = FineTuning(setup["pretrained"], params, setup["lang"], FEATURE_DIM)
    model = build_model(method.model_params)
    method.prepare(model, LOSS, max_duration=1.5, seed=0)
    groups = {g["lr_factor"]: g for g in method.param_groups(model, lr=0.1)}
    assert groups[2.0]["lr"] == pytest.approx(0.2) and groups[0.0]["lr"] == 0.0
    assert {id(p) for p in groups[2.0]["params"]} == {id(model.output.weight), id(model.output.bias)}


def test_other_tokens_reinitialize_the_output_layer_and_copy_shared_rows(setup, tmp_path):
    lexicon = {"ON": [["O", "N"]], "NO": [["N", "O"]], "OAK": [["O", "A", "K"]], "<UNK>": [["N"]]}
    other_lang = write_char_lang_dir(tmp_path / "lang_other", lexicon)  # <blk> A K N O
    method = FineTuning(setup["pretrained"], METHOD, other_lang, FEATURE_DIM)
    assert not method.start.same_tokens and method.model_params["num_tokens"] == 5
    model = build_model(method.model_params)
    method.prepare(model, LOSS, max_duration=1.5, seed=0)
    start = pretrained_weights(setup)
    old = {"<blk>": 0, "E": 1, "F": 2, "N": 3, "O": 4, "T": 5}
    new = {"<blk>": 0, "A": 1, "K": 2, "N": 3, "O": 4}
    for symbol in ("<blk>", "N", "O"):
        assert torch.equal(model.output.weight[new[symbol]], start["output.weight"][old[symbol]])
    assert torch.equal(model.encoder.layers[1].affine.weight, start["encoder.layers.1.affine.weight"])
    with pytest.raises(StageError, match="other tokens"):
        FineTuning(setup["pretrained"], {**METHOD, "regularizer": {"type": "kld", "alpha": 0.5}},
                   other_lang, FEATURE_DIM)


def test_an_imported_kaldi_model_fine_tunes_cross_lingually(setup, tmp_path):
    """The import stage's checkpoint (pdf outputs) fine-tuned to the lang dir's tokens: the body
    starts as Kaldi's, the output layer anew at zero, the LDA stays fixed; l2sp covers the body."""
    import_kaldi.main([str(write_model_dir(tmp_path / "model")), str(tmp_path / "kaldi")])
    imported = tmp_path / "kaldi" / "model.pt"
    start = torch.load(imported)["model"]
    target = feature_cuts(tmp_path / "data", "mfcc_ivec", 8, seed=4, dim=4)
    params = {**TRAIN, **METHOD, "regularizer": {"type": "l2sp", "alpha": 0.01}}
    method = FineTuning(imported, params, setup["lang"], 4)
    assert not method.start.same_tokens and method.model_params["num_tokens"] == 6
    model = build_model(method.model_params)
    method.prepare(model, LOSS, max_duration=1.5, seed=0)
    assert model.output.affine.weight.shape == (6, 3) and not model.output.affine.weight.any()
    assert torch.equal(model.tdnnf2.linear.weight, start["tdnnf2.linear.weight"])
    reference = method.regularizer.reference
    assert "output.affine.weight" not in reference and "tdnn1.affine.weight" in reference
    exp_dir = tmp_path / "kaldi_finetuned"
    summary = train(StageRun("finetune", {}, seed=5), exp_dir, setup["lang"], target, target.subset(first=3),
                    method.model_params, LOSS, params, recipe=method)
    tuned = torch.load(exp_dir / "model.pt")["model"]
    assert tuned["output.affine.weight"].abs().sum() > 0
    assert not torch.equal(tuned["tdnnf2.linear.weight"], start["tdnnf2.linear.weight"])
    assert torch.equal(tuned["lda.weight"], start["lda.weight"])  # Kaldi's FixedAffine
    assert "lda.weight" not in dict(model.named_parameters()) and summary["steps"] > 0
    with pytest.raises(StageError, match="other tokens"):
        FineTuning(imported, {**METHOD, "regularizer": {"type": "kld", "alpha": 0.5}}, setup["lang"], 4)
    with pytest.raises(StageError, match="trained on 4-dim features"):
        FineTuning(imported, METHOD, setup["lang"], FEATURE_DIM)


def test_model_selection_and_early_stopping_epochs():
    assert averaged_epochs([3.0, 2.0, 1.0, 1.5], 2, "last") == [3, 4]
    assert averaged_epochs([3.0, 2.0, 1.0, 1.5], 2, "best_valid") == [2, 3]
    assert averaged_epochs([1.0, 2.0], 3, "best_valid") == [1]


def test_early_stopping_stops_on_the_dev_loss(setup):
    # A learning rate far too high makes the dev loss jump about, so some epoch does not improve.
    fine_tune(setup, "early", lr=1.0, epochs=10, early_stopping_patience=1, model_selection="best_valid",
              warmup_steps=0)
    summary = json.loads((setup["root"] / "early" / "provenance.json").read_text())
    losses = torch.load(setup["root"] / "early" / "model.pt")["valid_losses"]
    assert summary["epochs_trained"] == len(losses) < 10
    # Stopped after the first epoch that was not the best so far, not earlier.
    assert losses[-1] > min(losses[:-1]) and losses[:-1] == sorted(losses[:-1], reverse=True)
    assert summary["averaged_epochs"] == [losses.index(min(losses)) + 1]


def test_noise_mixing_changes_the_inputs_not_the_transcripts(setup):
    noise = CutSet.from_cuts(fastcopy(cut, supervisions=[])  # noise has no transcript
                             for cut in feature_cuts(setup["root"] / "noise", "noise", 2, seed=9))
    one = setup["target"].subset(first=1)
    plain = next(iter(make_loader(one, 3.0, shuffle=False, seed=0)))
    mixed = next(iter(make_loader(one, 3.0, shuffle=False, seed=0,
                                  noise_mix={"prob": 1.0, "snr_db": [0, 5]}, noise_cuts=noise)))
    assert mixed["supervisions"]["text"] == plain["supervisions"]["text"]
    assert mixed["inputs"].shape == plain["inputs"].shape
    assert not torch.allclose(mixed["inputs"], plain["inputs"])
    with pytest.raises(StageError, match="noise stage"):
        make_loader(setup["target"], 3.0, shuffle=False, seed=0, noise_mix={"prob": 0.5, "snr_db": [0, 5]})


TOY_INPUT = ExtraInput("toy_cuts", "cuts:source_train", "cuts the toy regularizer would read")


@REGULARIZERS.register("toy_bias")
class ToyBiasRegularizer(Regularizer):
    """L_pre = the squared output bias: a regularizer that exists in this test file alone."""

    inputs = (TOY_INPUT,)
    penalties = 0

    def __init__(self, start, inputs):
        super().__init__(start, inputs)
        assert len(inputs[TOY_INPUT.name]) == len(inputs["source_cuts"])  # handed over, loaded

    def penalty(self, model, batch, log_probs):
        ToyBiasRegularizer.penalties += 1
        return model.output.bias.pow(2).sum()


def test_a_regularizer_registered_in_a_test_file_fine_tunes_through_the_real_loop(setup):
    inputs = {**source_inputs(setup), TOY_INPUT.name: setup["source"]}
    params = {**TRAIN, **METHOD, "lr": 0.02, "regularizer": {"type": "toy_bias", "alpha": 0.9}}
    method = FineTuning(setup["pretrained"], params, setup["lang"], FEATURE_DIM, inputs)
    exp_dir = setup["root"] / "toy"
    train(StageRun("finetune", {}, seed=5), exp_dir, setup["lang"], setup["target"],
          setup["target"].subset(first=3), method.model_params, LOSS, params, recipe=method)
    assert ToyBiasRegularizer.penalties > 0
    plain = fine_tune(setup, "plain_for_toy", lr=0.02)
    toy = torch.load(exp_dir / "model.pt")["model"]
    assert toy["output.bias"].norm() < plain["output.bias"].norm()  # it pulled the bias in
    assert json.loads((exp_dir / "provenance.json").read_text())["regularizer"] == "toy_bias"
    # The pipeline takes it from the registry too: config, its declared input, the stage's option.
    config = load_config([DEFAULT_CONFIG_PATH])
    config["finetune_variants"]["finetuned_toy"] = {"finetune": {"regularizer": {"type": "toy_bias", "alpha": 0.5}}}
    config["alpha_sweep"]["toy_bias"] = [0.25]
    experiment.check_config(config)
    assert experiment.training_inputs(config, "finetuned_toy")["toy_cuts"] == "data/fbank/source_train_cuts.jsonl.gz"
    assert "finetuned_toy_bias_a0.25" in experiment.sweep_variants(config)
    assert "--toy-cuts" in finetune_stage.get_parser().format_help()
    config["finetune_variants"]["finetuned_typo"] = {"finetune": {"regularizer": {"type": "toy_bais", "alpha": 0.5}}}
    with pytest.raises(StageError, match="toy_bais' is not known; known: .*toy_bias"):
        experiment.check_config(config)
