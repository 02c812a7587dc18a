#!/usr/bin/env python3
"""Make the NF4 / double-quantization fixtures in tests/fixtures/nf4/ (the reference for
src/peft/nf4.rs).

    /work/nf4env/bin/python scripts/make_nf4_fixtures.py [OUT_DIR]   # default tests/fixtures/nf4
    /work/nf4env/bin/python scripts/make_nf4_fixtures.py --rust-dynamic-map   # print the table

Needs numpy and torch (only for `torch.linspace`, which bitsandbytes' `create_dynamic_map`
uses and whose vectorized rounding numpy does not reproduce); it writes the .safetensors file
itself, byte-for-byte deterministic. If `bitsandbytes` imports too, the script also runs the
real library (its CPU backend) on the same inputs and prints, per case and field, whether it
agrees bit for bit (see "Comparison with real bitsandbytes" below).

What is mirrored: bitsandbytes' CUDA kernels, the ones QLoRA runs with
------------------------------------------------------------------------
This is a scalar numpy re-statement of what `bitsandbytes.functional.quantize_4bit(A,
blocksize=64, quant_type="nf4", compress_statistics=True)` computes on a CUDA device
(bitsandbytes 0.4x-0.50, `csrc/kernels.cu` / `csrc/cuda/blockwise_quantization.cu`), checked
against the SASS of `libbitsandbytes_cuda126.so` (sm_90) of the 0.50.2 wheel:

* 4-bit (`kQuantizeBlockwise<T, 64, 2, 0, NF4>`): blocks of 64 consecutive values of the
  flattened tensor; values past the end are loaded as 0 ("padding").
  - absmax = max over the block of fmaxf(-FLT_MAX, |x|): `fmaxf` drops NaN, so NaNs are
    ignored; the padding zeros of a partial last block take part (so a partial block's absmax
    is >= 0); a full block of NaNs gets absmax = -FLT_MAX. The kernel is built with
    --use_fast_math, so every float op flushes subnormals to zero (FMNMX.FTZ, FMUL.FTZ,
    FSETP.*.FTZ): a subnormal |x| counts as 0.
  - scale: r = 1.0f / absmax (MUFU.RCP, see "Limits" below), scaled = x * r (FMUL.FTZ).
    absmax == 0 gives r = +inf and 0 * inf = NaN.
  - code = dQuantizeNF4(scaled), a tree of `x > t` comparisons on 15 thresholds. The
    thresholds are the decimal literals in the kernel with an `f` suffix, i.e. correctly
    rounded decimal -> f32; for 4 of them this is 1 ulp away from the f32 midpoint of the two
    codes (what bucketize-based backends use), see NF4_THRESHOLDS_CUDA_BITS. Because every test
    is a strict `>`, a value exactly on a threshold goes to the LOWER code, and NaN goes to
    code 0 (-1.0). So: an all-zero block gives codes 0 (not 7) and dequantizes to -0.0; a NaN
    gives code 0; a finite value in a block with absmax = inf gives code 7 (x * 0 = 0).
  - packing: two codes per byte, the first (even index) value in the HIGH nibble; (n + 1) / 2
    bytes; for odd n the low nibble of the last byte holds the code of a padding 0.
* double quantization (`quantize_4bit(..., compress_statistics=True)`):
  offset = absmax.mean(); then `quantize_blockwise(absmax - offset, blocksize=256)` with the
  signed dynamic map (`create_dynamic_map(signed=True)`), which runs
  `kQuantizeBlockwise<float, 256, 2, 0, General8bit>`: the same absmax / reciprocal / FTZ
  steps, then `dQuantize<0>`: a 7-step binary search over the sorted 256-entry code
  (`x > code[pivot]` goes right, pivots 127, +-64, ..., +-1, ending on an even index p), then
      if x > code[p]:  mid = (code[p+1] + code[p]) * 0.5f; return p+1 if x > mid else p
      else:            mid = (code[p-1] + code[p]) * 0.5f; return p-1 if x < mid else p
  (for p == 0, "p-1" is 0). So an exact tie goes to p, the index the search ended on, which is
  sometimes the lower and sometimes the upper neighbour; NaN goes to 0.
  The mean: torch computes it in f32 with an implementation-defined summation order (CPU:
  cascade sum then / n; CUDA: tree reduction then * (1/n)), so no single bit pattern is "the"
  bitsandbytes offset. We define offset = f32(sum_f64(absmax, sequentially) / n): within half
  an ulp of the exact mean, and reproducible.
* dequantization: `absmax_i = code8[q_i] * scale_{i // 256}` (FMUL.FTZ in
  kDequantizeBlockwise) `+ offset` (a plain torch add, IEEE); `w = NF4[q] * absmax` (FMUL.FTZ).

Limits (things that can not be made bit-exact without the GPU): the CUDA kernel takes the
reciprocal with MUFU.RCP (an approximation, at most 1 ulp off); we use the correctly rounded
1.0f / absmax. The two agree whenever MUFU.RCP is correctly rounded (always for powers of two,
which the tie cases below use); otherwise x * r can differ by an ulp, which changes a code only
when x * r lies within about an ulp of a threshold.

Comparison with real bitsandbytes (CPU backend, what runs on this machine)
-------------------------------------------------------------------------
On CPU, bitsandbytes 0.50 quantizes 4-bit with a torch `bucketize` over the f32 code midpoints
(backends/default/ops.py) and 8-bit with a C++ routine (csrc/cpu_ops.cpp). Known, expected
differences from the CUDA kernels mirrored here: (1) the 4 thresholds that are 1 ulp apart;
(2) an all-zero block (absmax clamped to 1e-38 -> code 7 instead of code 0); (3) the partial
last block is divided by absmax instead of multiplied by its reciprocal; (4) NaN: torch's max
propagates NaN into absmax; (5) no flush-to-zero; (6) 8-bit ties go to the lower code and the
8-bit code[0] is treated as -1.0; (7) the offset is torch's f32 mean.
The script prints the result of the comparison: on ordinary (random) inputs the packed codes,
absmax and dequantized values agree bit for bit; the offset may be 1 ulp apart (torch's f32 mean);
see tests/fixtures/nf4/README.md.

Fixture layout (nf4_cases.safetensors; every tensor little-endian; CASE is one of the names in
the metadata key "cases", each a row-major [out, in] weight):
  CASE.input       F32 [out, in]    the weight
  CASE.packed      U8  [(n+1)/2]    NF4 codes, 2 per byte, first value in the high nibble
  CASE.absmax      F32 [nb]         per-64-block absmax (nb = ceil(n / 64))
  CASE.dequant     F32 [out, in]    NF4[q] * absmax (no double quantization)
  CASE.dq_codes    U8  [nb]         8-bit codes of absmax - offset
  CASE.dq_scales   F32 [ceil(nb / 256)]  absmax of each 256-block of absmax - offset
  CASE.dq_offset   F32 [1]          the offset (mean of absmax)
  CASE.dq_absmax   F32 [nb]         absmax recovered from the double quantization
  CASE.dq_dequant  F32 [out, in]    NF4[q] * recovered absmax
plus the 8-bit path on its own (blocksize 256) on crafted ties:
  dyn8.input F32 [600], dyn8.codes U8 [600], dyn8.scales F32 [3], dyn8.dequant F32 [600]
and the tables: nf4_code F32 [16], nf4_thresholds F32 [15] (ascending, CUDA's),
dynamic_map F32 [256].
"""
import sys
from fractions import Fraction

import numpy as np

F32 = np.float32
TINY = F32(np.finfo(np.float32).tiny)  # smallest normal f32, 2^-126
FLT_MAX = F32(np.finfo(np.float32).max)

# NF4 code table (bitsandbytes `get_4bit_type("nf4")`, the kernel's nf4 dequantization LUT).
NF4_CODE = np.array(
    [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
     -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
     0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
     0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)

# dQuantizeNF4's thresholds, as decimal literals (ascending order; the kernel tests them as a
# binary tree rooted at 0.0397...). nvcc turns `0.1202552504837513f` into the correctly rounded
# f32, which for 4 of them differs from rounding the f64 value (= what numpy/torch/triton do).
NF4_THRESHOLDS_DEC = [
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906",
    "-0.33967943489551544", "-0.23460740596055984", "-0.13791173323988914",
    "-0.045525018125772476", "0.03979014977812767", "0.1202552504837513",
    "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011"]
# The immediates found in the FSETP.GT.FTZ instructions of kQuantizeBlockwise<float,64,2,0,NF4>
# (sm_90 SASS of libbitsandbytes_cuda126.so, bitsandbytes 0.50.2).
NF4_THRESHOLDS_CUDA_BITS = [
    0xBF591CD9, 0xBF1C5270, 0xBEEB8480, 0xBEADEA76, 0xBE703CEC, 0xBE0D38BC, 0xBD3A7871,
    0x3D22FAFF, 0x3DF64863, 0x3E5067E0, 0x3E9582D4, 0x3EC753F9, 0x3F006D03, 0x3F248DAF,
    0x3F5C89D9]


def f32_from_decimal(s):
    """Correctly rounded decimal -> f32 (round half to even), like a C `1.5f` literal."""
    exact = Fraction(s)
    a = F32(float(exact))
    cands = [np.nextafter(a, F32(-np.inf)), a, np.nextafter(a, F32(np.inf))]
    def key(c):
        return (abs(Fraction(float(c)) - exact), int(np.array(c).view(np.uint32)) & 1)
    return min(cands, key=key)


NF4_THRESHOLDS = np.array([f32_from_decimal(s) for s in NF4_THRESHOLDS_DEC], dtype=np.float32)
assert [int(v) for v in NF4_THRESHOLDS.view(np.uint32)] == NF4_THRESHOLDS_CUDA_BITS


def bits(x):
    return int(np.array(F32(x)).view(np.uint32))


def ftz(x):
    """Flush a subnormal f32 to a zero of the same sign (CUDA --use_fast_math)."""
    x = F32(x)
    if x != 0 and abs(x) < TINY:
        return F32(-0.0) if np.signbit(x) else F32(0.0)
    return x


def fmul_ftz(a, b):
    with np.errstate(all="ignore"):
        return ftz(ftz(a) * ftz(b))


def recip(a):
    # MUFU.RCP approximated by the correctly rounded reciprocal; FTZ in and out.
    with np.errstate(all="ignore"):
        return ftz(F32(1.0) / ftz(a))


def block_absmax(block, blocksize):
    """kQuantizeBlockwise's absmax: fmaxf(-FLT_MAX, |x|) per value (NaN ignored, subnormals
    flushed), the padding zeros of a partial block included, reduced with max."""
    m = -FLT_MAX
    for v in block:
        a = ftz(abs(F32(v)))
        if not np.isnan(a) and a > m:  # fmaxf(m, a)
            m = a
    if len(block) < blocksize:
        m = max(m, F32(0.0))  # padding zeros
    return F32(m)


def nf4_code_of(x):
    """dQuantizeNF4: the kernel's decision tree, root 0.0397..., strict `>` at every node."""
    t = NF4_THRESHOLDS
    if x > t[7]:
        if x > t[11]:
            if x > t[13]:
                return 15 if x > t[14] else 14
            return 13 if x > t[12] else 12
        if x > t[9]:
            return 11 if x > t[10] else 10
        return 9 if x > t[8] else 8
    if x > t[3]:
        if x > t[5]:
            return 7 if x > t[6] else 6
        return 5 if x > t[4] else 4
    if x > t[1]:
        return 3 if x > t[2] else 2
    return 1 if x > t[0] else 0


def quantize_nf4(flat):
    """Mirror of kQuantizeBlockwise<float, 64, 2, 0, NF4>: returns (packed u8, absmax f32)."""
    n = len(flat)
    nb = (n + 63) // 64
    absmax = np.zeros(nb, dtype=np.float32)
    codes = np.zeros(nb * 64, dtype=np.uint8)
    for b in range(nb):
        block = flat[b * 64:(b + 1) * 64]
        am = block_absmax(block, 64)
        absmax[b] = am
        r = recip(am)
        padded = list(block) + [F32(0.0)] * (64 - len(block))
        for j, v in enumerate(padded):
            codes[b * 64 + j] = nf4_code_of(fmul_ftz(v, r))
    codes = codes[: n + (n % 2)]
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    return packed, absmax


def dequantize_nf4(packed, absmax, n):
    out = np.zeros(n, dtype=np.float32)
    for i in range(n):
        byte = int(packed[i // 2])
        q = (byte >> 4) if i % 2 == 0 else (byte & 0xF)
        out[i] = fmul_ftz(NF4_CODE[q], absmax[i // 64])
    return out


def dynamic_map_signed():
    """bitsandbytes.functional.create_dynamic_map(signed=True, max_exponent_bits=7,
    total_bits=8), step for step (torch for linspace and the f32 products)."""
    import torch
    max_exponent_bits, total_bits = 7, 8
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1  # 0 here
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    assert additional_items == 0
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data.sort()
    return np.array(data, dtype=np.float32)


def dquantize_8bit(code, x):
    """dQuantize<0> (non-stochastic) of csrc/kernels.cu, literally."""
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = F32(-1.0), F32(1.0)
    val = code[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower = pivot, val
            pivot += i
        else:
            upper_pivot, upper = pivot, val
            pivot -= i
        val = code[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = code[upper_pivot]
    if lower_pivot == 0:
        lower = code[lower_pivot]
    if x > val:
        midpoint = F32(F32(upper + val) * F32(0.5))
        return upper_pivot if x > midpoint else pivot
    midpoint = F32(F32(lower + val) * F32(0.5))
    return lower_pivot if x < midpoint else pivot


def quantize_blockwise_8bit(flat, code, blocksize=256):
    """Mirror of kQuantizeBlockwise<float, 256, 2, 0, General8bit>: (codes u8, absmax f32)."""
    n = len(flat)
    nb = (n + blocksize - 1) // blocksize
    absmax = np.zeros(nb, dtype=np.float32)
    q = np.zeros(n, dtype=np.uint8)
    for b in range(nb):
        block = flat[b * blocksize:(b + 1) * blocksize]
        am = block_absmax(block, blocksize)
        absmax[b] = am
        r = recip(am)
        for j, v in enumerate(block):
            q[b * blocksize + j] = dquantize_8bit(code, fmul_ftz(v, r))
    return q, absmax


def dequantize_blockwise_8bit(q, absmax, code, blocksize=256):
    return np.array([fmul_ftz(code[int(v)], absmax[i // blocksize]) for i, v in enumerate(q)],
                    dtype=np.float32)


def mean_offset(absmax):
    """Our definition of `absmax.mean()`: sequential f64 sum, / n in f64, rounded to f32."""
    s = 0.0
    for v in absmax:
        s += float(v)
    return F32(s / len(absmax))


def double_quant(absmax, code):
    offset = mean_offset(absmax)
    with np.errstate(all="ignore"):
        centered = np.array([F32(a - offset) for a in absmax], dtype=np.float32)
    q, scales = quantize_blockwise_8bit(centered, code, 256)
    with np.errstate(all="ignore"):
        recovered = np.array([F32(v + offset) for v in dequantize_blockwise_8bit(q, scales, code)],
                             dtype=np.float32)
    return q, scales, offset, recovered


# ------------------------------------------------------------------------------------ inputs

def ties_row(scale):
    """64 values for one block with absmax exactly `scale` (a power of two, so the
    reciprocal is exact and every value below lands exactly where intended)."""
    vals = [F32(1.0)]                                   # the absmax itself
    vals += list(NF4_CODE)                              # exact codes (16)
    vals += list(NF4_THRESHOLDS)                        # exact CUDA thresholds: lower code (15)
    vals += [np.nextafter(t, F32(np.inf)) for t in NF4_THRESHOLDS]   # 1 ulp above: upper (15)
    mids = ((NF4_CODE[:-1] + NF4_CODE[1:]) / F32(2)).astype(np.float32)  # f32 midpoints
    vals += [mids[i] for i in (0, 8, 12, 14)]           # the 4 that differ from CUDA's (4)
    vals += [F32(-0.0), F32(0.0), F32(-1.0)]            # (3)
    vals += [np.nextafter(t, F32(-np.inf)) for t in NF4_THRESHOLDS[:10]]  # 1 ulp below (10)
    assert len(vals) == 64, len(vals)
    return np.array(vals, dtype=np.float32) * F32(scale)


def make_cases(rng):
    cases = {}
    # [8, 64]: one block per row.
    rows = [ties_row(1.0), ties_row(0.5)[::-1].copy()]
    rows.append(np.array([0.0, -0.0] * 32, dtype=np.float32))                  # zero block
    rows.append((rng.standard_normal(64) * 0.02).astype(np.float32))           # ordinary
    r = (rng.standard_normal(64) * 0.01).astype(np.float32)
    r[17] = F32(1.0e4)                                                         # huge outlier
    rows.append(r)
    r = ties_row(1.0)
    r = (r * F32(-3.0)).astype(np.float32)                                     # absmax from -3
    rows.append(r)
    r = (rng.standard_normal(64) * 1e-30).astype(np.float32)                   # tiny + subnormals
    r[5] = F32(1e-40)
    r[6] = F32(-3e-39)
    rows.append(r)
    r = np.array([F32(1e-40) * F32(k % 7 - 3) for k in range(64)], dtype=np.float32)  # all subnormal
    rows.append(r)
    cases["ties_8x64"] = np.stack(rows).astype(np.float32)

    # [16, 96]: n = 1536 = 24 blocks; 24 absmax values (not a multiple of 256).
    scales = np.exp(rng.standard_normal((16, 1)) * 0.5) * 0.02
    cases["rand_16x96"] = (rng.standard_normal((16, 96)) * scales).astype(np.float32)

    # [3, 100]: n = 300 = 4 full blocks + a partial block of 44.
    w = (rng.standard_normal((3, 100)) * 0.05).astype(np.float32)
    w[2, 90] = F32(-0.7)
    cases["rand_3x100"] = w

    # [3, 33]: n = 99, odd: partial block of 35 and a padding nibble.
    cases["odd_3x33"] = (rng.standard_normal((3, 33)) * 0.1).astype(np.float32)

    # [64, 300]: n = 19200 = 300 blocks -> 300 absmax = one full 256-block + a partial 44.
    scales = np.exp(rng.standard_normal((64, 1)) * 0.7) * 0.02
    w = (rng.standard_normal((64, 300)) * scales).astype(np.float32)
    w[10, 7] = F32(2.5)                                                        # outlier absmax
    w[40, 0:64] = 0.0                                                          # a zero block
    cases["big_64x300"] = w

    # NaN / inf (bitsandbytes' CPU backend behaves differently here, see the docstring).
    w = (rng.standard_normal((4, 64)) * 0.1).astype(np.float32)
    w[0, 3] = np.nan
    w[0, 40] = np.nan
    w[1, 9] = np.inf
    w[2, :] = np.nan
    w[3, 0] = -np.inf
    w[3, 1] = np.nan
    cases["nonfinite_4x64"] = w
    return cases


def dyn8_input(code, rng):
    """600 values = 256 + 256 + 88 for the 8-bit path alone (blocksize 256)."""
    b0 = [F32(1.0)]                                     # absmax 1.0
    mids = [F32(F32(code[i] + code[i + 1]) * F32(0.5)) for i in range(255)]
    b0 += mids[0:255:2]                                 # exact kernel midpoints (128)
    b0 += [code[i] for i in range(0, 256, 2)]           # exact codes (128)
    b0 = b0[:255] + [np.nextafter(mids[1], F32(np.inf))]
    b1 = list((rng.standard_normal(256) * 0.3).astype(np.float32))
    b1[0] = F32(-2.0)                                   # absmax 2 (power of two)
    for k in range(1, 128, 2):                          # scaled exact midpoints
        b1[k] = F32(mids[k] * F32(2.0))
    b2 = list((rng.standard_normal(88) * 0.3).astype(np.float32))   # partial block
    b2[3] = F32(0.5)
    for k in range(4, 40):
        b2[k] = F32(mids[100 + k] * F32(0.5)) if abs(mids[100 + k]) < 1 else b2[k]
    v = np.array(b0 + b1 + b2, dtype=np.float32)
    assert v.shape == (600,)
    return v


# ------------------------------------------------------------------------------ real bnb check

def compare_with_bitsandbytes(cases, ref, dyn8, code):
    try:
        import torch
        import bitsandbytes as bnb
        import bitsandbytes.functional as BF
    except Exception as e:  # noqa: BLE001
        print(f"bitsandbytes not importable ({e}); skipping the comparison")
        return
    print(f"comparing with bitsandbytes {bnb.__version__} (CPU backend, torch {torch.__version__})")
    bmap = BF.create_dynamic_map(signed=True).numpy()
    print(f"  dynamic_map: {'equal' if (bmap.view(np.uint32) == code.view(np.uint32)).all() else 'DIFFERENT'}")

    def cmp(name, a, b):
        a = np.asarray(a).reshape(-1)
        b = np.asarray(b).reshape(-1)
        if a.shape != b.shape:
            return f"{name}: shape {a.shape} vs {b.shape}"
        if a.dtype == np.float32:
            same = (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))
        else:
            same = a == b
        d = int((~same).sum())
        return f"{name}: {'equal' if d == 0 else f'{d}/{a.size} differ'}"

    for name, w in cases.items():
        r = ref[name]
        A = torch.from_numpy(w.copy())
        packed, st = BF.quantize_4bit(A, blocksize=64, quant_type="nf4", compress_statistics=False)
        deq = BF.dequantize_4bit(packed, st).numpy()
        packed2, st2 = BF.quantize_4bit(A, blocksize=64, quant_type="nf4", compress_statistics=True)
        deq2 = BF.dequantize_4bit(packed2, st2).numpy()
        out = [cmp("packed", r["packed"], packed.numpy()), cmp("absmax", r["absmax"], st.absmax.numpy()),
               cmp("dequant", r["dequant"], deq),
               cmp("dq_offset", r["dq_offset"], np.array([st2.offset.item()], dtype=np.float32)),
               cmp("dq_codes", r["dq_codes"], st2.absmax.numpy()),
               cmp("dq_scales", r["dq_scales"], st2.state2.absmax.numpy()),
               cmp("dq_dequant", r["dq_dequant"], deq2)]
        try:  # bitsandbytes' torch reference dequantization (its CUDA/default semantics)
            from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
            from bitsandbytes.backends.utils import CODE
            deq_ref = _dequantize_4bit_compute(packed.reshape(-1), st.absmax, CODE["nf4"], 64,
                                               list(w.shape), torch.float32).numpy()
            out.append(cmp("dequant vs bnb default-backend dequant", r["dequant"], deq_ref))
        except Exception as e:  # noqa: BLE001
            out.append(f"(default-backend dequant unavailable: {e})")
        # Our 8-bit path on bitsandbytes' own offset, to separate the mean from the rest.
        off_b = F32(st2.offset.item())
        with np.errstate(all="ignore"):
            cen = np.array([F32(a - off_b) for a in r["absmax"]], dtype=np.float32)
        q_b, s_b = quantize_blockwise_8bit(cen, code, 256)
        out.append(cmp("dq_codes given bnb's offset", q_b, st2.absmax.numpy()))
        out.append(cmp("dq_scales given bnb's offset", s_b, st2.state2.absmax.numpy()))
        print(f"  {name}: " + "; ".join(out))
        if name == "ties_8x64":
            # Which nibbles differ, per row, to check they are the documented cases: row 0
            # and 1 at the 4 thresholds that are 1 ulp apart, row 2 (zero block) and row 7
            # (all subnormal, flushed to zero by CUDA) everywhere.
            a = r["packed"]
            b = packed.numpy().reshape(-1)
            nib = lambda p, i: (p[i // 2] >> 4) if i % 2 == 0 else (p[i // 2] & 0xF)
            flat = w.reshape(-1)
            rows = {}
            for i in range(flat.size):
                if nib(a, i) != nib(b, i):
                    rows.setdefault(i // 64, []).append(f"{flat[i]!r}:{nib(a, i)}/{nib(b, i)}")
            for row, items in rows.items():
                shown = ", ".join(items[:6]) + (", ..." if len(items) > 6 else "")
                print(f"      row {row}: {len(items)} codes differ (x:ours/bnb_cpu) {shown}")
    q, st = BF.quantize_blockwise(torch.from_numpy(dyn8.copy()), blocksize=256)
    print("  dyn8: " + "; ".join([cmp("codes", ref["dyn8"]["codes"], q.numpy()),
                                  cmp("scales", ref["dyn8"]["scales"], st.absmax.numpy())]))
    # Classify the 8-bit differences: exact ties (the kernels break them differently) and
    # values that are not ties, where we check that our code is the nearest one.
    q = q.numpy()
    ours, sc = ref["dyn8"]["codes"], ref["dyn8"]["scales"]
    mids = {float(F32(F32(code[i] + code[i + 1]) * F32(0.5))) for i in range(255)}
    ties = other = ours_nearer = 0
    for i in np.nonzero(q != ours)[0]:
        s = fmul_ftz(dyn8[i], recip(sc[i // 256]))
        if float(s) in mids:
            ties += 1
        else:
            other += 1
            if abs(float(s) - float(code[ours[i]])) < abs(float(s) - float(code[q[i]])):
                ours_nearer += 1
    print(f"        {ties} of the differences are exact ties; {other} are not, and for "
          f"{ours_nearer} of those our code is strictly nearer than bitsandbytes-CPU's")


def save_safetensors(tensors, path, metadata):
    """Write a .safetensors file byte-for-byte deterministically (the safetensors package
    orders its JSON header differently from run to run): header keys sorted, data in the
    same order, header padded with spaces to a multiple of 8 bytes."""
    import json
    dtypes = {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8"}
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for raw in blobs:
            f.write(raw)


# ------------------------------------------------------------------------------------- main

def main():
    if "--rust-dynamic-map" in sys.argv:
        code = dynamic_map_signed()
        words = [f"0x{int(b):08x}" for b in code.view(np.uint32)]
        for i in range(0, 256, 8):
            print("    " + ", ".join(words[i:i + 8]) + ",")
        return
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/nf4"
    import os

    rng = np.random.default_rng(20240607)
    code = dynamic_map_signed()
    cases = make_cases(rng)
    tensors = {}
    ref = {}
    for name, w in cases.items():
        flat = w.reshape(-1)
        n = flat.size
        packed, absmax = quantize_nf4(flat)
        deq = dequantize_nf4(packed, absmax, n)
        q8, scales, offset, recovered = double_quant(absmax, code)
        deq2 = dequantize_nf4(packed, recovered, n)
        r = {"packed": packed, "absmax": absmax, "dequant": deq.reshape(w.shape),
             "dq_codes": q8, "dq_scales": scales, "dq_offset": np.array([offset], dtype=np.float32),
             "dq_absmax": recovered, "dq_dequant": deq2.reshape(w.shape)}
        ref[name] = r
        tensors[f"{name}.input"] = w
        for k, v in r.items():
            tensors[f"{name}.{k}"] = np.ascontiguousarray(v)
        print(f"{name}: shape {list(w.shape)} n={n} blocks={absmax.size} "
              f"absmax-blocks={scales.size} offset={offset!r}")

    dyn8 = dyn8_input(code, rng)
    q, sc = quantize_blockwise_8bit(dyn8, code, 256)
    ref["dyn8"] = {"codes": q, "scales": sc}
    tensors["dyn8.input"] = dyn8
    tensors["dyn8.codes"] = q
    tensors["dyn8.scales"] = sc
    tensors["dyn8.dequant"] = dequantize_blockwise_8bit(q, sc, code, 256)
    tensors["nf4_code"] = NF4_CODE
    tensors["nf4_thresholds"] = NF4_THRESHOLDS
    tensors["dynamic_map"] = code

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "nf4_cases.safetensors")
    save_safetensors(tensors, path, metadata={
        "cases": ",".join(cases.keys()),
        "generator": "scripts/make_nf4_fixtures.py",
        "mirrors": "bitsandbytes CUDA kQuantizeBlockwise (NF4, blocksize 64) + "
                   "quantize_4bit(compress_statistics=True) double quantization (blocksize 256)",
    })
    print(f"wrote {path}")
    compare_with_bitsandbytes(cases, ref, dyn8, code)


if __name__ == "__main__":
    main()
