"""What makes training on a CPU faster without changing what is computed.

`keep_freed_memory` stops glibc from handing big freed blocks back to the kernel between steps;
`fast_dropout` swaps PyTorch's element-at-a-time CPU dropout masks for a vectorised generator,
in the dropout layers and inside attention;
`clip_into_step` hands gradient clipping to the fused Adam(W) kernel instead of rewriting every
gradient first.
"""

from __future__ import annotations

import ctypes
import math
import sys
from concurrent.futures import ThreadPoolExecutor

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
    `extra_square` adds gradients held elsewhere (`EmbeddingRows.take`) to the squared norm.

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


# ---------------------------------------------------------------- word-embedding rows

class EmbeddingRows:
    """Adam(W) steps on only the word-embedding rows that training has touched (CPU, one process).

    A word-embedding matrix is most of a small member (MiniLM: 11.7M of 22.7M parameters), but a
    batch reads a few hundred of its rows. PyTorch still writes its gradient densely (a zeroed
    47 MB tensor for MiniLM), clipping reads all of it, and the fused Adam step reads and writes
    all of it and both moment buffers: four of every eleven bytes a step moves. A row that no batch
    has touched has zero moments and a zero gradient, so its Adam update is exactly zero and its
    AdamW update only the weight decay, the row times ``1 - lr * weight_decay``. Here the layer
    computes sparse gradients; each optimizer step updates the touched rows in place with the
    operations of torch's fused kernel, reading and writing the optimizer's own state (so
    checkpoints, resumes and the other parameters are as before); untouched rows owe their weight
    decay, paid factor by factor (so rounded as the dense step rounds it) when a batch reads them
    and at `settle`. Results equal the dense step up to float rounding (duplicate
    tokens' gradients are summed in another order); untouched rows bit for bit.

    Use: `attach` after the optimizer exists; between backward and clipping `take` (the squared
    norm of the gradient it took off the parameter); after ``optimizer.step()`` `step`; `settle`
    before the weights are read (evaluation, checkpoints); `detach` at the end.
    """

    def __init__(self, embedding: nn.Embedding, optimizer: torch.optim.Optimizer, group: dict):
        self.embedding, self.optimizer, self.group = embedding, optimizer, group
        self.weight = embedding.weight
        self.grad: tuple[torch.Tensor, torch.Tensor] | None = None
        state = optimizer.state.get(self.weight)
        # a resumed run: the rows its moments remember are the rows touched so far
        self.touched = (torch.zeros(self.weight.shape[0], dtype=torch.bool) if not state else
                        state["exp_avg"].ne(0).any(1) | state["exp_avg_sq"].ne(0).any(1))
        self.owed: list[np.float32] = []  # decay factors of the steps since the last settle
        self.paid = torch.zeros(self.weight.shape[0], dtype=torch.int64)  # how many of them each row has had
        self.hook = embedding.register_forward_pre_hook(self._pay)
        embedding.sparse = True

    @torch.no_grad()
    def _pay(self, module, args) -> None:
        """Before a batch reads its rows, the untouched ones among them take the decay they are owed."""
        if self.owed:
            ids = args[0].unique()
            self._decay(ids[~self.touched[ids] & (self.paid[ids] < len(self.owed))])

    @classmethod
    def attach(cls, model: nn.Module, optimizer: torch.optim.Optimizer) -> "EmbeddingRows | None":
        """Start skipping untouched rows of `model`'s input embeddings, or None where that is not exact.

        It applies to a CPU model whose input embedding is an `nn.Embedding` used nowhere else,
        trained by a fused AdamW (or Adam without weight decay on that matrix), without amsgrad.
        """
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if type(embedding) is not nn.Embedding or embedding.sparse or not folds_clip(optimizer):
            return None
        weight = embedding.weight
        if (not weight.requires_grad or weight.device.type != "cpu" or weight.dtype != torch.float32
                or embedding.max_norm is not None or _adam_rows is None or not weight.is_contiguous()):
            return None
        uses = sum(p is weight for _, p in model.named_parameters(remove_duplicate=False))
        group = next((g for g in optimizer.param_groups if any(p is weight for p in g["params"])), None)
        decoupled = bool(group and group.get("decoupled_weight_decay", isinstance(optimizer, torch.optim.AdamW)))
        if (uses != 1 or group is None or (group["weight_decay"] != 0 and not decoupled) or group.get("amsgrad")
                or group.get("maximize")):
            return None  # Adam's L2 decay would give untouched rows moments
        return cls(embedding, optimizer, group)

    def take(self) -> float:
        """Take the accumulated gradient off the weight (the optimizer skips it); its squared L2 norm."""
        grad, self.weight.grad = self.weight.grad, None
        if grad is None:
            self.grad = None
            return 0.0
        if grad.is_sparse:
            grad = grad.coalesce()  # duplicate tokens summed, rows in order
            rows, values = grad.indices()[0], grad.values()
        else:  # a dense gradient (another path computed it): its nonzero rows
            rows = grad.ne(0).any(1).nonzero().squeeze(1)
            values = grad.index_select(0, rows)
        self.grad = (rows, values.contiguous())
        flat = self.grad[1].view(-1)
        return float(torch.dot(flat, flat))

    @torch.no_grad()
    def step(self) -> None:
        """The optimizer step for the touched rows, with the optimizer's settings, state and grad_scale."""
        if self.grad is None:
            return
        rows, values = self.grad
        self.grad = None
        w, g = self.weight, self.group
        state = self.optimizer.state[w]
        if not state:  # as torch's fused Adam initialises it, so state dicts look the same
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(w, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(w, memory_format=torch.preserve_format)
        state["step"] += 1
        self.touched[rows] = True
        live = self.touched.nonzero().squeeze(1)  # every row with nonzero moments, in order
        slot = torch.full((len(live),), -1, dtype=torch.int64)  # where a live row's gradient is in `values`
        slot[torch.searchsorted(live, rows)] = torch.arange(len(rows))
        # the scalars as torch's fused CPU kernel derives them (in double, then float32)
        step, (beta1, beta2), lr = float(state["step"]), g["betas"], float(g["lr"])
        decay = np.float32(1 - lr * g["weight_decay"])
        scale = getattr(self.optimizer, "grad_scale", None)
        args = (w.numpy(), state["exp_avg"].numpy(), state["exp_avg_sq"].numpy(), live.numpy(), slot.numpy(), values.numpy(),
                *(np.float32(x) for x in (beta1, beta2, 1 - beta1, 1 - beta2, lr / (1 - beta1 ** step),
                                         math.sqrt(1 - beta2 ** step), g["eps"], 1.0 if scale is None else float(scale))),
                decay)
        _in_threads(_adam_rows, len(live), args)
        if decay != 1:
            self.owed.append(decay)
            self.paid[rows] = len(self.owed)  # the kernel gave these rows this step's decay

    @torch.no_grad()
    def settle(self) -> None:
        """Give the untouched rows the weight decay they are owed: the weights are then the dense step's."""
        if self.owed:
            self._decay((~self.touched).nonzero().squeeze(1))
            self.owed = []
            self.paid.zero_()

    def _decay(self, rows: torch.Tensor) -> None:
        if len(rows):
            _in_threads(_decay_rows, len(rows), (self.weight.detach().numpy(), rows.numpy(), self.paid[rows].numpy(),
                                                 np.array(self.owed, np.float32)))
            self.paid[rows] = len(self.owed)

    def detach(self) -> None:
        """Settle, and dense gradients again (the model as it was built)."""
        self.settle()
        self.hook.remove()
        self.embedding.sparse = False


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


def _in_threads(kernel, rows: int, args: tuple) -> None:
    """`kernel(*args, begin, end)` over rows [0, rows) split among torch's threads (numba releases the GIL)."""
    threads = max(1, min(torch.get_num_threads(), rows // 1024))
    bounds = [rows * i // threads for i in range(threads + 1)]
    if threads == 1:
        kernel(*args, 0, rows)
        return
    global _pool
    if _pool is None or _pool._max_workers < threads - 1:
        _pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="ensemble-rows")
    futures = [_pool.submit(kernel, *args, bounds[i], bounds[i + 1]) for i in range(1, threads)]
    kernel(*args, bounds[0], bounds[1])
    for future in futures:
        future.result()


_pool: ThreadPoolExecutor | None = None
_adam_rows = _decay_rows = None
if numba is not None:

    from .simd import adam8_grad, adam8_zero, sqrt32

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _adam_rows(w, m, v, live, slot, values, beta1, beta2, c1, c2, step_size, bc2_sqrt, eps, scale, decay,
                   begin, end):  # pragma: no cover - compiled
        """AdamW on rows live[begin:end] of w with moments m, v, in place: torch's fused CPU kernel's
        float32 operations in its order; a row's gradient is values[slot] (slot -1: zero)."""
        d = w.shape[1]
        whole = d - d % 8
        for i in range(begin, end):
            r, s = live[i], slot[i]
            for j in range(0, whole, 8):  # 8 values at a time as one vector
                if s >= 0:
                    adam8_grad(w, m, v, values, r * d + j, s * d + j, beta1, beta2, c1, c2, step_size, bc2_sqrt, eps,
                               scale, decay)
                else:
                    adam8_zero(w, m, v, values, r * d + j, 0, beta1, beta2, c1, c2, step_size, bc2_sqrt, eps,
                               scale, decay)
            for j in range(whole, d):  # the rest one by one, the same operations
                grad = values[s, j] / scale if s >= 0 else np.float32(0.0)
                mean = m[r, j] * beta1 + grad * c1 if s >= 0 else m[r, j] * beta1
                square = v[r, j] * beta2 + grad * grad * c2 if s >= 0 else v[r, j] * beta2
                m[r, j] = mean
                v[r, j] = square
                w[r, j] = w[r, j] * decay - step_size * mean / (sqrt32(square) / bc2_sqrt + eps)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _decay_rows(w, rows, paid, factors, begin, end):  # pragma: no cover - compiled
        """w[r] *= factors[paid[i]], then the next, ... for r = rows[i], i in [begin, end): the weight
        decay that the dense AdamW step gave these untouched rows, one step at a time, rounded as it
        rounded."""
        for i in range(begin, end):
            row = w[rows[i]]
            for f in factors[paid[i]:]:
                for j in range(row.shape[0]):
                    row[j] = row[j] * f
