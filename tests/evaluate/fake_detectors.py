"""The fake pixel detector the evaluate tests share, so they need no trained head."""
import numpy as np

from aiidetect.detectors.base import Detector, FeatureRequest, feature_key
from aiidetect.preprocess import make_spec
from aiidetect.records import DetectorResult


class Brightness(Detector):
    """A pixel detector: brighter = more AI. Guesses a generator too."""

    family = "fakebright"

    def __init__(self):
        super().__init__()  # named after its family, as a subclass is
        self.req = FeatureRequest("fake-mean", make_spec("resize", 16),
                                  lambda x, layers=(): {"embed": x.mean(dim=(2, 3))})

    def feature_requests(self):
        return [self.req]

    def predict(self, samples, features):
        out = []
        for f in features:
            z = 3.0 * float(np.mean(f[feature_key(self.req)]["embed"]))
            out.append(DetectorResult("ok", p_ai=float(1 / (1 + np.exp(-z))), score=z, score_kind="logit",
                                      extra={"attribution": "genA" if z > 3 else "genB"}))
        return out
