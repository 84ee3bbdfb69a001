import gc
import io
import re
import weakref

from aiidetect.records import DetectorResult, Record
from aiidetect.report.writers import TableWriter


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


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


def test_a_terminal_too_narrow_for_the_columns_gets_a_block_per_file(monkeypatch):
    """COLUMNS=40 (a split pane on a laptop): the table gave the name one character a line and the detector
    and generator columns none, so no name, score or reason could be read. Each file is a block there."""
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.delenv("NO_COLOR", raising=False)
    name = "/photos/holiday/IMG_0001.jpg"
    out = _Terminal()
    w = TableWriter(out, ["metadata"])
    w.write(Record(name, verdict="ai-generated", p_ai=0.998, detectors={"metadata": DetectorResult("ok", p_ai=0.998)},
                   reasons=["decisive provenance evidence decides the verdict"]))
    w.close()
    lines = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).splitlines()
    assert lines[0] == name and all(len(x) <= 40 for x in lines), lines
    assert lines[1].strip() == "ai-generated  P(AI) 0.998", lines
    assert lines[2].strip() == "metadata 0.998", lines  # a name and its score on one line
    assert "decisive provenance evidence" in "".join(lines[3:])
    assert "P(AI): aiidetect's estimate" in " ".join(x.strip() for x in lines)   # the legend, as under a table
    monkeypatch.setenv("COLUMNS", "100")  # wide enough: the table, as before
    out = _Terminal()
    w = TableWriter(out, ["metadata"])
    w.write(Record(name, verdict="ai-generated", p_ai=0.998, detectors={"metadata": DetectorResult("ok", p_ai=0.998)}))
    w.close()
    table = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
    assert name in table and "┃ file " in table


class _AsciiTerminal(_Terminal):
    @property
    def encoding(self) -> str:
        return "ascii"


def test_a_terminal_that_cannot_show_a_name_gets_it_escaped_and_the_table_aligned(monkeypatch):
    """LC_ALL=C (PYTHONUTF8=0) or a latin-1 locale at a terminal: the stream escaped what it could not encode as
    it was written, after rich had laid the table out for the raw text, so `Grüße.jpg` (5 cells laid out, 9
    written) and every `—` pushed the borders of their rows out of line."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")
    out = _AsciiTerminal()
    w = TableWriter(out, ["metadata"])
    w.write(Record("/p/Gr\u00fc\u00dfe \u2615.jpg", verdict="uncertain", p_ai=None,
                   detectors={"metadata": DetectorResult("ok", p_ai=None)}, reasons=["caf\u00e9"]))
    w.close()
    lines = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).splitlines()
    assert all(x.isascii() for x in lines), lines
    table = [x for x in lines if x[:1] in "|+"]       # the legend under it wraps to its own width
    assert len(table) >= 5 and len({len(x) for x in table}) == 1, lines   # every border in line
    assert "/p/Gr\\xfc\\xdfe \\u2615.jpg" in out.getvalue() and "caf\\xe9" in out.getvalue()


def test_meta_at_a_terminal_that_cannot_show_a_prompt_keeps_its_table_aligned(monkeypatch):
    from aiidetect.commands.meta import _print_table

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")
    out = _AsciiTerminal()
    _print_table([{"file": "/p/Gr\u00fc\u00dfe.png", "format": "PNG", "width": 8, "height": 8, "p_ai": None,
                   "llr": None, "evidence": [{"id": "generator.parameters", "direction": "ai", "strength": 6.0,
                                              "detail": 'prompt "ein sch\u00f6ner Hund, \u65e5\u672c"',
                                              "source": "PNG iTXt"}]}], stream=out)
    lines = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).splitlines()
    assert all(x.isascii() for x in lines), lines
    table = [x for x in lines if x[:1] in "|+"]
    assert len({len(x) for x in table}) == 1 and "sch\\xf6ner" in out.getvalue(), lines


def test_the_table_says_what_its_numbers_mean():
    """An editor read "P(AI) 0.475" without knowing of what or where a verdict begins, and --explain's
    "(+0.40 nats)" with no word on its scale."""
    def table(explain, fusion, rows=1):
        out = _Terminal()
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
    assert "past the thresholds of the scan that judged the file" in said   # not "the run's": several runs
    assert "(+0.40 nats) is how far that item moved the estimate toward AI (+) or real (-), in log-odds; " \
           "a [decisive] item settles the verdict on its own, unless another points the other way (the file is " \
           "then uncertain)" in said   # decisive items both ways leave a file uncertain (fusion rule 3)
    assert "P(AI): aiidetect" not in table(False, None, rows=0)


def test_a_terminal_that_cannot_show_a_name_never_shows_it_as_another_files_name(monkeypatch):
    """At an ASCII terminal `Grü.png` is written `Gr\\xfc.png`, as a file whose name is those ten ASCII characters
    was, and the missing-value dash became `-` inside names too, so `a—b.png` read as `a-b.png`: two files, one
    name on the screen, and a verdict read for the wrong one. A backslash that would pass for such an escape is
    shown as one itself, and only the missing-value cell is turned into `-`."""
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    out = _AsciiTerminal()
    w = TableWriter(out, ["metadata"])
    for name in ("/p/Gr\u00fc.png", "/p/Gr\\xfc.png", "/p/a\u2014b.png", "/p/a-b.png"):
        w.write(Record(name, verdict="uncertain", p_ai=None, detectors={"metadata": DetectorResult("ok", p_ai=None)}))
    w.close()
    text = out.getvalue()
    names = [re.search(r"/p/\S+", x).group() for x in text.splitlines() if "/p/" in x]
    assert names == ["/p/Gr\\xfc.png", "/p/Gr\\x5cxfc.png", "/p/a\\u2014b.png", "/p/a-b.png"], names
    assert "| - " in text or "|     - |" in text, text  # the missing value is still a plain dash


def test_results_tables_at_a_terminal_that_cannot_show_a_name_stay_aligned(monkeypatch):
    """`results failed` (and summary, check) at an ASCII terminal: the stream escaped `Grüße` as it was written,
    after the layout, and that row's borders stood 8 columns right of the others."""
    from aiidetect.commands.results import Format, _rows_out

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")
    out = _AsciiTerminal()
    monkeypatch.setattr("sys.stdout", out)
    _rows_out([{"file": "/p/Gr\u00fc\u00dfe \u2615.png", "error_code": "unreadable"},
               {"file": "/p/plain.png", "error_code": None}], ["file", "error_code"], Format.table)
    lines = [x for x in re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).splitlines() if x[:1] in "|+"]
    assert len({len(x) for x in lines}) == 1 and "/p/Gr\\xfc\\xdfe \\u2615.png" in out.getvalue(), lines


def test_the_legend_names_the_band_of_a_file_judged_without_the_models():
    """A file one of the fitted model's detectors did not answer is fused under a wider band (fusion.fuse): the
    legend's "AI-generated from 0.8" stood over that file's row, "uncertain" at 0.850."""
    from aiidetect.fusion import fuse

    dets = {n: {"weight": 1.0, "calibration": {"method": "none"}} for n in ("linear:a", "linear:b")}
    model = {"ai_threshold": 0.8, "real_threshold": 0.2, "bias": 2.0, "detectors": dets}

    def legend(b_status):
        res = {"linear:a": DetectorResult("ok", p_ai=0.85), "linear:b": DetectorResult(b_status, p_ai=0.5)}
        o = fuse(res, model)
        out = _Terminal()
        w = TableWriter(out, list(res), fusion={"ai_threshold": 0.8, "real_threshold": 0.2})
        w.write(Record("/a/u.jpg", verdict=o.verdict, p_ai=o.p_ai, detectors=res, reasons=o.reasons))
        w.close()
        return o.verdict, " ".join(out.getvalue().split()).split("P(AI): ")[1]

    verdict, said = legend("error")
    assert verdict == "uncertain" and "AI-generated from 0.8, likely-real at or below 0.2 (a file whose reason " \
        "says the fusion model's bias and band are set aside: the band that reason names)" in said, said
    verdict, said = legend("ok")
    assert verdict == "ai-generated" and "set aside" not in said, said


def test_the_legend_says_a_file_only_its_metadata_spoke_for_stays_uncertain():
    """Soft metadata never decides alone: under a fitted model's 0.8 band, a file it alone put at 0.85 read
    "uncertain" under a legend saying "AI-generated from 0.8"."""
    from aiidetect.fusion import SOFT_ONLY, fuse
    from aiidetect.records import Evidence

    dets = {"linear:a": {"weight": 1.0, "calibration": {"method": "none"}}}
    model = {"ai_threshold": 0.8, "real_threshold": 0.2, "detectors": dets}
    ev = [Evidence(id="exif.software-generator", direction="ai", strength=1.8, detail="m")]
    res = {"metadata": DetectorResult("ok", p_ai=0.86, evidence=ev)}
    o = fuse(res, model)
    assert o.verdict == "uncertain" and o.p_ai > 0.8 and o.reasons[0] == SOFT_ONLY, (o.p_ai, o.reasons)

    def legend(reasons):
        out = _Terminal()
        w = TableWriter(out, ["metadata"], fusion={"ai_threshold": 0.8, "real_threshold": 0.2})
        w.write(Record("/a/u.jpg", verdict="uncertain", p_ai=o.p_ai, detectors=res, reasons=reasons))
        w.close()
        return " ".join(out.getvalue().split()).split("P(AI): ")[1]

    line = "A file whose reason says only its metadata was weighed stays uncertain whatever its P(AI)."
    assert line in legend(o.reasons) and line not in legend(["linear:a: p_ai=0.50 (0.00 nats)"])


def test_the_legend_is_for_a_terminal_and_a_pipe_gets_the_rows_alone(monkeypatch):
    """`aiidetect scan DIR | grep -c likely-real` counted the legend's lines (it names every verdict) with the
    rows. Piped or written to a file the table is the rows alone, as before the legend; a terminal gets the
    legend, without the trailing spaces rich padded its caption lines with, in the table view and the block view
    of a narrow terminal alike."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    for cols in ("160", "40"):
        monkeypatch.setenv("COLUMNS", cols)
        for out in (io.StringIO(), _Terminal()):
            w = TableWriter(out, ["metadata"], fusion={"ai_threshold": 0.85, "real_threshold": 0.2})
            w.write(Record("/a/x.jpg", verdict="uncertain", p_ai=0.475,
                           detectors={"metadata": DetectorResult("ok", p_ai=0.475)}, reasons=["r"]))
            w.close()
            text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
            if isinstance(out, _Terminal):
                legend = text[text.index("P(AI): "):].splitlines()
                assert len(legend) > 1 and all(x == x.rstrip() for x in legend), legend
                assert "likely-real is not proof" in " ".join(legend)
            else:
                assert "P(AI): " not in text and "likely-real" not in text and "AI-generated" not in text, text
                assert sum("uncertain" in x for x in text.splitlines()) == 1, text   # the row, and nothing else


def test_the_legend_is_true_at_the_limits_of_a_hand_edited_band():
    """A band at its limits (check_model allows 0.5 to 1 and 0 to 0.5; calibrate writes 1.0 / 0.0 where real
    photos reach P(AI) 1): the legend said "AI-generated from 0.5" where fuse calls P(AI) 0.5 uncertain, "from 1"
    and "at or below 0" for edges no P(AI) of the detectors reaches, and "from 0.995" where decisive evidence
    calls a file AI-generated at 0.990."""
    from aiidetect.fusion import fuse
    from aiidetect.records import Evidence

    def outcome(band, pixel_p, decisive=None):
        model = {"ai_threshold": band[0], "real_threshold": band[1],
                 "detectors": {"linear:a": {"weight": 1.0, "calibration": {"method": "none"}}}}
        res = {"linear:a": DetectorResult("ok", p_ai=pixel_p)}
        if decisive:
            res["metadata"] = DetectorResult("ok", p_ai=0.5, evidence=[Evidence(
                id="c2pa.signed", direction=decisive, strength=9.2, detail="d", decisive=True)])
        return fuse(res, model)

    def legend(band):
        out = _Terminal()
        w = TableWriter(out, ["linear:a"], fusion={"ai_threshold": band[0], "real_threshold": band[1]})
        w.write(Record("/a/u.jpg", verdict="uncertain", p_ai=0.5, detectors={"linear:a": DetectorResult("ok")}))
        w.close()
        return " ".join(out.getvalue().split()).split("P(AI): ")[1]

    decides = "where the file's reason says decisive provenance evidence decides the verdict"
    o = outcome((0.5, 0.1), 0.5)
    assert o.verdict == "uncertain" and o.p_ai == 0.5
    assert "AI-generated above 0.5," in legend((0.5, 0.1)) and "from 0.5" not in legend((0.5, 0.1))
    o = outcome((0.9, 0.5), 0.5)
    assert o.verdict == "uncertain"
    assert "likely-real below 0.5," in legend((0.9, 0.5))
    o = outcome((0.995, 0.1), 0.001, "ai")   # a signed AI declaration beside a pixel detector sure it is real
    assert o.verdict == "ai-generated" and 0.99 <= o.p_ai < 0.995, o
    assert f"AI-generated from 0.995 (from 0.99 {decides})," in legend((0.995, 0.1))
    o = outcome((1.0, 0.1), 1 - 1e-9)
    assert o.verdict == "uncertain" and outcome((1.0, 0.1), 0.001, "ai").verdict == "ai-generated"
    assert f"AI-generated only {decides}, from 0.99 (the band's ai threshold of 1 is never reached)" \
        in legend((1.0, 0.1))
    o = outcome((0.9, 0.0), 1e-9)
    assert o.verdict == "uncertain" and outcome((0.9, 0.0), 0.999, "real").verdict == "likely-real"
    assert f"likely-real only {decides}, at or below 0.01 (the band's real threshold of 0 is never reached)" \
        in legend((0.9, 0.0))
    o = outcome((0.9, 0.005), 0.999, "real")
    assert o.verdict == "likely-real" and 0.005 < o.p_ai <= 0.01, o
    assert f"likely-real at or below 0.005 (at or below 0.01 {decides})" in legend((0.9, 0.005))
    # an ordinary band reads as before
    assert "AI-generated from 0.85, likely-real at or below 0.2, uncertain between" in legend((0.85, 0.2))
