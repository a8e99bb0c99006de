"""Triton kernels for the GPU FP8 backend: the four quantizations and a block-scaled GEMM.

Imported lazily (only when a GPU backend is chosen), so CPU installs without triton never touch it. The
quantization kernels are bit-exact against quant.py: same FP32 ops in the same order, IEEE division (`div_rn`,
since Triton's `/` is approximate), the power-of-two rounding done on the bits, and the hardware's
round-to-nearest-even cast to E4M3 after clamping to +-448. The GEMM keeps one FP32 accumulator per output tile
and, for every 128-wide K block, adds `dot(a_kb, b_kb) * sa * sb`: DeepSeek-V3's promotion, so the tensor cores'
limited-precision FP8 accumulation never spans more than 128 products. Scales are read through strides, so the
column-major 1x128 scale layout that cuBLAS wants is also what these kernels write.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from posttrain.model.fp8.quant import FP8_DTYPE, TILE, ScaleMode, check_scale_mode, round_up

QUANT_ROWS_PER_PROGRAM = 32
RETILE_COLS_PER_PROGRAM = 64


@triton.jit
def _tile_scale(amax, POW2: tl.constexpr):
    s = tl.math.div_rn(tl.maximum(amax, 1e-12), 448.0)
    if POW2:
        bits = s.to(tl.int32, bitcast=True)
        rounded_up = (bits & 0x7F800000) + 0x00800000
        s = tl.where((bits & 0x007FFFFF) == 0, bits, rounded_up).to(tl.float32, bitcast=True)
    return s


@triton.jit
def _to_fp8(x, s, POW2: tl.constexpr):
    # A power-of-two scale 2^e has the exact reciprocal 2^-e (exponent field 254 - E), so the multiply gives the
    # bits of the division.
    if POW2:
        y = x * (0x7F000000 - s.to(tl.int32, bitcast=True)).to(tl.float32, bitcast=True)
    else:
        y = tl.math.div_rn(x, s)
    return tl.clamp(y, -448.0, 448.0).to(tl.float8e4nv)


@triton.jit
def _quant_1x128_kernel(
    x_ptr, q_ptr, s_ptr, M, K, stride_xm, stride_qm, stride_sm, stride_sk,
    POW2: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    pid_m, pid_k = tl.program_id(0), tl.program_id(1)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_k = pid_k * 128 + tl.arange(0, 128)
    row_mask = offs_m < M
    x_MT = tl.load(
        x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
        mask=row_mask[:, None] & (offs_k[None, :] < K),
        other=0.0,
    ).to(tl.float32)
    s_M = _tile_scale(tl.max(tl.abs(x_MT), axis=1), POW2)
    q_MT = _to_fp8(x_MT, s_M[:, None], POW2)
    tl.store(q_ptr + offs_m[:, None] * stride_qm + offs_k[None, :], q_MT, mask=row_mask[:, None])
    tl.store(s_ptr + offs_m * stride_sm + pid_k * stride_sk, s_M, mask=row_mask)


@triton.jit
def _quant_128x1_t_kernel(
    x_ptr, xs_ptr, q_ptr, s_ptr, M, K, stride_xm, stride_xsm, stride_xsk, stride_qk, stride_sk, stride_sm,
    HAS_X_SCALE: tl.constexpr, POW2: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m, pid_k = tl.program_id(0), tl.program_id(1)
    offs_m = (pid_m * 128 + tl.arange(0, 128)).to(tl.int64)
    offs_k = (pid_k * BLOCK_K + tl.arange(0, BLOCK_K)).to(tl.int64)
    in_mask = (offs_m[:, None] < M) & (offs_k[None, :] < K)
    x_TK = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=in_mask, other=0.0).to(tl.float32)
    if HAS_X_SCALE:  # re-tiling an FP8 activation: dequantize its 1x128 tiles first
        xs_ptrs = xs_ptr + offs_m[:, None] * stride_xsm + (offs_k // 128)[None, :] * stride_xsk
        x_TK = x_TK * tl.load(xs_ptrs, mask=in_mask, other=0.0)
    s_K = _tile_scale(tl.max(tl.abs(x_TK), axis=0), POW2)
    q_KT = _to_fp8(tl.trans(x_TK), s_K[:, None], POW2)
    tl.store(q_ptr + offs_k[:, None] * stride_qk + offs_m[None, :], q_KT)
    tl.store(s_ptr + offs_k * stride_sk + pid_m * stride_sm, s_K)


@triton.jit
def _quant_128x128_kernel(
    w_ptr, q_ptr, qt_ptr, s_ptr, N, K, stride_wn, stride_qn, stride_qtk, stride_sn, stride_sk,
    POW2: tl.constexpr, WRITE_T: tl.constexpr,
):  # fmt: skip
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    offs_n = (pid_n * 128 + tl.arange(0, 128)).to(tl.int64)
    offs_k = (pid_k * 128 + tl.arange(0, 128)).to(tl.int64)
    in_mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    w_TT = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :], mask=in_mask, other=0.0).to(tl.float32)
    s = _tile_scale(tl.max(tl.max(tl.abs(w_TT), axis=1), axis=0), POW2)
    q_TT = _to_fp8(w_TT, s, POW2)
    tl.store(q_ptr + offs_n[:, None] * stride_qn + offs_k[None, :], q_TT)
    if WRITE_T:
        # Transpose the FP32 tile and quantize it again (same bits, elementwise) rather than transposing FP8.
        tl.store(qt_ptr + offs_k[:, None] * stride_qtk + offs_n[None, :], _to_fp8(tl.trans(w_TT), s, POW2))
    tl.store(s_ptr + pid_n * stride_sn + pid_k * stride_sk, s)


@triton.jit
def _gemm_kernel(
    a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, bias_ptr, M, N, K,
    stride_am, stride_bn, stride_cm, stride_asm, stride_ask, stride_bsn, stride_bsk,
    B_SCALE_ROWS: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grouped launch order: GROUP_M row tiles share their B tiles in L2.
    pid = tl.program_id(0)
    num_pid_m, num_pid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    first_pid_m = (pid // (GROUP_M * num_pid_n)) * GROUP_M
    group_rows = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % (GROUP_M * num_pid_n)) % group_rows
    pid_n = (pid % (GROUP_M * num_pid_n)) // group_rows

    # Rows past M (columns past N) wrap around instead of being masked, so the loads in the K loop stay unmasked;
    # only the store is masked. The wrapper keeps every offset within int32.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_m, cols_n = offs_m % M, offs_n % N
    offs_k = tl.arange(0, 128)
    a_ptrs = a_ptr + rows_m[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + cols_n[None, :] * stride_bn + offs_k[:, None]
    as_ptrs = as_ptr + rows_m * stride_asm
    bs_ptrs = bs_ptr + (cols_n // B_SCALE_ROWS) * stride_bsn

    acc_MN = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, 128)):
        a_MT = tl.load(a_ptrs)
        b_TN = tl.load(b_ptrs)
        sa_M = tl.load(as_ptrs + kb * stride_ask)
        sb_N = tl.load(bs_ptrs + kb * stride_bsk)
        acc_MN += tl.dot(a_MT, b_TN) * sa_M[:, None] * sb_N[None, :]
        a_ptrs += 128
        b_ptrs += 128
    if HAS_BIAS:
        acc_MN += tl.load(bias_ptr + cols_n)[None, :]
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc_MN.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "GROUP_M": 8}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
]
_gemm_kernel_tuned = triton.autotune(configs=_GEMM_CONFIGS, key=["M", "N", "K", "B_SCALE_ROWS", "HAS_BIAS"])(
    _gemm_kernel
)
# The interpreter (TRITON_INTERPRET=1, CPU tensors) cannot time configs: it gets this one.
_FIXED_GEMM_META = {"BLOCK_M": 64, "BLOCK_N": 64, "GROUP_M": 8}


def _column_major(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """FP32 [rows, cols] with strides (1, rows): the scale layout cuBLAS reads for 1x128 tiles."""
    return torch.empty(cols, rows, dtype=torch.float32, device=device).t()


class TritonOps:
    """The GPU backend: Triton quantization (bit-exact with quant.py) and the Triton block-scaled GEMM."""

    name = "triton"

    def quantize_1x128(self, x_MK: torch.Tensor, scale: ScaleMode) -> tuple[torch.Tensor, torch.Tensor]:
        """[M, K] -> q [M, Kp], s [M, Kp/128] (column-major)."""
        check_scale_mode(scale)
        x_MK = x_MK.contiguous()
        m, k = x_MK.shape
        q = torch.empty(m, round_up(k), dtype=FP8_DTYPE, device=x_MK.device)
        s = _column_major(m, q.shape[1] // TILE, x_MK.device)
        if m:
            grid = (triton.cdiv(m, QUANT_ROWS_PER_PROGRAM), q.shape[1] // TILE)
            _quant_1x128_kernel[grid](
                x_MK, q, s, m, k, x_MK.stride(0), q.stride(0), s.stride(0), s.stride(1),
                POW2=scale == "pow2", BLOCK_M=QUANT_ROWS_PER_PROGRAM, num_warps=4,
            )  # fmt: skip
        return q, s

    def quantize_1x128_t(
        self, x_MK: torch.Tensor, scale: ScaleMode, x_scale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[M, K] -> q [Kp, Mp], s [Kp, Mp/128] (column-major); with x_scale, x is FP8 1x128 to re-tile."""
        check_scale_mode(scale)
        x_MK = x_MK.contiguous()
        m, k = x_MK.shape
        mp, kp = round_up(m), round_up(k)
        q = torch.empty(kp, mp, dtype=FP8_DTYPE, device=x_MK.device)
        s = _column_major(kp, mp // TILE, x_MK.device)
        xs = x_scale if x_scale is not None else s  # any tensor: the pointer is unused without HAS_X_SCALE
        if mp:
            grid = (mp // TILE, kp // RETILE_COLS_PER_PROGRAM)
            _quant_128x1_t_kernel[grid](
                x_MK, xs, q, s, m, k, x_MK.stride(0), xs.stride(0), xs.stride(1), q.stride(0), s.stride(0),
                s.stride(1), HAS_X_SCALE=x_scale is not None, POW2=scale == "pow2",
                BLOCK_K=RETILE_COLS_PER_PROGRAM, num_warps=4,
            )  # fmt: skip
        return q, s

    def quantize_128x128(
        self, w_NK: torch.Tensor, scale: ScaleMode, with_t: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """[N, K] -> q [Np, Kp], s [Np/128, Kp/128], q^T [Kp, Np] when with_t (one pass over w)."""
        check_scale_mode(scale)
        w_NK = w_NK.contiguous()
        n, k = w_NK.shape
        np_, kp = round_up(n), round_up(k)
        q = torch.empty(np_, kp, dtype=FP8_DTYPE, device=w_NK.device)
        q_t = torch.empty(kp, np_, dtype=FP8_DTYPE, device=w_NK.device) if with_t else None
        s = torch.empty(np_ // TILE, kp // TILE, dtype=torch.float32, device=w_NK.device)
        if np_ and kp:
            _quant_128x128_kernel[(np_ // TILE, kp // TILE)](
                w_NK, q, q if q_t is None else q_t, s, n, k, w_NK.stride(0), q.stride(0),
                kp if q_t is None else q_t.stride(0), s.stride(0), s.stride(1),
                POW2=scale == "pow2", WRITE_T=with_t, num_warps=8,
            )  # fmt: skip
        return q, s, q_t

    def gemm(
        self,
        a_q: torch.Tensor,
        a_s: torch.Tensor,
        b_q: torch.Tensor,
        b_s: torch.Tensor,
        out_dtype: torch.dtype,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Block-scaled GEMM, same contract as gemm.gemm_reference: a [M, K] 1x128, b [N, K] 128x128 or 1x128."""
        (m, k), n = a_q.shape, b_q.shape[0]
        assert a_q.stride(1) == 1 and b_q.stride(1) == 1, "both FP8 operands must be contiguous along K"
        assert k % TILE == 0 and b_q.shape[1] == k
        assert max(a_q.numel(), b_q.numel(), m * n) < 2**31, "the GEMM kernel indexes with int32 offsets"
        c = torch.empty(m, n, dtype=out_dtype, device=a_q.device)
        if m == 0 or n == 0:
            return c
        bias = bias.float().contiguous() if bias is not None else None
        b_scale_rows = 1 if b_s.shape[0] == n else TILE
        args = (
            a_q, b_q, c, a_s, b_s, bias if bias is not None else c, m, n, k,
            a_q.stride(0), b_q.stride(0), c.stride(0), a_s.stride(0), a_s.stride(1), b_s.stride(0), b_s.stride(1),
        )  # fmt: skip
        flags = {"B_SCALE_ROWS": b_scale_rows, "HAS_BIAS": bias is not None}
        if a_q.is_cuda:
            grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
            _gemm_kernel_tuned[grid](*args, **flags)
        else:
            meta = _FIXED_GEMM_META
            grid = (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
            _gemm_kernel[grid](*args, **flags, **meta)
        return c
