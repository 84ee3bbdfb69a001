"""Each proxy kind changes only the frequencies it claims, and keeps size and range."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from aiidetect import proxies as P


@pytest.fixture(scope="module")
def photos(dev_dir):
    from aiidetect.decode import load_rgb
    from aiidetect.preprocess import center_crop

    rows = [r for r in csv.DictReader(open(dev_dir / "manifest.csv")) if r["label"] == "real"][:3]
    out = [center_crop(np.asarray(load_rgb(dev_dir / r["file"], draft=256)), 224) for r in rows]
    # plus a non-square, mid-grey synthetic one (no clipping at all)
    rng = np.random.default_rng(0)
    out.append(np.clip(128 + 20 * rng.standard_normal((96, 160, 3)), 0, 255).astype(np.uint8))
    return out


def _band_fraction(orig, out, mask):
    d = out.astype(np.float64) - orig.astype(np.float64)
    energy = (np.abs(np.fft.fft2(d, axes=(0, 1))) ** 2).sum(2)
    return energy[mask].sum() / max(energy.sum(), 1e-12), energy.sum()


@pytest.mark.parametrize("kind", list(P.KINDS))
def test_changes_only_its_band(kind, photos):
    for i, img in enumerate(photos):
        for c in range(3):
            rng = P.proxy_rng(0, i, c)
            raw, params = P.KINDS[kind].fn(img.astype(np.float64), rng)
            h, w = img.shape[:2]
            if kind == "periodic_peaks" and (h % params["period"] or w % params["period"]):
                continue  # exact only on multiples of the period (documented)
            mask = P.band_mask(kind, h, w, params)
            if i < 3:  # photos: the band is a real restriction (most of a photo's energy lies outside it)
                e_img = (np.abs(np.fft.fft2(img.astype(np.float64), axes=(0, 1))) ** 2).sum(2)
                e_img[0, 0] = 0
                assert e_img[~mask].sum() / e_img.sum() > 0.5
            frac, total = _band_fraction(img, raw, mask)
            assert total > 0, "the modification changed nothing"
            # resample_chain uses real interpolation kernels: its claim is >= 90%; the rest are exact filters
            assert frac >= (0.9 if kind == "resample_chain" else 1 - 1e-9), (kind, params, frac)
            # after clipping to [0, 255] (what training uses) the claim still holds for >= 90% of the change
            clipped, _ = P.apply_proxy_float(img, kind, P.proxy_rng(0, i, c))
            assert _band_fraction(img, clipped, mask)[0] >= 0.9


@pytest.mark.parametrize("kind", list(P.KINDS))
def test_keeps_size_and_range(kind, photos):
    for i, img in enumerate(photos):
        out, params = P.apply_proxy(img, kind, P.proxy_rng(1, i, 0))
        assert out.shape == img.shape and out.dtype == np.uint8
        assert params["kind"] == kind
        f, _ = P.apply_proxy_float(img, kind, P.proxy_rng(1, i, 0))
        assert f.min() >= 0 and f.max() <= 255


def test_seeded_and_randomised(photos):
    img = photos[0]
    a = P.random_proxies(img, 4, seed=3, image_index=0)
    b = P.random_proxies(img, 4, seed=3, image_index=0)
    c = P.random_proxies(img, 4, seed=4, image_index=0)
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b))
    assert any(x[1] != y[1] for x, y in zip(a, c))


def test_parse_kinds():
    assert P.parse_kinds(None) == list(P.KINDS)
    assert P.parse_kinds("hf_phase, periodic_peaks") == ["hf_phase", "periodic_peaks"]
    with pytest.raises(ValueError, match="unknown proxy kind"):
        P.parse_kinds("nope")


def test_proxies_command(tmp_path, dev_dir):
    from typer.testing import CliRunner

    from aiidetect.cli import app

    src = next(r for r in csv.DictReader(open(dev_dir / "manifest.csv")) if r["label"] == "real")
    res = CliRunner().invoke(app, ["proxies", str(dev_dir / src["file"]), "-o", str(tmp_path / "p"), "--size", "128"])
    assert res.exit_code == 0, res.output
    log = json.loads((tmp_path / "p" / "proxies.json").read_text())
    assert len(log["proxies"]) == len(P.KINDS)
    assert len(list((tmp_path / "p").glob("*.png"))) == len(P.KINDS) + 1
    bad = CliRunner().invoke(app, ["proxies", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "q")])
    assert bad.exit_code == 2


def _amps(x):
    return np.abs(np.fft.fft2(np.asarray(x, dtype=np.float64), axes=(0, 1)))


def _expected_amplitudes(kind, img, params):
    """Each kind's documented effect on Fourier amplitudes (full fft2 grid), or
    None where the doc claims none beyond its band (resample_chain)."""
    h, w = img.shape[:2]
    a = _amps(img)
    r = P.radius_fft(h, w)[:, :, None]
    if kind == "hf_phase":  # "keeping every amplitude"
        return a
    if kind == "hf_amp_scale":  # band scaled by the gain, smooth ramp of width 0.08
        return a * (1.0 + (params["gain"] - 1.0) * P._smooth_step(r, params["r_lo"], 0.08))
    if kind == "lowpass_resharpen":  # |H(r)| times the original
        t = np.clip((r - params["r_lo"]) / (params["r_cut"] - params["r_lo"]), 0.0, 1.0)
        hr = np.where(r < params["r_lo"], 1.0, (1.0 + params["boost"] * np.sin(np.pi * t)) * (1.0 - t) ** 2)
        return a * np.abs(hr)
    return None


@pytest.mark.parametrize("kind", list(P.KINDS))
@pytest.mark.parametrize("shape", [(64, 48), (63, 50), (224, 224)])
def test_amplitude_claim(kind, shape):
    """Before clipping, every kind does to Fourier amplitudes what its docstring says."""
    rng = np.random.default_rng(3)
    img = 128 + 20 * rng.standard_normal((*shape, 3))
    for seed in range(4):
        out, params = P.KINDS[kind].fn(img, np.random.default_rng(seed))
        assert np.isrealobj(out) and out.shape == img.shape
        got, orig = _amps(out), _amps(img)
        band = P.band_mask(kind, *shape, params)[:, :, None]
        # outside its band no kind changes an amplitude; resample_chain claims only that >= 90 % of its
        # change lies in band (test_changes_only_its_band), periodic_peaks is exactly periodic only on
        # sizes that are multiples of its period (its docstring)
        outside = np.broadcast_to(~band, got.shape)
        exact = kind != "resample_chain" and not (kind == "periodic_peaks" and (shape[0] % params["period"]
                                                                                  or shape[1] % params["period"]))
        assert not exact or np.allclose(got[outside], orig[outside], rtol=1e-6, atol=1e-6 * orig.max()), (kind, params)
        want = _expected_amplitudes(kind, img, params)
        if want is not None:
            assert np.allclose(got, want, rtol=1e-6, atol=1e-6 * orig.max()), (kind, params)
        if kind == "hf_amp_replace":  # in band: one amplitude per ring (width 1/64) and channel
            ring = np.minimum((P.radius_fft(*shape) * 64).astype(int), int(np.ceil(np.sqrt(2) * 64)))
            for c in range(3):
                for k in np.unique(ring[band[:, :, 0]]):
                    v = got[:, :, c][band[:, :, 0] & (ring == k)]
                    assert np.ptp(v) <= 1e-6 * max(v.max(), 1.0), (k, c)
        if kind == "periodic_peaks":  # energy added only on the grid of multiples of 1/period
            assert (got[np.broadcast_to(band, got.shape)] != orig[np.broadcast_to(band, got.shape)]).any()


@pytest.mark.parametrize("link", ["photo_original.png", "photo_hf_phase.png", "proxies.json"])
def test_proxies_never_write_through_a_link_onto_the_photo(tmp_path, link):
    """`proxies photo.jpg -o .` beside a link named like one of its outputs that leads to the photo:
    the photo was replaced by its 512-pixel crop (a PNG under the .jpg name). Refused before anything
    is written."""
    from aiidetect.testing.images import noise_rgb, save

    from conftest import run_cli

    photo = save(noise_rgb(64, 48), tmp_path / "photo.jpg", quality=90)
    before = photo.read_bytes()
    (tmp_path / link).symlink_to("photo.jpg")
    r = run_cli("proxies", str(photo), "-o", str(tmp_path), "--kinds", "hf_phase", "-q")
    assert r.returncode == 2 and "refusing to overwrite" in r.stderr and r.stdout == "", r.stderr
    assert photo.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["photo.jpg", link])


@pytest.mark.parametrize("size, wh", [("0", (2100, 2100)), ("5000", (64, 48))])
def test_proxies_work_is_bounded(tmp_path, size, wh):
    """`--size 0` (the whole image) ran the float64 Fourier proxies on any photo: 3.3 GB and 40 s a kind on
    12 MP, tens of GB on 100 MP. Whole images are taken up to 2048x2048 pixels, --size up to 2048."""
    from PIL import Image

    from conftest import run_cli

    src = tmp_path / "big.png"
    Image.new("RGB", wh, (90, 120, 150)).save(src)
    r = run_cli("proxies", str(src), "-o", str(tmp_path / "p"), "--size", size, "--kinds", "hf_phase", "-q")
    assert r.returncode == 2 and r.stdout == "" and "2048" in r.stderr, r.stderr
    assert not (tmp_path / "p").exists()
