"""Training throughput and model FLOPs utilisation (MFU) of one BERT-base-sized member.

`ensemble`'s own training loop (`train_member`, the loop `ensemble fit` runs) trains a scratch
BERT-base-sized member (12 layers, 768 wide, 12 heads, FFN 3072) on CFIMDB reviews cut at
`--seq` tokens. The reviews run to hundreds of words, so every sequence is `--seq` tokens long
and no FLOP is spent on padding; the script checks that and reports the mean length it used.

Throughput is the steady rate after the first tenth of the steps (start-up and, with
`--compile`, compilation excluded), from the run's step log.

FLOPs per trained sequence (forward plus backward, the usual 3x forward; embeddings do no
matmuls and are not counted): ``S * (6 * N + 12 * L * S * H)`` with N the non-embedding parameters,
L layers, H the hidden width and S the sequence length: 2N per token for the weight matmuls and
4 * L * S * H per token for attention (Q K^T and A V), times 3. MFU is achieved FLOP/s over the
device's dense peak for the precision: looked up by device name (H100 / H200 989 TFLOP/s bf16
dense, A100 312), or `--peak-tflops`. On a CPU no peak is assumed: pass one, or read the
achieved TFLOP/s alone.

Run on a GPU: ``python benchmarks/mfu.py`` (bf16, sequence 128, batch 64, 400 steps; prints a
markdown table, writes benchmarks/mfu.json); ``--batch 64 128 256`` measures each batch size in
one call, a row each. A quick look on CPU: ``python benchmarks/mfu.py
--steps 4 --batch 4 --precision no``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from shared_data import cpu, cs224n  # benchmarks/shared_data.py: this folder is on sys.path when run as a script

from ensemble.data import load_table
from ensemble.labels import sorted_labels
from ensemble.members import build_member
from ensemble.scratch import SIZES
from ensemble.recipe import DataConfig, MemberConfig, TrainConfig
from ensemble.train import Splits, train_member

HERE = Path(__file__).resolve().parent
DATA = cs224n() / "ids-cfimdb-train.csv"
PEAK_TFLOPS = {  # dense tensor-core peak by device-name fragment: (bf16 / fp16, tf32)
    "H200": (989.4, 494.7), "H100": (989.4, 494.7), "A100": (312.0, 156.0), "L40S": (362.1, 181.0),
    "L4": (121.0, 60.0), "A10": (125.0, 62.5),
}


def train_flops_per_sequence(non_embedding_params: int, layers: int, hidden: int, seq: int) -> float:
    """Forward + backward FLOPs of one sequence of `seq` tokens (see the module docstring).

    Example:
        >>> train_flops_per_sequence(85_000_000, 12, 768, 128) / 1e12  # BERT-base, 128 tokens
        0.0670...
    """
    return seq * (6.0 * non_embedding_params + 12.0 * layers * seq * hidden)


def steady_rate(steps: list[dict], batch: int, skip: int) -> float:
    """Samples/s after the first `skip` steps (start-up, compilation), from the step log.

    Each step record holds the epoch's running rate, seen / elapsed, so elapsed = seen / rate
    and the rate between two steps follows from their (seen, elapsed).

    Example:
        >>> steady_rate([{"step": 1, "samples_per_s": 1.0}, {"step": 3, "samples_per_s": 2.0}], 4, 1)
        4.0
    """
    first, last = steps[min(skip, len(steps) - 1) - 1], steps[-1]
    if first is last:
        return last["samples_per_s"]
    seen = (first["step"] * batch, last["step"] * batch)
    elapsed = (seen[0] / first["samples_per_s"], seen[1] / last["samples_per_s"])
    return (seen[1] - seen[0]) / (elapsed[1] - elapsed[0])


def non_embedding_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def peak_tflops(precision: str, given: float | None) -> tuple[float | None, str]:
    """The dense peak to divide by, and where it came from."""
    if given is not None:
        return given, "--peak-tflops"
    if not torch.cuda.is_available():
        return None, "none known for a CPU (pass --peak-tflops)"
    name = torch.cuda.get_device_name()
    for fragment, (half, tf32) in PEAK_TFLOPS.items():
        if fragment in name:
            return (half if precision in ("bf16", "fp16") else tf32), f"{name} datasheet"
    return None, f"unknown device '{name}' (pass --peak-tflops)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, nargs="+", default=[64],
                        help="one run per batch size (e.g. --batch 64 128 256), each a row of the table")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps timed (one epoch of batch x steps rows)")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the member (TrainConfig.compile)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak for --precision")
    parser.add_argument("--json", type=Path, default=HERE / "mfu.json", help="where the results go")
    args = parser.parse_args()

    reviews = load_table(DATA, text="sentence", label="sentiment")
    records = []
    for batch in args.batch:  # written after each run, so a run cut off by a time limit keeps the others
        records.append(measure(args, reviews, batch))
        args.json.write_text(json.dumps(records if len(records) > 1 else records[0], indent=2))
    print("| device | precision | seq (mean tokens) | batch | samples/s | tokens/s | TFLOP/s | peak | MFU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in records:
        mfu = "—" if r["mfu"] is None else f"{r['mfu']:.1%}"
        peak = "—" if r["peak_tflops"] is None else f"{r['peak_tflops']:g}"
        print(f"| {r['device']} | {r['precision']}{' + compile' if r['compile'] else ''} | {r['seq']} "
              f"({r['mean_tokens']:.1f}) | {r['batch']} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:,.0f} | "
              f"{r['achieved_tflops']:.2f} | {peak} ({r['peak_source']}) | {mfu} |")


def measure(args: argparse.Namespace, reviews, batch: int) -> dict:
    """Train one member at this batch size; its throughput record."""
    rows = batch * args.steps
    # the reviews repeated until there are enough rows (a throughput run: accuracy is not the point)
    index = [i % len(reviews) for i in range(rows)]
    train, valid = reviews.subset(index), reviews.subset(range(min(256, len(reviews))))
    labels = sorted_labels(reviews.labels)  # every label, also where a short run samples one
    cfg = MemberConfig("base", init="scratch", arch="bert", size="base", train=TrainConfig(
        lr=5e-5, batch_size=batch, eval_batch_size=128, epochs=1, max_length=args.seq, warmup_ratio=0.1,
        weight_decay=0.01, seed=0, mixed_precision=args.precision, compile=args.compile, group_by_length=False))

    model, tokenizer = build_member(cfg, labels, train.texts)
    lengths = [len(ids) for ids in tokenizer(train.texts[: len(reviews)], truncation=True, max_length=args.seq)["input_ids"]]
    mean_len = sum(lengths) / len(lengths)
    layers, hidden = SIZES["base"].layers, SIZES["base"].hidden
    n = non_embedding_parameters(model)
    del model
    with tempfile.TemporaryDirectory() as tmp:
        result = train_member(cfg, Splits(train, valid), labels, DataConfig(train=DATA), Path(tmp) / "base")
        log = [json.loads(line) for line in (Path(tmp) / "base" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if r["event"] == "step"]
    samples_per_s = steady_rate(steps, batch, skip=max(1, len(steps) // 10))
    epoch_samples_per_s = result["history"][0]["samples_per_s"]
    achieved = samples_per_s * train_flops_per_sequence(n, layers, hidden, round(mean_len)) / 1e12
    peak, source = peak_tflops(args.precision, args.peak_tflops)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu()
    record = {"device": device, "precision": args.precision, "compile": args.compile, "seq": args.seq,
              "mean_tokens": mean_len, "batch": batch, "steps": args.steps, "non_embedding_params": n,
              "samples_per_s": samples_per_s, "epoch_samples_per_s": epoch_samples_per_s,
              "steady_after_steps": max(1, len(steps) // 10), "tokens_per_s": samples_per_s * mean_len, "achieved_tflops": achieved,
              "peak_tflops": peak, "peak_source": source, "mfu": None if peak is None else achieved / peak,
              "torch": torch.__version__}
    return record


if __name__ == "__main__":
    main()
