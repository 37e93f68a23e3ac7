"""Vector building blocks for the CPU vote kernels (`kernels_cpu`): numba intrinsics that emit LLVM IR.

numba vectorises plain loops, but it has no way to say "this row of 20 floats is one vector" or
"these 64 compares are one 64-bit word". Here:

- Row vectors (`row_vote_probs`, `row_vote_logits`, `row_best`, `row_hard`,
  `row_store`): a whole row of up to `lanes` classes in one vector of 8, 16 or 32 float32
  lanes (the caller passes `lanes` as a compile-time literal, `numba.literally`),
  loaded with a mask so that no byte past the row is read, reduced with shuffle trees (maximum,
  first class holding it, softmax sum). One member's vote on one row is a few dozen
  instructions, without the transposed copy of the tile that a loop vectorised along rows needs.
  Arithmetic is the scalar kernel's, operation for operation (separate multiplies and adds,
  `exp`'s polynomial), except that a row's softmax sum runs as a tree: every row still goes
  through identical operations, so identical inputs still tie exactly.
- Row groups (`group_vote`): one member's vote on 16 rows of 2-8 classes, shuffled from one
  wide load into one vector per class, for the tile kernel.
- Bit words (`nonzero64`, `equal64`, `popcount`): 64 rows' labels compared at once, for the
  member x member equal-prediction counts.
- `adam8_grad`, `adam8_zero`: the Adam update of 8 values (`cpu.EmbeddingRows`).
- `exp`, `scale_by_pow2`, `prefetch`, `sqrt32`: scalar pieces.

On CPUs without AVX-512 LLVM lowers the same IR to narrower instructions (same results; tested
compiled for AVX2 and for plain x86-64).
"""

from __future__ import annotations

import numpy as np

try:
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - numba is a dependency; kernels_cpu reports it missing
    ir = None

LANES = 32  # the widest row vector: rows of up to 32 classes can take the vector path
WIDTHS = (8, 16, 32)  # the row vector widths the intrinsics are built for
GROUP = 16  # rows of one `group_vote` call
GROUP_CLASSES = 8  # the most classes `group_vote` is built for

if ir is not None:
    _F32 = ir.FloatType()
    _I32 = ir.IntType(32)

    def _vf(lanes):
        return ir.VectorType(_F32, lanes)

    def _vi(lanes):
        return ir.VectorType(_I32, lanes)

    def _width(lanes) -> int:
        """The vector width a `lanes` argument's type names (a literal 8, 16 or 32), else None."""
        value = getattr(lanes, "literal_value", None)
        return value if value in WIDTHS else None

    def _splat(builder, value, vector_type):
        one = builder.insert_element(ir.Constant(vector_type, None), value, ir.Constant(_I32, 0))
        return builder.shuffle_vector(one, one, ir.Constant(_vi(vector_type.count), [0] * vector_type.count))

    def _pointer(context, builder, arrty, arr, offset):
        data = context.make_array(arrty)(context, builder, arr).data
        return builder.gep(data, [offset])

    def _mask(builder, classes, lanes):
        """Lanes below `classes` (an intp) of a `lanes`-wide vector: the row's own values."""
        return builder.icmp_signed("<", ir.Constant(_vi(lanes), list(range(lanes))),
                                   _splat(builder, builder.trunc(classes, _I32), _vi(lanes)))

    def _masked_load(builder, ptr, mask, fill: float):
        """The row at `ptr`, lanes outside `mask` set to `fill`, reading no byte outside it."""
        lanes = mask.type.count
        fnty = ir.FunctionType(_vf(lanes), [ptr.type, _I32, mask.type, _vf(lanes)])
        name = f"llvm.masked.load.v{lanes}f32.{ptr.type.intrinsic_name}"
        fn = builder.module.globals.get(name) or ir.Function(builder.module, fnty, name=name)
        return builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_vf(lanes), [fill] * lanes)])

    def _masked_store(builder, value, ptr, mask):
        fnty = ir.FunctionType(ir.VoidType(), [value.type, ptr.type, _I32, mask.type])
        name = f"llvm.masked.store.v{mask.type.count}f32.{ptr.type.intrinsic_name}"
        fn = builder.module.globals.get(name) or ir.Function(builder.module, fnty, name=name)
        builder.call(fn, [value, ptr, ir.Constant(_I32, 4), mask])

    def _reduce(builder, vector, combine):
        """Halve `vector` with `combine(builder, low, high)` until one value is left."""
        width = vector.type.count
        while width > 1:
            width //= 2
            half = ir.VectorType(_I32, width)
            low = builder.shuffle_vector(vector, vector, ir.Constant(half, list(range(width))))
            high = builder.shuffle_vector(vector, vector, ir.Constant(half, list(range(width, 2 * width))))
            vector = combine(builder, low, high)
        return builder.extract_element(vector, ir.Constant(_I32, 0))

    def _max(builder, low, high):
        # "high if high > low else low": x86's max instruction, keeping the lower lane on ties
        return builder.select(builder.fcmp_ordered(">", high, low), high, low)

    def _add(builder, low, high):
        return builder.fadd(low, high)

    def _first(builder, row, value, classes):
        """The first lane of `row` equal to `value` (an argmax's tie-break), within [0, classes)."""
        equal = builder.fcmp_ordered("==", row, _splat(builder, value, row.type))
        hits = builder.zext(builder.bitcast(equal, ir.IntType(row.type.count)), _I32)
        cttz = builder.module.globals.get("llvm.cttz.i32") or ir.Function(
            builder.module, ir.FunctionType(_I32, [_I32, ir.IntType(1)]), name="llvm.cttz.i32")
        lane = builder.zext(builder.call(cttz, [hits, ir.Constant(ir.IntType(1), 0)]), ir.IntType(64))
        # no lane equal (a NaN row, reported as non-finite anyway): a valid class, never out of range
        last = builder.sub(classes, ir.Constant(ir.IntType(64), 1))
        return builder.select(builder.icmp_unsigned("<", lane, classes), lane, last)

    def _vector_exp(builder, x):
        """`exp` on every lane: the same operations in the same order."""
        # constants rounded to float32 first (LLVM rejects a float constant that is not exact)
        lanes = x.type.count
        c = lambda v: ir.Constant(_vf(lanes), [float(np.float32(v))] * lanes)  # noqa: E731
        y = builder.select(builder.fcmp_ordered(">", x, c(-87.0)), x, c(-87.0))
        t = builder.fadd(builder.fmul(y, c(1.44269504)), c(12582912.0))
        k = builder.fsub(t, c(12582912.0))
        r = builder.fsub(y, builder.fmul(k, c(0.693359375)))
        r = builder.fsub(r, builder.fmul(k, c(-2.12194440e-4)))
        p = c(1.9875691500e-4)
        for coefficient in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
            p = builder.fadd(builder.fmul(p, r), c(coefficient))
        p = builder.fadd(builder.fadd(builder.fmul(p, builder.fmul(r, r)), r), c(1.0))
        bits = builder.bitcast(t, _vi(lanes))
        exponent = builder.add(builder.shl(bits, ir.Constant(_vi(lanes), [23] * lanes)),
                               ir.Constant(_vi(lanes), [((127 - 0x4B400000) << 23) & 0xFFFFFFFF] * lanes))
        e = builder.fmul(p, builder.bitcast(exponent, _vf(lanes)))
        return builder.select(builder.fcmp_ordered("<", x, c(-87.0)), c(0.0), e)

    def _row_vote(softmax: bool):
        """The intrinsic for one member's vote on one row: ``x[offset:offset + classes]``, added into
        the soft sums ``acc[acc_offset:acc_offset + lanes]`` (lanes past `classes` get zeros).

        It returns (confidence, label): the member's argmax (first maximum) of the raw values
        and, for probabilities, their maximum. With `softmax` (logits), the softmax at temperature
        ``1 / inv_temp`` is what is added (weight x probability) and the confidence is the label's
        probability; a non-finite logit makes the row's sums NaN (the softmax sum has ``x * 0``
        added), which the caller's check finds.
        """

        def row_vote(typingctx, acc, acc_offset, x, offset, classes, weight, inv_temp, lanes):  # pragma: no cover - compiled
            width = _width(lanes)
            if width is None:
                return None
            sig = types.Tuple((types.float32, types.int64))(acc, types.intp, x, types.intp, types.intp, types.float32,
                                                             types.float32, lanes)
            vf = _vf(width)

            def codegen(context, builder, signature, args):
                acc_ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
                x_ptr = _pointer(context, builder, signature.args[2], args[2], args[3])
                classes, weight, inv_temp = args[4], args[5], args[6]
                mask = _mask(builder, classes, width)
                row = _masked_load(builder, x_ptr, mask, float("-inf"))
                best = _reduce(builder, row, _max)
                label = _first(builder, row, best, classes)
                zero = ir.Constant(vf, [0.0] * width)
                if softmax:  # exp((x - max) * t) / sum, the sum with x * 0 added (NaN if any x is not finite)
                    e = _vector_exp(builder, builder.fmul(builder.fsub(row, _splat(builder, best, vf)),
                                                   _splat(builder, inv_temp, vf)))
                    e = builder.fadd(e, builder.select(mask, builder.fmul(row, zero), zero))
                    confidence = builder.fdiv(ir.Constant(_F32, 1.0), _reduce(builder, e, _add))
                    terms = builder.fmul(e, _splat(builder, confidence, vf))
                else:
                    confidence, terms = best, builder.select(mask, row, zero)
                vec_ptr = builder.bitcast(acc_ptr, vf.as_pointer())
                total = builder.fadd(builder.load(vec_ptr, align=4), builder.fmul(_splat(builder, weight, vf), terms))
                builder.store(total, vec_ptr, align=4)
                return context.make_tuple(builder, signature.return_type, [confidence, label])

            return sig, codegen

        return intrinsic(row_vote)

    row_vote_probs = _row_vote(softmax=False)
    row_vote_logits = _row_vote(softmax=True)

    @intrinsic
    def prefetch(typingctx, arr, offset):  # pragma: no cover - compiled
        """Ask for the cache line holding ``arr[offset]`` ahead of its use (a hint: never faults)."""
        sig = types.void(arr, types.intp)

        def codegen(context, builder, signature, args):
            ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
            i8p = ir.IntType(8).as_pointer()
            name = f"llvm.prefetch.{i8p.intrinsic_name}"
            fn = builder.module.globals.get(name) or ir.Function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32]), name=name)
            builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def row_best(typingctx, acc, acc_offset, classes, lanes):  # pragma: no cover - compiled
        """(maximum, first class holding it, check) of ``acc[acc_offset:acc_offset + classes]``;
        check is 0, or NaN when any of those values is not finite."""
        width = _width(lanes)
        if width is None:
            return None
        sig = types.Tuple((types.float32, types.int64, types.float32))(acc, types.intp, types.intp, lanes)

        def codegen(context, builder, signature, args):
            mask = _mask(builder, args[2], width)
            row = _masked_load(builder, _pointer(context, builder, signature.args[0], args[0], args[1]), mask,
                               float("-inf"))
            best = _reduce(builder, row, _max)
            zero = ir.Constant(_vf(width), [0.0] * width)
            check = _reduce(builder, builder.select(mask, builder.fmul(row, zero), zero), _add)
            return context.make_tuple(builder, signature.return_type, [best, _first(builder, row, best, args[2]), check])

        return sig, codegen

    @intrinsic
    def row_hard(typingctx, shares, soft, offset, classes, tolerance, lanes):  # pragma: no cover - compiled
        """(top share, label, check) of the hard vote on one row: among the classes whose vote
        share is within `tolerance` of the top share, the one with the highest soft score (the
        lowest class on exact ties); check is 0, or NaN when a soft score is not finite. Both
        rows at `offset` of their arrays, each loaded once."""
        width = _width(lanes)
        if width is None:
            return None
        sig = types.Tuple((types.float32, types.int64, types.float32))(shares, soft, types.intp, types.intp,
                                                                        types.float32, lanes)
        vf = _vf(width)

        def codegen(context, builder, signature, args):
            mask = _mask(builder, args[3], width)
            share = _masked_load(builder, _pointer(context, builder, signature.args[0], args[0], args[2]), mask,
                                 float("-inf"))
            score = _masked_load(builder, _pointer(context, builder, signature.args[1], args[1], args[2]), mask,
                                 float("-inf"))
            zero = ir.Constant(vf, [0.0] * width)
            check = _reduce(builder, builder.select(mask, builder.fmul(score, zero), zero), _add)
            peak = _reduce(builder, share, _max)
            keep = builder.fcmp_ordered(">=", share, _splat(builder, builder.fsub(peak, args[4]), vf))
            candidates = builder.select(keep, score, ir.Constant(vf, [float("-inf")] * width))
            label = _first(builder, candidates, _reduce(builder, candidates, _max), args[3])
            top = builder.extract_element(share, builder.trunc(label, _I32))
            return context.make_tuple(builder, signature.return_type, [top, label, check])

        return sig, codegen

    @intrinsic
    def row_store(typingctx, out, offset, source, source_offset, classes, lanes):  # pragma: no cover - compiled
        """``out[offset:offset + classes] = source[source_offset:source_offset + classes]``, one
        masked vector store (no byte past the row written)."""
        width = _width(lanes)
        if width is None:
            return None
        sig = types.void(out, types.intp, source, types.intp, types.intp, lanes)

        def codegen(context, builder, signature, args):
            mask = _mask(builder, args[4], width)
            row = _masked_load(builder, _pointer(context, builder, signature.args[2], args[2], args[3]), mask, 0.0)
            _masked_store(builder, row, _pointer(context, builder, signature.args[0], args[0], args[1]), mask)
            return context.get_dummy_value()

        return sig, codegen

    def _group_classes(classes):
        """The class count a `classes` argument's type names (a literal 2-8), else None."""
        value = getattr(classes, "literal_value", None)
        return value if isinstance(value, int) and 2 <= value <= GROUP_CLASSES else None

    @intrinsic
    def group_vote(typingctx, x, offset, classes, column, soft, shares, stride, weight, inv_temp, own, confidence,
                   check, probs_in, hard):  # pragma: no cover - compiled
        """One member's vote on `GROUP` rows, ``x[offset:offset + GROUP * classes]`` (row-major,
        `classes` a literal 2-8), all in registers: one wide load, shuffled into one vector per
        class (16 rows each), then

        - its label (first maximum) to ``own[column:column + GROUP]`` and its confidence (the
          maximum probability, or exp(0) / softmax sum) to `confidence` at the same place;
        - the weighted probabilities added into the class-major soft sums ``soft[c * stride +
          column + k]``; logits (not `probs_in`) through the temperature softmax first, and
          added into ``check`` (a non-finite logit makes that sum non-finite);
        - `hard`: the weight added into ``shares`` (laid out as `soft`) at the label.

        The operations and their order are `kernels_cpu_tiles.vote_tiles`' loops' (a multiply and
        an add, never fused), so the results are bit for bit the same. It replaces their
        transposing copy through a scratch tile and their loops' stores between steps: 1.1-1.4x
        faster at 2-8 classes.
        """
        C = _group_classes(classes)
        if C is None:
            return None
        sig = types.void(x, types.intp, classes, types.intp, soft, shares, types.intp, types.float32, types.float32,
                         own, confidence, check, types.boolean, types.boolean)
        vf, vi, i64 = _vf(GROUP), _vi(GROUP), ir.IntType(64)

        def codegen(context, builder, signature, args):
            x, offset, _, column, soft, shares, stride, weight, inv_temp, own, confidence, check, probs_in, hard = args
            kinds = signature.args

            def vector_at(k, arr, at, vtype=vf):
                return builder.bitcast(_pointer(context, builder, kinds[k], arr, at), vtype.as_pointer())

            def add_into(k, arr, c, value):  # arr[c * stride + column:][:GROUP] += value
                ptr = vector_at(k, arr, builder.add(builder.mul(ir.Constant(i64, c), stride), column))
                builder.store(builder.fadd(builder.load(ptr, align=4), value), ptr, align=4)

            block = builder.load(vector_at(0, x, offset, ir.VectorType(_F32, GROUP * C)), align=4)
            xs = [builder.shuffle_vector(block, block, ir.Constant(vi, [c + C * k for k in range(GROUP)]))
                  for c in range(C)]
            best, label = xs[0], ir.Constant(vi, [0] * GROUP)
            for c in range(1, C):  # the first maximum wins
                greater = builder.fcmp_ordered(">", xs[c], best)
                best = builder.select(greater, xs[c], best)
                label = builder.select(greater, ir.Constant(vi, [c] * GROUP), label)
            w = _splat(builder, weight, vf)
            with builder.if_else(probs_in) as (probs, logits):
                with probs:
                    for c in range(C):
                        add_into(4, soft, c, builder.fmul(w, xs[c]))
                    builder.store(best, vector_at(10, confidence, column), align=4)
                with logits:
                    sums = vector_at(11, check, column)
                    total = builder.load(sums, align=4)
                    for value in xs:
                        total = builder.fadd(total, value)
                    builder.store(total, sums, align=4)
                    t = _splat(builder, inv_temp, vf)
                    es = [_vector_exp(builder, builder.fmul(builder.fsub(value, best), t)) for value in xs]
                    total = es[0]
                    for e in es[1:]:
                        total = builder.fadd(total, e)
                    inverse = builder.fdiv(ir.Constant(vf, [1.0] * GROUP), total)
                    for c in range(C):
                        add_into(4, soft, c, builder.fmul(w, builder.fmul(es[c], inverse)))
                    builder.store(inverse, vector_at(10, confidence, column), align=4)
            with builder.if_then(hard):
                zero = ir.Constant(vf, [0.0] * GROUP)
                for c in range(C):
                    add_into(5, shares, c, builder.select(builder.icmp_signed("==", label, ir.Constant(vi, [c] * GROUP)), w, zero))
            own_type = context.get_data_type(kinds[9].dtype)
            builder.store(builder.trunc(label, ir.VectorType(own_type, GROUP)) if own_type.width < 32 else label,
                          vector_at(9, own, column, ir.VectorType(own_type, GROUP)), align=1)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def scale_by_pow2(typingctx, t, p):  # pragma: no cover - compiled
        """``p * 2**k`` for the float32 ``t = k + 1.5 * 2**23`` (k an integer in [-126, 127]).

        The "round by adding 1.5 * 2**23" trick leaves k in the low mantissa bits of t, so 2**k
        is t's bit pattern shifted left by 23 plus a constant: two integer ops on the bits, which
        (unlike `math.ldexp`) vectorise.
        """
        sig = types.float32(types.float32, types.float32)

        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            bits = builder.bitcast(args[0], i32)
            # (bits - bits(1.5 * 2**23) + 127) << 23, modulo 2**32
            exponent = builder.add(builder.shl(bits, ir.Constant(i32, 23)),
                                   ir.Constant(i32, ((127 - 0x4B400000) << 23) & 0xFFFFFFFF))
            return builder.fmul(args[1], builder.bitcast(exponent, ir.FloatType()))

        return sig, codegen

    @intrinsic
    def sqrt32(typingctx, x):  # pragma: no cover - compiled
        """The correctly rounded float32 square root (``llvm.sqrt``): numba's own `np.sqrt` tests
        the sign first, a branch that keeps loops using the argument twice from vectorising."""
        sig = types.float32(types.float32)

        def codegen(context, builder, signature, args):
            f = builder.module.declare_intrinsic("llvm.sqrt", [ir.FloatType()])
            return builder.call(f, [args[0]])

        return sig, codegen

    def _adam8(with_grad: bool):
        """An intrinsic: the Adam update of 8 consecutive float32 values, one vector each.

        ``(w, m, v, values, offset, value_offset, beta1, beta2, c1, c2, step_size, bc2_sqrt, eps,
        scale, decay)``: w, m and v (C-contiguous float32 arrays) from flat `offset`, the gradient from
        flat `value_offset` of `values` (zero `with_grad=False`). torch's fused CPU AdamW kernel,
        operation for operation: ``w = w * decay; g = g / scale; m = m * beta1 + g * c1;
        v = v * beta2 + g * g * c2; w = w - step_size * m / (sqrt(v) / bc2_sqrt + eps)``. numba's loops over these do not
        vectorise (its cost model keeps a divide by a square root scalar).
        """
        f32 = types.float32

        def typer(typingctx, w, m, v, values, offset, value_offset, beta1, beta2, c1, c2, step_size, bc2_sqrt,
                  eps, scale, decay):
            sig = types.void(w, m, v, values, offset, value_offset, *(f32,) * 9)

            def codegen(context, builder, signature, args):
                vec = _vf(8)
                values, offset, value_offset = args[3:6]
                tys = signature.args
                ptrs = [builder.bitcast(_pointer(context, builder, tys[i], args[i], offset), vec.as_pointer())
                        for i in range(3)]
                b1, b2, k1, k2, step, bc2, e, sc, decay = (_splat(builder, x, vec) for x in args[6:])
                mean = builder.fmul(builder.load(ptrs[1], align=4), b1)
                square = builder.fmul(builder.load(ptrs[2], align=4), b2)
                if with_grad:
                    gptr = builder.bitcast(_pointer(context, builder, tys[3], values, value_offset), vec.as_pointer())
                    g = builder.fdiv(builder.load(gptr, align=4), sc)
                    mean = builder.fadd(mean, builder.fmul(g, k1))
                    square = builder.fadd(square, builder.fmul(builder.fmul(g, g), k2))
                fnty = ir.FunctionType(vec, [vec])
                sqrt = builder.module.globals.get("llvm.sqrt.v8f32") or ir.Function(builder.module, fnty, "llvm.sqrt.v8f32")
                denom = builder.fadd(builder.fdiv(builder.call(sqrt, [square]), bc2), e)
                weight = builder.fmul(builder.load(ptrs[0], align=4), decay)
                weight = builder.fsub(weight, builder.fdiv(builder.fmul(step, mean), denom))
                builder.store(mean, ptrs[1], align=4)
                builder.store(square, ptrs[2], align=4)
                builder.store(weight, ptrs[0], align=4)
                return context.get_dummy_value()

            return sig, codegen

        return intrinsic(typer)

    adam8_grad, adam8_zero = _adam8(True), _adam8(False)

    @intrinsic
    def popcount(typingctx, x):  # pragma: no cover - compiled
        """The number of set bits of a uint64 (one ``popcnt`` instruction), as an int64."""
        sig = types.int64(types.uint64)

        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])

        return sig, codegen

    def _load64(context, builder, arrty, arr, offset):  # pragma: no cover - compiled
        """LLVM IR: the 64 integers of array `arr` from `offset` as one <64 x iN> vector."""
        data = context.make_array(arrty)(context, builder, arr).data
        vec = ir.VectorType(context.get_data_type(arrty.dtype), 64)
        return builder.load(builder.bitcast(builder.gep(data, [offset]), vec.as_pointer()), align=4)

    @intrinsic
    def nonzero64(typingctx, arr, offset):  # pragma: no cover - compiled
        """A uint64 whose bit k says ``arr[offset + k] != 0``, k < 64 (`arr`: contiguous integers,
        64 values from `offset`).

        One 64-lane vector compare whose one-bit results are the word: AVX-512 does it in a few
        mask-register instructions, where a loop of shifts and ORs builds it one bit at a time
        (numba has no other way to turn a vector of booleans into a bitmask).
        """
        sig = types.uint64(arr, types.intp)

        def codegen(context, builder, signature, args):
            values = _load64(context, builder, signature.args[0], args[0], args[1])
            return builder.bitcast(builder.icmp_signed("!=", values, ir.Constant(values.type, [0] * 64)), ir.IntType(64))

        return sig, codegen

    @intrinsic
    def equal64(typingctx, a, b, offset):  # pragma: no cover - compiled
        """A uint64 whose bit k says ``a[offset + k] == b[offset + k]``, k < 64 (`a`, `b`:
        contiguous integers of one type, 64 values from `offset`): two 64-lane vector loads and a
        compare, as `nonzero64` (int16 labels: two AVX-512 registers a load, int32: four)."""
        sig = types.uint64(a, b, types.intp)

        def codegen(context, builder, signature, args):
            a = _load64(context, builder, signature.args[0], args[0], args[2])
            b = _load64(context, builder, signature.args[1], args[1], args[2])
            return builder.bitcast(builder.icmp_signed("==", a, b), ir.IntType(64))

        return sig, codegen

    @njit(inline="always")
    def exp(x):  # pragma: no cover - compiled
        """float32 ``exp(x)`` for ``x <= 0``, within 2 ulp; 0 below -87 (where exp < 1.7e-38).

        Cody-Waite reduction x = k ln2 + r, |r| <= ln2 / 2, and Cephes' degree-6 polynomial for
        exp(r). Branch-free (selects only), so a loop of it vectorises; the same input always
        gives the same output, so exact ties stay exact.
        """
        y = max(x, np.float32(-87.0))
        t = y * np.float32(1.44269504) + np.float32(12582912.0)  # round(y / ln2) + 1.5 * 2**23
        k = t - np.float32(12582912.0)
        r = y - k * np.float32(0.693359375)
        r = r - k * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * (r * r) + r + np.float32(1.0)
        e = scale_by_pow2(t, p)
        return np.float32(0.0) if x < np.float32(-87.0) else e
