"""Adam(W) steps on only the word-embedding rows a member's training has touched (CPU).

`EmbeddingRows` makes the word-embedding layer compute sparse gradients and steps the touched
rows in place with the float32 operations of torch's fused CPU AdamW kernel (`_adam_rows`, one
vector of 8 values at a time through `simd.adam8_grad` / `adam8_zero`); untouched rows get their
weight decay late but rounded as the dense step rounds it (`_decay_rows`).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from .cpu import folds_clip

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None

__all__ = ["EmbeddingRows"]


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
