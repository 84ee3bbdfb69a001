"""The feature cache (training and evaluation re-read the same backbone features): a damaged, foreign
or unwritable cache is a miss, said once, never a failed or silently wrong training run."""
from __future__ import annotations

import sqlite3

import numpy as np

from aiidetect.feature_cache import FeatureCache

SHA, ENC, PREP = "a" * 64, "enc-fingerprint", "center-crop|224"


def _vec(n: int = 8) -> np.ndarray:
    return np.arange(n, dtype=np.float32) / 3


def test_round_trip_is_exact(tmp_path):
    c = FeatureCache(tmp_path / "f.sqlite")
    c.put(SHA, ENC, PREP, {"embed": _vec(), "cls_3": _vec(4)})
    got = c.get(SHA, ENC, PREP, ["embed", "cls_3"])
    assert got is not None and np.array_equal(got["embed"], _vec()) and np.array_equal(got["cls_3"], _vec(4))
    assert c.get(SHA, ENC, PREP, ["embed", "cls_5"]) is None and c.error is None


def test_a_damaged_row_is_a_miss_not_a_feature(tmp_path):
    """A truncated vector ended training with 'all input arrays must have the same shape' on every
    later run; a flipped byte, or a row under another file's key, went into the fit unnoticed."""
    p = tmp_path / "f.sqlite"
    c = FeatureCache(p)
    other = "b" * 64
    for sha in (SHA, other):
        c.put(sha, ENC, PREP, {"embed": _vec()})
    damage = [lambda v: v[:-4],                                         # truncated
              lambda v: v[:-1] + bytes([v[-1] ^ 1])]                    # one bit flipped
    for hurt in damage:
        with sqlite3.connect(p) as db:
            (v,) = db.execute("SELECT vec FROM features WHERE sha=?", (SHA,)).fetchone()
            db.execute("UPDATE features SET vec=? WHERE sha=?", (hurt(v), SHA))
        assert FeatureCache(p).get(SHA, ENC, PREP, ["embed"]) is None
        c.put(SHA, ENC, PREP, {"embed": _vec()})  # recomputed and stored again
        assert np.array_equal(FeatureCache(p).get(SHA, ENC, PREP, ["embed"])["embed"], _vec())
    with sqlite3.connect(p) as db:  # another file's row copied under this file's key
        (v,) = db.execute("SELECT vec FROM features WHERE sha=?", (other,)).fetchone()
        db.execute("UPDATE features SET vec=? WHERE sha=?", (v, SHA))
    fresh = FeatureCache(p)
    assert fresh.get(SHA, ENC, PREP, ["embed"]) is None and "checksum" in fresh.error


def test_a_cache_that_is_not_a_database_costs_time_not_the_run(tmp_path):
    p = tmp_path / "features.sqlite"
    p.write_bytes(b"\x00garbage" * 1000)
    c = FeatureCache(p)  # raised 'file is not a database', which ended `train linear` and `train flow`
    assert c.get(SHA, ENC, PREP, ["embed"]) is None
    c.put(SHA, ENC, PREP, {"embed": _vec()})
    assert "not a database" in c.error
    c.close()
    assert p.read_bytes() == b"\x00garbage" * 1000


def test_train_linear_goes_on_without_a_damaged_cache(dev_manifest, tmp_path):
    from typer.testing import CliRunner

    from aiidetect.cli import app

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "features.sqlite").write_bytes(b"\x00garbage" * 1000)
    r = CliRunner().invoke(app, ["train", "linear", str(dev_manifest), "--backbone-config", "tiny-vit", "--shots", "2",
                                 "--name", "p"], env={"AIIDETECT_CACHE": str(tmp_path / "cache"),
                                                      "AIIDETECT_WEIGHTS": str(tmp_path / "w")}, catch_exceptions=False)
    assert r.exit_code == 0, r.stderr[-2000:]
    assert "feature cache problem" in r.stderr and (tmp_path / "w" / "p" / "manifest.json").exists()


def test_features_of_one_dtype_are_not_served_to_another(tmp_path):
    """The cache was keyed by the backbone's fingerprint alone: `train linear --dtype float32` fitted on the
    features a bfloat16 run had cached, and its head differed from an uncached float32 run's."""
    from PIL import Image

    from aiidetect.backbone import BackboneSpec, create_backbone
    from aiidetect.feature_cache import encoder_key, extract_features
    from aiidetect.preprocess import make_spec

    rng = np.random.default_rng(0)
    paths = []
    for k in range(2):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(paths[-1])
    spec = BackboneSpec.from_options(config="tiny-vit")
    cache = FeatureCache(tmp_path / "f.sqlite")
    feats = {}
    for dtype in ("bfloat16", "float32"):
        bb = create_backbone(spec, dtype=dtype)
        prep = make_spec("center-crop", bb.image_size, bb.mean, bb.std)
        feats[dtype] = extract_features(bb, paths, prep, cache=cache)[0]["embed"]
        assert np.array_equal(feats[dtype], extract_features(bb, paths, prep)[0]["embed"]), dtype
        # float32 rows keep the key they were cached under before the dtype joined it
        assert (encoder_key(bb) == bb.fingerprint) == (dtype == "float32"), encoder_key(bb)
    assert not np.array_equal(feats["bfloat16"], feats["float32"])


def test_a_warm_cache_serves_the_perceptual_hashes_without_decoding_again(tmp_path, monkeypatch):
    """The trainers record each training image's perceptual hash: with features and hash cached, a
    warm run decoded every image again for the hash alone (0.25 s -> 9 s on the dev set)."""
    from PIL import Image

    import aiidetect.perceptual
    from aiidetect.feature_cache import extract_features
    from aiidetect.perceptual import KIND
    from aiidetect.preprocess import make_spec

    rng = np.random.default_rng(1)
    paths = []
    for k in range(3):
        paths.append(str(tmp_path / f"{k}.png"))
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((64, 64), Image.Resampling.BICUBIC).save(paths[-1])
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "flat.png")  # no hash: cached as such
    paths.append(str(tmp_path / "flat.png"))
    class bb:  # features of the pixels, without a model to build
        layers, fingerprint, device, dtype = 1, "mean-test", "cpu", "float32"
        encode = staticmethod(lambda x, layers=(): {"embed": x.mean(dim=(2, 3))})

    prep = make_spec("center-crop", 32)
    cache = FeatureCache(tmp_path / "f.sqlite")
    cold: dict = {}
    extract_features(bb, paths, prep, cache=cache, phashes=cold)
    assert cold[paths[-1]] is None and all(isinstance(cold[p], int) for p in paths[:-1])

    def decoded(*a, **k):
        raise AssertionError("decoded again for its hash")
    with monkeypatch.context() as mp:
        mp.setattr(aiidetect.perceptual, "phash", decoded)
        warm: dict = {}
        extract_features(bb, paths, prep, cache=cache, phashes=warm)
    assert warm == cold
    # a damaged hash row is recomputed, not served
    with sqlite3.connect(tmp_path / "f.sqlite") as db:
        db.execute("UPDATE phashes SET value=? WHERE sha=(SELECT MIN(sha) FROM phashes) AND kind LIKE ?",
                   (b"\0" * 24, KIND + "%"))
    again: dict = {}
    fresh = FeatureCache(tmp_path / "f.sqlite")
    extract_features(bb, paths, prep, cache=fresh, phashes=again)
    assert again == cold and "checksum" in fresh.error


def test_features_cached_without_their_hash_cost_only_the_hashs_small_decode(tmp_path, monkeypatch):
    """Features cached, hash not (a cache from before the hash, or of another hash kind): the image was
    decoded whole again for its hash alone; now only the hash's own decode (decode.phash_bytes: a
    1024 x 768 JPEG's 512 x 384 draft) is made, and it gives the hash a cold run records."""
    from PIL import Image

    from aiidetect.decode import phash_bytes
    from aiidetect.feature_cache import extract_features
    from aiidetect.preprocess import make_spec

    from conftest import count_decodes

    rng = np.random.default_rng(2)
    p = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((1024, 768), Image.Resampling.BICUBIC).save(p)

    class bb:  # features of the pixels, without a model to build
        layers, fingerprint, device, dtype = 1, "mean-test", "cpu", "float32"
        encode = staticmethod(lambda x, layers=(): {"embed": x.mean(dim=(2, 3))})

    prep = make_spec("center-crop", 32)
    extract_features(bb, [str(p)], prep, cache=FeatureCache(tmp_path / "f.sqlite"))  # features only
    sizes = count_decodes(monkeypatch)
    got: dict = {}
    extract_features(bb, [str(p)], prep, cache=FeatureCache(tmp_path / "f.sqlite"), phashes=got)
    assert sizes == [(512, 384)] and got == {str(p): phash_bytes(p.read_bytes())}


def test_features_decoded_by_another_pillow_are_not_served(tmp_path, monkeypatch):
    """The cache was not keyed by the decoders' versions: after a Pillow upgrade (Pillow 12 and 13 give other
    pixels for a dev-set PNG), `train` and `calibrate` fitted on the features and near-duplicate hashes of the
    old Pillow's pixels, and the head could not be trained again from its images with what was installed."""
    import PIL

    from PIL import Image

    import aiidetect.perceptual
    from aiidetect import extras
    from aiidetect.feature_cache import extract_features
    from aiidetect.preprocess import make_spec

    rng = np.random.default_rng(2)
    paths = []
    for k in range(3):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(paths[-1])
    encoded = []

    class bb:  # features of the pixels, without a model to build
        layers, fingerprint, device, dtype = 1, "mean-test", "cpu", "float32"
        encode = staticmethod(lambda x, layers=(): encoded.append(len(x)) or {"embed": x.mean(dim=(2, 3))})

    prep = make_spec("center-crop", 32)
    path = tmp_path / "f.sqlite"
    first: dict = {}
    extract_features(bb, paths, prep, cache=FeatureCache(path), phashes=first)
    assert sum(encoded) == 3
    hashed = []
    phash = aiidetect.perceptual.phash
    with monkeypatch.context() as mp:
        mp.setattr(PIL, "__version__", "99.0")
        mp.setattr(extras, "_decoder_versions", None)  # a new process, another Pillow
        mp.setattr(aiidetect.perceptual, "phash", lambda *a, **k: hashed.append(1) or phash(*a, **k))
        again: dict = {}
        extract_features(bb, paths, prep, cache=FeatureCache(path), phashes=again)
        assert sum(encoded) == 6, "every image decoded and encoded again under the other Pillow"
        assert len(hashed) == 3 and again == first
    monkeypatch.setattr(extras, "_decoder_versions", None)
    extract_features(bb, paths, prep, cache=FeatureCache(path))
    assert sum(encoded) == 6  # the installed Pillow's rows are still there
