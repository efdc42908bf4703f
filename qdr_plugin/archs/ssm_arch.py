r"""A linear-time state-space surrogate of a Restormer transformer block: same input and output
(``N x C x H x W``), a gated selective scan in four directions instead of attention plus feed-forward.

.. math::

    u = \mathrm{LN}(x), \qquad [z, g, \delta] = W_{in} u, \qquad z \leftarrow \mathrm{dwconv}_{3\times3}(z),
    \qquad a = \sigma(\delta + \beta) \in (0, 1)

    h_t = a_t \odot h_{t-1} + (1 - a_t) \odot z_t \quad\text{along one scan order}, \qquad
    y = x + W_{out}\,(h \odot \mathrm{SiLU}(g))

``z``, ``g`` and the decay logits ``delta`` have ``E`` channels each (``E = expand * C`` rounded up to a multiple of
4); ``beta`` is a learned per-channel decay bias. The ``E`` scan channels are split into four groups, one per scan
order: left to right, right to left (along rows), top to bottom, bottom to top (along columns), so every output
pixel sees its whole row and column after one block and the whole image after two, and the scan costs one pass
over ``E`` channels, not four. A backward order scans from the last place to the first directly (no reversed
copy). The recurrence is selective (the decay ``a_t`` depends on the input, as in Mamba) and normalised (``h`` is a
convex combination of the ``z`` it has seen, so it stays bounded for any length).

**The scan as a log-depth parallel scan.** The linear recurrence :math:`h_t = a_t h_{t-1} + v_t` (``v = (1 - a)
z``) is computed by ``K = scan_steps`` doubling steps (Hillis-Steele): for :math:`k = 0 .. K-1`, :math:`d = 2^k`,

.. math::

    v_t \leftarrow v_t + a_t\, v_{t-d}, \qquad a_t \leftarrow a_t\, a_{t-d}

(out-of-range terms are 0: the scan pads ``2^K - 1`` zeros before the first place once, and each step drops the
``d`` places it cannot fill). After step ``k``, :math:`v_t = \sum_{s = t - 2^{k+1} + 1}^{t}
(\prod_{r=s+1}^{t} a_r)\, v_s`: the exact recurrence over a window of :math:`2^K` pixels along the scan order (the
exact recurrence for rows and columns up to :math:`2^K` pixels; beyond it the contribution of a pixel :math:`2^K`
away, already scaled by a product of :math:`2^K` decays below 1, is dropped). Cost: :math:`O(K\, E\, H W)`,
linear in the pixel count for a fixed ``K``.

Why this form: every step is two slices, a multiply and an add on the whole tensor, so the block exports to ONNX
with standard operators (Pad, Slice, Mul, Add, Concat, Sigmoid, Conv) at any ``H`` and ``W`` and needs no custom
kernel, and there is no sequential loop over pixels (a Python loop over ``W`` would unroll into ``W`` nodes at one
fixed size; a chunked scan needs a loop over a dynamic number of chunks, an ONNX ``Loop``). An LTI long convolution
would need a kernel as long as the row (quadratic without an FFT). The projections are ``4 E C`` multiply-adds per
pixel against about ``12 C^2`` for the transformer block at ``ffn_expansion_factor`` 2.66 (``expand = 1``: a third);
the scan adds about ``6 K`` element-wise operations per scan channel, memory-bound, which is what
``benchmarks/hybrid_latency.py --blocks`` weighs against the saved multiply-adds.

For INT8 the three convolutions are quantized; the sigmoid, the scan, the SiLU gate and the residual addition stay
float. ``out_proj`` starts at zero, so an untrained surrogate is the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .restormer_arch import LayerNorm

DIRECTIONS = 4
"""Scan orders: left to right, right to left, top to bottom, bottom to top (one channel group each)."""


def parallel_scan(v: torch.Tensor, a: torch.Tensor, dim: int, steps: int, reverse: bool = False) -> torch.Tensor:
    """``h_t = a_t h_{t-1} + v_t`` along ``dim`` (2 = H, 3 = W; ``reverse``: from the last place to the first) by
    ``steps`` doubling steps: exact within ``2^steps`` places (see the module docstring).

    ``v`` and ``a`` are zero-padded once by ``2^steps - 1`` places before the first place of the order; step ``k``
    (``d = 2^k``) then reads the tensors and their copies ``d`` places back as two slices and drops the ``d`` places
    it cannot fill, so after the last step exactly the input's places remain. A zero ``v`` in the padding contributes
    nothing, which is the "out-of-range terms are 0" of the recurrence."""
    pad = [0, 0, 0, 0]
    pad[(0 if dim == 3 else 2) + reverse] = 2**steps - 1
    v, a = F.pad(v, pad), F.pad(a, pad)

    def later(x: torch.Tensor, d: int) -> torch.Tensor:  # the places that have a predecessor d back
        return _places(x, dim, None, -d) if reverse else _places(x, dim, d, None)

    def earlier(x: torch.Tensor, d: int) -> torch.Tensor:  # those predecessors
        return _places(x, dim, d, None) if reverse else _places(x, dim, None, -d)

    for k in range(steps):
        d = 2**k
        a_later = later(a, d)
        v = later(v, d) + a_later * earlier(v, d)
        if k < steps - 1:
            a = a_later * earlier(a, d)
    return v


def _places(x: torch.Tensor, dim: int, start: int | None, stop: int | None) -> torch.Tensor:
    """``x[..., start:stop]`` along ``dim``. The bounds are constants counted from either end, so the exported
    ``Slice`` reads no ``Shape`` of its input: the graph has no shape arithmetic at dynamic ``H`` and ``W``."""
    index = [slice(None)] * x.dim()
    index[dim] = slice(start, stop)
    return x[tuple(index)]


SCAN_ORDERS = ((3, False), (3, True), (2, False), (2, True))
"""``(dim, reverse)`` of the four channel quarters: rows left to right and right to left, columns top to bottom and
bottom to top."""


def four_way_scan(v: torch.Tensor, a: torch.Tensor, steps: int) -> torch.Tensor:
    """:func:`parallel_scan` of the four channel quarters of ``v`` / ``a``, each in its order of
    :data:`SCAN_ORDERS`. A backward order pads after the last place instead of flipping the tensor, so no scan
    copies its input to reverse it."""
    quarter = [v.shape[1] // DIRECTIONS] * DIRECTIONS  # equal sizes: one Split, not a chunk of the traced shape
    return torch.cat([parallel_scan(vq, aq, dim, steps, reverse) for vq, aq, (dim, reverse)
                      in zip(v.split(quarter, 1), a.split(quarter, 1), SCAN_ORDERS)], 1)


def scan_channels(dim: int, expand: float) -> int:
    """The scan's channels ``E``: ``expand * dim`` rounded up to a multiple of the four scan orders."""
    return DIRECTIONS * max(1, math.ceil(expand * dim / DIRECTIONS))


class SSMBlock(nn.Module):
    """``x + out_proj(scan(dwconv(z), sigmoid(delta + decay_bias)) * silu(g))`` with ``[z, g, delta] =
    in_proj(norm(x))`` (see the module docstring).

    Args:
        dim: channels of the block's input and output.
        expand: scan channels per input channel (``E = expand * dim``, rounded up to a multiple of 4).
        scan_steps: doubling steps ``K`` of the parallel scan (exact over ``2^K`` pixels along each order).
        bias: biases in the convolutions. LayerNorm_type: ``WithBias`` or ``BiasFree`` (as the Restormer).
    """

    def __init__(self, dim: int, expand: float = 1.0, scan_steps: int = 8, bias: bool = False,
                 LayerNorm_type: str = 'WithBias'):  # noqa: N803  (Restormer's argument name)
        super().__init__()
        inner = scan_channels(dim, expand)
        self.scan_steps = scan_steps
        self.norm = LayerNorm(dim, LayerNorm_type)
        self.in_proj = nn.Conv2d(dim, 3 * inner, 1, bias=bias)
        self.dwconv = nn.Conv2d(inner, inner, 3, padding=1, groups=inner, bias=bias)
        # decays 1 - 2^-j, j spread over 1..K in each scan order: memories from 2 pixels to the whole window
        memory = torch.linspace(1.0, float(scan_steps), inner // DIRECTIONS).repeat(DIRECTIONS)
        self.decay_bias = nn.Parameter(torch.logit(1.0 - 2.0 ** -memory))
        self.out_proj = nn.Conv2d(inner, dim, 1, bias=bias)
        for param in self.out_proj.parameters():
            nn.init.zeros_(param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, g, delta = self.in_proj(self.norm(x)).split(self.out_proj.in_channels, dim=1)
        a = torch.sigmoid(delta + self.decay_bias[:, None, None])
        h = four_way_scan((1.0 - a) * self.dwconv(z), a, self.scan_steps)
        return x + self.out_proj(h * F.silu(g))
