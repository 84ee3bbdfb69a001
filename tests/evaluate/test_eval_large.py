import base64
import csv
import os

import numpy as np

from aiidetect.evaluate.report import write_scores


def test_scores_csv_keeps_a_name_that_is_not_utf8(tmp_path):
    # `file` shows such a name's bytes as U+FFFD, which names no file: the row could not be traced back to
    # its image (metrics.json's unreadable list and scan's records carry file_bytes; scores.csv did not)
    odd = os.fsdecode(b"/data/caf\xe9.jpg")
    write_scores(tmp_path / "scores.csv", {"raw": {
        "path": [odd, "/data/ok.jpg"], "y": np.array([1, 0]), "generator": ["sdxl", "real"],
        "p": {"fused": np.array([0.9, np.nan])}, "verdict": ["ai-generated", ""]}})
    rows = list(csv.DictReader(open(tmp_path / "scores.csv", encoding="utf-8", newline="")))
    assert base64.b64decode(rows[0]["file_bytes"]) == b"/data/caf\xe9.jpg"
    assert rows[1]["file_bytes"] == "" and rows[1]["file"] == "/data/ok.jpg"
    assert list(rows[0])[-1] == "file_bytes" and list(rows[0])[:5] == ["condition", "file", "label", "generator", "p_fused"]


def test_eval_keeps_no_record_once_its_item_is_scored(monkeypatch):
    # eval held every scan record whole (evidence, reasons, EXIF) in a list beside the scored items until the
    # last file was read: 200 MB at 50,000 files of which 30 MB were those records
    import gc
    import types
    import weakref

    import aiidetect.pipeline as pipeline
    from aiidetect.evaluate.runner import run
    from aiidetect.records import DetectorResult, Record

    alive = []

    class FakePipeline:
        def __init__(self, *a, **k):
            self.decoding = types.SimpleNamespace(reader=types.SimpleNamespace())

        def run(self, cands, on_record=None):
            for i, c in enumerate(cands):
                # Checked while the run goes: eval stops asking once it has a record per item, so a check
                # after this loop never ran (and passed whatever eval kept)
                if i % 10 == 9:
                    gc.collect()
                    assert sum(r() is not None for r in alive) <= 2, "every record is still held"
                rec = Record(c.path, sha256="0" * 64, verdict="uncertain",
                             detectors={"m": DetectorResult("ok", p_ai=0.5)}, reasons=["x" * 1000])
                alive.append(weakref.ref(rec))
                yield rec

    monkeypatch.setattr(pipeline, "Pipeline", FakePipeline)
    items = [types.SimpleNamespace(path=f"/x/{i}.png", label=i % 2, generator="g") for i in range(50)]
    scored = run(items, [])
    assert len(scored) == 50 and scored[7].results["m"].p_ai == 0.5
