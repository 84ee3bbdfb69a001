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
    # tiny-vit's 197 tokens: a smaller input moves the blocks' own products too (5 tokens x 4 images are
    # few enough rows for MKL's other kernel), which no real ViT input is
    from aiidetect.backbone import BackboneSpec, create_backbone

    return create_backbone(BackboneSpec.from_options(config="tiny-vit", seed=0), "cpu", "float32")


def _alone_and_batched(fn, x):
    alone = torch.cat([fn(x[i:i + 1]) for i in range(x.shape[0])])
    return alone, fn(x)


def test_backbone_embedding_does_not_depend_on_the_batch(backbone):
    # 4 rows: the fewest at which MKL's float32 GEMM takes its other kernel (bfloat16 did not differ here)
    s = backbone.image_size
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 3, s, s)).astype(np.float32))
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


def test_rowwise_matmul_keeps_the_plain_product_under_an_exporter():
    """An exporter traces the graph with a symbolic batch; a loop over it would fix the batch size: a graph
    traced on 3 rows must take 5."""
    from aiidetect.backbone import rowwise_matmul

    w, b = torch.randn(8, 3), torch.randn(3)
    traced = torch.jit.trace(lambda t: rowwise_matmul(t, w, b), torch.randn(3, 8))
    x = torch.randn(5, 8)
    assert traced(x).shape == (5, 3) and torch.allclose(traced(x), x @ w + b)


def test_a_dynamic_int8_graph_scores_each_image_alone(tmp_path):
    """quantize_dynamic's graphs take each activation's int8 scale from the min and max of the whole batch: a
    file among brighter ones got other numbers than alone (tiny-vit int8: p_ai up to 0.013 apart)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from aiidetect.onnx_runtime import load_session

    w = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["pixels", "w"], ["embed"])], "g",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("embed", TensorProto.FLOAT, ["batch", 4])], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "f.onnx")
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8)
    sess = load_session(tmp_path / "q.onnx", device="cpu", variant="int8")
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32) * np.array([[1.0], [30.0], [0.1]], np.float32)
    alone = np.concatenate([sess.run(x[i:i + 1])["embed"] for i in range(3)])
    assert np.array_equal(alone, sess.run(x)["embed"])
