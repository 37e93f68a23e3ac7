"""The last layer computed for token 0 only: the same logits and gradients as the full layer."""

from __future__ import annotations

import pytest
import torch

from ensemble import firsttoken
from ensemble.firsttoken import first_token_only, switch
from ensemble.members import build_member
from ensemble.recipe import ARCHES, MemberConfig, TrainConfig

TEXTS = ["a wonderful film", "a dull film", "the plot is clever", "the acting is awful and slow"] * 20
LABELS = ["neg", "neutral", "pos"]


def scratch(arch: str):
    torch.manual_seed(0)
    cfg = MemberConfig("m", init="scratch", arch=arch, size="tiny", train=TrainConfig(max_length=32))
    return build_member(cfg, LABELS, TEXTS)


def logits_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**batch, labels=torch.tensor([0, 2, 1]))
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ARCHES)
def test_switched_layer_gives_the_same_logits_and_gradients(arch):
    model, tok = scratch(arch)
    batch = tok(["a wonderful film", "the plot is clever and the acting awful", "dull"], padding=True, return_tensors="pt")
    model.eval()  # no dropout (ALBERT's classifier keeps its own); gradients flow all the same
    plain_logits, plain_grads = logits_and_grads(model, batch)
    with first_token_only(model) as switched:
        logits, grads = logits_and_grads(model, batch)
    # ALBERT shares one layer across the stack: not switched (and then trivially equal)
    assert switched == (arch != "albert")
    torch.testing.assert_close(logits, plain_logits, rtol=0, atol=1e-6)
    assert grads.keys() == plain_grads.keys()  # every parameter still gets its gradient
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-4, atol=1e-7, msg=name)


def test_pretrained_minilm_switched_agrees(minilm):
    model, tok = build_member(MemberConfig("minilm", model=str(minilm)), LABELS, [])
    model.eval()
    batch = tok(["a wonderful film", "the plot is clever and the acting awful"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        plain = model(**batch).logits
        with first_token_only(model) as switched:
            fast = model(**batch).logits
    assert switched
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)


def test_the_model_gets_its_own_forward_back_and_keeps_its_weights():
    model, _ = scratch("bert")
    layer = model.bert.encoder.layer[-1]
    keys = list(model.state_dict())
    with first_token_only(model):
        assert "forward" in vars(layer)
        assert list(model.state_dict()) == keys
    assert "forward" not in vars(layer)
    assert switch(model) and "forward" in vars(layer)
    with first_token_only(model) as switched:  # switched for good: left so
        assert switched
    assert "forward" in vars(layer)


def test_a_layer_whose_switched_forward_disagrees_is_left_alone(monkeypatch):
    model, _ = scratch("bert")

    def wrong(self, hidden_states, attention_mask=None, *args, **kwargs):
        return torch.zeros_like(hidden_states[:, :1])

    monkeypatch.setattr(firsttoken, "_first_token_forward", wrong)
    with first_token_only(model) as switched:
        assert not switched
        assert "forward" not in vars(model.bert.encoder.layer[-1])
