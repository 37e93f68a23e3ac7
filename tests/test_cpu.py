"""CPU training speed-ups that must not change what is computed: glibc heap reuse, fast dropout,
gradient clipping folded into the fused optimizer."""

import sys

import numpy as np
import pytest
import torch
from torch import nn

from ensemble.config import MemberConfig
from ensemble.cpu import (ATTENTION, FastDropout, attention, clip_into_step, fast_dropout, folds_clip, keep_freed_memory,
                          keep_mask)
from ensemble.members import ARCHES, build_member, checkpoint_activations

TEXTS = ["a good film", "a bad film", "fine acting", "dull plot and worse acting", "lovely"] * 4


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_keep_mask_keeps_one_minus_p(p):
    n = 2_000_000
    kept = keep_mask((n,), p, seed=7).float().mean().item()
    se = (p * (1 - p) / n) ** 0.5
    assert abs(kept - (1 - p)) < 5 * se


def test_keep_mask_neighbours_are_independent():
    # a bad hash of consecutive counters shows up as correlated neighbours
    m = keep_mask((1_000_000,), 0.5, seed=3).numpy()
    both = np.mean(m[:-1] & m[1:])
    assert abs(both - 0.25) < 5 * (0.25 * 0.75 / len(m)) ** 0.5
    for stride in (384, 2**15, 2**16):  # one hidden vector apart; the hash's shifts
        both = np.mean(m[:-stride] & m[stride:])
        assert abs(both - 0.25) < 5 * (0.25 * 0.75 / len(m)) ** 0.5, stride


@pytest.mark.parametrize("other", [2, 2**32 + 1, 2**40 + 1])  # differs in the low half, the high half, both
def test_keep_mask_of_nearby_seeds_are_independent(other):
    a = keep_mask((1_000_000,), 0.5, seed=1).numpy()
    b = keep_mask((1_000_000,), 0.5, seed=other).numpy()
    assert abs(np.mean(a & b) - 0.25) < 5 * (0.25 * 0.75 / len(a)) ** 0.5


def test_keep_mask_seeds():
    assert torch.equal(keep_mask((64, 64), 0.1, seed=1), keep_mask((64, 64), 0.1, seed=1))
    assert not torch.equal(keep_mask((64, 64), 0.1, seed=1), keep_mask((64, 64), 0.1, seed=2))
    torch.manual_seed(0)
    a = keep_mask((64, 64), 0.1)
    torch.manual_seed(0)
    assert torch.equal(a, keep_mask((64, 64), 0.1))  # the seed comes from torch's generator


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_keep_mask_in_a_float_dtype_is_the_bool_mask_as_zeros_and_ones(dtype):
    mask = keep_mask((37, 11), 0.3, seed=9, dtype=dtype)
    assert mask.dtype == dtype and mask.shape == (37, 11)
    assert torch.equal(mask, keep_mask((37, 11), 0.3, seed=9).to(dtype))
    assert set(mask.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_dropout_forward_and_backward(dtype):
    p = 0.25
    x = torch.randn(8, 16, 32).to(dtype).requires_grad_()
    drop = FastDropout(p).train()
    y = drop(x)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    # kept values scaled by 1 / (1 - p) exactly as torch does (x * mask, then * scale)
    assert torch.equal(y[kept], (x.detach() * 1).mul_(1 / (1 - p))[kept])
    assert 0.6 < kept.float().mean().item() < 0.9
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.ones_like(y).mul(kept).mul_(1 / (1 - p)))


def test_fast_dropout_is_plain_dropout_in_eval_and_at_the_edges():
    x = torch.randn(4, 8)
    assert torch.equal(FastDropout(0.3).eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))


@pytest.mark.parametrize("arch", ARCHES)
def test_fast_dropout_swaps_every_dropout_and_keeps_the_model(arch):
    model, _ = build_member(MemberConfig("m", init="scratch", arch=arch), ["a", "b"], TEXTS)
    plain = sum(type(m) is nn.Dropout for m in model.modules())
    keys = set(model.state_dict())
    model.eval()
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    before = model(input_ids=ids).logits
    assert fast_dropout(model) == plain > 0
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert set(model.state_dict()) == keys
    assert torch.equal(model(input_ids=ids).logits, before)  # eval: no dropout at all


class _Module(nn.Module):
    is_causal = False  # an encoder's self-attention, as transformers marks it


def _qkv(dtype=torch.float32, batch=3, heads=4, length=7, dim=8):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, heads, length, dim, generator=g).to(dtype).requires_grad_() for _ in range(3)]


def _padding(length=7):
    keep = torch.ones(3, length, dtype=torch.bool)
    keep[1, 4:] = False
    keep[2, 2:] = False
    return keep[:, None, None, :].expand(3, 1, length, length)  # sdpa's bool mask: True attends


@pytest.mark.parametrize("mask", ["none", "bool", "additive"])
def test_attention_dropout_is_softmax_then_the_fast_mask(mask):
    p = 0.3
    q, k, v = _qkv()
    keep = _padding()
    given = {"none": None, "bool": keep, "additive": torch.zeros(keep.shape).masked_fill(~keep, -1e30)}[mask]
    torch.manual_seed(5)
    out, weights = attention(_Module().train(), q, k, v, given, dropout=p, scaling=0.5)
    # by hand: the same seed from torch's generator gives the same mask
    torch.manual_seed(5)
    scores = (q @ k.transpose(-2, -1)) * 0.5
    if mask != "none":
        scores = scores.masked_fill(~keep, float("-inf"))
    kept = keep_mask(scores.shape, p)
    expected = (torch.softmax(scores, -1) * kept / (1 - p)) @ v
    assert weights is None and out.shape == (3, 7, 4, 8)  # (batch, length, heads, dim), as transformers wants
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-6)
    assert 0.55 < kept.float().mean().item() < 0.85
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, "autocast"])
def test_attention_without_dropout_is_sdpa(dtype):
    autocast = dtype == "autocast"
    dtype = torch.bfloat16 if autocast else dtype
    q, k, v = _qkv(dtype)
    keep = _padding()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        sdpa = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2)
        # p = 1e-9 drops almost surely nothing but takes the fast path; p = 0 and eval are sdpa itself
        fast, _ = attention(_Module().train(), q, k, v, keep, dropout=1e-9)
        plain = [attention(module, q, k, v, keep, dropout=0.0)[0] for module in (_Module().train(), _Module().eval())]
    assert fast.dtype == dtype
    assert torch.allclose(fast.float(), sdpa.float(), atol=1e-6 if dtype == torch.float32 else 1e-2)
    assert all(torch.equal(out, sdpa) for out in plain)


def test_fast_dropout_attends_with_fast_attention_and_saves_nothing_of_it(tmp_path):
    model, _ = build_member(MemberConfig("m", init="scratch", arch="bert"), ["a", "b"], TEXTS)
    assert model.config._attn_implementation == "sdpa"
    batch = {"input_ids": torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])}
    for m in model.modules():  # attention dropout only, and almost surely nothing dropped
        if isinstance(m, nn.Dropout):
            m.p = 1e-9
    plain = model.train()(**batch).logits
    fast_dropout(model)
    assert model.config._attn_implementation == ATTENTION
    assert torch.allclose(model(**batch).logits, plain, atol=1e-5)  # the padded row masked as sdpa masks it
    model.save_pretrained(tmp_path)
    assert "attn_implementation" not in (tmp_path / "config.json").read_text()


def test_gradient_checkpointing_replays_the_same_masks():
    # recomputation in backward restores torch's RNG state, so it draws the same seeds and masks:
    # gradients equal those of the run without checkpointing
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(1)  # the same initial weights
        model, _ = build_member(MemberConfig("m", init="scratch", arch="bert"), ["a", "b"], TEXTS)
        fast_dropout(model)
        if checkpointing:
            checkpoint_activations(model)
        model.train()
        torch.manual_seed(0)
        loss = model(input_ids=torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0]]), labels=torch.tensor([0, 1])).loss
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_keep_freed_memory():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # once per process; calling again is harmless


def _params(seed: int) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(shape, generator=g)) for shape in [(300, 40), (40,), (7, 3, 5)]]


@pytest.mark.parametrize("optimizer", [torch.optim.AdamW, torch.optim.Adam])
@pytest.mark.parametrize("grad_size,max_norm", [(1.0, 0.5), (1.0, 1e6), (1e-3, 1.0)])  # clipped, not, tiny grads
def test_clip_into_step_equals_clip_then_step(optimizer, grad_size, max_norm):
    ours, theirs = _params(0), _params(0)
    opt_ours = optimizer(ours, lr=1e-2, weight_decay=0.1, fused=True)
    opt_theirs = optimizer(theirs, lr=1e-2, weight_decay=0.1, fused=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=g) * grad_size for p in ours]
        for a, b, grad in zip(ours, theirs, grads):
            a.grad, b.grad = grad.clone(), grad.clone()
        expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
        norm = clip_into_step(opt_ours, ours, max_norm)
        assert norm == pytest.approx(float(expected), rel=1e-5)
        opt_ours.step()
        opt_theirs.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt_ours.state[a][key], opt_theirs.state[b][key], rtol=1e-4, atol=1e-9)


def test_clip_into_step_skips_parameters_without_gradients():
    w, frozen = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.ones(3))
    w.grad = torch.tensor([3.0, 4.0])
    opt = torch.optim.AdamW([w], lr=0.1, fused=True)
    assert clip_into_step(opt, [w, frozen], max_norm=10.0) == pytest.approx(5.0)
    assert float(opt.grad_scale) == 1.0  # under the limit: gradients pass unscaled


def test_clip_into_step_needs_a_fused_adam():
    w = nn.Parameter(torch.zeros(2))
    assert folds_clip(torch.optim.AdamW([w], fused=True)) and folds_clip(torch.optim.Adam([w], fused=True))
    for opt in (torch.optim.AdamW([w]), torch.optim.SGD([w], lr=0.1)):
        assert not folds_clip(opt)
        with pytest.raises(ValueError, match="needs a fused Adam or AdamW; got"):
            clip_into_step(opt, [w], 1.0)


def test_gradient_checkpointing_covers_the_first_token_layer_too():
    # the switched last layer replaces the forward that transformers checkpoints: it checkpoints itself
    from ensemble import firsttoken

    runs = []
    for checkpointing in (False, True):
        torch.manual_seed(1)
        model, _ = build_member(MemberConfig("m", init="scratch", arch="bert"), ["a", "b"], TEXTS)
        assert firsttoken.switch(model)
        if checkpointing:
            checkpoint_activations(model)
        model.train()
        calls = []
        layer = model.bert.encoder.layer[-1]
        layer.attention.self.query.register_forward_hook(lambda *_: calls.append(1))
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            torch.manual_seed(0)
            loss = model(input_ids=torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0]]), labels=torch.tensor([0, 1])).loss
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        runs.append((len(calls), sum(saved), grads))
    (plain_calls, plain_saved, plain_grads), (ckpt_calls, ckpt_saved, ckpt_grads) = runs
    assert (plain_calls, ckpt_calls) == (1, 2)  # recomputed in backward
    assert ckpt_saved < plain_saved
    assert torch.allclose(plain_grads, ckpt_grads, atol=1e-6)
