"""The fused Triton vote kernel against the reference `aggregate._vote_chunk`.

Without a GPU the kernel runs on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1,
which must be set before triton or ensemble.kernels is imported); on a CUDA machine it runs
compiled, against the reference on the same device.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

if os.environ.get("ENSEMBLE_REQUIRE_DATA") == "1":  # CI: the kernel must be checked, never skipped
    import triton  # noqa: F401
else:
    pytest.importorskip("triton")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ensemble import kernels  # noqa: E402
from ensemble.aggregate import _vote_chunk  # noqa: E402
from ensemble.kernels import fused_vote  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
KEYS = (
    "labels",
    "scores",
    "confidence",
    "agreement",
    "member_labels",
    "member_confidence",
    "equal_counts",
)
EXACT = ("labels", "member_labels", "equal_counts")

# Without CUDA this needs the interpreter, which only works if TRITON_INTERPRET was set before
# triton was first imported in this process (it decorates triton.language itself at import).
pytestmark = pytest.mark.skipif(
    not kernels.available(),
    reason="no CUDA, and triton was imported without TRITON_INTERPRET=1 before this module",
)


def _setup(members: int, seed: int, zero_weight: bool = False):
    """Random normalised weights (float64 for the reference, float32 for the kernel) and
    temperatures."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.rand(members, generator=gen, dtype=torch.float64) + 0.05
    if zero_weight and members > 1:
        weight[members // 2] = 0.0
    weight64 = (weight / weight.sum()).to(DEVICE)
    temperature = (torch.rand(members, generator=gen) * 2.5 + 0.25).to(DEVICE)
    return weight64, temperature


def _check(x: torch.Tensor, method: str, weight64: torch.Tensor, temperature: torch.Tensor, slices=None):
    """Run both paths and compare; returns the kernel's outputs."""
    got = fused_vote(x, method, weight64.to(torch.float32), temperature, slices=slices)
    # bf16/fp16 inputs: the reference sees the very same values, upcast to float32.
    ref = _vote_chunk(x.to(torch.float32), method, weight64, temperature)
    assert set(got) == set(ref) | {"bad_row"} and set(ref) == set(KEYS)
    assert got["bad_row"].tolist() == [-1]
    for key in KEYS:
        g, r = got[key], ref[key]
        assert g.dtype == r.dtype, (key, g.dtype, r.dtype)
        assert g.shape == r.shape, (key, g.shape, r.shape)
        assert g.device == r.device, (key, g.device, r.device)
        if key in EXACT:
            assert torch.equal(g, r), f"{key} differs:\n{g}\n{r}"
        else:
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6, msg=key)
    return got


def _logits(members, rows, classes, seed, dtype=torch.float32, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(members, rows, classes, generator=gen) * scale
    return x.to(dtype).to(DEVICE)


@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("rows", [1, 17, 300])
@pytest.mark.parametrize("classes", [2, 3, 5, 7, 20])
@pytest.mark.parametrize("members", [1, 2, 3, 8])
def test_matches_reference_float32(members, classes, rows, method):
    seed = members * 1000 + classes * 10 + rows
    weight64, temperature = _setup(members, seed, zero_weight=rows == 17)
    _check(_logits(members, rows, classes, seed), method, weight64, temperature)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("classes", [2, 7, 20])
@pytest.mark.parametrize("members", [1, 3, 8])
def test_matches_reference_half_inputs(members, classes, method, dtype):
    seed = members * 100 + classes
    weight64, temperature = _setup(members, seed)
    x = _logits(members, 57, classes, seed, dtype=dtype)
    assert x.dtype == dtype  # read as is: no float32 copy handed to the kernel
    _check(x, method, weight64, temperature)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_non_contiguous_row_slice(method):
    """aggregate hands over row slices of a bigger tensor: strided, not contiguous."""
    full = _logits(4, 400, 6, seed=7)
    weight64, temperature = _setup(4, seed=7)
    x = full[:, 33:290]
    assert not x.is_contiguous()
    _check(x, method, weight64, temperature)
    # Members interleaved along rows: (rows, members, classes) storage viewed as (M, R, C).
    y = _logits(60, 5, 9, seed=8).transpose(0, 1)
    w2, t2 = _setup(5, seed=8)
    _check(y, method, w2, t2)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_int64_offsets_path(monkeypatch, method):
    """The WIDE variant (int64 in-block offsets, for huge strides) computes the same vote."""
    monkeypatch.setattr(kernels, "_needs_int64_offsets", lambda *args: True)
    weight64, temperature = _setup(3, seed=9)
    x = _logits(9, 40, 3, seed=9).permute(2, 1, 0)  # classes outermost: large class stride
    assert x.stride(2) > x.stride(1)
    _check(x, method, weight64, temperature)


@pytest.mark.parametrize("slices", [None, 1, 3])
@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize(("members", "classes", "rows"), [(3, 20, 1000), (16, 5, 700), (5, 2, 2049)])
def test_equal_counts_over_slices(members, classes, rows, method, slices):
    """Equal counts spread over one slice per program (None: 6-32 programs here), one buffer for
    all (1), or 3 slices that several programs share: the same counts as the reference."""
    weight64, temperature = _setup(members, seed=rows, zero_weight=True)
    _check(_logits(members, rows, classes, seed=rows), method, weight64, temperature, slices=slices)


LAUNCHES = [
    kernels.Launch("tile", 32, 4), kernels.Launch("tile", 8, 4),
    kernels.Launch("rows", 128, 4), kernels.Launch("rows", 64, 2), kernels.Launch("rows", 256, 8),
    kernels.Launch("tile", 16, 1), kernels.Launch("rows", 32, 1), kernels.Launch("rows", 128, 1),
]


@pytest.mark.parametrize("launch", LAUNCHES, ids=lambda la: f"{la.kernel}-{la.block_rows}-{la.num_warps}")
@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize(("members", "classes", "rows", "dtype"),
                         [(1, 2, 5, torch.float32), (3, 20, 300, torch.bfloat16), (5, 7, 130, torch.float32),
                          (9, 32, 70, torch.float16)])
def test_every_launch_matches_reference(members, classes, rows, dtype, method, launch):
    """Both kernels and several block shapes: the reference's results."""
    weight64, temperature = _setup(members, seed=rows + members, zero_weight=True)
    x = _logits(members, rows, classes, seed=rows + members, dtype=dtype)
    got = fused_vote(x, method, weight64.to(torch.float32), temperature, launch=launch)
    ref = _vote_chunk(x.to(torch.float32), method, weight64, temperature)
    for key in KEYS:
        if key in EXACT:
            assert torch.equal(got[key], ref[key]), key
        else:
            torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)


def test_counts_can_be_left_out_by_the_rows_kernel():
    """counts=False (the benchmark's measure of what counting costs): zero counts, same vote."""
    x = _logits(4, 200, 5, seed=11)
    w, t = torch.full((4,), 0.25, device=DEVICE), torch.ones(4, device=DEVICE)
    full = fused_vote(x, "soft", w, t)
    bare = fused_vote(x, "soft", w, t, launch=kernels.Launch("rows", 128, 4), counts=False)
    assert not bare["equal_counts"].any() and full["equal_counts"].trace() == 4 * 200
    assert torch.equal(bare["labels"], full["labels"])
    with pytest.raises(ValueError, match="counts=False needs the rows kernel"):
        fused_vote(x, "soft", w, t, launch=kernels.Launch("tile", 32, 4), counts=False)
    with pytest.raises(ValueError, match="launch.kernel must be 'rows' or 'tile'; got 'mystery'"):
        fused_vote(x, "soft", w, t, launch=kernels.Launch("mystery", 32, 4))


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the interpreter's NumPy on inf * 0
@pytest.mark.parametrize("launch", [kernels.Launch("tile", 8, 4), kernels.Launch("rows", 32, 1)],
                         ids=lambda la: la.kernel)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logits_are_found_in_the_same_pass(bad, launch):
    """bad_row: the first row with a NaN or infinite logit, whichever member and class holds it."""
    x = _logits(3, 40, 5, seed=12)
    w, t = torch.full((3,), 1 / 3, device=DEVICE), torch.ones(3, device=DEVICE)
    assert fused_vote(x, "soft", w, t, launch=launch)["bad_row"].tolist() == [-1]
    x[2, 37, 4] = bad
    x[1, 21, 0] = bad
    assert fused_vote(x, "hard", w, t, launch=launch)["bad_row"].tolist() == [21]
    half = x.to(torch.bfloat16)
    assert fused_vote(half, "soft", w, t, launch=launch)["bad_row"].tolist() == [21]


def test_launch_choice():
    """3-8 classes go to the rows kernel, 2 classes and more than 8 to the tile kernel (as measured)."""
    assert kernels._launch(8, 5) == kernels._launch(16, 3) == kernels.Launch("rows", 64, 2)
    for members, classes in ((4, 2), (16, 2), (8, 20), (16, 9), (4, 8192)):
        block_rows, _, _, num_warps = kernels._blocks(members, classes)
        assert kernels._launch(members, classes) == kernels.Launch("tile", block_rows, num_warps)
    assert kernels._launch(64, 8).kernel == "rows"  # 3 x 8 + 64 register values
    assert kernels._launch(200, 8).kernel == "tile"  # (beyond MAX_MEMBERS anyway)


def test_slice_count():
    """A slice per program, within MAX_SLICE_COUNTS counts; at least one."""
    assert kernels._slices(100, 16, None) == 100
    assert kernels._slices(10**6, 16, None) == kernels.MAX_SLICE_COUNTS // 256 == 4096
    assert kernels._slices(10**6, 64, None) == 256
    assert kernels._slices(10**6, 2000, None) == 1
    assert kernels._slices(10**6, 16, 1) == 1
    assert kernels._slices(5, 16, 40) == 5


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_many_members_and_classes(method):
    weight64, temperature = _setup(32, seed=3)
    _check(_logits(32, 9, 1024, seed=3), method, weight64, temperature)
    weight64, temperature = _setup(33, seed=4)
    _check(_logits(33, 20, 3, seed=4), method, weight64, temperature)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_single_class(method):
    weight64, temperature = _setup(3, seed=5)
    got = _check(_logits(3, 10, 1, seed=5), method, weight64, temperature)
    assert (got["labels"] == 0).all()


# --- hand-made ties --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", ["soft", "hard"])
def test_identical_members(method, dtype):
    base = _logits(1, 40, 5, seed=11, dtype=dtype)
    x = torch.cat([base, base, _logits(1, 40, 5, seed=12, dtype=dtype), base])
    weight64, temperature = _setup(4, seed=11)
    got = _check(x, method, weight64, temperature)
    counts = got["equal_counts"]
    assert counts[0, 1] == counts[0, 3] == counts[1, 3] == 40


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", ["soft", "hard"])
def test_identical_class_columns(method, dtype):
    """Equal logits inside a member -> lowest index; equal soft scores -> lowest index."""
    x = _logits(3, 50, 6, seed=13)
    x[:, :, 4] = x[:, :, 1]
    x[:, :, 2] = x[:, :, 1]
    x[:, :25, 1] += 50.0  # columns 1, 2, 4 win every member's argmax on these rows
    x[:, :25, 2] += 50.0
    x[:, :25, 4] += 50.0
    x = x.to(dtype)
    weight64, temperature = _setup(3, seed=13)
    got = _check(x, method, weight64, temperature)
    assert (got["member_labels"][:, :25] == 1).all()
    assert (got["labels"][:25] == 1).all()


def test_hard_tie_broken_by_soft_score():
    # Two members of equal weight vote 0 and 2 on both rows: a tie on shares. Row 0: member 0
    # is sure of class 0, member 1 barely prefers class 2, so the soft score picks 0. Row 1:
    # the other way round, so the tie goes to class 2 although 0 is the lower index.
    x = torch.tensor(
        [
            [[6.0, 0.0, 0.0], [0.4, 0.3, 0.0]],
            [[0.0, 0.3, 0.4], [0.0, 0.0, 6.0]],
        ],
        device=DEVICE,
    )
    weight64 = torch.tensor([0.5, 0.5], dtype=torch.float64, device=DEVICE)
    temperature = torch.ones(2, device=DEVICE)
    got = _check(x, "hard", weight64, temperature)
    assert got["labels"].tolist() == [0, 2]
    assert got["scores"][:, [0, 2]].tolist() == [[0.5, 0.5], [0.5, 0.5]]


def test_hard_tie_of_rounded_shares():
    """0.2 + 0.3 vs 0.5: equal up to float rounding, so tied; the soft score decides."""
    x = torch.tensor(
        [
            [[3.0, 0.0, 0.0]] * 2,
            [[3.0, 0.0, 0.0]] * 2,
            [[0.0, 0.0, 0.1], [0.0, 0.0, 9.0]],
        ],
        device=DEVICE,
    )
    weight64 = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64, device=DEVICE)
    temperature = torch.ones(3, device=DEVICE)
    got = _check(x, "hard", weight64, temperature)
    assert got["labels"].tolist() == [0, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", ["soft", "hard"])
def test_double_ties_go_to_lowest_index(method, dtype):
    """Swapped logits in two equal members: equal shares AND equal soft scores (w*p + w*q vs
    w*q + w*p), so the lowest tied index wins, whichever member voted for it.

    The other classes sit so low that their probabilities underflow to exactly 0: then both
    members' softmax denominators are the same two-term sum whatever the summation order, and
    the swapped probabilities are bit-identical (with ordinary values the two rows' sums round
    differently and the "tie" is decided by rounding, in the reference and the kernel alike).
    """
    gen = torch.Generator().manual_seed(17)
    rows, classes = 64, 7
    a = -100.0 - torch.rand(rows, classes, generator=gen)
    b = a.clone()
    first = torch.randint(0, classes, (rows,), generator=gen)
    second = (first + torch.randint(1, classes, (rows,), generator=gen)) % classes
    idx = torch.arange(rows)
    a[idx, first] = 5.0
    a[idx, second] = 4.0
    b[idx, first] = 4.0
    b[idx, second] = 5.0
    x = torch.stack([a, b]).to(dtype).to(DEVICE)
    weight64 = torch.tensor([0.5, 0.5], dtype=torch.float64, device=DEVICE)
    temperature = torch.full((2,), 0.7, device=DEVICE)
    got = _check(x, method, weight64, temperature)
    expected = torch.minimum(first, second).to(DEVICE)
    assert torch.equal(got["labels"], expected)
    assert torch.equal(got["scores"][idx, first], got["scores"][idx, second])


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    members=st.integers(1, 10),
    rows=st.integers(1, 70),
    classes=st.integers(1, 40),
    method=st.sampled_from(["soft", "hard"]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**31 - 1),
    duplicate_member=st.booleans(),
    duplicate_column=st.booleans(),
    scale=st.sampled_from([0.01, 1.0, 30.0]),
)
def test_property_matches_reference(
    members, rows, classes, method, dtype, seed, duplicate_member, duplicate_column, scale
):
    x = _logits(members, rows, classes, seed, scale=scale)
    if duplicate_member and members > 1:
        x[-1] = x[0]
    if duplicate_column and classes > 1:
        x[:, :, -1] = x[:, :, 0]
    weight64, temperature = _setup(members, seed, zero_weight=seed % 3 == 0)
    _check(x.to(dtype), method, weight64, temperature)


# --- every output written ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_every_output_element_is_written(monkeypatch, method):
    """Outputs start as sentinels (NaN / -123456789); none may survive the launch."""

    def poisoned(shape, dtype, device):
        fill = float("nan") if dtype.is_floating_point else -123456789
        return torch.full(shape, fill, dtype=dtype, device=device)

    monkeypatch.setattr(kernels, "_empty", poisoned)
    members, rows, classes = 3, 301, 7  # rows not a multiple of any block size
    weight64, temperature = _setup(members, seed=19)
    got = _check(_logits(members, rows, classes, seed=19), method, weight64, temperature)
    for key in KEYS:
        value = got[key]
        if value.dtype.is_floating_point:
            assert not value.isnan().any(), key
        else:
            assert not (value == -123456789).any(), key


def test_zero_rows():
    x = torch.empty(3, 0, 4, device=DEVICE)
    got = fused_vote(x, "soft", torch.full((3,), 1 / 3), torch.ones(3))
    assert got["labels"].shape == (0,)
    assert got["scores"].shape == (0, 4)
    assert got["member_labels"].shape == (3, 0)
    assert torch.equal(got["equal_counts"], torch.zeros(3, 3, dtype=torch.int64, device=DEVICE))


# --- API -----------------------------------------------------------------------------------


def test_rejects_bad_arguments():
    x = torch.zeros(2, 3, 4, device=DEVICE)
    w, t = torch.full((2,), 0.5), torch.ones(2)
    with pytest.raises(ValueError, match="method"):
        fused_vote(x, "mean", w, t)
    with pytest.raises(ValueError, match="shape"):
        fused_vote(x[0], "soft", w, t)
    with pytest.raises(ValueError, match="float32"):
        fused_vote(x.double(), "soft", w, t)
    with pytest.raises(ValueError, match="one entry per member"):
        fused_vote(x, "soft", torch.ones(3) / 3, t)
    with pytest.raises(ValueError, match="classes"):
        fused_vote(torch.zeros(1, 1, kernels.MAX_CLASSES + 1, device=DEVICE), "soft", w[:1], t[:1])


def test_available_and_bytes_per_row():
    assert kernels.available()
    # 4 bf16 members x 3 classes: read 24, write 12 scores + 16 row values + 48 member values.
    assert kernels.bytes_per_row(4, 3, 2) == 24 + 12 + 16 + 48


@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_aggregate_routes_through_the_triton_kernel(monkeypatch, method, dtype):
    """`aggregate`'s CUDA branch (raw bf16 slices, chunking) equals the torch reference."""
    import importlib

    agg = importlib.import_module("ensemble.aggregate")  # the package re-exports the function as ensemble.aggregate

    logits = torch.randn(3, 70, 5, generator=torch.Generator().manual_seed(1)).to(dtype).to(DEVICE)
    weights, temps = [1.0, 2.0, 0.5], [1.0, 0.7, 1.3]
    monkeypatch.setattr(agg, "_CHUNK_ELEMENTS", 3 * 5 * 32)  # three chunks
    monkeypatch.setattr(agg, "_FORCE_REFERENCE", True)
    want = agg.aggregate(logits, method, weights, temps)
    monkeypatch.setattr(agg, "_FORCE_REFERENCE", False)
    monkeypatch.setattr(agg, "_fused_backend", lambda *args: "triton")
    got = agg.aggregate(logits, method, weights, temps)
    for key in ("labels", "member_labels", "equal_counts"):
        assert (getattr(got, key) == getattr(want, key)).all(), key
    for key in ("scores", "confidence", "agreement", "member_confidence"):
        torch.testing.assert_close(torch.from_numpy(getattr(got, key)), torch.from_numpy(getattr(want, key)),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_aggregate_names_a_non_finite_logit_found_by_the_kernel(monkeypatch):
    """On the CUDA branch the kernel finds the non-finite logit (no pass of its own over the
    input); `aggregate` then names the member and row, as everywhere."""
    import importlib

    from ensemble.errors import EnsembleError

    agg = importlib.import_module("ensemble.aggregate")
    logits = torch.randn(3, 70, 5, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    logits[1, 50, 3] = float("inf")
    monkeypatch.setattr(agg, "_CHUNK_ELEMENTS", 3 * 5 * 32)  # the bad row is in the second chunk
    monkeypatch.setattr(agg, "_fused_backend", lambda *args: "triton")
    with pytest.raises(EnsembleError, match=r"must be finite; got NaN or infinity at member 1, row 50$"):
        agg.aggregate(logits, "soft")

