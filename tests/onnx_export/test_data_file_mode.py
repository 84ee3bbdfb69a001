"""An export's external data files (`*.onnx.data`) are shared like its graph files: the umask decides both."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest


def _tiny_graph(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((32, 32), np.float32), "w")  # 4 KB: past _save's 1 KB threshold
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))


@pytest.mark.parametrize("variant", ["fp16", "int8"])
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_external_data_follows_the_umask_like_the_graph(tmp_path, monkeypatch, variant, umask):
    """onnx's writer and ONNX Runtime's quantizer left `.data` at 0600 beside a 0644 graph: a newsroom's shared
    export folder gave the other users a graph whose weights they could not read."""
    pytest.importorskip("onnxruntime")
    from aiidetect.onnx_export import quantize

    monkeypatch.setattr(quantize, "EXTERNAL_DATA_BYTES", 0)  # the tiny graph takes a large one's path: external data
    src, dst = tmp_path / "fp32.onnx", tmp_path / f"m-{variant}.onnx"
    _tiny_graph(src)
    old = os.umask(umask)  # the test's own process state, put back at once; the code under test never sets it
    try:
        if variant == "fp16":
            quantize.to_fp16(src, dst)
        else:
            quantize.to_int8(src, dst)
    finally:
        os.umask(old)
    data = tmp_path / f"{dst.name}.data"
    assert data.is_file()
    want = 0o666 & ~umask
    assert stat.S_IMODE(dst.stat().st_mode) == want
    assert stat.S_IMODE(data.stat().st_mode) == want
