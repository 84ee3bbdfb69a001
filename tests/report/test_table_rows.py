import gc
import io
import weakref

from aiidetect.records import DetectorResult, Record
from aiidetect.report.writers import TableWriter


def test_a_table_keeps_each_row_not_its_record():
    # `results export -f table` over a 100,000-row store held every record whole (evidence, reasons, EXIF):
    # 920 MB; the table needs only each row's cells
    out = io.StringIO()
    w = TableWriter(out, ["metadata", "clip"])
    recs = [Record("/a/[b]x.jpg", verdict="ai-generated", p_ai=0.9,
                   detectors={"metadata": DetectorResult("ok", p_ai=0.9), "clip": DetectorResult("unavailable")},
                   reasons=["C2PA manifest names a generator"] + ["x" * 100] * 50),
            Record("/a/y.jpg", verdict="likely-real", p_ai=0.1,
                   detectors={"metadata": DetectorResult("ok", p_ai=0.1), "clip": DetectorResult("unavailable")})]
    refs = [weakref.ref(r) for r in recs]
    for r in recs:
        w.write(r)
    del recs, r
    gc.collect()
    assert all(ref() is None for ref in refs), "the writer holds the records"
    w.close()
    text = out.getvalue()
    # the row as before: the name as itself (never markup), the verdict, P(AI); a detector unavailable
    # everywhere has no column
    assert "/a/[b]x.jpg" in text and "ai-generated" in text and "0.900" in text and "likely-real" in text
    assert "metadata" in text and "clip" not in text
