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


def test_the_shown_digits_never_read_across_the_band_from_the_verdict():
    """p_ai 0.899999 under a 0.9 band is uncertain; the table (and --explain's, the same rows) read 0.900 beside
    it. The 3 digits keep the verdict's side of the band that judged the file, the nearest ones where they do."""
    from aiidetect.fusion import shown_p_text

    for p, band, want in [(0.899999, (0.9, 0.1), "0.899"), (0.475021, (0.9, 0.1), "0.475"),
                          (0.100001, (0.9, 0.1), "0.101"), (0.9345672, (0.9345671, 0.2), "0.935"),
                          (0.93456785, (0.934567891, 0.2), "0.934"), (0.9, (0.9, 0.1), "0.900")]:
        assert shown_p_text(p, band) == want, (p, band)
    fusion = {"ai_threshold": 0.9, "real_threshold": 0.1}
    for explain in (False, True):
        out = io.StringIO()
        w = TableWriter(out, ["metadata"], explain=explain, fusion=fusion)
        w.write(Record("/a/u.jpg", verdict="uncertain", p_ai=0.899999, detectors={"metadata": DetectorResult("ok")}))
        w.close()
        assert "0.899" in out.getvalue() and "0.900" not in out.getvalue()


def test_the_table_says_what_its_numbers_mean():
    """An editor read "P(AI) 0.475" without knowing of what or where a verdict begins, and --explain's
    "(+0.40 nats)" with no word on its scale."""
    def table(explain, fusion, rows=1):
        out = io.StringIO()
        w = TableWriter(out, ["metadata"], explain=explain, fusion=fusion)
        for _ in range(rows):
            w.write(Record("/a/u.jpg", verdict="uncertain", p_ai=0.475,
                           detectors={"metadata": DetectorResult("ok", p_ai=0.475)}, reasons=["r (+0.40 nats)"]))
        w.close()
        return " ".join(out.getvalue().split())

    said = table(False, {"ai_threshold": 0.85, "real_threshold": 0.2})
    assert ("P(AI): aiidetect's estimate, from 0 to 1, that the image was made by a generative model; "
            "AI-generated from 0.85, likely-real at or below 0.2, uncertain between") in said
    assert "likely-real is not proof" in said and "A detector's column is that detector's own estimate" in said
    assert "nats)" not in said.split("P(AI): ")[1]
    said = table(True, None)     # a store's rows (runs that may differ): no one band to name
    assert "past the run's thresholds" in said
    assert "(+0.40 nats) is how far that item moved the estimate toward AI (+) or real (-), in log-odds; " \
           "a [decisive] item settles the verdict on its own" in said
    assert "P(AI): aiidetect" not in table(False, None, rows=0)
