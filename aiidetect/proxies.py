"""Proxy images for CLIP-Flow: real photos with a modified spectrum.

CLIP-Flow never trains on generated images. It learns what real photos look
like to a frozen encoder, and is pushed to give *low* likelihood to these
proxies: real photos whose spectrum was altered the way generators alter it.
Each kind below is one documented alteration, randomised per image under a
seed (the parameters drawn are returned so a run can be reproduced and shown).

Conventions
- Images are HxWx3 arrays in [0, 255] (uint8 or float). Every kind keeps the
  size, and the result is clipped to [0, 255]; `apply_proxy` returns uint8.
- Frequencies are radial and normalised: r = |f| / f_Nyquist, so r = 1 at the
  Nyquist frequency along an axis and r = sqrt(2) in the corners. A kind's
  ``band`` is the set of FFT bins it may change (``band_mask``); everything
  else is left bit-for-bit unchanged before clipping/rounding, which the tests
  check by measuring where the energy of (proxy - original) lies.
- All three channels get the same alteration (generator artifacts are not
  channel-specific, and colour shifts are not what we want the flow to learn).
- Proxies are made at the model's input size, after the geometric part of the
  head's preprocessing (see aiidetect/flow/train.py): a change made at full
  resolution above the down-scaling's Nyquist frequency would be erased before
  the encoder ever saw it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

Params = dict[str, Any]


# --------------------------------------------------------------------------
# Frequency helpers (rfft2: realness of the result is automatic)
# --------------------------------------------------------------------------
def radius_rfft(h: int, w: int) -> np.ndarray:
    """Normalised radius of every rfft2 bin of an HxW image, shape (H, W//2+1)."""
    fy = np.fft.fftfreq(h)[:, None] / 0.5
    fx = np.fft.rfftfreq(w)[None, :] / 0.5
    return np.sqrt(fy * fy + fx * fx)


def radius_fft(h: int, w: int) -> np.ndarray:
    """Same for the full fft2 grid, shape (H, W)."""
    fy = np.fft.fftfreq(h)[:, None] / 0.5
    fx = np.fft.fftfreq(w)[None, :] / 0.5
    return np.sqrt(fy * fy + fx * fx)


def _filter(img: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    """Multiply every channel's rfft2 by `transfer` (real or complex, (H, W//2+1))."""
    h, w = img.shape[:2]
    spec = np.fft.rfft2(img, axes=(0, 1))
    return np.fft.irfft2(spec * transfer[:, :, None], s=(h, w), axes=(0, 1))


def _smooth_step(r: np.ndarray, lo: float, width: float) -> np.ndarray:
    """0 below lo, 1 above lo+width, cosine ramp between (ramp inside the band)."""
    t = np.clip((r - lo) / max(width, 1e-6), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


# --------------------------------------------------------------------------
# The kinds
# --------------------------------------------------------------------------
def hf_amp_scale(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Scale the amplitude of a high-frequency radial band by a gain g.

    Parameters: r_lo ~ U(0.45, 0.8) (band is r >= r_lo), gain g ~ U(0.25, 0.7)
    (2/3 of draws: too little fine detail) or U(1.6, 3.0) (too much).
    Imitates the spectral fall-off mismatch of generators: diffusion models
    under-produce high-frequency energy, GAN up-samplers over-produce it
    (Durall et al. 2020; Corvi et al. 2023).
    """
    h, w = img.shape[:2]
    r_lo = float(rng.uniform(0.45, 0.8))
    gain = float(rng.uniform(0.25, 0.7) if rng.random() < 2 / 3 else rng.uniform(1.6, 3.0))
    r = radius_rfft(h, w)
    transfer = 1.0 + (gain - 1.0) * _smooth_step(r, r_lo, 0.08)
    return _filter(img, transfer), {"r_lo": r_lo, "gain": gain}


def hf_amp_replace(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Replace the amplitude in a high-frequency band by its ring average.

    Every bin with r >= r_lo keeps its phase, but its amplitude becomes the
    mean amplitude of its ring (width 1/64) times a gain g ~ U(0.6, 1.4);
    r_lo ~ U(0.5, 0.85). Imitates generators that reproduce the average
    spectral envelope of photos but not the image-specific, oriented
    high-frequency structure (edges, sensor texture) of a real capture.
    """
    h, w = img.shape[:2]
    r_lo = float(rng.uniform(0.5, 0.85))
    gain = float(rng.uniform(0.6, 1.4))
    r = radius_rfft(h, w)
    spec = np.fft.rfft2(img, axes=(0, 1))
    amp = np.abs(spec)
    ring = np.minimum((r * 64).astype(np.int64), int(np.ceil(np.sqrt(2) * 64)))
    band = r >= r_lo
    out = spec.copy()
    for c in range(img.shape[2]):
        a = amp[:, :, c]
        sums = np.bincount(ring[band], weights=a[band], minlength=ring.max() + 1)
        counts = np.bincount(ring[band], minlength=ring.max() + 1)
        mean_amp = sums / np.maximum(counts, 1)
        new_amp = gain * mean_amp[ring]
        phase = np.exp(1j * np.angle(spec[:, :, c]))
        out[:, :, c] = np.where(band, new_amp * phase, spec[:, :, c])
    return np.fft.irfft2(out, s=(h, w), axes=(0, 1)), {"r_lo": r_lo, "gain": gain}


def periodic_peaks(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Add a zero-mean pattern tiled with period p: energy only at f = k/p.

    Parameters: period p in {2, 4, 8} (x2, x4, x8 up-sampling), pattern a
    random p x p zero-mean tile scaled to RMS amplitude a ~ U(1.0, 4.0) grey
    levels. Imitates the checkerboard of transposed convolutions and
    nearest-neighbour up-sampling in GAN generators and VAE decoders, which
    shows as isolated peaks on the grid of multiples of 1/p (Zhang et al. 2019;
    Frank et al. 2020). The pattern is exactly periodic on the image only when
    H and W are multiples of p (224 is a multiple of 8).
    """
    h, w = img.shape[:2]
    p = int(rng.choice([2, 4, 8]))
    amp = float(rng.uniform(1.0, 4.0))
    tile = rng.standard_normal((p, p))
    tile -= tile.mean()
    tile *= amp / max(float(np.sqrt((tile ** 2).mean())), 1e-6)
    pattern = np.tile(tile, (h // p + 1, w // p + 1))[:h, :w]
    return img + pattern[:, :, None], {"period": p, "amplitude": amp}


def lowpass_resharpen(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Remove the top of the spectrum, then boost what is just below the cut.

    Transfer H(r) = 1 for r < r_lo; above, with t = (r - r_lo)/(r_cut - r_lo)
    clipped to [0, 1]: H = (1 + k sin(pi t)) (1 - t)^2, so H = 0 beyond r_cut.
    r_lo ~ U(0.3, 0.6), r_cut = r_lo + U(0.3, 0.6), k ~ U(0.5, 2.0).
    Imitates the decoder of latent diffusion (8x up-sampling from a latent:
    the finest detail is missing) followed by the sharpening that many
    generators and their post-processing apply (mid-high overshoot, no noise).
    """
    h, w = img.shape[:2]
    r_lo = float(rng.uniform(0.3, 0.6))
    r_cut = r_lo + float(rng.uniform(0.3, 0.6))
    k = float(rng.uniform(0.5, 2.0))
    r = radius_rfft(h, w)
    t = np.clip((r - r_lo) / (r_cut - r_lo), 0.0, 1.0)
    transfer = np.where(r < r_lo, 1.0, (1.0 + k * np.sin(np.pi * t)) * (1.0 - t) ** 2)
    return _filter(img, transfer), {"r_lo": r_lo, "r_cut": r_cut, "boost": k}


def hf_phase(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Perturb the phase of high frequencies, keeping every amplitude.

    Each bin with r >= r_lo gets a phase offset ~ U(-s, s) with r_lo ~ U(0.4, 0.8),
    s ~ U(0.5, pi). Amplitude spectra stay those of a real photo, so this
    isolates what amplitude statistics miss: generators draw plausible
    texture energy whose fine phase (alignment of edges and sensor noise
    across frequencies) is not that of a lens-and-sensor capture.

    The offsets are Hermitian (phi(-k) = -phi(k), and 0 on the bins that are
    their own mirror: DC and the Nyquist rows/columns' self-conjugate points),
    so the result is real without discarding an imaginary part, and every
    amplitude is exactly the original's (before clipping to [0, 255]).
    """
    h, w = img.shape[:2]
    r_lo = float(rng.uniform(0.4, 0.8))
    s = float(rng.uniform(0.5, np.pi))
    r = radius_fft(h, w)
    phi = rng.uniform(-s, s, size=(h, w))
    # mirror index of every bin: (-ky mod h, -kx mod w); keep phi on the bin of
    # the pair with the smaller flat index, the negated mirror on the other
    my, mx = (-np.arange(h)) % h, (-np.arange(w)) % w
    flat = np.arange(h * w).reshape(h, w)
    mirror = flat[my][:, mx]
    phi = np.where(flat < mirror, phi, -phi[my][:, mx])
    phi[flat == mirror] = 0.0
    transfer = np.where(r >= r_lo, np.exp(1j * phi), 1.0)
    spec = np.fft.fft2(img, axes=(0, 1))
    return np.fft.ifft2(spec * transfer[:, :, None], axes=(0, 1)).real, {"r_lo": r_lo, "phase_spread": s}


def resample_chain(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Down-scale by s and back up, once or twice, with a random kernel.

    s ~ U(0.5, 0.8), steps n in {1, 2}, kernels from {bilinear, bicubic,
    lanczos} (PIL, anti-aliased). Imitates the interpolation stages inside
    generators (latent/feature-map up-sampling) and their kernel fingerprints.
    Interpolation kernels are not ideal filters, so this kind's band is the
    widest: r >= s/4 (the test measures that it holds for >= 90% of the change).
    """
    from PIL import Image

    h, w = img.shape[:2]
    s = float(rng.uniform(0.5, 0.8))
    n = int(rng.integers(1, 3))
    names = ["bilinear", "bicubic", "lanczos"]
    kernels = [names[int(i)] for i in rng.integers(0, 3, size=n)]
    modes = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
    out = img.astype(np.float32)
    small = (max(1, round(w * s)), max(1, round(h * s)))
    for k in kernels:
        chans = []
        for c in range(out.shape[2]):
            im = Image.fromarray(out[:, :, c], mode="F")
            chans.append(np.asarray(im.resize(small, modes[k]).resize((w, h), modes[k]), dtype=np.float32))
        out = np.stack(chans, axis=2)
    return out.astype(np.float64), {"scale": s, "kernels": kernels}


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ProxyKind:
    name: str
    fn: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, Params]]
    imitates: str

    def band_mask(self, h: int, w: int, params: Params) -> np.ndarray:
        """Bins of the full fft2 grid this modification may change (HxW bool)."""
        return band_mask(self.name, h, w, params)


KINDS: dict[str, ProxyKind] = {
    "hf_amp_scale": ProxyKind("hf_amp_scale", hf_amp_scale, "spectral fall-off mismatch (too little/much fine detail)"),
    "hf_amp_replace": ProxyKind("hf_amp_replace", hf_amp_replace, "average spectral envelope without image-specific detail"),
    "periodic_peaks": ProxyKind("periodic_peaks", periodic_peaks, "up-sampling checkerboard of GANs and VAE decoders"),
    "lowpass_resharpen": ProxyKind("lowpass_resharpen", lowpass_resharpen, "latent-decoder detail loss plus sharpening"),
    "hf_phase": ProxyKind("hf_phase", hf_phase, "plausible texture energy with incoherent fine phase"),
    "resample_chain": ProxyKind("resample_chain", resample_chain, "interpolation stages and their kernel fingerprints"),
}
DEFAULT_KINDS: tuple[str, ...] = tuple(KINDS)


def band_mask(kind: str, h: int, w: int, params: Params) -> np.ndarray:
    r = radius_fft(h, w)
    if kind == "periodic_peaks":
        p = int(params["period"])
        ky = np.fft.fftfreq(h) * p
        kx = np.fft.fftfreq(w) * p
        on = (np.abs(ky - np.round(ky)) < 1e-9)[:, None] & (np.abs(kx - np.round(kx)) < 1e-9)[None, :]
        on[0, 0] = False  # the tile has zero mean
        return on
    if kind == "resample_chain":
        return r >= float(params["scale"]) / 4
    return r >= float(params["r_lo"])


def parse_kinds(kinds: str | Sequence[str] | None) -> list[str]:
    """'a,b' or ['a', 'b'] or None (all) -> validated list."""
    if kinds is None or kinds == "" or kinds == "all":
        return list(DEFAULT_KINDS)
    names = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if k.strip()]
    bad = [k for k in names if k not in KINDS]
    if bad:
        raise ValueError(f"unknown proxy kind(s) {', '.join(bad)}; known: {', '.join(KINDS)}")
    return names


def apply_proxy_float(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """One modification, float result clipped to [0, 255] (no rounding)."""
    x = np.asarray(img, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {x.shape}")
    out, params = KINDS[kind].fn(x, rng)
    return np.clip(out, 0.0, 255.0), {"kind": kind, **params}


def apply_proxy(img, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """PIL image or HxWx3 array -> (uint8 proxy of the same size, parameters)."""
    out, params = apply_proxy_float(np.asarray(img), kind, rng)
    return np.round(out).astype(np.uint8), params


def proxy_rng(seed: int, image_index: int, copy: int) -> np.random.Generator:
    """The randomness of proxy `copy` of image `image_index` under `seed`:
    independent of how many images or workers there are."""
    return np.random.default_rng([int(seed), int(image_index), int(copy)])


def random_proxies(img, n: int, kinds: Sequence[str] | None = None, seed: int = 0,
                   image_index: int = 0) -> list[tuple[np.ndarray, Params]]:
    """n proxies of one image, each of a kind drawn uniformly from `kinds`."""
    names = parse_kinds(kinds)
    out = []
    for j in range(n):
        rng = proxy_rng(seed, image_index, j)
        kind = names[int(rng.integers(len(names)))]
        out.append(apply_proxy(img, kind, rng))
    return out


__all__ = ["KINDS", "DEFAULT_KINDS", "ProxyKind", "apply_proxy", "apply_proxy_float", "band_mask", "parse_kinds",
           "proxy_rng", "random_proxies", "radius_fft", "radius_rfft"]
