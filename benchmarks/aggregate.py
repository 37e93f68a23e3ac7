"""Voting speed: `ensemble.aggregate` against scikit-learn's VotingClassifier and unfused torch.

scikit-learn gets prefit members: `sklearn.frozen.FrozenEstimator` around estimators whose
``predict_proba`` returns fixed probability arrays, so its time is its own voting work
(stacking, averaging, per-row ``np.bincount`` for hard votes). `aggregate` gets the SAME
probability arrays (``inputs="probs"``) and, separately, the logits they came from. "unfused
torch" is the torch reference path of `aggregate` (many passes, no fused kernel).

`aggregate` computes more than scikit-learn: besides labels and scores, every member's label and
confidence, the per-row agreement and the member x member equal-prediction counts.

Run: ``python benchmarks/aggregate.py [--max-rows 10000000]`` (markdown table on stdout,
benchmarks/aggregate.json next to this file, or ``--json PATH``). On a CUDA machine it also times
the Triton kernel (`gpu_rows`) on float32 and bfloat16 logits resident on the device and reports
its bytes moved per second as a share of the device's measured bandwidth (a device-to-device
copy, read + write), next to the same kernel adding its equal counts into one shared buffer
(``slices=1``) and the unfused torch reference on the device; ``--skip-cpu`` leaves out the CPU
table (scikit-learn takes minutes). ``--gpu-device cpu`` runs that part through Triton's
interpreter on the CPU (``TRITON_INTERPRET=1``, tiny sizes: a smoke test of the script, not a
measurement).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import VotingClassifier

try:
    from sklearn.frozen import FrozenEstimator
except ImportError:  # scikit-learn < 1.6 (an image we cannot upgrade): VotingClassifier.fit clones
    FrozenEstimator = None  # the members instead, which copies their arrays once but times the same predict

from shared_data import cpu  # benchmarks/shared_data.py: this folder is on sys.path when run as a script

from ensemble.aggregate import aggregate

agg = importlib.import_module("ensemble.aggregate")  # the module (ensemble.aggregate is also the function)

HERE = Path(__file__).resolve().parent


class FixedProba(ClassifierMixin, BaseEstimator):
    """A prefit classifier whose predictions are a fixed probability array (rows are X's rows)."""

    def __init__(self, proba=None):
        self.proba = proba

    def fit(self, X, y):
        self.classes_ = np.arange(self.proba.shape[1])
        return self

    def predict_proba(self, X):
        return self.proba[: len(X)]

    def predict(self, X):
        return self.proba[: len(X)].argmax(axis=1)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sklearn_rate(probs: np.ndarray, voting: str, rows: int, repeat: int) -> float:
    X, y = np.zeros((rows, 1)), np.arange(rows) % probs.shape[2]
    frozen = FrozenEstimator or (lambda estimator: estimator)
    members = [(f"m{i}", frozen(FixedProba(probs[i, :rows]).fit(X, y))) for i in range(probs.shape[0])]
    clf = VotingClassifier(members, voting=voting).fit(X, y)
    return rows / best_of(lambda: clf.predict(X), repeat)


def memory_bandwidth(elements: int = 200_000_000, repeat: int = 3) -> dict[str, float]:
    """This machine's streaming bandwidth in GB/s, with every thread: reading a float32 array
    (numba, vectorised sum) and writing one. The voting roofline: no kernel reads its input or
    writes its outputs faster. The write buffer is touched before timing, so page faults are not
    counted; `aggregate` allocates its outputs on every call and does pay them (the first writes
    to fresh memory ran at 0.8-12 GB/s here, depending on the OS's state)."""
    from numba import get_num_threads, njit, prange

    @njit(parallel=True, fastmath=True)
    def read(x, parts):  # pragma: no cover - compiled
        per = (x.size + parts - 1) // parts
        acc = np.zeros(parts, np.float32)
        for p in prange(parts):
            # a slice indexed from 0: numba wraps a negative index around, and an index that may
            # be negative (p * per + i) kept this loop scalar on some CPUs, timing one add's
            # latency (9 GB/s on an AVX-512 EPYC whose memory reads 30+ GB/s)
            part = x[p * per:(p + 1) * per]
            s = np.float32(0.0)
            for i in range(part.size):
                s += part[i]
            acc[p] = s
        return acc.sum()

    @njit(parallel=True)
    def fill(y):  # pragma: no cover - compiled
        for i in prange(y.size):
            y[i] = np.float32(1.0)

    x = np.ones(elements, np.float32)
    parts = 4 * get_num_threads()
    y = np.empty(elements // 4, np.float32)
    read(x[:1000], parts), fill(y)
    read_s = best_of(lambda: read(x, parts), repeat)
    write_s = best_of(lambda: fill(y), repeat)
    return {"read": x.nbytes / read_s / 1e9, "write": y.nbytes / write_s / 1e9}


def timed(fn, device: torch.device, repeat: int, inner: int = 1) -> float:
    """Seconds per call of `fn`, the best of `repeat` timings after one warm-up call. On a GPU,
    CUDA events around `inner` calls queued back to back: the host's launch overhead (tens of
    microseconds of Python per call) then overlaps the device's work instead of adding idle time
    to a sub-millisecond kernel."""
    fn()
    if device.type != "cuda":
        return best_of(fn, repeat)
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / inner)
    return min(times)


def device_bandwidth(device: torch.device, elements: int, repeat: int) -> dict[str, float]:
    """GB/s of a device-to-device copy (bytes read + written) and of a sum (bytes read)."""
    x = torch.rand(elements, device=device)
    y = torch.empty_like(x)
    copy = timed(lambda: y.copy_(x), device, repeat, inner=10)
    read = timed(lambda: x.sum(), device, repeat, inner=10)
    return {"copy": 2 * x.nbytes / copy / 1e9, "read": x.nbytes / read / 1e9}


def gpu_rows(device: torch.device, members_list, classes_list, rows: int, repeat: int,
             bandwidth: dict[str, float], reference_rows: int) -> Iterator[dict]:
    """The Triton kernel on logits already on `device`: rows/s, GB/s moved (`bytes_per_row`: the
    logits read, every output written) and their share of the copy bandwidth; the same kernel
    with one shared equal-counts buffer (``slices=1``); the unfused torch reference; and
    `aggregate` end to end (the kernel plus copying the results to host memory as numpy).
    One row per shape and dtype, yielded as it is measured."""
    from ensemble import kernels

    for members in members_list:
        for classes in classes_list:
            weight = torch.full((members,), 1.0 / members, device=device)
            temperature = torch.ones(members, device=device)
            for dtype in (torch.float32, torch.bfloat16):
                x = torch.randn(members, rows, classes, device=device).to(dtype)
                moved = kernels.bytes_per_row(members, classes, x.element_size()) * rows
                row = {"members": members, "classes": classes, "rows": rows, "dtype": str(dtype).split(".")[-1]}
                for method in ("soft", "hard"):
                    seconds = timed(lambda: kernels.fused_vote(x, method, weight, temperature), device, repeat, inner=10)
                    single = timed(lambda: kernels.fused_vote(x, method, weight, temperature, slices=1), device, repeat,
                                   inner=10)
                    row[f"{method}_rows_per_s"] = rows / seconds
                    row[f"{method}_GBps"] = moved / seconds / 1e9
                    row[f"{method}_share"] = moved / seconds / 1e9 / bandwidth["copy"]
                    row[f"{method}_one_buffer_rows_per_s"] = rows / single
                ref = x[:, :reference_rows].float()
                w64 = weight.double()
                row["torch_soft_rows_per_s"] = ref.shape[1] / timed(
                    lambda: agg._vote_chunk(ref, "soft", w64, temperature), device, max(1, repeat // 3))
                row["aggregate_soft_rows_per_s"] = rows / timed(lambda: aggregate(x, "soft"), device, max(1, repeat // 3))
                print(f"GPU members {members:2d} classes {classes:2d} {row['dtype']:>8}: soft {row['soft_GBps']:.0f} GB/s "
                      f"({row['soft_share']:.0%}), hard {row['hard_GBps']:.0f} GB/s ({row['hard_share']:.0%})", flush=True)
                del x, ref
                yield row


SWEEP_SHAPES = [(4, 2, "float32"), (8, 5, "bfloat16"), (8, 20, "bfloat16"), (16, 2, "float32"), (16, 5, "bfloat16"),
                (16, 20, "bfloat16")]


def sweep_launches(members: int, classes: int):
    """The launches `gpu_sweep` compares for a shape: (label, Launch, fused_vote keywords).

    Besides the measured defaults, one-warp programs: their reductions over rows stay inside a
    warp, which takes most barriers out of the member loop (1 a member instead of 4 in the rows
    kernel, 1-4 instead of 8-10 in the tile kernel, compiled for sm_90); not yet measured."""
    from ensemble import kernels

    tile_rows, _, _, tile_warps = kernels._blocks(members, classes)
    rows = lambda block, warps: kernels.Launch("rows", block, warps)  # noqa: E731
    yield "tile (lanes along classes)", kernels.Launch("tile", tile_rows, tile_warps), {}
    yield f"tile {max(1, tile_rows // 2)}/1w", kernels.Launch("tile", max(1, tile_rows // 2), 1), {}
    if classes > 8:  # a thread holding a whole row of 16-32 classes runs out of registers
        return
    yield "rows 64/2w", rows(64, 2), {}
    yield "rows 32/1w", rows(32, 1), {}
    yield "rows 64/1w (2 rows a thread)", rows(64, 1), {}
    yield "rows 128/1w (4 rows a thread)", rows(128, 1), {}
    yield "rows 64/2w, one counts buffer", rows(64, 2), {"slices": 1}
    yield "rows 64/2w, no counts", rows(64, 2), {"counts": False}
    yield "rows 32/1w, no counts", rows(32, 1), {"counts": False}


def gpu_sweep(device: torch.device, rows: int, repeat: int, bandwidth: dict[str, float]) -> Iterator[dict]:
    """Soft votes through every launch of `sweep_launches` on the `SWEEP_SHAPES`: rows/s and share
    of the copy bandwidth, each checked against the default launch (labels, member labels and
    equal counts equal; scores within 1e-5), and the default against the torch reference on the
    first 100,000 rows. One row per shape and launch, yielded as it is measured."""
    from ensemble import kernels

    for members, classes, dtype in SWEEP_SHAPES:
        weight = torch.full((members,), 1.0 / members, device=device)
        temperature = torch.ones(members, device=device)
        x = torch.randn(members, rows, classes, device=device).to(getattr(torch, dtype))
        moved = kernels.bytes_per_row(members, classes, x.element_size()) * rows
        want = kernels.fused_vote(x, "soft", weight, temperature)
        head = x[:, :100_000]
        ref = agg._vote_chunk(head.float(), "soft", weight.double(), temperature)
        mine = kernels.fused_vote(head, "soft", weight, temperature)
        reference_ok = all(torch.equal(mine[k], ref[k]) for k in ("labels", "member_labels", "equal_counts"))
        print(f"sweep {members}x{classes} {dtype}: default {kernels._launch(members, classes)}, "
              f"equal to the torch reference: {reference_ok}", flush=True)
        for label, launch, extra in sweep_launches(members, classes):
            got = kernels.fused_vote(x, "soft", weight, temperature, launch=launch, **extra)
            counted = extra.get("counts", True)
            same = (all(torch.equal(got[k], want[k]) for k in ("labels", "member_labels"))
                    and (not counted or torch.equal(got["equal_counts"], want["equal_counts"]))
                    and torch.allclose(got["scores"], want["scores"], atol=1e-5))
            seconds = timed(lambda: kernels.fused_vote(x, "soft", weight, temperature, launch=launch, **extra),
                            device, repeat, inner=10)
            row = {"members": members, "classes": classes, "dtype": dtype, "rows": rows, "launch": label,
                   "block_rows": launch.block_rows, "num_warps": launch.num_warps,
                   **extra, "rows_per_s": rows / seconds, "GBps": moved / seconds / 1e9,
                   "share": moved / seconds / 1e9 / bandwidth["copy"], "same_as_default": same,
                   "default_equals_reference": reference_ok}
            print(f"  {label:34s} {row['rows_per_s'] / 1e6:10,.1f}M rows/s {row['GBps']:7,.0f} GB/s "
                  f"{row['share']:5.0%}  same: {same}", flush=True)
            yield row
        del x, want, got, head, ref, mine


def print_gpu_table(results: list[dict], bandwidth: dict[str, float], name: str) -> None:
    print(f"\n{name}: copy {bandwidth['copy']:.0f} GB/s (read + write), sum {bandwidth['read']:.0f} GB/s (read). "
          "Rows/s of the fused Triton kernel on logits resident on the device; GB/s = bytes read and written "
          "(`kernels.bytes_per_row`), share = of the copy bandwidth.")
    print("\n| members | classes | logits | rows | soft rows/s | soft GB/s | share | hard rows/s | hard GB/s | share "
          "| soft, one counts buffer | unfused torch soft | `aggregate` soft, to numpy |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    m = lambda v: f"{v / 1e6:,.1f}M"  # noqa: E731
    for r in results:
        print(f"| {r['members']} | {r['classes']} | {r['dtype']} | {r['rows']:,} | {m(r['soft_rows_per_s'])} "
              f"| {r['soft_GBps']:,.0f} | {r['soft_share']:.0%} | {m(r['hard_rows_per_s'])} | {r['hard_GBps']:,.0f} "
              f"| {r['hard_share']:.0%} | {m(r['soft_one_buffer_rows_per_s'])} | {m(r['torch_soft_rows_per_s'])} "
              f"| {m(r['aggregate_soft_rows_per_s'])} |")


def roofline_rate(members: int, classes: int, bandwidth: dict[str, float], details: bool = False) -> float:
    """Rows/s if the call did nothing but read its input and write its outputs at full bandwidth."""
    read = members * classes * 4
    write = moved_bytes(members, 1, classes, details=details) - read
    return 1.0 / (read / (bandwidth["read"] * 1e9) + write / (bandwidth["write"] * 1e9))


def moved_bytes(members: int, rows: int, classes: int, itemsize: int = 4, details: bool = True) -> int:
    """Bytes `aggregate` must move: read the input once, write every output once."""
    read = members * rows * classes * itemsize
    write = rows * (classes * 4 + 8 + 4 + 4) + (members * rows * (8 + 4) if details else 0)
    return read + write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-rows", type=int, default=10_000_000)
    parser.add_argument("--max-elements", type=int, default=200_000_000, help="members x rows x classes cap (memory)")
    parser.add_argument("--hard-rows", type=int, default=500_000,
                        help="rows timed for scikit-learn's hard vote (a Python call per row: linear, slow)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--members", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 5, 20])
    parser.add_argument("--json", type=Path, default=HERE / "aggregate.json", help="where the results go")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU part (no scikit-learn, no numba)")
    parser.add_argument("--gpu-device", default="cuda" if torch.cuda.is_available() else None,
                        help="device of the Triton kernel's part (default: cuda where there is one, else none; "
                             "'cpu' runs it through Triton's interpreter as a smoke test)")
    parser.add_argument("--gpu-rows", type=int, default=10_000_000, help="rows per GPU measurement")
    parser.add_argument("--sweep", action="store_true",
                        help="GPU part: every launch of the kernel on a few shapes (`gpu_sweep`) instead of the table")
    args = parser.parse_args()
    gpu = None
    if args.gpu_device:
        device = torch.device(args.gpu_device)
        if device.type == "cpu":  # before ensemble.kernels imports triton
            os.environ["TRITON_INTERPRET"] = "1"
        gpu_bandwidth = device_bandwidth(device, min(args.max_elements, 1 << 30), args.repeat)
        gpu = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton interpreter)",
               "bandwidth_GBps": gpu_bandwidth, "results": []}
        if args.sweep:
            print(f"{gpu['device']}: copy {gpu_bandwidth['copy']:.0f} GB/s (read + write)", flush=True)
            for row in gpu_sweep(device, args.gpu_rows, args.repeat, gpu_bandwidth):
                gpu["results"].append(row)
                args.json.write_text(json.dumps({"gpu": gpu}, indent=2))
            return
        for row in gpu_rows(device, args.members, args.classes, args.gpu_rows, args.repeat, gpu_bandwidth,
                            reference_rows=min(args.gpu_rows, 1_000_000)):
            gpu["results"].append(row)  # written after each row: a run cut off by a time limit keeps them
            args.json.write_text(json.dumps({"gpu": gpu}, indent=2))
        print_gpu_table(gpu["results"], gpu_bandwidth, gpu["device"])
    if args.skip_cpu:
        return
    rng = np.random.default_rng(0)
    results = []
    aggregate(rng.standard_normal((2, 100, 3)).astype(np.float32))  # compile the fused kernel once
    bandwidth = memory_bandwidth(args.max_elements, args.repeat)
    print(f"memory bandwidth, all threads: read {bandwidth['read']:.1f} GB/s, write {bandwidth['write']:.1f} GB/s",
          flush=True)
    for members in args.members:
        for classes in args.classes:
            rows = min(args.max_rows, args.max_elements // (members * classes))
            logits = rng.standard_normal((members, rows, classes)).astype(np.float32)
            probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
            row = {"members": members, "classes": classes, "rows": rows}
            for voting in ("soft", "hard"):
                sk_rows = rows if voting == "soft" else min(rows, args.hard_rows)
                row[f"sklearn_{voting}"] = sklearn_rate(probs, voting, sk_rows, args.repeat)
                row[f"fused_{voting}_probs"] = rows / best_of(lambda: aggregate(probs, voting, inputs="probs"), args.repeat)
                row[f"lean_{voting}_probs"] = rows / best_of(
                    lambda: aggregate(probs, voting, inputs="probs", member_details=False), args.repeat)
                row[f"fused_{voting}_logits"] = rows / best_of(lambda: aggregate(logits, voting), args.repeat)
                agg._FORCE_REFERENCE = True
                ref_rows = min(rows, 1_000_000)
                row[f"torch_{voting}_logits"] = ref_rows / best_of(lambda: aggregate(logits[:, :ref_rows], voting), 1)
                agg._FORCE_REFERENCE = False
                row[f"fused_{voting}_GBps"] = moved_bytes(members, rows, classes) * row[f"fused_{voting}_logits"] / rows / 1e9
                for kind, details in (("fused", True), ("lean", False)):
                    row[f"{kind}_{voting}_probs_GBps"] = (
                        moved_bytes(members, rows, classes, details=details) * row[f"{kind}_{voting}_probs"] / rows / 1e9)
            row["roofline_lean"] = roofline_rate(members, classes, bandwidth)
            results.append(row)
            print(f"members {members:2d} classes {classes:2d} rows {rows:>9,}: "
                  f"soft x{row['fused_soft_probs'] / row['sklearn_soft']:.1f} (lean x{row['lean_soft_probs'] / row['sklearn_soft']:.1f})"
                  f"  hard x{row['fused_hard_probs'] / row['sklearn_hard']:.0f} (lean x{row['lean_hard_probs'] / row['sklearn_hard']:.0f})"
                  " vs sklearn", flush=True)

    info = {"machine": cpu(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(), "bandwidth_GBps": bandwidth}
    args.json.write_text(json.dumps({"info": info, "results": results, "gpu": gpu}, indent=2))
    print("\n| members | classes | rows | sklearn soft | fused soft | x | lean soft | x | sklearn hard | fused hard | x "
          "| lean hard | x | fused soft (logits) | unfused torch soft (logits) | GB/s soft fused / lean (probs) "
          "| GB/s hard fused / lean (probs) | GB/s soft / hard (logits) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        m = lambda v: f"{v / 1e6:.2f}M"  # noqa: E731
        print(f"| {r['members']} | {r['classes']} | {r['rows']:,} | {m(r['sklearn_soft'])} | {m(r['fused_soft_probs'])} "
              f"| {r['fused_soft_probs'] / r['sklearn_soft']:.1f} | {m(r['lean_soft_probs'])} | {r['lean_soft_probs'] / r['sklearn_soft']:.1f} "
              f"| {m(r['sklearn_hard'])} | {m(r['fused_hard_probs'])} | {r['fused_hard_probs'] / r['sklearn_hard']:.0f} "
              f"| {m(r['lean_hard_probs'])} | {r['lean_hard_probs'] / r['sklearn_hard']:.0f} "
              f"| {m(r['fused_soft_logits'])} | {m(r['torch_soft_logits'])} "
              f"| {r['fused_soft_probs_GBps']:.1f} / {r['lean_soft_probs_GBps']:.1f} "
              f"| {r['fused_hard_probs_GBps']:.1f} / {r['lean_hard_probs_GBps']:.1f} "
              f"| {r['fused_soft_GBps']:.1f} / {r['fused_hard_GBps']:.1f} |")
    print("\nrows/s on the same probability arrays; fused = every output incl. member labels and confidences; "
          "lean = member_details=False (labels, scores, confidence, agreement, equal counts)")
    print(f"\nRoofline: read {bandwidth['read']:.1f} GB/s, write {bandwidth['write']:.1f} GB/s (all threads). "
          "Shares of the rows/s a lean call would reach at full bandwidth, and the share each target needs.")
    print("\n| members | classes | roofline rows/s (lean) | lean soft | lean hard | 5x sklearn soft needs | 100x sklearn hard needs |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        roof = r["roofline_lean"]
        print(f"| {r['members']} | {r['classes']} | {roof / 1e6:.2f}M | {r['lean_soft_probs'] / roof:.0%} "
              f"| {r['lean_hard_probs'] / roof:.0%} | {5 * r['sklearn_soft'] / roof:.0%} | {100 * r['sklearn_hard'] / roof:.0%} |")


if __name__ == "__main__":
    main()
