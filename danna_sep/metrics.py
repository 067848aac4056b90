"""Separation metrics: the MDX "global" SDR and museval-compatible BSSEval v4 (SDR / ISR / SIR / SAR).

Two different numbers are both called "SDR" in the literature (see ``peers.md`` §0):

* :func:`global_sdr` — MDX 2021 / SDX 2023 / demucs ``nsdr``: one energy ratio per source over the whole signal.
* :func:`bss_sdr` — museval 0.4.1 ``evaluate(..., mode="v4")``, the SiSEC18 / MUSDB18 headline metric:
  512-tap time-invariant distortion filters fitted once per track, then SDR/ISR/SIR/SAR on 1 s windows, NaN for
  frames where any reference or estimate is silent. Summarise with :func:`aggregate_frames` (median over frames)
  and :func:`aggregate_tracks` (median over tracks).

:func:`bss_sdr` follows museval's definitions exactly (framing, silent frames, the projection of each frame's
*truncated* references through the filters, energies over the frame plus the filter tail) but computes them
differently: all correlations in one blocked FFT pass; the filters from the block-Toeplitz normal equations by a
batched block Levinson recursion (checked, with a dense fallback) instead of one dense LU per source; every frame's
projection and energy in the frequency domain (Parseval), batched over sources, channels and frames.

SDR does not depend on the filters at all (``Σ s² / Σ (ŝ − s)²`` per frame). ISR, SIR and SAR do, through the
solution of ``G C = D`` with ``G`` the Gram matrix of 512 delayed copies of every reference channel. When the
references have an empty band (e.g. AAC-decoded MUSDB18, nothing above 16 kHz) ``G`` is singular to machine
precision: then SDR and SAR are still well defined and match museval, but museval's own ISR and SIR are set by
rounding (a 1e-13 relative change of the input moves them by tens of dB), so no implementation reproduces them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray

FILTERS_LEN = 512
"""Length of the BSSEval distortion filters (museval ``filters_len``)."""

_GLOBAL_SDR_DELTA = 1e-7  # MDX 2021 scoring constant
_CHUNK_BYTES = 128 << 20  # memory budget for the spectra of one chunk of blocks or frames
_CORR_BLOCK_FFT = 1 << 14  # FFT size of the blocked correlation pass
_LEVINSON_BACKWARD_ERROR = 1e-11  # above this, a Levinson solution is replaced by a dense solve
_CALLER_THREADS: ContextVar[int] = ContextVar("bss_sdr_caller_threads", default=1)  # for the dense fallback


# --------------------------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------------------------
def _to_tensor(x: ArrayLike, name: str) -> Tensor:
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        try:
            t = torch.from_numpy(np.asarray(x))
        except TypeError as err:  # object arrays, strings, ...
            raise ValueError(f"{name} must be a numeric tensor or array, got {type(x).__name__}") from err
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int16, torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t.to(torch.float64)


def _check_pair(
    references: ArrayLike, estimates: ArrayLike, ndims: Sequence[int], layout: str, finite: bool = True
) -> tuple[Tensor, Tensor]:
    ref = _to_tensor(references, "references")
    est = _to_tensor(estimates, "estimates").to(ref.device)
    for name, t in (("references", ref), ("estimates", est)):
        if t.dim() not in ndims:
            raise ValueError(f"{name} must have shape {layout}, got {tuple(t.shape)} ({t.dim()} dimensions)")
    if ref.shape != est.shape:
        raise ValueError(
            f"references and estimates must have the same shape {layout}, got {tuple(ref.shape)} and {tuple(est.shape)}"
        )
    if ref.numel() == 0:
        raise ValueError(f"references and estimates are empty: shape {tuple(ref.shape)}")
    for name, t in (("references", ref), ("estimates", est)) if finite else ():
        if not bool(torch.isfinite(t.sum())):  # one cheap pass; NaN and inf propagate into the sum
            if bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} have samples too large to evaluate (max |x| = {t.abs().max().item():.3g})")
            raise ValueError(f"{name} contain NaN or infinite samples")
    return ref, est


# --------------------------------------------------------------------------------------------------------------------
# MDX global SDR
# --------------------------------------------------------------------------------------------------------------------
def global_sdr(references: ArrayLike, estimates: ArrayLike) -> ArrayLike:
    """MDX 2021 SDR: ``10·log10((Σ s² + 1e-7) / (Σ (s − ŝ)² + 1e-7))`` over all channels and samples.

    Args:
        references, estimates: ``(..., sources, channels, samples)``, e.g. ``(sources, channels, samples)`` or
            ``(batch, sources, channels, samples)``; tensors (any device) or arrays.
    Returns:
        ``(..., sources)`` in dB, float64: a tensor on the references' device if ``references`` is a tensor, else
        a numpy array. Computed in float64 so long tracks do not lose precision in the sums. NaN samples give NaN
        (no check, so a training loop on an accelerator never waits on one).
    """
    ref, est = _check_pair(references, estimates, range(3, 16), "(..., sources, channels, samples)", finite=False)
    num = ref.square().sum((-2, -1)) + _GLOBAL_SDR_DELTA
    den = (ref - est).square().sum((-2, -1)) + _GLOBAL_SDR_DELTA
    sdr = 10.0 * torch.log10(num / den)
    return sdr if isinstance(references, Tensor) else sdr.cpu().numpy()


# --------------------------------------------------------------------------------------------------------------------
# BSSEval v4
# --------------------------------------------------------------------------------------------------------------------
def num_frames(samples: int, win: int = 44100, hop: int = 44100) -> int:
    """Number of BSSEval frames for a signal of ``samples`` samples (museval ``Framing.nwin``).

    Frames start every ``hop`` samples and are ``win`` long; trailing samples that do not fill a frame are not
    evaluated. A signal no longer than ``win`` is one frame covering all of it.
    """
    if win < samples:
        return (samples - win + hop) // hop
    return 1


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer ≥ n (a fast FFT size)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _correlations(x: Tensor, y: Tensor, filters_len: int) -> Tensor:
    """Cross-correlations of the references with the references and the estimates, in one blocked FFT pass.

    Args:
        x: references ``(M, samples)``; y: estimates ``(M, samples)``.
    Returns:
        ``(M, 2M, 2·F − 1)``: ``[p, q, k + F − 1] = Σ_n x_p[n + k] · z_q[n]`` for ``|k| < F`` where ``z = [x; y]``.
        Exact linear correlations (no circular wrap) like museval's whole-track FFTs, but in blocks so that memory
        stays bounded on long tracks.
    """
    m, length = x.shape
    pad = filters_len - 1
    n_fft = _CORR_BLOCK_FFT
    while n_fft < 4 * (2 * pad + 1):
        n_fft *= 2
    if length + 2 * pad <= n_fft:  # short signal: a single block of just the size needed
        n_fft = _fast_len(length + 2 * pad)
    block = n_fft - 2 * pad
    n_blocks = -(-length // block)
    bins = n_fft // 2 + 1

    # Block b of z covers [b·block, (b+1)·block); the matching block of x is extended by `pad` on both sides, so
    # irfft(X_ext · conj(Z))[k + pad] = Σ_n x[n + k] z[n] over that block, without wrap-around. Blocks are cut
    # from a zero-padded copy of one chunk of blocks at a time.
    per_chunk = min(n_blocks, max(1, _CHUNK_BYTES // (16 * bins * 4 * m)))
    chunk = x.new_empty(2 * m, per_chunk * block + 2 * pad)
    # Spectra are written bin-major, (bins, signals, blocks), each complex value as (re, im) along the blocks, so
    # the sum over blocks is one real batched matmul over bins (torch's complex bmm loops over the batch on CPU):
    # Re(U Zᴴ) = [Ur Ui]·[Zr Zi]ᵀ and Im(U Zᴴ) = [Ui −Ur]·[Zr Zi]ᵀ, with [Ui −Ur] the spectrum of U times −i.
    u_pool = x.new_empty(bins * 2 * m * per_chunk * 2)
    v_pool = x.new_empty(bins * 2 * m * per_chunk * 2)
    acc = x.new_zeros(bins, 2 * m, 2 * m)  # [Re; Im] of Σ_blocks X_ext · conj(Z)ᵀ per bin
    for b0 in range(0, n_blocks, per_chunk):
        nb = min(n_blocks, b0 + per_chunk) - b0
        start, stop = b0 * block - pad, (b0 + nb) * block + pad  # samples held by this chunk
        lo, hi = max(start, 0), min(stop, length)
        buf = chunk[:, : stop - start]
        buf[:, : lo - start] = 0
        buf[:m, lo - start : hi - start] = x[:, lo:hi]
        buf[m:, lo - start : hi - start] = y[:, lo:hi]
        buf[:, hi - start :] = 0
        ext = buf[:m].unfold(-1, block + 2 * pad, block)  # (m, nb, block + 2·pad)
        plain = buf[:, pad : pad + nb * block].unflatten(-1, (nb, block))  # (2m, nb, block)
        u = u_pool[: bins * 2 * m * nb * 2].view(bins, 2 * m, 2 * nb)
        v = v_pool[: bins * 2 * m * nb * 2].view(bins, 2 * m, 2 * nb)
        uc = torch.view_as_complex(u.view(bins, 2 * m, nb, 2)).permute(1, 2, 0)  # (2m, nb, bins) views
        vc = torch.view_as_complex(v.view(bins, 2 * m, nb, 2)).permute(1, 2, 0)
        torch.fft.rfft(ext, n=n_fft, out=uc[:m])
        torch.mul(uc[:m], -1j, out=uc[m:])
        torch.fft.rfft(plain, n=n_fft, out=vc)
        acc.baddbmm_(u, v.transpose(1, 2))
    spec = torch.complex(acc[:, :m], acc[:, m:])  # (bins, m, 2m)
    return torch.fft.irfft(spec.permute(1, 2, 0), n=n_fft)[..., : 2 * pad + 1]


@contextmanager
def _num_threads(n: int):
    """Run torch's CPU ops on ``n`` threads inside the block (restored afterwards; process-wide while it runs)."""
    old = torch.get_num_threads()
    if old == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _block_levinson(r: Tensor, d: Tensor) -> Tensor:
    """Solve symmetric block-Toeplitz systems ``T x = d`` by the block Levinson (Whittle) recursion, O(F² M³).

    Args:
        r: ``(batch, 2F − 1, M, M)`` blocks, ``r[:, k + F − 1] = R[k]`` with ``T[a, b] = R[b − a]`` and
            ``R[−k] = R[k]ᵀ``; d: ``(batch, F, M, rhs)``.
    Returns:
        x ``(batch, F, M, rhs)``.

    The forward (``f``) and backward (``b``) predictors of the leading n×n block system are extended one block per
    step; the backward one updates the solution. Blocks are stacked along rows so every sum over lags is one
    contiguous matmul: ``rcat[:, :, (k + F − 1)·M : (k + F)·M] = R[k]``, ``f`` grows from the top of its buffer and
    ``b`` from the bottom, so ``[f; 0]`` and ``[0; b]`` are plain slices.
    """
    bsz, n_lags, m, _ = r.shape
    taps = (n_lags + 1) // 2
    rcat = r.permute(0, 2, 1, 3).reshape(bsz, m, n_lags * m)
    f = r.new_zeros(bsz, taps * m, m)
    b = r.new_zeros(bsz, taps * m, m)
    x = r.new_zeros(bsz, taps * m, d.shape[-1])
    eye = torch.eye(m, dtype=r.dtype, device=r.device)
    f[:, :m] = eye
    b[:, -m:] = eye
    e_f = r[:, taps - 1].clone()  # prediction error matrices of the forward and backward predictors
    e_b = e_f.clone()
    x[:, :m] = torch.linalg.solve_ex(e_f, d[:, 0])[0]
    for n in range(1, taps):
        r_neg = rcat[:, :, (taps - 1 - n) * m : (taps - 1) * m]  # R[−n] … R[−1]
        delta_f = r_neg @ f[:, : n * m]  # last block row of T_{n+1} [f; 0]
        err_x = r_neg @ x[:, : n * m]  # last block row of T_{n+1} [x; 0]
        delta_b = rcat[:, :, taps * m : (taps + n) * m] @ b[:, (taps - n) * m :]  # first block row of T_{n+1} [0; b]
        alpha = torch.linalg.solve_ex(e_b, delta_f)[0].neg_()
        beta = torch.linalg.solve_ex(e_f, delta_b)[0].neg_()
        f_seg = f[:, : (n + 1) * m]
        b_seg = b[:, (taps - n - 1) * m :]
        u = b_seg @ alpha
        b_seg += f_seg @ beta
        f_seg += u
        e_f = e_f + delta_b @ alpha
        e_b = e_b + delta_f @ beta
        x[:, : (n + 1) * m] += b_seg @ torch.linalg.solve_ex(e_b, d[:, n] - err_x)[0]
    return x.reshape(bsz, taps, m, -1)


def _block_toeplitz_matmul(r: Tensor, x: Tensor) -> Tensor:
    """``T x`` for the block-Toeplitz ``T`` of :func:`_block_levinson`, by FFT. r ``(batch, 2F−1, M, M)``,
    x ``(batch, F, M, rhs)`` → ``(batch, F, M, rhs)``."""
    taps = x.shape[1]
    n_fft = _fast_len(3 * taps - 2)
    # (T x)[a] = Σ_b r[b − a + F − 1] x[b] = (flip(r) ∗ x)[a + F − 1]
    rf = torch.fft.rfft(r.flip(1), n=n_fft, dim=1)
    xf = torch.fft.rfft(x, n=n_fft, dim=1)
    return torch.fft.irfft(rf @ xf, n=n_fft, dim=1)[:, taps - 1 : 2 * taps - 1]


def _solve_dense(a: Tensor, b: Tensor) -> Tensor:
    """Solve ``a x = b`` densely, as museval does: LU, and least squares if ``a`` is exactly singular.

    Only reached for systems that Levinson could not solve accurately, i.e. numerically singular Gram matrices,
    where a Cholesky attempt would mostly fail after costing a good part of an LU. Dense factorisations are
    compute-bound, so they get the caller's threads back.
    """
    with _num_threads(_CALLER_THREADS.get()):
        x, info = torch.linalg.solve_ex(a, b)
        if not bool((info != 0).any()):
            return x
        return torch.linalg.lstsq(a, b).solution


def _dense_block_toeplitz(r: Tensor) -> Tensor:
    """The dense matrices of block-Toeplitz ``r (batch, 2F − 1, M, M)`` → ``(batch, F·M, F·M)``, lag-major."""
    taps = (r.shape[1] + 1) // 2
    m = r.shape[-1]
    lag = torch.arange(taps, device=r.device)
    dense = r[:, lag[None, :] - lag[:, None] + taps - 1]  # (batch, F a, F b, M p, M q) = R[b − a][p, q]
    return dense.permute(0, 1, 3, 2, 4).reshape(-1, taps * m, taps * m)


def _levinson_checked(r: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`_block_levinson`, and per batch item whether its solution is accurate.

    Unlike Cholesky or LU, Levinson's backward error can grow with the condition number of ``T``. A solution is
    kept where the normwise backward error ``‖T x − d‖ / (‖T‖ ‖x‖ + ‖d‖)`` is at rounding level, which bounds the
    error of every projection energy; elsewhere (in practice numerically singular Gram matrices, from references
    with an empty band) the caller solves densely. For a singular ``G`` any solution with a small backward error is
    as good as museval's own: SDR and SAR agree, ISR and SIR are arbitrary in both.
    """
    x = _block_levinson(r, d)
    taps = d.shape[1]
    lags = torch.arange(r.shape[1], device=r.device) - (taps - 1)
    t_norm = ((taps - lags.abs()).to(r.dtype) * r.square().sum((-2, -1))).sum(1).sqrt()  # ‖T‖_F
    resid = (_block_toeplitz_matmul(r, x) - d).flatten(1).norm(dim=1)
    scale = t_norm * x.flatten(1).norm(dim=1) + d.flatten(1).norm(dim=1)
    # (a finite but huge x can overflow both norms: inf ≤ inf must not pass)
    ok = torch.isfinite(scale) & (resid <= _LEVINSON_BACKWARD_ERROR * scale)
    return x, ok


def _distortion_filters(x: Tensor, y: Tensor, n_src: int, filters_len: int) -> tuple[Tensor, Tensor]:
    """Time-invariant distortion filters, fitted once on the whole track (BSSEval v4).

    Args:
        x, y: references and estimates ``(sources · channels, samples)``.
    Returns:
        ``c (sources_est, sources_ref, channels_in, channels_out, taps)``: least-squares filters projecting each
        estimate on all delayed reference channels (interference subspace); ``cj (sources, channels_in,
        channels_out, taps)``: the same on its own reference only (spatial distortion subspace).

    museval solves ``(G + eps·I) C = D`` with the Gram matrix ``G[(p, a), (q, b)] = <x_p(· − a), x_q(· − b)>``
    of the delayed reference channels and ``D[(p, a), r] = <x_p(· − a), y_r>``. ``G`` is block Toeplitz in the
    lag: ordered lag-major, its block ``(a, b)`` is ``R[b − a]`` with ``R[k][p, q] = rxx[p, q, k]``. The
    own-reference systems are the same with the cross-source entries of ``R`` and ``D`` zeroed (block diagonal,
    so they decouple exactly); both go through one batched Levinson recursion.
    """
    m = x.shape[0]
    n_chan = m // n_src
    taps = filters_len
    corr = _correlations(x, y, taps)
    rxx = corr[:, :m]
    # rxx[p, q, k] and rxx[q, p, −k] are the same sum computed twice: average them so that R[−k] = R[k]ᵀ exactly
    rxx = 0.5 * (rxx + rxx.transpose(0, 1).flip(-1))
    blocks = rxx.permute(2, 0, 1).contiguous()  # (2F − 1, M, M): R[k] at k + F − 1
    blocks[taps - 1].diagonal().add_(torch.finfo(torch.float64).eps)  # museval regularises with eps·I
    # D[a, p, r] = Σ_n x_p[n − a] y_r[n]: lag −a of corr[p, M + r]
    rhs = corr[:, m:, :taps].flip(-1).permute(2, 0, 1)  # (F, M ref, M est)

    src_of = torch.arange(m, device=x.device) // n_chan
    own = (src_of[:, None] == src_of[None, :]).to(blocks.dtype)
    if n_src == 1:
        r_all, d_all = blocks[None], rhs[None]
    else:
        r_all, d_all = torch.stack([blocks, blocks * own]), torch.stack([rhs, rhs * own])
    sol, ok = _levinson_checked(r_all, d_all)
    if not bool(ok[0]):
        sol[0] = _solve_dense(_dense_block_toeplitz(r_all[:1]), d_all[:1].reshape(1, taps * m, m)).reshape(sol[0].shape)
    if n_src > 1 and not bool(ok[1]):
        # the own-reference systems, separately: n_src dense systems of F·channels instead of one of F·M
        groups = [slice(j * n_chan, (j + 1) * n_chan) for j in range(n_src)]
        r_own = torch.stack([blocks[:, g, g] for g in groups])
        d_own = torch.stack([rhs[:, g, g] for g in groups])
        sol_own = _solve_dense(_dense_block_toeplitz(r_own), d_own.reshape(n_src, taps * n_chan, n_chan))
        sol_own = sol_own.reshape(n_src, taps, n_chan, n_chan)
        sol[1].zero_()
        for j, g in enumerate(groups):
            sol[1][:, g, g] = sol_own[j]

    # (F, M ref = (source, ch_in), M est = (source', ch_out)) → (source', source, ch_in, ch_out, F)
    c = sol[0].reshape(taps, n_src, n_chan, n_src, n_chan).permute(3, 1, 2, 4, 0)
    if n_src == 1:
        # the same system as above; reusing its solution keeps the interference exactly zero, as in museval
        return c, c[:, 0]
    cj = sol[1].reshape(taps, n_src, n_chan, n_src, n_chan).diagonal(dim1=1, dim2=3)  # (F, ch_in, ch_out, source)
    return c, cj.permute(3, 1, 2, 0)


def _frame_energies(x_frames: Tensor, y_frames: Tensor, c: Tensor, cj: Tensor) -> Tensor:
    """Energies of museval's decomposition, for every source and frame.

    Args:
        x_frames, y_frames: references and estimates cut in frames ``(sources · channels, frames, frame_len)``.
        c, cj: filters from :func:`_distortion_filters`.
    Returns:
        ``(7, sources, frames)``: ``Σ s²``, ``Σ (ŝ − s)²``, ``Σ e_spat²``, ``Σ (s + e_spat)²``, ``Σ e_interf²``,
        ``Σ (s + e_spat + e_interf)²``, ``Σ e_artif²``, each summed over channels and the frame plus filter tail.

    museval projects each frame's references, zero outside the frame, through the filters: a linear convolution
    of ``frame_len + F − 1`` samples, exact in an rfft of ``n_fft ≥`` that, so every energy it sums in time over
    that span follows from the spectra by Parseval, without inverse transforms.
    """
    n_src, _, n_chan, _, taps = c.shape
    m, n_frames, frame_len = x_frames.shape
    n_fft = _fast_len(frame_len + taps - 1)
    bins = n_fft // 2 + 1
    # transfer matrices per bin: all references (bins, (source, ch_out), (source', ch_in)) and own reference
    # (bins, source, ch_out, ch_in)
    cf = torch.fft.rfft(c, n=n_fft).permute(4, 0, 3, 1, 2).reshape(bins, m, m)
    cjf = torch.fft.rfft(cj, n=n_fft).permute(3, 0, 2, 1).contiguous()

    def energy(z: Tensor) -> Tensor:  # spectra (bins, m, t) → Σ over the n_fft samples of the signal², (m, t)
        zr = torch.view_as_real(z).flatten(1)  # (bins, m·t·2)
        e = 2.0 * torch.linalg.vecdot(zr, zr, dim=0)  # (a reduction over the leading dim that vectorises well)
        # Parseval for an rfft: every bin counts twice except DC and (even n_fft) Nyquist
        e -= zr[0].square()
        if n_fft % 2 == 0:
            e -= zr[-1].square()
        return e.view(m, -1, 2).sum(-1) / n_fft

    # Spectra bin-major, (bins, m, frames), so each projection is one batched matmul. Memory-bound work: the
    # buffers are allocated once and reused by every chunk of frames (fresh large allocations cost page faults).
    frames_per_chunk = min(n_frames, max(1, _CHUNK_BYTES // (16 * bins * m * 5)))
    pool = torch.empty(5, bins * m * frames_per_chunk, dtype=torch.complex128, device=x_frames.device)
    out = []
    for t0 in range(0, n_frames, frames_per_chunk):
        xs = x_frames[:, t0 : t0 + frames_per_chunk]
        ys = y_frames[:, t0 : t0 + frames_per_chunk]
        t = xs.shape[1]
        spec = pool[0, : bins * m * t].view(m, t, bins)
        xf, yf, p_all, p_own = (pool[i, : bins * m * t].view(bins, m, t) for i in range(1, 5))
        e_true = torch.linalg.vector_norm(xs, dim=-1).square()
        e_dist = torch.linalg.vector_norm(ys - xs, dim=-1).square()
        xf.copy_(torch.fft.rfft(xs, n=n_fft, out=spec).permute(2, 0, 1))
        yf.copy_(torch.fft.rfft(ys, n=n_fft, out=spec).permute(2, 0, 1))
        torch.matmul(cf, xf, out=p_all)  # each estimate projected on all references
        e_all = energy(p_all)  # s_true + e_spat + e_interf
        e_artif = energy(yf.sub_(p_all))
        if n_src == 1:  # own reference = all references: no interference, exactly
            e_own, e_spat, e_interf = e_all, energy(torch.sub(p_all, xf, out=xf)), torch.zeros_like(e_all)
        else:  # ... and on its own reference only
            torch.matmul(cjf, xf.view(bins, n_src, n_chan, t), out=p_own.view(bins, n_src, n_chan, t))
            e_own = energy(p_own)  # s_true + e_spat
            e_spat = energy(torch.sub(p_own, xf, out=xf))
            e_interf = energy(torch.sub(p_all, p_own, out=p_own))
        e = torch.stack([e_true, e_dist, e_spat, e_own, e_interf, e_all, e_artif])  # (7, m, t)
        out.append(e.view(7, n_src, n_chan, t).sum(2))
    return torch.cat(out, -1)


def _safe_db(num: Tensor, den: Tensor) -> Tensor:
    """``10·log10(num / den)``, +inf where ``den == 0`` (museval ``_safe_db``)."""
    out = 10.0 * torch.log10(num / den)
    return torch.where(den == 0, torch.full_like(out, float("inf")), out)


def bss_sdr(
    references: ArrayLike,
    estimates: ArrayLike,
    win: int = 44100,
    hop: int = 44100,
    filters_len: int = FILTERS_LEN,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BSSEval v4 image metrics, numerically equal to ``museval.evaluate(refs, ests, win, hop, mode="v4")``.

    Equal to rounding for SDR and SAR always, and for ISR and SIR whenever the references' Gram matrix is not
    singular to machine precision (see the module docstring for band-limited references).

    Args:
        references, estimates: ``(sources, channels, samples)`` tensors or arrays (museval's layout is
            ``(sources, samples, channels)``: transpose before comparing). Same length: pad or crop beforehand.
        win, hop: frame length and hop in samples (1 s at 44.1 kHz is the SiSEC convention).
        filters_len: distortion filter taps (museval's fixed 512; smaller only for experiments).
    Returns:
        ``(sdr, isr, sir, sar)``, each a float64 array ``(sources, frames)`` in dB with ``frames =
        num_frames(samples, win, hop)``. A frame is NaN for every source when any reference or estimate is silent in
        it (all channels summing to exactly zero at every sample). A source that is silent over the whole track
        makes museval raise; here it makes every frame NaN, which is what its framewise rule gives.
        A zero error energy gives +inf (museval ``_safe_db``).

    Runs on one CPU thread, float64 throughout: the work is thousands of tiny ops (the Levinson recursion) and
    memory-bound FFTs and elementwise passes, where extra threads mostly spin (one thread measured 2× faster in
    wall time on 2 busy cores); only a dense fallback solve uses the caller's threads. Parallelise over tracks.
    """
    ref, est = _check_pair(references, estimates, (3,), "(sources, channels, samples)")
    for name, v in (("win", win), ("hop", hop), ("filters_len", filters_len)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer number of samples, got {v!r}")
    token = _CALLER_THREADS.set(torch.get_num_threads())
    try:
        with _num_threads(1):
            out = _bss_eval_v4(ref, est, int(win), int(hop), int(filters_len))
    finally:
        _CALLER_THREADS.reset(token)
    values = out.cpu().numpy()
    return values[0], values[1], values[2], values[3]


def _bss_eval_v4(ref: Tensor, est: Tensor, win: int, hop: int, taps: int) -> Tensor:
    """:func:`bss_sdr` on validated float64 ``(sources, channels, samples)`` → ``(4, sources, frames)``."""
    n_src, n_chan, length = ref.shape
    m = n_src * n_chan
    device = ref.device

    # museval framing: frames start every hop, are `win` long, and a signal shorter than win is one frame
    frame_len = win if win < length else length
    n_frames = num_frames(length, win, hop)

    # silence rule (museval _any_source_silent on the frame): all channels sum to exactly zero at every sample
    silent = torch.zeros(n_frames, dtype=torch.bool, device=device)
    for sig in (ref, est):
        silent |= ~(sig.sum(1) != 0).unfold(-1, frame_len, hop).any(-1).all(0)
    if bool(silent.all()):  # e.g. a source silent over the whole track: nothing to evaluate (and G is singular)
        return torch.full((4, n_src, n_frames), float("nan"), dtype=torch.float64, device=device)

    x = ref.reshape(m, length)
    y = est.reshape(m, length)
    c, cj = _distortion_filters(x, y, n_src, taps)

    e_true, e_dist, e_spat, e_own, e_interf, e_all, e_artif = _frame_energies(
        x.unfold(-1, frame_len, hop), y.unfold(-1, frame_len, hop), c, cj
    )
    sdr = _safe_db(e_true, e_dist)
    isr = _safe_db(e_true, e_spat)
    sir = _safe_db(e_own, e_interf)
    sar = _safe_db(e_all, e_artif)
    out = torch.stack([sdr, isr, sir, sar])
    out[:, :, silent] = float("nan")
    return out


# --------------------------------------------------------------------------------------------------------------------
# aggregation and museval's per-track JSON
# --------------------------------------------------------------------------------------------------------------------
def _as_float64(values: ArrayLike) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().to(torch.float64).numpy().copy()
    return np.array(values, dtype=np.float64)


def _nanmedian(values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # an all-NaN row is a legitimate NaN result, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=axis)


def aggregate_frames(values: ArrayLike) -> np.ndarray:
    """museval's per-track score: median over frames, ignoring NaN (silent) frames.

    ±inf frames are ignored too, because museval stores them as NaN before aggregating (``TrackStore._q``).

    Args:
        values: ``(sources, frames)`` (or ``(frames,)``), e.g. one of :func:`bss_sdr`'s outputs.
    Returns:
        ``(sources,)`` (or a 0-d array); NaN for a source with no finite frame.
    """
    v = _as_float64(values)
    if v.ndim not in (1, 2):
        raise ValueError(f"values must have shape (sources, frames) or (frames,), got {v.shape}")
    v[np.isinf(v)] = np.nan
    return _nanmedian(v, axis=-1)


def aggregate_tracks(per_track: Sequence[ArrayLike]) -> np.ndarray:
    """museval's overall score: median over tracks of per-track scores, ignoring NaN tracks.

    Args:
        per_track: one ``(sources,)`` array per track, e.g. from :func:`aggregate_frames`.
    Returns:
        ``(sources,)``.
    """
    if len(per_track) == 0:
        raise ValueError("aggregate_tracks needs at least one track")
    rows = [_as_float64(t) for t in per_track]
    if len({r.shape for r in rows}) != 1:
        raise ValueError(
            f"every track must have the same number of sources, got shapes {sorted({r.shape for r in rows})}"
        )
    return _nanmedian(np.stack(rows), axis=0)


METRIC_NAMES = ("SDR", "SIR", "ISR", "SAR")
"""Metric keys of museval's JSON, in museval's order."""


def museval_track_json(
    target_names: Sequence[str],
    scores: tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike],
    win: float = 1.0,
    hop: float = 1.0,
) -> dict:
    """One track's scores in museval's per-track JSON layout (``TrackStore.scores``).

    Args:
        target_names: one name per source, e.g. ``SOURCES``.
        scores: ``(sdr, isr, sir, sar)`` as returned by :func:`bss_sdr`, each ``(sources, frames)``.
        win, hop: frame duration and hop in seconds (``time = frame · hop``, ``duration = win``).
    Returns:
        ``{"targets": [{"name", "frames": [{"time", "duration", "metrics": {"SDR", "SIR", "ISR", "SAR"}}]}]}``
        with values rounded to 5 decimals and ±inf stored as NaN, as museval does; serialise with ``json.dumps``
        (which writes NaN as ``NaN``, like museval's simplejson).
    """
    sdr, isr, sir, sar = (_as_float64(s) for s in scores)
    if not (sdr.shape == isr.shape == sir.shape == sar.shape) or sdr.ndim != 2:
        raise ValueError(
            f"scores must be four (sources, frames) arrays, got shapes {[s.shape for s in (sdr, isr, sir, sar)]}"
        )
    if len(target_names) != sdr.shape[0]:
        raise ValueError(f"{len(target_names)} target names for {sdr.shape[0]} sources")
    by_name = {"SDR": sdr, "SIR": sir, "ISR": isr, "SAR": sar}

    def q(v: float) -> float:
        return float("nan") if np.isinf(v) else round(float(v), 5)

    targets = []
    for j, name in enumerate(target_names):
        frames = [
            {
                "time": i * hop,
                "duration": win,
                "metrics": {k: q(by_name[k][j, i]) for k in METRIC_NAMES},
            }
            for i in range(sdr.shape[1])
        ]
        targets.append({"name": str(name), "frames": frames})
    return {"targets": targets}
