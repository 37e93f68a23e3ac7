"""Devices and precision: the device lists, the precision check, the bf16 tip."""

import warnings

import pytest
import torch

from ensemble import devices
from ensemble.errors import EnsembleError, one_of
from ensemble.recipe import MemberConfig, TrainConfig


@pytest.mark.parametrize("device, expected", [
    ("cpu", ["cpu"]),
    (["cpu", "cpu"], ["cpu", "cpu"]),
    ("auto", ["cpu"]),  # no GPU in this test: auto means the CPU
])
def test_devices_are_listed(monkeypatch, device, expected):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert devices.check_devices(device) == expected


@pytest.mark.parametrize("device", ["gpu", "cuda:99", "cpu:1", "cuda:x", ["cpu", "tpu"]])
def test_bad_devices_name_the_offender(device):
    offender = device[-1] if isinstance(device, list) else device
    with pytest.raises(EnsembleError, match=f"device: must be 'auto', 'cpu' or 'cuda\\[:N\\]'.*got '{offender}'"):
        devices.check_devices(device)


def test_auto_spreads_over_every_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert devices.check_devices("auto") == ["cuda:0", "cuda:1", "cuda:2"]
    assert devices.check_devices("cuda:2") == ["cuda:2"]


def test_precision_is_checked_and_emulated_bf16_warned_about(monkeypatch):
    with pytest.raises(EnsembleError, match="the 'precision' parameter must be one of {'auto', 'fp32', 'bf16'}; got 'fp16'"):
        devices.check_precision("fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        assert devices.check_precision("bf16") == "bf16"
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert devices.check_precision("bf16") == "bf16"
        assert devices.check_precision("fp32") == "fp32"


def test_one_of_quotes_each_choice():
    assert one_of(("soft", "hard")) == "{'soft', 'hard'}"
    assert one_of([]) == "{}"


@pytest.mark.parametrize("native, cuda, precisions, sizes, expected", [
    (True, False, ["no", "bf16"], ["small", "small"], "in float32 here: m0"),
    (True, False, ["no", "no"], ["tiny", "base"], "in float32 here: m1"),
    (True, False, ["no", "no"], ["tiny", "mini"], None),  # tiny models gain nothing from bf16
    (True, False, ["bf16", "bf16"], ["base", "base"], None),  # already in bf16
    (False, False, ["no"], ["base"], None),  # emulated bf16 would be slower: no tip
    (True, True, ["no"], ["base"], None),  # a GPU: Accelerate's device, not this CPU
])
def test_bf16_tip_only_where_it_helps(monkeypatch, native, cuda, precisions, sizes, expected):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    configs = [MemberConfig(f"m{i}", init="scratch", arch="bert", size=size, train=TrainConfig(mixed_precision=p))
               for i, (p, size) in enumerate(zip(precisions, sizes))]
    tip = devices.bf16_tip(configs)
    assert tip == expected if expected is None else expected in tip and 'mixed_precision = "bf16"' in tip


@pytest.mark.parametrize("native, cuda, precisions, warned", [
    (False, False, ["bf16", "no", "bf16"], "(m0, m2)"),  # emulated: both bf16 members named
    (False, False, ["no", "no"], None),  # float32 everywhere: nothing to say
    (True, False, ["bf16"], None),  # AMX / AVX512-BF16: bf16 is the fast choice
    (False, True, ["bf16"], None),  # a GPU trains it: Accelerate's device, not this CPU
])
def test_emulated_bf16_training_warns_with_the_fix(monkeypatch, native, cuda, precisions, warned):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    configs = [MemberConfig(f"m{i}", init="scratch", arch="bert", train=TrainConfig(mixed_precision=p))
               for i, p in enumerate(precisions)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        devices.warn_emulated_bf16(configs)
    messages = [str(w.message) for w in caught]
    if warned is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warned in messages[0] and 'set mixed_precision = "no"' in messages[0]


def test_preflight_warns_before_any_training(monkeypatch):
    from ensemble.preflight import preflight

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match=r"mixed_precision = \"bf16\" \(bert\): this CPU has no native bf16"):
        preflight([MemberConfig("bert", init="scratch", arch="bert", train=TrainConfig(mixed_precision="bf16"))])
