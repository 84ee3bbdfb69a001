"""aiidetect bench counts the model's FLOPs with torch's own counter; the ViT formula is the cross-check."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("config", ["tiny-vit", "small-vit"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_flop_count_matches_the_vit_formula(config, dtype):
    from aiidetect.backbone import BackboneSpec, create_backbone
    from aiidetect.bench import torch_gflops, vit_gflops

    bb = create_backbone(BackboneSpec.from_options(config=config), dtype=dtype)
    got = torch_gflops(bb, batch=2)
    assert got["gflops_per_image"] == pytest.approx(vit_gflops(bb.model_cfg), rel=1e-3)
    # the attention products are counted by torch, not added by formula
    assert any("scaled_dot_product" in op for op in got["by_op"]), got["by_op"]
    # the attention modules are back in inference mode (their fused fast path) afterwards
    assert not any(m.training for m in bb.visual.modules())


def test_bench_reports_the_torch_count_and_the_formula():
    from aiidetect.backbone import BackboneSpec
    from aiidetect.bench import run_bench

    res = run_bench(BackboneSpec.from_options(config="tiny-vit"), None, batch_size=2, peak_seconds=0.1,
                    model_seconds=0.1)
    assert res["model_gflops_source"] == "torch.utils.flop_counter"
    assert res["model_gflops_per_image"] == pytest.approx(res["model_gflops_analytic"], rel=1e-3)
    assert sum(res["model_gflops_by_op"].values()) == pytest.approx(res["model_gflops_per_image"], rel=1e-2)
