"""TDNN / TDNN-F acoustic models: output lengths, the semi-orthogonal constraint, sizes, names."""
import re

import pytest
import torch

from speechtune.config import load_config
from speechtune.models import build_model, num_parameters
from speechtune.models.layers import constrain_orthonormal_, output_lengths, SemiOrthogonalConv1d
from tests.conftest import REPO_ROOT


def small_params(**overrides) -> dict:
    params = {
        "type": "tdnnf", "feature_dim": 20, "num_tokens": 11, "input_norm": "batchnorm",
        "num_layers": 4, "full_rate_layers": 2, "hidden_dim": 48, "bottleneck_dim": 16,
        "prefinal_dim": 24, "bypass_scale": 0.66, "subsampling_factor": 3, "dropout": 0.0,
    }
    return dict(params, **overrides)


def deviation_from_semi_orthogonal(weight: torch.Tensor) -> float:
    """max |M M^T / alpha^2 - I| over the smaller side, alpha^2 = mean eigenvalue of M M^T."""
    M = weight.reshape(weight.size(0), -1)
    if M.size(0) > M.size(1):
        M = M.t()
    P = M @ M.t()
    alpha2 = P.trace() / P.size(0)
    return (P / alpha2 - torch.eye(P.size(0))).abs().max().item()


@pytest.mark.parametrize("model_type", ["tdnnf", "tdnn"])
@pytest.mark.parametrize("input_norm", ["none", "utterance_mean", "batchnorm"])
@pytest.mark.parametrize("subsampling_factor", [1, 3])
def test_output_frames_match_output_lengths(model_type, input_norm, subsampling_factor):
    model = build_model(small_params(type=model_type, input_norm=input_norm,
                                     subsampling_factor=subsampling_factor))
    for T in [1, 2, 3, 4, 5, 6, 7, 50, 100, 101]:
        log_probs = model(torch.randn(2, T, 20))
        assert log_probs.shape == (2, model.output_lengths(T), 11)
        assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, log_probs.size(1)), atol=1e-5)
    assert output_lengths(torch.tensor([1, 3, 4, 300, 301]), 3).tolist() == [1, 1, 2, 100, 101]


def test_padding_does_not_change_an_utterances_outputs_away_from_its_end():
    torch.manual_seed(0)
    model = build_model(small_params(input_norm="utterance_mean")).eval()
    utterance = torch.randn(1, 90, 20) + 5.0
    padded = torch.cat([utterance, torch.full((1, 60, 20), -20.0)], dim=1)
    batch = torch.cat([padded, torch.randn(1, 150, 20)])
    with torch.no_grad():
        alone = model(utterance, torch.tensor([90]))
        in_batch = model(batch, torch.tensor([90, 150]))
    # The per-utterance mean ignores padding; the last frames see it through their context.
    assert torch.allclose(alone[0, :20], in_batch[0, :20], atol=1e-5)


def test_semi_orthogonal_constraint_converges():
    torch.manual_seed(0)
    model = build_model(small_params(hidden_dim=128, bottleneck_dim=32, num_layers=6))
    constrained = [m.weight for m in model.modules() if isinstance(m, SemiOrthogonalConv1d)]
    assert len(constrained) == 5 + 2  # every TDNN-F linear, prefinal_l, prefinal_chain.linear
    # Far from the constraint: very unequal row scales.
    with torch.no_grad():
        constrained[0].mul_(torch.linspace(0.2, 5.0, constrained[0].size(0))[:, None, None])
    assert max(deviation_from_semi_orthogonal(w) for w in constrained) > 0.5
    for _ in range(50):
        model.constrain_orthonormal()
    assert max(deviation_from_semi_orthogonal(w) for w in constrained) < 1e-3


def test_constraint_keeps_the_floating_scale_and_handles_tall_matrices():
    torch.manual_seed(0)
    wide = torch.randn(32, 100, 2) * 3.0
    tall = torch.randn(200, 40)
    scale_before = (wide.reshape(32, -1) @ wide.reshape(32, -1).t()).trace() / 32
    for _ in range(50):
        constrain_orthonormal_(wide)
        constrain_orthonormal_(tall)
    scale_after = (wide.reshape(32, -1) @ wide.reshape(32, -1).t()).trace() / 32
    assert deviation_from_semi_orthogonal(wide) < 1e-4 and deviation_from_semi_orthogonal(tall) < 1e-4
    # The scale floats: it follows the matrix rather than being forced to 1.
    assert scale_after == pytest.approx(scale_before.item(), rel=0.2)


def test_default_config_has_a_few_million_parameters():
    config = load_config([REPO_ROOT / "config/config.yaml"])
    model = build_model({**config["model"], "feature_dim": 80, "num_tokens": 500})
    assert 1_000_000 < num_parameters(model) < 4_000_000
    tiny = load_config([REPO_ROOT / "config/config.yaml", REPO_ROOT / "config/tiny.yaml"])
    assert num_parameters(build_model({**tiny["model"], "feature_dim": 80, "num_tokens": 500})) < 200_000


def test_state_dict_names_are_stable():
    model = build_model(small_params(num_layers=3, full_rate_layers=1))
    assert [k for k in model.state_dict() if not re.search(r"running_|num_batches", k)] == [
        "encoder.layers.0.affine.weight",
        "encoder.layers.0.affine.bias",
        "encoder.layers.1.linear.weight",
        "encoder.layers.1.affine.weight",
        "encoder.layers.1.affine.bias",
        "encoder.layers.2.linear.weight",
        "encoder.layers.2.affine.weight",
        "encoder.layers.2.affine.bias",
        "prefinal_l.weight",
        "prefinal_chain.affine.weight",
        "prefinal_chain.affine.bias",
        "prefinal_chain.linear.weight",
        "output.weight",
        "output.bias",
    ]
    assert "input_norm.running_mean" in model.state_dict()
    assert model.encoder.layers[1].subsampling == 3 and model.encoder.layers[1].time_stride == 0
    tdnn = build_model(small_params(type="tdnn", num_layers=3))
    assert {k for k in tdnn.state_dict() if k.endswith("weight")} == {
        "encoder.layers.0.affine.weight", "encoder.layers.1.affine.weight",
        "encoder.layers.2.affine.weight", "prefinal_chain.affine.weight",
        "prefinal_chain.linear.weight", "output.weight",
    }


def test_params_rebuild_the_model():
    model = build_model(small_params())
    rebuilt = build_model(model.params)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with pytest.raises(ValueError, match="unknown \\['hidden'\\]"):
        build_model(dict(small_params(), hidden=3))
    with pytest.raises(ValueError, match="full_rate_layers"):
        build_model(small_params(full_rate_layers=4))
