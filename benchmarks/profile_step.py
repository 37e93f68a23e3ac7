"""Where a training step's time goes: one BERT-base-sized member, bf16 autocast, sequence 128.

`benchmarks/mfu.py` measures throughput through `ensemble`'s whole training loop; this script
times the bare step it is made of (forward, backward, gradient clipping, the fused AdamW step)
under torch.profiler, so the two side by side show what the loop adds, and the profile shows
whether the step is bound by the device (kernel time close to wall time) or by the host
launching kernels (much less kernel time than wall time). Prints, per batch size: wall ms per
step, device kernel ms per step, kernels launched per step, the share of device time in matrix
products, and the longest-running kernels.

Run on a GPU: ``python benchmarks/profile_step.py --batch 64 256`` (writes --json if given).
On a CPU it runs the same code with the CPU's profile (``--batch 2 --seq 32 --steps 2``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ensemble.members import build_member
from ensemble.recipe import MemberConfig, TrainConfig


def kernel_times(prof) -> list[tuple[str, float]]:
    """(name, microseconds) of every device kernel the profiler saw."""
    out = []
    for event in prof.events():
        if getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA:
            us = getattr(event, "device_time", None)
            if us is None:
                us = getattr(event, "cuda_time", 0.0)
            out.append((event.name, float(us)))
    return out


def profile(batch: int, seq: int, steps: int, device: torch.device) -> dict:
    cfg = MemberConfig("base", init="scratch", arch="bert", size="base", train=TrainConfig(max_length=seq))
    texts = [f"review {i} " + "word " * seq for i in range(64)]
    model, _ = build_member(cfg, ["0", "1"], texts)
    model.to(device).train()
    vocab = model.config.vocab_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    batch_data = {"input_ids": torch.randint(5, vocab, (batch, seq), device=device),
                  "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
                  "labels": torch.randint(0, 2, (batch,), device=device)}

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch_data).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):  # warm-up: allocator, cuBLAS heuristics
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    wall = (time.perf_counter() - start) / steps
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    kernels = kernel_times(prof)
    total = sum(us for _, us in kernels) / steps
    by_name: dict[str, float] = {}
    for name, us in kernels:
        by_name[name] = by_name.get(name, 0.0) + us / steps
    gemm = sum(us for name, us in by_name.items() if any(k in name.lower() for k in ("gemm", "cutlass", "sm90", "nvjet", "matmul")))
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:10]
    record = {"batch": batch, "seq": seq, "steps": steps, "wall_ms": wall * 1e3, "kernel_ms": total / 1e3,
              "kernels_per_step": len(kernels) / steps, "gemm_share": gemm / total if total else None,
              "top": [{"kernel": name[:90], "ms": us / 1e3} for name, us in top]}
    del model, optimizer
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    records = []
    for batch in args.batch:
        r = profile(batch, args.seq, args.steps, device)
        records.append(r)
        if args.json:
            args.json.write_text(json.dumps(records, indent=2))
        gemm = "—" if r["gemm_share"] is None else f"{r['gemm_share']:.0%}"
        print(f"batch {batch}: wall {r['wall_ms']:.1f} ms/step, device kernels {r['kernel_ms']:.1f} ms/step "
              f"({r['kernels_per_step']:.0f} launches), matrix products {gemm} of device time", flush=True)
        for t in r["top"]:
            print(f"    {t['ms']:8.2f} ms  {t['kernel']}")


if __name__ == "__main__":
    main()
