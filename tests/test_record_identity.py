"""Each detector entry of a record names the configuration that computed it (`identity`, docs/schema.md):
a colleague re-scanning a disputed photo can tell whether a different number comes from another head,
dtype or build, or from the same one."""
from __future__ import annotations

import pytest

from aiidetect import ScanOptions, Scanner


@pytest.fixture
def photo(tmp_path):
    from aiidetect.testing.images import jpeg_bytes, noise_rgb

    f = tmp_path / "photo.jpg"
    f.write_bytes(jpeg_bytes(noise_rgb()))
    return str(f)


def _entry(path, **opts) -> dict:
    with Scanner(ScanOptions(detectors=["metadata"], **opts)) as scanner:
        (rec,) = list(scanner.scan([path]))
    return rec.to_dict()["detectors"]["metadata"]


def test_identity_names_the_configuration(photo, tmp_path, monkeypatch):
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "cache"))
    fresh = _entry(photo, cache=False)
    assert len(fresh["identity"]) == 32
    # the same configuration again, and served from the result cache: the same identity
    assert _entry(photo, cache=True)["identity"] == fresh["identity"]
    cached = _entry(photo, cache=True)
    assert cached == _entry(photo, cache=False)
    # another setting the result depends on: another identity
    assert _entry(photo, cache=False, watermark="never")["identity"] != fresh["identity"]


def test_identity_follows_the_build(photo, monkeypatch):
    import aiidetect.result_cache as result_cache

    before = _entry(photo, cache=False)["identity"]
    monkeypatch.setattr(result_cache, "_source_hash", "0" * 64)
    assert _entry(photo, cache=False)["identity"] != before
