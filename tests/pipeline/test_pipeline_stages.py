"""The scan Pipeline's plan, stages and loop: what the plan decides, the decode
half an engine ships to CPU workers, and cache hits through the guarded predict."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from aiidetect.detectors.base import Detector, FeatureRequest, UnavailableDetector
from aiidetect.discover import Candidate
from aiidetect.pipeline import Pipeline, Plan
from aiidetect.pipeline.stages import predict
from aiidetect.preprocess import make_spec, spec_key
from aiidetect.records import DetectorResult
from aiidetect.result_cache import ResultCache
from aiidetect.testing.images import noise_pngs


class Head(Detector):
    """A model head asking for one encoder pass."""

    family = "head"

    def __init__(self, name, spec, layers=(), needs_image=False):
        super().__init__(name)
        self.req = FeatureRequest(encoder_key="enc", preprocess=spec, encode=None, layers=tuple(layers))
        self.needs_image = needs_image

    def feature_requests(self):
        return [self.req]


class PerFile(Detector):
    """Bytes only: runs in the decode workers."""

    family = "perfile"
    needs_pixels = False
    per_file = True

    def __init__(self):
        super().__init__("perfile")

    def predict(self, samples, features):
        return [DetectorResult(status="ok", p_ai=0.25, score=0.0, score_kind="logit") for _ in samples]

    def cache_identity(self):
        return {"family": self.family}


def test_plan_shares_encoder_passes_and_places_detectors():
    resize, crop = make_spec("resize-center-crop", 32), make_spec("center-crop", 32)
    a, b, m = Head("a", resize, (1,)), Head("b", resize, (3,)), PerFile()
    plan = Plan.build([a, b, m])
    assert len(plan.groups) == 1 and next(iter(plan.groups.values())).layers == {1, 3}
    assert plan.specs == [resize] and plan.draft is None and not plan.keep_image
    assert plan.worker_dets == [m] and plan.main_dets == [a, b]
    c = Head("c", crop, needs_image=True)
    plan2 = Plan.build([a, c, m])
    assert len(plan2.groups) == 2 and plan2.draft is None and plan2.keep_image


def test_a_resizing_heads_pixels_do_not_depend_on_the_other_heads(tmp_path):
    """A JPEG was drafted (decoded shrunk in its DCT) only when every head of the run resized: installing a
    center-crop head beside a resizing one changed the resizing head's pixels, so its score for the same bytes
    (57 of 58 dev camera JPEGs, up to 0.0086 p_ai), and heads are trained on full-size decodes."""
    from aiidetect.testing.images import jpeg_bytes, noise_rgb

    f = tmp_path / "photo.jpg"
    f.write_bytes(jpeg_bytes(noise_rgb(256, 192), quality=90))   # 8 times the head's side: drafted to 32 x 24
    resize = make_spec("resize-center-crop", 32)
    runs = [[Head("a", resize)], [Head("a", resize), Head("c", make_spec("center-crop", 32))]]
    pixels = [Pipeline(dets)._decode(Candidate(str(f), explicit=True), 0).pixels[spec_key(resize)] for dets in runs]
    assert np.array_equal(*pixels)


def test_decoder_half_is_picklable_with_the_full_decode_settings():
    resize = make_spec("resize-center-crop", 32)
    full = Pipeline([Head("a", resize, needs_image=True), PerFile()], batch_size=4, workers=2)
    half = pickle.loads(pickle.dumps(full.decoder_half()))
    assert (half.specs, half.draft, half.keep_image) == (full.specs, full.draft, full.keep_image)
    assert [d.name for d in half.detectors] == ["perfile"] and not half.groups and half.main_dets == []


def test_predict_turns_a_raise_or_a_miscount_into_failed_results():
    class Raises(PerFile):
        def predict(self, samples, features):
            raise OSError("disk gone")

    class Short(PerFile):
        def predict(self, samples, features):
            return []

    r = predict(Raises(), [None, None], [{}, {}])
    assert [x.status for x in r] == ["error", "error"] and "disk gone" in r[0].reason
    assert "returned 0 results for 1 images" in predict(Short(), [None], [{}])[0].reason


class BrokenUnavailable(UnavailableDetector):
    """An unavailable detector whose predict itself fails (it is never cached,
    so every cache hit has to ask it again)."""

    def predict(self, samples, features):
        raise RuntimeError("cannot even say why")


def test_a_cache_hit_asks_uncached_detectors_through_the_guarded_predict(tmp_path):
    paths = noise_pngs(tmp_path, 3, w=24, h=20, seed=1)
    cache = ResultCache(tmp_path / "r.sqlite")

    def scan():
        pipe = Pipeline([PerFile(), BrokenUnavailable("linear", "no head")], batch_size=2, workers=2, cache=cache)
        return pipe, [r.to_dict() for r in pipe.run([Candidate(p, explicit=True) for p in paths])]

    first_pipe, first = scan()
    second_pipe, second = scan()
    assert first_pipe.stats.cache_hits == 0 and second_pipe.stats.cache_hits == 3
    assert second == first
    for rec in second:
        assert rec["error"] is None
        assert rec["detectors"]["perfile"]["status"] == "ok"
        assert rec["detectors"]["linear"]["status"] == "error"
        assert "cannot even say why" in rec["detectors"]["linear"]["reason"]


@pytest.mark.parametrize("batch_size,workers", [(1, 1), (3, 2)])
def test_records_come_back_in_input_order_with_failures_in_place(tmp_path, batch_size, workers):
    good = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [str(good), str(tmp_path / "empty.png"), str(tmp_path / "nope.png"), str(good)]
    pipe = Pipeline([PerFile()], batch_size=batch_size, workers=workers)
    recs = list(pipe.run(Candidate(p, explicit=True) for p in paths))
    assert [r.file for r in recs] == paths
    assert [r.error.code if r.error else None for r in recs] == [None, "empty-file", "unreadable", None]
    assert pipe.stats.files == 4 and pipe.stats.duplicates_reused == 1


def _plan_with_model(device="cpu"):
    plan = Plan.build([Head("a", make_spec("resize-center-crop", 32)), PerFile()])
    for g in plan.groups.values():
        g.request.device = device
    return plan


def test_decode_schedule_adapts_beside_a_cpu_model_that_uses_every_core(monkeypatch):
    import aiidetect.pipeline.plan as plan_mod

    monkeypatch.setattr(plan_mod, "usable_cores", lambda: 2)
    monkeypatch.setattr(plan_mod, "_torch_threads", lambda: None)
    cpu = _plan_with_model("cpu")
    assert cpu.decode_schedule(2, env={}) == "adaptive"                          # model on every core
    assert cpu.decode_schedule(2, env={"OMP_NUM_THREADS": "1"}) == "adaptive"    # 1 + 2 workers > 2 cores
    monkeypatch.setattr(plan_mod, "usable_cores", lambda: 8)
    assert cpu.decode_schedule(2, env={"OMP_NUM_THREADS": "4"}) == "overlap"     # cores to spare
    assert cpu.decode_schedule(2, env={}) == "adaptive"
    monkeypatch.setattr(plan_mod, "_torch_threads", lambda: 4)
    assert cpu.decode_schedule(2, env={}) == "overlap"                           # torch told to use 4 of 8
    assert _plan_with_model("cuda").decode_schedule(2, env={}) == "overlap"      # the GPU wants the overlap
    assert _plan_with_model("cuda:1").decode_schedule(2, env={}) == "overlap"
    # the override, any way; a plan without a model never takes turns (nothing to take turns with)
    for forced in ("turns", "overlap", "adaptive"):
        assert _plan_with_model("cuda").decode_schedule(2, env={"AIIDETECT_DECODE_SCHEDULE": forced}) == forced
    assert cpu.decode_schedule(2, env={"AIIDETECT_DECODE_SCHEDULE": "sometimes"}) == "overlap"  # unknown: the rule
    assert Plan.build([PerFile()]).decode_schedule(2, env={"AIIDETECT_DECODE_SCHEDULE": "turns"}) == "overlap"
    assert Pipeline([PerFile()]).schedule == "overlap"
    with pytest.raises(ValueError, match="decode schedule"):
        Pipeline([PerFile()], schedule="sometimes")


class _MeanHead(Detector):
    """A model head whose result is a fixed function of its pixels."""

    family = "head"

    def __init__(self, spec):
        super().__init__("mean")
        self.req = FeatureRequest(encoder_key="mean", preprocess=spec, encode=self.encode)

    def encode(self, x, layers=()):
        return {"embed": x.reshape(x.shape[0], -1).mean(dim=1, keepdim=True)}

    def feature_requests(self):
        return [self.req]

    def predict(self, samples, features):
        key = next(iter(features[0]))
        return [DetectorResult(status="ok", p_ai=float(f[key]["embed"][0]) % 1.0, score=0.0, score_kind="logit")
                for f in features]


def test_records_are_the_same_however_decode_shares_the_machine(tmp_path):
    paths = noise_pngs(tmp_path, 7, grow=1)
    paths.insert(3, str(tmp_path / "missing.png"))
    spec = make_spec("resize-center-crop", 32)
    out = {}
    for schedule in ("overlap", "turns", "adaptive"):
        pipe = Pipeline([PerFile(), _MeanHead(spec)], batch_size=2, workers=2, schedule=schedule)
        out[schedule] = [r.to_dict() for r in pipe.run(Candidate(p, explicit=True) for p in paths)]
        assert (pipe.turn_policy is not None) is (schedule == "adaptive")
    assert out["overlap"] == out["turns"] == out["adaptive"]
    assert [r["file"] for r in out["turns"]] == paths and out["turns"][3]["error"]["code"] == "unreadable"
    # 8 files in chunks of 2: the adaptive run timed the caller's chunks in both modes
    assert pipe.turn_policy.observed == 3 and pipe.turn_policy.per_item(True) is not None
