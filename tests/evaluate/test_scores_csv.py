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
