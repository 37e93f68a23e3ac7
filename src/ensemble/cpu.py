"""What makes training on a CPU faster without changing what is computed.

`keep_freed_memory` stops glibc from handing big freed blocks back to the kernel between steps;
`fast_dropout` swaps PyTorch's element-at-a-time CPU dropout masks for a vectorised generator,
in the dropout layers and inside attention;
`clip_into_step` hands gradient clipping to the fused Adam(W) kernel instead of rewriting every
gradient first (`embedding_rows` goes further for the word embeddings).
"""

from __future__ import annotations

import ctypes
import math
import sys

import numpy as np
import torch
from torch import nn

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_MAX = -4
_kept = False


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never shrink it (glibc); True once in effect.

    By default glibc maps blocks above 32 MB afresh with mmap and unmaps them on free. The dense
    gradient of a word-embedding matrix (30,522 x 384 float32 for MiniLM: 47 MB) is such a block:
    allocated zeroed in every backward pass and freed by ``zero_grad``, so every step page-faults
    47 MB in again — 19 ms of a 205 ms MiniLM step (bf16, one thread, batch 16 x 32 tokens).
    Kept on the heap, the next step reuses the same pages: 220 -> 183 ms a step (bf16, one thread),
    171 -> 139 ms (bf16, two threads), 364 -> 332 ms (fp32, one thread). The price is that the
    process does not return its peak memory to the system until it exits, which a training
    process keeps anyway. Elsewhere (macOS, musl) this does nothing.

    Example:
        >>> keep_freed_memory() in (True, False)
        True
    """
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _kept = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc
        return False
    return _kept


# ---------------------------------------------------------------- gradient clipping

def folds_clip(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `clip_into_step` can serve `optimizer`: a fused `Adam` / `AdamW` (which divides
    every gradient by its ``grad_scale`` as it reads it)."""
    return isinstance(optimizer, torch.optim.Adam) and bool(optimizer.defaults.get("fused"))


def clip_into_step(optimizer: torch.optim.Optimizer, parameters, max_norm: float, extra_square: float = 0.0) -> float:
    """Clip the gradients' global L2 norm to `max_norm` inside the next fused Adam(W) step; the norm.

    `torch.nn.utils.clip_grad_norm_` reads every gradient twice and writes it once (a norm per
    tensor, then a multiply); on a CPU that is 12 ms of a 136 ms MiniLM step (bf16, two threads),
    most of it the 47 MB word-embedding gradient. Here the norm is one BLAS dot product per
    gradient and the factor ``min(1, max_norm / (norm + 1e-6))`` — the same as PyTorch's — reaches
    the optimizer as ``grad_scale``, which its fused kernel divides each gradient by while it reads
    it anyway: one read in all. The result equals clip-then-step up to float rounding of the norm.
    `extra_square` adds gradients held elsewhere (`embedding_rows.EmbeddingRows.take`) to the squared norm.

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> opt = torch.optim.AdamW([w], lr=0.1, fused=True)
        >>> clip_into_step(opt, [w], max_norm=1.0), round(float(opt.grad_scale), 3)
        (5.0, 5.0)
    """
    if not folds_clip(optimizer):
        raise ValueError(f"clip_into_step needs a fused Adam or AdamW; got {type(optimizer).__name__}")
    square = extra_square
    for p in parameters:
        if p.grad is not None:
            g = p.grad
            square += float(torch.dot(g.view(-1), g.view(-1)) if g.is_contiguous() else g.double().square().sum())
    norm = math.sqrt(square)
    factor = min(1.0, max_norm / (norm + 1e-6))
    optimizer.grad_scale = torch.tensor(1.0 / factor if factor > 0 else math.inf)
    return norm


# ---------------------------------------------------------------- dropout

class FastDropout(nn.Dropout):
    """`nn.Dropout` whose keep-mask comes from a vectorised counter-based generator on CPU.

    PyTorch draws a CPU dropout mask one element at a time from a Mersenne Twister (`bernoulli_`:
    1 ms for 16 x 32 x 384 values, 10% of a bf16 MiniLM step). Here each mask is a 32-bit
    hash of (seed, element index) compared with ``p * 2**32``: vectorised, 10x faster or more,
    the same Bernoulli(1 - p) distribution, and the same scaling by ``1 / (1 - p)``. Each call
    draws its seed from torch's default generator, so `set_seed` and a resumed run's restored
    RNG state reproduce the masks exactly. Off the CPU, in eval mode, or for p outside (0, 1)
    it is plain `nn.Dropout`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or not 0.0 < self.p < 1.0 or _mask_kernel is None:
            return super().forward(x)
        return _Dropout.apply(x, self.p)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        # 0 / 1 in x's dtype: a bool mask would be cast to it in every multiply (2.5x the multiply's time)
        mask = keep_mask(x.shape, p, dtype=x.dtype if x.dtype in _ONE else torch.bool)
        ctx.save_for_backward(mask)
        ctx.scale = 1.0 / (1.0 - p)
        return x.mul(mask).mul_(ctx.scale)  # the same ops, in the same order, as aten's native_dropout

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad.mul(mask).mul_(ctx.scale), None


_ONE = {torch.float32: np.int32(0x3F800000), torch.bfloat16: np.int16(0x3F80),  # 1.0 as an integer
        torch.float16: np.int16(0x3C00), torch.float64: np.int64(0x3FF0000000000000)}  # of the same width


def _splitmix64(seed: int) -> int:
    z = (seed + 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return z ^ (z >> 31)


def keep_mask(shape: tuple[int, ...], p: float, seed: int | None = None, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """A tensor of `shape` and `dtype`, each element 1 (True) with probability ``1 - p``, else 0.

    The same seed gives the same mask in every dtype.

    Example:
        >>> m = keep_mask((1000, 1000), 0.1, seed=0)
        >>> round(m.float().mean().item(), 2)
        0.9
        >>> torch.equal(keep_mask((9,), 0.5, seed=3, dtype=torch.bfloat16), keep_mask((9,), 0.5, seed=3).bfloat16())
        True
    """
    if seed is None:  # from torch's generator: reproducible under torch.manual_seed
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    one = np.bool_(True) if dtype == torch.bool else _ONE[dtype]  # the kernel writes 1.0's bit pattern
    mask = np.empty(math.prod(shape), one.dtype)
    key = _splitmix64(seed)  # nearby seeds, far-apart keys
    _mask_kernel(mask, np.uint32(key & 0xFFFFFFFF), np.uint32(key >> 32),
                 np.uint32(min(round(p * 2**32), 2**32 - 1)), one)
    mask = torch.from_numpy(mask)
    return (mask if dtype == torch.bool else mask.view(dtype)).view(shape)


def fast_dropout(model: nn.Module) -> int:
    """Replace every `nn.Dropout` of `model` by a `FastDropout` of the same p; returns how many.

    A transformers model that attends with "sdpa" attends with `ATTENTION` instead: the same
    computation, with its attention-probability dropout drawn like `FastDropout`'s. Dropout
    modules hold no weights and transformers does not save the attention implementation, so
    state dicts and saved models are unchanged.
    """
    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace).train(child.training))
                swapped += 1
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(model, "set_attn_implementation"):
        _register_attention()
        model.set_attn_implementation(ATTENTION)
    return swapped


# ---------------------------------------------------------------- attention dropout

ATTENTION = "ensemble_sdpa"  # the name `fast_dropout` registers `attention` under in transformers


def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' "sdpa" attention, but a CPU training step draws its dropout mask like `FastDropout`.

    With dropout, PyTorch's scaled_dot_product_attention on a CPU runs its math path and draws the
    mask of every attention-probability matrix with `bernoulli_` (2.5% of a MiniLM step: 5 ms of
    210, fp32, two threads, batch 16 x 26 tokens). This is that path — scores, mask, softmax,
    dropout, values; reduced precision computed in float32 as PyTorch does — with the fast mask.
    Everything else (no dropout, eval, GPUs, causal or grouped-query attention, position bias) is
    handed to transformers' own `sdpa_attention_forward`.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    plain = (not 0.0 < dropout < 1.0 or query.device.type != "cpu" or _mask_kernel is None or causal
             or getattr(module, "num_key_value_groups", 1) > 1 or kwargs.get("position_bias") is not None
             or kwargs.get("softcap") is not None or key.shape[1] != query.shape[1])
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    dtype = query.dtype
    if dtype in (torch.bfloat16, torch.float16):  # as PyTorch's math path on a CPU
        query, key, value = query.float(), key.float(), value.float()
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    with torch.autocast("cpu", enabled=False):  # sdpa is one op to autocast: inside it, float32 throughout
        scores = torch.matmul(query, key.transpose(-2, -1)).mul_(scale)
        if attention_mask is not None and attention_mask.dtype == torch.bool:  # True: attend
            scores = scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
        elif attention_mask is not None:
            scores = scores + attention_mask
        probs = _Dropout.apply(torch.softmax(scores, dim=-1), dropout)
        out = torch.matmul(probs, value).to(dtype)
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks sdpa takes


_mask_kernel = None
if numba is not None:

    @numba.njit(cache=True, inline="always")
    def _lowbias32(x):  # pragma: no cover - compiled
        """Wellons' lowbias32 integer mixer, modulo 2**32."""
        x = np.uint32(x ^ (x >> np.uint32(16)))
        x = np.uint32(x * np.uint32(0x7FEB352D))
        x = np.uint32(x ^ (x >> np.uint32(15)))
        x = np.uint32(x * np.uint32(0x846CA68B))
        return np.uint32(x ^ (x >> np.uint32(16)))

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _mask_kernel(out, low, high, threshold, one):  # pragma: no cover - compiled
        """out[i] = `one` where hash(i) >= threshold, else 0; all arithmetic modulo 2**32.

        hash: `_lowbias32` of the counter plus the key's low half, xored with its high half, mixed
        again. Only 32-bit multiplies, which AVX2 has as vector instructions (64-bit ones it
        lacks): the loop vectorises, 0.4 ns an element (SplitMix64 took 1 ns on an AVX2 EPYC)."""
        for i in range(out.shape[0]):
            x = _lowbias32(np.uint32(_lowbias32(np.uint32(np.uint32(i) + low)) ^ high))
            out[i] = one if x >= threshold else 0

