"""The Adam(W) step on touched word-embedding rows only: the dense step's results, resumable."""

import pytest
import torch
from torch import nn

from ensemble.config import MemberConfig
from ensemble.cpu import clip_into_step
from ensemble.embedding_rows import EmbeddingRows
from ensemble.members import ARCHES, build_member

TEXTS = ["a good film", "a bad film", "fine acting", "dull plot and worse acting", "lovely"] * 4


def _embedding_models(arch: str, weight_decay: float = 0.0):
    """Two identical members and fused AdamWs: one to train densely, one with EmbeddingRows."""
    torch.manual_seed(0)
    dense, _ = build_member(MemberConfig("m", init="scratch", arch=arch), ["a", "b"], TEXTS)
    sparse, _ = build_member(MemberConfig("m", init="scratch", arch=arch), ["a", "b"], TEXTS)
    sparse.load_state_dict(dense.state_dict())
    make = lambda m: torch.optim.AdamW([{"params": [p for p in m.parameters() if p.ndim >= 2], "weight_decay": weight_decay},
                                        {"params": [p for p in m.parameters() if p.ndim < 2], "weight_decay": 0.0}],
                                       lr=1e-3, fused=True)
    return dense, make(dense), sparse, make(sparse)


def _batches(vocab: int, steps: int, micro: int = 2):
    g = torch.Generator().manual_seed(0)
    # a narrow id range, so most rows stay untouched; repeated ids within a batch
    return [[(torch.randint(5, 40, (4, 9), generator=g), torch.randint(0, 2, (4,), generator=g)) for _ in range(micro)]
            for _ in range(steps)]


def _train(model, opt, batches, rows=None, max_norm=1.0, start=0):
    model.train()
    for number, step in enumerate(batches, start):
        torch.manual_seed(number)  # the same dropout masks in every run
        for ids, y in step:  # gradient accumulation over micro-batches
            (model(input_ids=ids, labels=y).loss / len(step)).backward()
        if rows is None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        else:
            clip_into_step(opt, model.parameters(), max_norm, rows.take())
        opt.step()
        if rows is not None:
            rows.step()
        opt.zero_grad()


@pytest.mark.parametrize("arch,weight_decay", [(arch, 0.0) for arch in ARCHES] + [("bert", 0.1), ("albert", 0.1)])
def test_embedding_rows_step_equals_the_dense_step(arch, weight_decay):
    dense, opt_dense, sparse, opt_sparse = _embedding_models(arch, weight_decay)
    before = sparse.get_input_embeddings().weight.detach().clone()
    rows = EmbeddingRows.attach(sparse, opt_sparse)
    assert rows is not None and sparse.get_input_embeddings().sparse
    batches = _batches(before.shape[0], steps=4)
    _train(dense, opt_dense, batches)
    _train(sparse, opt_sparse, batches, rows)
    weight = sparse.get_input_embeddings().weight
    used = torch.zeros(len(before), dtype=torch.bool)
    used[torch.cat([ids.flatten() for step in batches for ids, _ in step])] = True
    if weight_decay:
        assert len(rows.owed) == 4 and torch.equal(weight[~used], before[~used])  # the decay is owed
        rows.settle()
        assert not rows.owed and not torch.equal(weight[~used], before[~used])
    for (name, a), b in zip(dense.named_parameters(), sparse.parameters()):
        if not name.endswith("key.bias"):  # softmax ignores it: its gradient is rounding noise, which Adam scales up to lr
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(weight[~used], dense.get_input_embeddings().weight[~used])  # untouched rows: bit for bit
    assert not torch.equal(weight[used], before[used])
    state_dense, state_sparse = opt_dense.state_dict(), opt_sparse.state_dict()
    assert state_dense["state"].keys() == state_sparse["state"].keys()
    for key, value in state_dense["state"].items():
        assert float(state_sparse["state"][key]["step"]) == float(value["step"]) == 4
        torch.testing.assert_close(state_sparse["state"][key]["exp_avg"], value["exp_avg"], rtol=1e-4, atol=1e-9)
    rows.detach()
    assert not sparse.get_input_embeddings().sparse


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_embedding_rows_resume_from_the_optimizer_state(weight_decay):
    _, _, whole, opt_whole = _embedding_models("bert", weight_decay)
    _, _, first, opt_first = _embedding_models("bert", weight_decay)
    batches = _batches(100, steps=4)
    rows = EmbeddingRows.attach(whole, opt_whole)
    _train(whole, opt_whole, batches, rows)
    rows.detach()
    rows = EmbeddingRows.attach(first, opt_first)
    _train(first, opt_first, batches[:2], rows)
    rows.settle()  # as the training loop does before it saves a checkpoint
    # a resumed run: a fresh model and optimizer loaded from the saved states
    _, _, resumed, opt_resumed = _embedding_models("bert", weight_decay)
    resumed.load_state_dict(first.state_dict())
    opt_resumed.load_state_dict(opt_first.state_dict())
    rows = EmbeddingRows.attach(resumed, opt_resumed)
    assert rows.touched.sum() > 0
    _train(resumed, opt_resumed, batches[2:], rows, start=2)
    rows.detach()
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_embedding_rows_apply_only_where_exact():
    def attach(weight_decay=0.0, **kwargs):
        model, _ = build_member(MemberConfig("m", init="scratch", arch="bert"), ["a", "b"], TEXTS)
        groups = [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]
        return model, EmbeddingRows.attach(model, torch.optim.AdamW(groups, **{"fused": True, **kwargs}))

    assert attach()[1] is not None and attach(weight_decay=0.01)[1] is not None
    model, _ = build_member(MemberConfig("m", init="scratch", arch="bert"), ["a", "b"], TEXTS)
    assert EmbeddingRows.attach(model, torch.optim.Adam(model.parameters(), weight_decay=0.01, fused=True)) is None
    assert EmbeddingRows.attach(model, torch.optim.Adam(model.parameters(), fused=True)) is not None
    assert attach(fused=False)[1] is None
    assert attach(amsgrad=True)[1] is None
    model, rows = attach()
    rows.detach()
    model.get_input_embeddings().weight.requires_grad_(False)
    assert EmbeddingRows.attach(model, torch.optim.AdamW(model.parameters(), fused=True)) is None

    class Tied(nn.Module):  # the matrix read again by an output layer
        def __init__(self):
            super().__init__()
            self.emb, self.out = nn.Embedding(10, 4), nn.Linear(4, 10)
            self.out.weight = self.emb.weight

        def get_input_embeddings(self):
            return self.emb

    tied = Tied()
    assert EmbeddingRows.attach(tied, torch.optim.AdamW(tied.parameters(), fused=True)) is None
