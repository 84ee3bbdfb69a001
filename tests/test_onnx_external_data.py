"""An ONNX model from a shared drive must not read files outside its folder as its weights: onnxruntime
before 1.24 (every release for Python 3.10) followed any external data location, and later ones still
did for sparse initializers, so aiidetect checks them before onnxruntime opens the model."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _external(name: str, location: str) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        t.external_data.add(key=k, value=v)
    return t


def _model(folder, how: str, location: str):
    """x + w, where w takes its data from `location`: an initializer, a sparse one, or a Constant node
    inside an If's branch."""
    io = ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    nodes, inits, sparse = [helper.make_node("Add", ["x", "w"], ["y"])], [], []
    if how == "initializer":
        inits = [_external("w", location)]
    elif how == "sparse":
        sparse = [helper.make_sparse_tensor(_external("w", location),
                                            helper.make_tensor("w_i", TensorProto.INT64, [4], [0, 1, 2, 3]), [4])]
    else:
        branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=_external("c", location))], "b", [],
                                   [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])])
        nodes = [helper.make_node("Constant", [], ["t"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
                 helper.make_node("If", ["t"], ["w"], then_branch=branch, else_branch=branch)] + nodes
    g = helper.make_graph(nodes, "g", *io, initializer=inits, sparse_initializer=sparse)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = folder / f"{how}.onnx"
    path.write_bytes(m.SerializeToString())
    return path


@pytest.mark.parametrize("how", ["initializer", "sparse", "subgraph-constant"])
@pytest.mark.parametrize("where", ["parent", "absolute", "link-out", "fifo"])
def test_a_model_reading_data_outside_its_folder_never_reaches_onnxruntime(tmp_path, monkeypatch, how, where):
    import onnxruntime

    from aiidetect.onnx_runtime import RuntimeUnavailable, load_session

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    location = {"parent": "../secret.bin", "absolute": str(secret), "link-out": "link.bin", "fifo": "fifo.bin"}[where]
    if where == "link-out":
        os.symlink(secret, folder / "link.bin")
    if where == "fifo":
        os.mkfifo(folder / "fifo.bin")  # inside the folder, but ORT's read would wait for a writer for ever
    path = _model(folder, how, location)

    def never(*_a, **_k):
        raise AssertionError("onnxruntime opened the model")

    monkeypatch.setattr(onnxruntime, "InferenceSession", never)
    with pytest.raises(RuntimeUnavailable, match="which is not a file in the model's folder"):
        load_session(path, device="cpu")


def test_a_model_whose_data_is_in_its_folder_loads(tmp_path):
    from aiidetect.onnx_runtime import load_session

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(np.ones(4, dtype=np.float32).tobytes())
    sess = load_session(_model(tmp_path, "initializer", "sub/w.bin"), device="cpu")
    assert sess.session.run(None, {"x": np.zeros(4, np.float32)})[0].tolist() == [1.0] * 4


@pytest.mark.parametrize("version, refused", [("1.23.2", True), ("1.24.1", False), ("1.32.0", False)])
def test_without_onnx_only_an_onnxruntime_that_checks_paths_itself_opens_models(tmp_path, monkeypatch, version,
                                                                                 refused):
    import sys
    import types

    from aiidetect.onnx_runtime import RuntimeUnavailable, check_external_data

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    ort = types.SimpleNamespace(__version__=version)
    if refused:
        with pytest.raises(RuntimeUnavailable, match="install `onnx`"):
            check_external_data(tmp_path / "m.onnx", ort)
    else:
        check_external_data(tmp_path / "m.onnx", ort)
