"""Building blocks the acoustic models share: output lengths under frame subsampling and
Kaldi's semi-orthogonal constraint (TDNN-F bottlenecks, the imported Kaldi networks)::

    log_probs.size(1) == output_lengths(features.size(1), subsampling_factor=3)
    # every ORTHONORMAL_CONSTRAINT_INTERVAL optimizer steps, as Kaldi's nnet3 training does:
    constrain_orthonormal_(layer.weight)
"""
from typing import Union

import torch
from torch import nn

# Kaldi applies the semi-orthogonal constraint to each constrained component in about one of
# four minibatches ("it won't have time to stray far from the constraint in between").
ORTHONORMAL_CONSTRAINT_INTERVAL = 4


def output_lengths(
    num_frames: Union[int, torch.Tensor], subsampling_factor: int
) -> Union[int, torch.Tensor]:
    """Output frames for ``num_frames`` input frames: ``ceil(T / subsampling_factor)``."""
    return (num_frames + subsampling_factor - 1) // subsampling_factor


@torch.no_grad()
def constrain_orthonormal_(weight: torch.Tensor, update_speed: float = 0.125) -> None:
    """One step of Kaldi's ``ConstrainOrthonormalInternal`` with a floating scale
    (``orthonormal-constraint=-1``), in place, towards ``M M^T = alpha^2 I``.

    ``M`` is the weight as Kaldi stores a TdnnComponent's linear params: rows = outputs,
    columns = inputs x time offsets (a column permutation of Kaldi's order, which leaves
    ``M M^T`` unchanged). Where rows > columns, ``M^T`` is constrained instead.

    With ``P = M M^T``, the step is gradient descent on ``||P - alpha^2 I||_F^2``, whose
    gradient is ``4 (P - alpha^2 I) M``::

        alpha^2 = tr(P P) / tr(P)                    # floating scale: follows M's own size
        M <- M - (4 * update_speed / alpha^2) (P - alpha^2 I) M

    ``update_speed = 1/8`` converges quadratically near the constraint (Povey et al. 2018,
    "Semi-orthogonal low-rank matrix factorization for deep neural networks"). The ratio
    ``tr(P P) * rows / tr(P)^2 >= 1`` measures how unequal P's eigenvalues are; far from the
    constraint Kaldi halves the speed (ratio > 1.02) and halves it again (ratio > 1.1) so the
    step cannot diverge.
    """
    W = weight.reshape(weight.size(0), -1)
    transposed = W.size(0) > W.size(1)
    M = W.t() if transposed else W
    P = M @ M.t()
    trace_P = P.trace()
    trace_P_P = (P * P).sum()
    alpha2 = trace_P_P / trace_P
    ratio = trace_P_P * P.size(0) / (trace_P * trace_P)
    if ratio > 1.02:
        update_speed *= 0.5
        if ratio > 1.1:
            update_speed *= 0.5
    P.diagonal().sub_(alpha2)
    M = M - (4.0 * update_speed / alpha2) * (P @ M)
    weight.copy_((M.t() if transposed else M).reshape(weight.shape))


class SemiOrthogonalConv1d(nn.Conv1d):
    """A bias-free linear map over time offsets, kept semi-orthogonal by
    :meth:`TdnnModel.constrain_orthonormal` (Kaldi: ``orthonormal-constraint=-1``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=False)
