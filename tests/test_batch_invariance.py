"""The same bytes get the same numbers whatever else is in their batch: a file scanned alone, in a
scan's last short batch or with --batch-size 1 must get exactly the p_ai it gets among 16 others,
or two scans of one disputed photo disagree. MKL's float32 GEMM rounds a row of a 1-3 row product
otherwise than the same row among more (backbone.rowwise_matmul); these tests hold each stage that
multiplies a batch of feature rows to bit-identical rows."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def backbone():
    from aiidetect.backbone import BackboneSpec, create_backbone

    return create_backbone(BackboneSpec.from_options(config="tiny-vit", seed=0), "cpu", "float32")


def _alone_and_batched(fn, x):
    alone = torch.cat([fn(x[i:i + 1]) for i in range(x.shape[0])])
    return alone, fn(x)


def test_backbone_embedding_does_not_depend_on_the_batch(backbone):
    # 4 rows: the fewest at which MKL's float32 GEMM takes its other kernel (bfloat16 did not differ here)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32))
    with torch.inference_mode():
        alone, batched = _alone_and_batched(lambda t: backbone.encode(t)["embed"], x)
    assert torch.equal(alone, batched)


def test_mpft_logits_do_not_depend_on_the_batch(backbone):
    from aiidetect.mpft.model import MPFTModel

    torch.manual_seed(0)
    m = MPFTModel(backbone.visual, ["real", "a", "b"]).eval()
    feats = torch.randn(6, m.binary.in_features)
    with torch.inference_mode():
        for k in (0, 1):
            alone, batched = _alone_and_batched(lambda t: m.heads(t)[k], feats)
            assert torch.equal(alone, batched)


def test_flow_loglik_does_not_depend_on_the_batch():
    from aiidetect.flow.detector import FlowDetector
    from aiidetect.flow.model import FeatureFlow, FlowConfig

    m = FeatureFlow(FlowConfig(dim=64, blocks=4, hidden=256, linear="lu", seed=0)).eval()
    x = np.random.default_rng(1).standard_normal((6, 64)).astype(np.float32)
    det = SimpleNamespace(model=m)
    alone = np.concatenate([FlowDetector.loglik(det, x[i:i + 1]) for i in range(6)])
    assert np.array_equal(alone, FlowDetector.loglik(det, x))


def test_rowwise_matmul_keeps_the_plain_product_under_an_exporter(monkeypatch):
    """An exporter traces the graph with a symbolic batch; a loop over it would fix the batch size."""
    import aiidetect.backbone as bb

    x, w = torch.randn(5, 8), torch.randn(8, 3)
    monkeypatch.setattr(bb, "_tracing", lambda: True)
    assert torch.equal(bb.rowwise_matmul(x, w), x @ w)
