"""Differentiable multichannel Wiener filter (EM), batched over any leading dimensions.

A re-implementation of norbert 0.2.1's ``wiener`` / ``expectation_maximization`` on native complex tensors,
numerically equal to it (≈1e-15 relative in float64), with two deliberate differences:

* norbert scales the estimates and the mix by ``s = max(1, 0.1·max|X|)`` before EM; here ``s`` is computed
  **per item** (per leading index), so an item's result never depends on the rest of the batch (the original
  shared one scale over the whole batch);
* an optional residual source ``X − Σ_j Y_j`` (as Open-Unmix's torch port has).

One EM iteration, for every item, bin ``f`` and frame ``t`` (``y_j`` the current estimate of source ``j``)::

    v_j(f,t) = mean_c |y_j(c,f,t)|²                          power spectral density
    R_j(f)   = Σ_t y_j y_jᴴ / (Σ_t v_j + eps)                 C×C spatial covariance
    Cxx(f,t) = Σ_j v_j R_j + sqrt(eps)·I                       mixture covariance, regularised
    y_j      = v_j R_j Cxx⁻¹ x                                 posterior mean (multichannel Wiener gain)

How it is computed (same numbers, far less work than norbert's Python loop over frames):

* The initial estimates ``mag_j·exp(i·angle X)`` (or softmask ``ratio_j·X``) have the form ``a_j · u``: a real
  per-source amplitude times a complex factor shared by the sources. The first iteration's statistics are taken
  from that form, so the initial estimates are never materialised.
* The scaling is never applied to the data: dividing ``x`` and ``y`` by ``s`` leaves ``R_j`` unchanged except for
  its weight, which becomes ``Σ_t v_j + eps·s²``, and puts ``1/s²`` on ``Σ_j v_j R_j`` and on the final
  ``v_j R_j``; both are folded into the small ``R_j`` tensor, so the mixture covariance and its inverse are
  exactly norbert's scaled ones (no overflow risk in float32) at no extra pass over the data.
* ``Cxx⁻¹ x`` is shared by all sources, so it is solved once per bin and frame: analytically for two channels
  (adjugate over a real determinant, Cxx being Hermitian), ``1 / (Cxx + eps)`` for one (norbert's rule) and
  ``torch.linalg.solve`` otherwise (norbert: ``pinv`` with ``rcond=eps``, the same for these regularised matrices).
* Spatial covariances are Hermitian, so they are kept packed as ``C²`` reals (diagonal, then real and imaginary
  parts of the upper triangle) and ``Σ_j v_j R_j`` is one real contraction over the sources.
* The last product ``v_j R_j (Cxx⁻¹ x)`` is evaluated in the output's precision (its result is rounded to it
  anyway; ≤ 3e-7 relative for complex64); everything before it runs in ``dtype``.
* Bins are independent once the per-item scale is known, so on CPU the filter runs on blocks of bins sized to
  keep its temporaries in cache (about twice as fast as whole-spectrogram passes), and the last product is
  written straight into the result. Other devices get one block, and so does a call recorded by autograd (blocks
  slow its backward down). No (frames, bins, C, C, sources)
  tensor is ever formed: the largest temporaries have the size of the estimates.

``eps`` defaults to the machine epsilon of ``dtype``, as norbert's does for its input dtype. In float32 mode this
makes the regulariser ``sqrt(eps)·I`` ≈ 3.5e-4 instead of 1.5e-8 (in units of the scaled mix, whose largest
magnitude is at most 10). That larger floor is needed: with float64's eps, the 2×2 determinant of a nearly
rank-one mixture covariance (one source dominating a bin whose spatial covariance is rank one, e.g. a single
frame) cancels to noise in single precision and the result turns to inf/NaN. The price is a little more smoothing
in quiet bins: on typical inputs float32 results differ from float64 ones by 1e-4 to 1e-2 (relative), and by
≈1e-6 when both use the same ``eps``; they equal norbert run on complex64 input to ≈1e-5.

Everything is plain differentiable torch (gradients reach the magnitudes and the mix), and both public functions
compile with ``torch.jit.script``. :func:`wiener_streamed` computes :func:`wiener`'s result over a long track
chunk by chunk (one pass per iteration accumulating the statistics, then one filtering), so that only per-bin
statistics and one chunk are held at a time.
"""

from collections.abc import Callable, Iterator

import torch
from torch import Tensor


def _machine_eps(dtype: torch.dtype) -> float:
    # torch.finfo is not available in TorchScript
    if dtype == torch.float64:
        return 2.220446049250313e-16
    return 1.1920928955078125e-07


def _check_inputs(mag: Tensor, mix: Tensor, iterations: int, dtype: torch.dtype) -> None:
    if not mix.is_complex():
        raise ValueError(f"mix_stft must be a complex tensor (..., channels, bins, frames), got dtype {mix.dtype}")
    if mag.is_complex():
        raise ValueError("mag_estimates must be real magnitudes (..., sources, channels, bins, frames), got complex")
    if mix.dim() < 3 or mag.dim() != mix.dim() + 1:
        raise ValueError(
            f"expected mag_estimates (..., sources, channels, bins, frames) and mix_stft (..., channels, bins, "
            f"frames) with the same leading dims, got shapes {list(mag.shape)} and {list(mix.shape)}"
        )
    channels = mix.shape[-3]
    if (
        mag.shape[:-4] != mix.shape[:-3]
        or mag.shape[-2:] != mix.shape[-2:]
        or (mag.shape[-3] != channels and mag.shape[-3] != 1)
        or mag.shape[-4] < 1
        or channels < 1
    ):
        raise ValueError(
            f"mag_estimates {list(mag.shape)} does not match mix_stft {list(mix.shape)}: expected "
            f"(..., sources >= 1, channels or 1, bins, frames) with the mix's leading dims, bins and frames"
        )
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if dtype != torch.float64 and dtype != torch.float32:
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")


def _channel_pairs(channels: int) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    for c in range(channels):
        for d in range(c + 1, channels):
            pairs.append((c, d))
    return pairs


def _times_real(z: Tensor, r: Tensor) -> Tensor:
    """Complex ``z`` times real ``r`` (broadcast), without promoting ``r`` to a complex tensor first."""
    return torch.view_as_complex(torch.view_as_real(z) * r.unsqueeze(-1))


def _unpack_hermitian(packed: Tensor, channels: int) -> Tensor:
    """Packed Hermitian ``(..., C²)`` reals (diagonal, then re/im of each upper pair) → complex ``(..., C, C)``."""
    # flat C×C maps into the packed reals; index C² is an appended zero (imaginary part of the diagonal)
    re_index = [0] * (channels * channels)
    im_index = [channels * channels] * (channels * channels)
    im_sign = [1.0] * (channels * channels)
    for c in range(channels):
        re_index[c * channels + c] = c
    k = channels
    for pair in _channel_pairs(channels):
        c, d = pair
        re_index[c * channels + d] = k
        re_index[d * channels + c] = k
        im_index[c * channels + d] = k + 1
        im_index[d * channels + c] = k + 1
        im_sign[d * channels + c] = -1.0
        k += 2
    padded = torch.cat([packed, torch.zeros_like(packed[..., :1])], dim=-1)
    re = padded.index_select(-1, torch.tensor(re_index, device=packed.device))
    im = padded.index_select(-1, torch.tensor(im_index, device=packed.device))
    im = im * torch.tensor(im_sign, dtype=packed.dtype, device=packed.device)
    return torch.complex(re, im).unflatten(-1, [channels, channels])


def _moments_factored(amp: Tensor, unit: Tensor, unit_power: Tensor | None) -> tuple[Tensor, Tensor]:
    """PSDs and packed ``Σ_t y yᴴ`` of estimates ``y_j = amp_j · unit``, without forming them.

    amp (B, S, C, F, T) real, unit (B, C, F, T) complex, unit_power = |unit|² or None when |unit| = 1.
    Returns v (B, S, F, T) and the packed scatter (B, S, F, C²).
    """
    power = amp.square()
    if unit_power is not None:
        power = power * unit_power.unsqueeze(1)
    parts = [power.sum(-1).transpose(2, 3)]  # diagonal, (B, S, F, C)
    for c, d in _channel_pairs(unit.shape[1]):
        # Σ_t a_c a_d · u_c conj(u_d): a real-by-complex contraction over frames
        cross = torch.view_as_real(unit[:, c] * unit[:, d].conj())  # (B, F, T, 2)
        parts.append(torch.einsum("bsft,bftk->bsfk", amp[:, :, c] * amp[:, :, d], cross))
    return power.mean(2), torch.cat(parts, dim=-1)


def _moments(y: Tensor) -> tuple[Tensor, Tensor]:
    """PSDs and packed ``Σ_t y yᴴ`` of estimates y (B, S, C, F, T) complex: v (B, S, F, T), (B, S, F, C²)."""
    power = y.real.square() + y.imag.square()
    parts = [power.sum(-1).transpose(2, 3)]
    for c, d in _channel_pairs(y.shape[2]):
        parts.append(torch.view_as_real((y[:, :, c] * y[:, :, d].conj()).sum(-1)))
    return power.mean(2), torch.cat(parts, dim=-1)


def _solve(cxx: Tensor, x: Tensor, reg: float, eps: float) -> Tensor:
    """``(Cxx + reg·I)⁻¹ x`` per bin and frame.

    cxx (B, C², F, T) packed real (in units of the scaled mix), x (B, C, F, T) complex → (B, C, F, T) complex.
    """
    channels = x.shape[1]
    if channels == 1:
        # norbert adds eps once more in the scalar case
        return x / (cxx + (reg + eps))
    if channels == 2:
        # adjugate over determinant, real-valued where they can be since Cxx is Hermitian
        c00, c11 = cxx[:, 0] + reg, cxx[:, 1] + reg
        re, im = cxx[:, 2], cxx[:, 3]
        inv_det = 1.0 / (c00 * c11 - (re.square() + im.square()))
        re, im = re * inv_det, im * inv_det
        x0, x1 = x[:, 0], x[:, 1]
        z0 = x0 * (c11 * inv_det) - torch.complex(re, im) * x1
        z1 = x1 * (c00 * inv_det) - torch.complex(re, -im) * x0
        return torch.stack([z0, z1], dim=1)
    full = _unpack_hermitian(cxx.permute(0, 2, 3, 1), channels)  # (B, F, T, C, C)
    full = full + reg * torch.eye(channels, dtype=full.dtype, device=full.device)
    return torch.linalg.solve(full, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _wiener_update(
    v: Tensor,
    scatter: Tensor,
    x: Tensor,
    eps: float,
    eps_item: Tensor,
    inv_scale2: Tensor,
    out_dtype: torch.dtype,
    out: Tensor | None,
) -> Tensor:
    """New estimates (B, S, C, F, T) of complex ``out_dtype`` from PSDs v (B, S, F, T) and packed scatter.

    ``eps_item`` = eps·s² and ``inv_scale2`` = 1/s² per item, shaped (B, 1, 1) and (B, 1, 1, 1). The result is
    written into ``out`` when one is given (not differentiable).
    """
    return _apply_spatial(v, _spatial(v.sum(-1), scatter, eps_item, inv_scale2), x, eps, out_dtype, out)


def _spatial(v_sum: Tensor, scatter: Tensor, eps_item: Tensor, inv_scale2: Tensor) -> Tensor:
    """Packed spatial covariances ``R_j / s²`` (B, S, F, C²) from ``Σ_t v_j`` (B, S, F) and the packed scatter."""
    r = scatter / (v_sum + eps_item).unsqueeze(-1)  # packed spatial covariances (B, S, F, C²)
    # R_j / s² carries the scale: Σ_j v_j R_j / s² is norbert's scaled Cxx, and v_j (R_j / s²) Cxx⁻¹ x its y_j
    return r * inv_scale2


def _apply_spatial(v: Tensor, r: Tensor, x: Tensor, eps: float, out_dtype: torch.dtype, out: Tensor | None) -> Tensor:
    """Estimates (B, S, C, F, T) from PSDs v (B, S, F, T) and packed spatial covariances ``R_j / s²`` (B, S, F, C²)
    (:func:`_spatial`); written into ``out`` when one is given (not differentiable)."""
    channels = x.shape[1]
    # operand order chosen so that einsum's batched matmul needs no copy of v (and gives t-contiguous rows)
    cxx = torch.einsum("bsfk,bsft->bkft", r, v)  # Σ_j v_j R_j / s², packed (B, C², F, T)
    z = _solve(cxx, x, eps**0.5, eps)  # (B, C, F, T)
    real_dtype = torch.float64 if out_dtype == torch.complex128 else torch.float32
    spatial = _unpack_hermitian(r.to(real_dtype), channels)  # (B, S, F, C, C)
    estimate = torch.einsum("bsfcd,bdft->bscft", spatial, z.to(out_dtype))
    if out is None:
        return estimate * v.to(real_dtype).unsqueeze(2)
    return torch.mul(estimate, v.to(real_dtype).unsqueeze(2), out=out)


def _initial_factors(
    mag: Tensor, x: Tensor, x_power: Tensor, softmask: bool, residual: bool, eps: float
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Initial estimates as ``amp (B, S(+1), C, F, T) real × unit (B, C, F, T) complex``, and |unit|² (or None).

    x_power is |x|² (B, C, F, T).
    """
    channels = x.shape[1]
    mag = mag.expand(-1, -1, channels, -1, -1)
    # a residual X − Σ_j a_j·u is (|X| − Σ_j a_j)·u, resp. (1 − Σ_j ratio_j)·X: of the same form
    if softmask:
        amp = mag / (eps + mag.sum(1, keepdim=True))
        unit = x
        unit_power: Tensor | None = x_power
        if residual:
            amp = torch.cat([amp, 1.0 - amp.sum(1, keepdim=True)], dim=1)
    else:
        # exp(i·angle X) = X / |X|, and 1 where X = 0 (as np.angle(0) = 0); the guards keep gradients finite there
        nonzero = x_power > 0
        x_abs = torch.sqrt(torch.where(nonzero, x_power, 1.0))
        unit = torch.where(nonzero, _times_real(x, 1.0 / x_abs), 1.0)
        unit_power = None
        amp = mag
        if residual:
            amp = torch.cat([amp, torch.where(nonzero, x_abs, 0.0).unsqueeze(1) - amp.sum(1, keepdim=True)], dim=1)
    return amp, unit, unit_power


def _block_bins(batch: int, sources: int, channels: int, bins: int, frames: int, device: torch.device) -> int:
    """Bins per block: on CPU, blocks of about 2¹⁷ estimates keep the EM's temporaries in cache (2× faster)."""
    if device.type != "cpu":
        return bins
    block_elements = 1 << 17  # sources × channels × bins × frames (× batch) per block
    return max(1, min(bins, block_elements // (batch * sources * channels * frames)))


def _filter_bins(
    mag: Tensor,
    x: Tensor,
    iterations: int,
    softmask: bool,
    residual: bool,
    eps: float,
    eps_item: Tensor,
    inv_scale2: Tensor,
    dtype: torch.dtype,
    out_dtype: torch.dtype,
    out: Tensor | None,
) -> Tensor:
    """The whole filter on a range of bins: mag (B, S, C|1, f, T) real, x (B, C, f, T) complex → (B, S(+1), C, f, T).

    Written into ``out`` when one is given (not differentiable).
    """
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    x = x.to(complex_dtype)
    x_power = x.real.square() + x.imag.square()  # |x|²
    amp, unit, unit_power = _initial_factors(mag.to(dtype), x, x_power, softmask, residual, eps)
    if iterations == 0:
        if out is None:
            return (amp * unit.unsqueeze(1)).to(out_dtype)
        return torch.mul(amp, unit.unsqueeze(1), out=out)
    v, scatter = _moments_factored(amp, unit, unit_power)
    for _it in range(1, iterations):
        y = _wiener_update(v, scatter, x, eps, eps_item, inv_scale2, complex_dtype, None)
        v, scatter = _moments(y)
    return _wiener_update(v, scatter, x, eps, eps_item, inv_scale2, out_dtype, out)


def wiener(
    mag_estimates: Tensor,
    mix_stft: Tensor,
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    eps: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Multichannel Wiener filtering of a mixture from magnitude estimates of its sources (norbert's EM).

    Args:
        mag_estimates: real ``(..., sources, channels, bins, frames)`` non-negative source magnitudes
            (``channels`` may be 1: one magnitude for all channels).
        mix_stft: complex ``(..., channels, bins, frames)`` mixture STFT.
        iterations: EM iterations; 0 returns the initial estimates (plain masking, or the softmask ratio).
        softmask: initial estimates ``X · mag_j / (eps + Σ_k mag_k)`` instead of ``mag_j · exp(i·angle X)``.
        residual: add ``X − Σ_j Y_j`` (of the initial estimates) as one more source, last.
        eps: regularisation; None = machine epsilon of ``dtype``.
        dtype: computation precision, ``torch.float64`` (default) or ``torch.float32``.

    Returns:
        complex ``(..., sources (+1 with residual), channels, bins, frames)`` in ``mix_stft``'s dtype.
    """
    _check_inputs(mag_estimates, mix_stft, iterations, dtype)
    lead: list[int] = list(mix_stft.shape[:-3])
    channels, bins, frames = mix_stft.shape[-3], mix_stft.shape[-2], mix_stft.shape[-1]
    e = _machine_eps(dtype) if eps is None else eps
    x = mix_stft.reshape(-1, channels, bins, frames)  # (B, C, F, T)
    batch = x.shape[0]
    mag = mag_estimates.reshape([batch] + list(mag_estimates.shape[-4:]))  # noqa: RUF005 (TorchScript) (B, S, C|1, F, T)
    sources = mag.shape[1] + (1 if residual else 0)

    # norbert divides x and y by s = max(1, max|X| / 10) before EM; here one s per item, folded into the EM
    peak = (x.real.square() + x.imag.square()).amax(dim=(1, 2, 3)).to(dtype).sqrt()
    scale = torch.clamp(peak / 10.0, min=1.0)  # (B,)
    eps_item = (e * scale.square()).reshape(-1, 1, 1)
    inv_scale2 = scale.square().reciprocal().reshape(-1, 1, 1, 1)

    if torch.is_grad_enabled() and (mag.requires_grad or x.requires_grad):
        # one pass: blocks would only add per-block overhead to the backward (measured 1.5× slower)
        # (the last product leaves a bins-major memory layout)
        out = _filter_bins(
            mag, x, iterations, softmask, residual, e, eps_item, inv_scale2, dtype, mix_stft.dtype, None
        ).contiguous()
    else:
        # bins are independent given the per-item scale: filter them block by block, each block's last product
        # written straight into the result
        out = torch.empty([batch, sources, channels, bins, frames], dtype=mix_stft.dtype, device=x.device)
        step = _block_bins(batch, sources, channels, bins, frames, x.device)
        for start in range(0, bins, step):
            stop = min(start + step, bins)
            _filter_bins(
                mag[:, :, :, start:stop],
                x[:, :, start:stop],
                iterations,
                softmask,
                residual,
                e,
                eps_item,
                inv_scale2,
                dtype,
                mix_stft.dtype,
                out[:, :, :, start:stop],
            )
    return out.reshape(lead + [sources, channels, bins, frames])  # noqa: RUF005 (TorchScript)


def wiener_windowed(
    mag_estimates: Tensor,
    mix_stft: Tensor,
    iterations: int = 1,
    window: int = 300,
    softmask: bool = False,
    residual: bool = False,
    eps: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """:func:`wiener` on independent blocks of ``window`` frames (the last block may be shorter).

    Each block gets its own spatial covariances and scale, as in Open-Unmix's separator, so the EM state is
    bounded by the block size whatever the track length. Same arguments and result layout as :func:`wiener`:
    ``(..., sources (+1 with residual), channels, bins, frames)``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    _check_inputs(mag_estimates, mix_stft, iterations, dtype)
    frames = mix_stft.shape[-1]
    if frames <= window:
        return wiener(mag_estimates, mix_stft, iterations, softmask, residual, eps, dtype)
    shape = list(mag_estimates.shape[:-3]) + list(mix_stft.shape[-3:])
    shape[-4] += 1 if residual else 0
    # filled block by block, so that only one block's EM state exists at a time
    out = torch.empty(shape, dtype=mix_stft.dtype, device=mix_stft.device)
    for start in range(0, frames, window):
        stop = min(start + window, frames)
        out[..., start:stop] = wiener(
            mag_estimates[..., start:stop], mix_stft[..., start:stop], iterations, softmask, residual, eps, dtype
        )
    return out


def _stream_bins(
    mag: Tensor,
    x: Tensor,
    spatials: list[Tensor],
    softmask: bool,
    residual: bool,
    eps: float,
    dtype: torch.dtype,
    out_dtype: torch.dtype,
    out: Tensor | None,
) -> tuple[Tensor, Tensor] | None:
    """One range of bins of one chunk of frames in :func:`wiener_streamed`: the initial estimates, then one update
    per spatial covariance given (whole-track statistics of these bins, :func:`_spatial`).

    mag (B, S, C|1, f, t) real, x (B, C, f, t) complex. With ``out``: the last estimates written into it (complex
    ``out_dtype``, (B, S(+1), C, f, t)), returns None; without: ``Σ_t v`` (B, S(+1), f) and the packed scatter
    (B, S(+1), f, C²) of the last estimates, to be summed over the chunks.
    """
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    x = x.to(complex_dtype)
    x_power = x.real.square() + x.imag.square()
    amp, unit, unit_power = _initial_factors(mag.to(dtype), x, x_power, softmask, residual, eps)
    if not spatials and out is not None:
        torch.mul(amp, unit.unsqueeze(1), out=out)
        return None
    if len(spatials) == 1 and out is not None:  # the filter of the first iteration needs the PSDs only
        power = amp.square()
        v = (power if unit_power is None else power * unit_power.unsqueeze(1)).mean(2)
        _apply_spatial(v, spatials[0], x, eps, out_dtype, out)
        return None
    v, scatter = _moments_factored(amp, unit, unit_power)
    for k, r in enumerate(spatials):
        if k + 1 == len(spatials) and out is not None:
            _apply_spatial(v, r, x, eps, out_dtype, out)
            return None
        v, scatter = _moments(_apply_spatial(v, r, x, eps, complex_dtype, None))
    return v.sum(-1), scatter


def _read_chunk(
    read: Callable[[int, int, bool], tuple[Tensor, Tensor]],
    a: int,
    b: int,
    last: bool,
    iterations: int,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, list[int]]:
    """Frames ``[a, b)`` from ``read``, checked and flattened to one batch dimension: ``mag (B, S, C|1, F, b − a)``,
    ``x (B, C, F, b − a)`` and the leading shape the output gets back."""
    mag_estimates, mix_stft = read(a, b, last)
    _check_inputs(mag_estimates, mix_stft, iterations, dtype)
    channels, bins = mix_stft.shape[-3], mix_stft.shape[-2]
    x = mix_stft.reshape(-1, channels, bins, b - a)
    return mag_estimates.reshape([x.shape[0], *mag_estimates.shape[-4:]]), x, list(mix_stft.shape[:-3])


def _bin_blocks(
    mag: Tensor,
    x: Tensor,
    spatials: list[Tensor],
    sources: int,
    softmask: bool,
    residual: bool,
    eps: float,
    dtype: torch.dtype,
    out: Tensor | None,
) -> Iterator[tuple[slice, tuple[Tensor, Tensor] | None]]:
    """:func:`_stream_bins` over blocks of bins sized by :func:`_block_bins`: per block its bins and the moments
    (``out is None``) or None (the estimates written into ``out[:, :, :, bins]``)."""
    batch, channels, bins, frames = x.shape
    step = _block_bins(batch, sources, channels, bins, frames, x.device)
    for f0 in range(0, bins, step):
        f = slice(f0, min(f0 + step, bins))
        moments = _stream_bins(
            mag[:, :, :, f],
            x[:, :, f],
            [r[:, :, f] for r in spatials],
            softmask,
            residual,
            eps,
            dtype,
            x.dtype,
            None if out is None else out[:, :, :, f],
        )
        yield f, moments


def wiener_streamed(
    read: Callable[[int, int, bool], tuple[Tensor, Tensor]],
    frames: int,
    chunk: int = 256,
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    eps: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> Iterator[Tensor]:
    """:func:`wiener` over ``frames`` frames read ``chunk`` frames at a time: the same numbers (the spatial
    covariances of all the frames, the scale of the whole mix), to float rounding of the sums over frames.

    ``read(a, b, last)`` gives ``(mag_estimates, mix_stft)`` of frames ``[a, b)``, as :func:`wiener` takes them;
    it is called for every chunk once per EM iteration (accumulating the statistics: the mix's peak and, per
    source and bin, ``Σ_t v`` and ``Σ_t y yᴴ``), then once more with ``last=True`` (filtering; the reader may let
    go of those frames). Yields the filtered chunks in order, each as :func:`wiener` would return it:
    ``(..., sources (+1 with residual), channels, bins, b − a)`` in ``mix_stft``'s dtype. The EM state held is
    per bin (the statistics) plus one chunk's temporaries, whatever ``frames``; iteration ``k`` recomputes the
    ``k − 1`` earlier updates of each chunk. Not differentiable.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 frame, got {chunk}")
    if dtype != torch.float64 and dtype != torch.float32:
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
    e = _machine_eps(dtype) if eps is None else eps
    spans = [(a, min(a + chunk, frames)) for a in range(0, frames, chunk)]
    spatials: list[Tensor] = []
    scale: Tensor | None = None
    for iteration in range(iterations):
        v_sum: Tensor | None = None
        scatter: Tensor | None = None
        for a, b in spans:
            mag, x, _ = _read_chunk(read, a, b, False, iterations, dtype)
            batch, channels, bins = x.shape[:3]
            if iteration == 0:
                peak = (x.real.square() + x.imag.square()).amax(dim=(1, 2, 3)).to(dtype)
                scale = peak if scale is None else torch.maximum(scale, peak)
            sources = mag.shape[1] + (1 if residual else 0)
            if v_sum is None or scatter is None:
                v_sum = torch.zeros(batch, sources, bins, dtype=dtype, device=x.device)
                scatter = torch.zeros(batch, sources, bins, channels * channels, dtype=dtype, device=x.device)
            for f, moments in _bin_blocks(mag, x, spatials, sources, softmask, residual, e, dtype, None):
                assert moments is not None
                v_sum[:, :, f] += moments[0]
                scatter[:, :, f] += moments[1]
        assert v_sum is not None and scatter is not None and scale is not None
        # norbert's s = max(1, max|X| / 10), one per item, folded into the covariances as in wiener()
        s = torch.clamp(scale.sqrt() / 10.0, min=1.0)
        eps_item = (e * s.square()).reshape(-1, 1, 1)
        inv_scale2 = s.square().reciprocal().reshape(-1, 1, 1, 1)
        spatials.append(_spatial(v_sum, scatter, eps_item, inv_scale2))
    for a, b in spans:
        mag, x, lead = _read_chunk(read, a, b, True, iterations, dtype)
        batch, channels, bins = x.shape[:3]
        sources = mag.shape[1] + (1 if residual else 0)
        out = torch.empty([batch, sources, channels, bins, b - a], dtype=x.dtype, device=x.device)
        for _ in _bin_blocks(mag, x, spatials, sources, softmask, residual, e, dtype, out):
            pass  # each block's estimates are written into out
        yield out.reshape([*lead, sources, channels, bins, b - a])
