"""`export onnx`'s command surface: values it cannot honour are usage errors, before any work."""
from __future__ import annotations

import pytest

from conftest import run_cli


@pytest.mark.parametrize("extra", [["--opset", "5"], ["--agreement-limit", "0"], ["--agreement-limit", "-3"],
                                   ["--calibration-limit", "0"]])
def test_values_it_cannot_honour_are_refused(tmp_path, extra):
    """--opset 5 exported an opset-18 graph (after a traceback on stderr) and a summary saying 5; a limit of
    0 took every image in the folder, -3 all but the last three."""
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "onnx"
    r = run_cli("export", "onnx", "-o", str(out), "--backbone-config", "tiny-vit", "--agreement-data", str(data),
                "--calibration-data", str(data), "-q", *extra)
    assert r.returncode == 2 and r.stdout == "" and extra[0] in r.stderr, r.stderr[-800:]
    assert "Traceback" not in r.stderr and not out.exists()


def test_an_output_that_is_a_file_is_one_line_and_left_alone(tmp_path):
    """`-o photo.jpg` was 'FileExistsError' with the --debug hint, as for a bug."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 not touched")
    r = run_cli("export", "onnx", "-o", str(photo), "--backbone-config", "tiny-vit", "-q")
    assert r.returncode == 2 and r.stdout == "" and "is a file" in r.stderr, r.stderr
    assert "FileExistsError" not in r.stderr and photo.read_bytes() == b"\xff\xd8 not touched"


@pytest.mark.parametrize("extra", [["--agreement-data", "{d}"],
                                   ["--variant", "int8", "--int8-mode", "static", "--calibration-data", "{d}"]])
def test_a_data_folder_without_images_is_said_before_the_export(tmp_path, extra):
    """An empty --calibration-data folder was found out after the fp32 graph had been exported (seconds for
    tiny-vit, minutes for ViT-L); an empty --agreement-data one was not said at all (no agreement measured)."""
    d = tmp_path / "no-images"
    d.mkdir()
    (d / "notes.txt").write_text("not an image")
    out = tmp_path / "onnx"
    r = run_cli("export", "onnx", "-o", str(out), "--backbone-config", "tiny-vit", "-q",
                *[a.format(d=d) for a in extra])
    assert r.returncode == 2 and r.stdout == "" and f"{d} holds no image files" in r.stderr, r.stderr[-600:]
    assert not out.exists()
