"""Benchmark layouts read the same way by every training command and by
`aiidetect eval`, and the GenImage/UFD protocol metrics against a hand computation."""
from __future__ import annotations

import csv
import os
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from aiidetect.evaluate.protocol import subset_metrics
from aiidetect.train.data import detect_layout, load_items, protocol_pairs

from aiidetect.testing import layouts as L


def _gens(items):
    return Counter((i.label, i.generator) for i in items)


def test_genimage_nested_and_flattened_read_alike(tmp_path):
    nested = L.genimage_nested(tmp_path / "nested")
    flat = L.genimage_flat(tmp_path / "flat")
    want = Counter({(0, "real"): 6, (1, "ADM"): 3, (1, "stable_diffusion_v_1_4"): 3})
    for root in (nested, flat):
        assert detect_layout(root) == "genimage"
        assert _gens(load_items([root], split="val")) == want
        assert _gens(load_items([root], split="train")) == want
    # one generator folder and one subset folder of the nested layout: the same label
    one = Counter({(0, "real"): 3, (1, "stable_diffusion_v_1_4"): 3})
    assert _gens(load_items([nested / "stable_diffusion_v_1_4"])) == one
    assert _gens(load_items([nested / "stable_diffusion_v_1_4" / "imagenet_ai_0419_sdv4"])) == one
    # each subset's reals are its own
    items = load_items([nested], split="val")
    assert {i.subset for i in items if i.label == 0} == {"ADM", "stable_diffusion_v_1_4"}
    assert all(Path(i.path).parts[-4] in ("imagenet_ai_0508_adm", "imagenet_ai_0419_sdv4") for i in items)
    with pytest.raises(ValueError, match="no labelled images"):
        load_items([nested], split="test")


def test_ufd_training_set_generator_is_progan_never_a_class(tmp_path):
    train = L.ufd_train(tmp_path / "dataset")
    for src in (train, train.parent, train / "airplane"):
        gens = {i.generator for i in load_items([src])}
        assert gens == {"progan", "real"}, src
    # the same classes under a generator folder of the CNNSpot test set
    test = L.cnnspot_test(tmp_path / "test")
    assert _gens(load_items([test])) == Counter({(0, "real"): 9, (1, "progan"): 6, (1, "biggan"): 3})
    assert {i.generator for i in load_items([test / "progan" / "cat"])} == {"progan", "real"}


def test_ufd_diffusion_reals_are_paired(tmp_path):
    test = L.cnnspot_test(tmp_path / "test")
    diff = L.ufd_diffusion(tmp_path / "diffusion_datasets")
    items = load_items([test, diff])
    assert protocol_pairs(items) == {"biggan": "biggan", "progan": "progan", "guided": "imagenet",
                                     "ldm_200": "laion", "glide_100_10": "laion", "dalle": "laion"}
    assert {i.subset for i in items if i.label == 0} == {"progan", "biggan", "laion", "imagenet"}


def test_subset_metrics_hand_computation():
    # subset A: its own reals p = .2, .6 and fakes .7, .4, .9; subset B: fakes .8, .3 scored
    # against the laion pool (one real, .1); a real of another pool (.95) must not count.
    y = [0, 0, 1, 1, 1, 0, 1, 1, 0]
    p = [.2, .6, .7, .4, .9, .1, .8, .3, .95]
    s = ["A", "A", "A", "A", "A", "laion", "B", "B", "other"]
    pairs = {"A": "A", "B": "laion"}
    g = subset_metrics(y, p, s, pairs, 0.5, "genimage")
    # A: reals right 1/2 (.2), fakes right 2/3 (.7, .9) -> 3/5; B: real right, fakes right 1/2 -> 2/3
    assert g["subsets"]["A"]["acc"] == pytest.approx(3 / 5)
    assert g["subsets"]["A"]["acc_real"] == pytest.approx(1 / 2)
    assert g["subsets"]["A"]["acc_ai"] == pytest.approx(2 / 3)
    assert g["subsets"]["B"]["acc"] == pytest.approx(2 / 3)
    assert g["mean_acc"] == pytest.approx((3 / 5 + 2 / 3) / 2)
    assert "ap" not in g["subsets"]["A"] and "mean_ap" not in g
    u = subset_metrics(y, p, s, pairs, 0.5, "ufd")
    # A ranked: .9(ai) .7(ai) .6(real) .4(ai) .2(real): precision at each AI image 1, 1, 3/4
    assert u["subsets"]["A"]["ap"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    # B ranked: .8(ai) .3(ai) .1(real): AP 1
    assert u["subsets"]["B"]["ap"] == pytest.approx(1.0)
    assert u["mean_ap"] == pytest.approx(((1 + 1 + 3 / 4) / 3 + 1) / 2)
    assert u["mean_acc"] == pytest.approx(g["mean_acc"])
    # no opinion (NaN) is left out and counted
    p2 = list(p)
    p2[0] = float("nan")
    a = subset_metrics(y, p2, s, pairs, 0.5, "genimage")["subsets"]["A"]
    assert a["n_no_opinion"] == 1 and a["acc"] == pytest.approx(2 / 4)
    # unpaired subset: said so, not scored against every real
    lone = subset_metrics(y, p, s, {"B": None}, 0.5, "genimage")["subsets"]["B"]
    assert lone["n_real"] == 0 and "no real images" in lone["note"] and lone["acc"] == pytest.approx(1 / 2)


def _hand_protocol(scores_csv: Path, items, pairs, det: str, protocol: str):
    """Per-subset accuracy (and AP) from scores.csv, computed here without aiidetect."""
    sub = {i.path: i.subset for i in items}
    rows = [r for r in csv.DictReader(open(scores_csv)) if r["condition"] == "raw"]
    out = {}
    for s, pool in pairs.items():
        pick = [(int(r["label"]), float(r[f"p_{det}"])) for r in rows
                if (r["label"] == "1" and sub[r["file"]] == s) or (r["label"] == "0" and sub[r["file"]] == pool)]
        acc = sum((p >= 0.5) == (y == 1) for y, p in pick) / len(pick)
        ap = None
        if protocol == "ufd":
            pick.sort(key=lambda t: -t[1])
            tp, precs = 0, []
            for k, (y, _) in enumerate(pick, 1):
                if y:
                    tp += 1
                    precs.append(tp / k)
            ap = sum(precs) / len(precs)
        out[s] = (acc, ap)
    return out


LAYOUTS = {
    "genimage-nested": (L.genimage_nested, "genimage", lambda r: [r], lambda r: [r]),
    "genimage-flat": (L.genimage_flat, "genimage", lambda r: [r], lambda r: [r]),
    "ufd": (lambda r: (L.ufd_train(r / "dataset"), L.cnnspot_test(r / "test"), L.ufd_diffusion(r / "diffusion")),
            "ufd", lambda r: [r / "dataset" / "train"], lambda r: [r / "test", r / "diffusion"]),
    "cnnspot": (L.cnnspot_test, "ufd", lambda r: [r / "progan"], lambda r: [r]),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_train_and_eval_protocol_on_miniature_layouts(layout, tmp_path):
    """train linear, train mpft, train flow and eval --protocol on each miniature,
    and the protocol numbers in metrics.json recomputed from scores.csv by hand."""
    from typer.testing import CliRunner

    from aiidetect.cli import app

    make, protocol, train_src, eval_src = LAYOUTS[layout]
    root = tmp_path / "data"
    make(root)
    tr = [str(p) for p in train_src(root)]
    ev = [str(p) for p in eval_src(root)]
    w = tmp_path / "w"
    cli = CliRunner()
    tiny = ["--backbone-config", "tiny-vit"]

    r = cli.invoke(app, ["train", "linear", *tr, *tiny, "--out", str(w / "probe"), "--name", "probe", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads((w / "probe" / "manifest.json").read_text())
    gens = set(json.dumps(m["data"]).split('"')) & {"airplane", "cat"}
    assert not gens, "object classes used as generators"

    r = cli.invoke(app, ["train", "mpft", *tr, *tiny, "--out", str(w / "mp"), "--name", "mp", "--steps", "2",
                         "--batch-size", "4", "--val-fraction", "0.3", "--no-augment", "--workers", "1", "--json"])
    assert r.exit_code == 0, r.output
    mm = json.loads((w / "mp" / "manifest.json").read_text())
    trained_gens = set(mm["data"]["train"]["generators"]) - {"real"}
    assert trained_gens and not trained_gens & {"airplane", "cat"}
    if layout.startswith("ufd") or layout == "cnnspot":
        assert trained_gens == {"progan"}

    r = cli.invoke(app, ["train", "flow", "--real", tr[0], *tiny, "--out", str(w / "fl"), "--name", "fl",
                         "--steps", "30", "--blocks", "1", "--hidden", "8", "--proxies-per-image", "4",
                         "--proxy-kinds", "periodic_peaks", "--val-fraction", "0.5", "--no-cache", "--json"])
    train_items = load_items(tr)
    n_real, n_ai = sum(i.label == 0 for i in train_items), sum(i.label == 1 for i in train_items)
    assert f"ignoring {n_ai} AI-labelled rows" in r.output  # the layout's fakes are read as fakes
    # a flow this small may end up pointing the wrong way; it must then refuse clearly, not write a head
    assert r.exit_code == 0 or (r.exit_code == 2 and "more likely than held-out real photos" in r.output), r.output
    if r.exit_code == 0:
        fm = json.loads((w / "fl" / "manifest.json").read_text())
        assert fm["detector"] == "flow"
        assert fm["data"]["real"]["n_train"] + fm["data"]["real"]["n_val"] == n_real

    out = tmp_path / "ev"
    # cnnspot evaluates the folder it trained on: this test checks the protocol's arithmetic over every
    # image, so the training images stay in (left out by default, they have no score in scores.csv).
    r = cli.invoke(app, ["eval", *ev, "--protocol", protocol, "-d", "linear", *tiny, "--weights-dir", str(w),
                         "--fusion", "none", "--no-plots", "--quiet", "--out", str(out), "--allow-train-overlap"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "metrics.json").read_text())
    block = res["conditions"][0]["protocol"]
    items = load_items(ev, split="val")
    pairs = protocol_pairs(items)
    assert block["pairs"] == pairs and all(v is not None for v in pairs.values())
    det = "linear:probe"
    hand = _hand_protocol(out / "scores.csv", items, pairs, det, protocol)
    got = block["detectors"][det]
    for s, (acc, ap) in hand.items():
        assert got["subsets"][s]["acc"] == pytest.approx(acc)
        if protocol == "ufd":
            assert got["subsets"][s]["ap"] == pytest.approx(ap)
    assert got["mean_acc"] == pytest.approx(np.mean([a for a, _ in hand.values()]))
    assert f"{protocol} protocol" in (out / "summary.md").read_text()


def _manifest(tmp_path, text: str, encoding: str = "utf-8") -> Path:
    for name in ("a.png", "b.png", "c d.png", "e,f.png"):
        (tmp_path / name).write_bytes(b"")
    p = tmp_path / "m.csv"
    p.write_bytes(text.encode(encoding))
    return p


def test_manifest_spellings_bom_crlf_and_quoted_names(tmp_path):
    """A spreadsheet's "CSV UTF-8" (byte-order mark, CRLF, quoted cells): the
    mark used to glue itself to 'file' and eval died with KeyError: 'file'."""
    text = ('File, Label ,generator\r\na.png, Real ,\r\nb.png,AI,sdxl\r\n"c d.png",1,\r\n"e,f.png",FAKE,"gen\r\nx"\r\n'
            '/abs/z.png,0,\r\nq.png,unknown,\r\n\r\n')
    items = load_items([_manifest(tmp_path, text, "utf-8-sig")])
    assert [(Path(i.path).name, i.label, i.generator) for i in items] == [
        ("a.png", 0, "real"), ("b.png", 1, "sdxl"), ("c d.png", 1, "unknown-ai"), ("e,f.png", 1, "gen\r\nx"),
        ("z.png", 0, "real")]
    assert items[0].path == str(tmp_path / "a.png") and items[-1].path == "/abs/z.png"  # relative to the CSV


@pytest.mark.parametrize("text, says", [
    ("file,label\na.png,real\nb.png,photo\nc.png,generated\n", "2 row(s) cannot be used: line 3: label 'photo'; "
                                                               "line 4: label 'generated'"),
    ("file,label\na.png,real\nb.png,\n", "line 3: label ''"),
    ("file,label\na.png,real\n,ai\n", "line 3: no file"),
    ("file,label\na.png,real\nb.png,ai\n./a.png,ai\n", "line 4: ./a.png again (first on line 2, with the other label)"),
    ("file,label\na.png,real\nb.png,ai\na.png,real\n./b.png,real\n",
     "1 row(s) cannot be used: line 5: ./b.png again (first on line 3, with the other label)"),
    ("path,label\na.png,real\n", "a manifest needs 'file' and 'label' columns"),
    ("file,label\n\"a.png,real\nb.png,ai\n", "line 3: no label"),                  # an unterminated quote
    ('file,label\n"' + "a" * 200_000 + '",real\n', "line 2: field larger than field limit"),
    ("", "its first line has nothing"),
    ("file,Label,label\na.png,real,ai\n", "names the column(s) label more than once"),   # the last one won
    # eval's per-generator table showed this generator's detection rate as the real photos' accuracy
    ("file,label,generator\na.png,real,\nb.png,ai,real\n", "1 AI image(s) have the generator name 'real'"),
])
def test_manifest_rows_that_would_change_the_numbers_are_refused(tmp_path, text, says):
    """An unreadable label, a row without a file, or a file twice used to be
    dropped (or counted twice) in silence, changing every number after it; a
    cell over the csv module's limit was "aiidetect: error: Error: field larger..."."""
    with pytest.raises(ValueError) as exc:
        load_items([_manifest(tmp_path, text)])
    assert says in str(exc.value)


@pytest.mark.parametrize("text, cells", [
    ("file,note,label\na.png,hello, ai,real\nb.png,x,ai\n", "4 cells under the 3"),  # was an AI image, in silence
    ("file,label\na.png,real,ai\nb.png,ai\n", "3 cells under the 2"),                # a value under no column name
    ("file;label\na.png;real;ai\nb.png;ai\n", "3 cells under the 2"),
])
def test_a_row_with_more_cells_than_column_names_is_refused(tmp_path, text, cells):
    """An unquoted comma inside a cell shifts every cell after it: the label read was another cell's."""
    with pytest.raises(ValueError) as exc:
        load_items([_manifest(tmp_path, text)])
    assert f"line 2: {cells} column names of line 1" in str(exc.value)
    assert "double quotes" in str(exc.value)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_semicolon_or_tab_separated_manifest_is_read(tmp_path, sep):
    """Excel's "CSV" where the comma is the decimal mark separates with ';': read with commas, the first
    line was one column named 'file;label' and the run stopped."""
    text = f'\ufeffFile{sep} label {sep}generator\r\na.png{sep}real{sep}\r\n"e,f.png"{sep}AI{sep}sd\r\n'
    items = load_items([_manifest(tmp_path, text)])
    assert [(Path(i.path).name, i.label, i.generator) for i in items] == [("a.png", 0, "real"), ("e,f.png", 1, "sd")]


def test_a_comma_manifest_with_semicolons_and_tabs_in_names_and_padded_rows_is_read_with_commas(tmp_path):
    """The delimiter is the first line's: 'a;b.png' and 'c\td.png' under file,label are names, not cells
    (read by ';' the first row was file 'a', label 'b.png,ai'). A spreadsheet pads short rows with empty
    cells ('b.png,real,,'): nothing beyond the column names, not a shifted row."""
    for name in ("a;b.png", "c\td.png"):
        (tmp_path / name).write_bytes(b"")
    text = "file,label,generator\na;b.png,ai,x;y\nc\td.png,real\nb.png,real,,\n"
    assert [(Path(i.path).name, i.label, i.generator) for i in load_items([_manifest(tmp_path, text)])] == [
        ("a;b.png", 1, "x;y"), ("c\td.png", 0, "real"), ("b.png", 0, "real")]


@pytest.mark.parametrize("text, says", [
    ("file,label\na.png;ai\nb.png;real\n", "line 2: no label (one cell holding a semicolon, where line 1 is comma-"),
    ("file;label\na.png,ai\n", "line 2: no label (one cell holding a comma, where line 1 is semicolon-"),
    ("file\tlabel\na.png;ai\n", "line 2: no label (one cell holding a semicolon, where line 1 is tab-"),
])
def test_rows_split_by_another_delimiter_than_the_first_line_are_refused_saying_so(tmp_path, text, says):
    """Every row of a list whose column names were typed with commas and rows exported with ';' was
    "no label", leaving the user to find why."""
    with pytest.raises(ValueError) as exc:
        load_items([_manifest(tmp_path, text)])
    assert says in str(exc.value)


@pytest.mark.parametrize("sep", [";", "\t", ","])
def test_excels_sep_line_names_the_delimiter_and_lines_keep_their_numbers(tmp_path, sep):
    """Excel writes and reads a first line "sep=;": the manifest was refused, its first line "has ['sep=;']"."""
    text = f"sep={sep}\r\nfile{sep}label\r\na.png{sep}real\r\n\"e,f.png\"{sep}ai\r\n"
    assert [(Path(i.path).name, i.label) for i in load_items([_manifest(tmp_path, text)])] == [
        ("a.png", 0), ("e,f.png", 1)]
    # the rows are named by the lines an editor shows, the sep= line counted
    with pytest.raises(ValueError) as exc:
        load_items([_manifest(tmp_path, text + f"b.png{sep}maybe\r\nc d.png{sep}ai{sep}x\r\n")])
    assert "line 5: label 'maybe'" in str(exc.value)
    assert "line 6: 3 cells under the 2 column names of line 2" in str(exc.value)


@pytest.mark.parametrize("text, says", [
    ("sep=|\nfile|label\na.png|real\n", "line 1: 'sep=|' names a delimiter this reader does not take"),
    ("sep=;\nfile,label\na.png,real\n", "its line 2 (below the sep= line) has ['file,label']"),  # the hint rules
])
def test_a_sep_line_the_reader_cannot_follow_is_refused(tmp_path, text, says):
    with pytest.raises(ValueError) as exc:
        load_items([_manifest(tmp_path, text)])
    assert says in str(exc.value)


def test_comment_and_blank_lines_are_left_out_and_lines_keep_their_numbers(tmp_path):
    """A hand-made manifest's header of notes (`# ...`) stopped the run: "needs 'file' and 'label' columns",
    or a comment between rows "line 6: no label". Comments and blank lines are left out, refusals still name
    the line an editor shows, and a comment that is really a file named `#...` is refused, not dropped."""
    text = ('# newsroom test set, 2026\n#  "real" photos, a, "b\n\nsep=,\n\nfile,label\n# the reals\na.png,real\n'
            '\n  # fakes\nb.png,ai\n')
    assert [(Path(i.path).name, i.label) for i in load_items([_manifest(tmp_path, text)])] == [
        ("a.png", 0), ("b.png", 1)]
    with pytest.raises(ValueError) as exc:
        load_items([_manifest(tmp_path, text + "# end\nc d.png,maybe\n")])
    assert "1 row(s) cannot be used: line 13: label 'maybe'" in str(exc.value)
    (tmp_path / "#1.png").write_bytes(b"")
    with pytest.raises(ValueError) as exc:
        load_items([_manifest(tmp_path, text + "#1.png,ai\n")])
    assert "line 12: #1.png is a file here, but a line that starts with '#' is a comment" in str(exc.value)
    assert [Path(i.path).name for i in load_items([_manifest(tmp_path, text + '"#1.png",ai\n./#2,ai\n')])
            if i.label] == ["b.png", "#1.png", "#2"]


def test_a_tab_separated_manifest_named_tsv_is_read(tmp_path):
    """A spreadsheet's tab-separated export is named .tsv: refused as "not a CSV manifest or a folder", exit 2,
    though the same text named .csv was read."""
    m = _manifest(tmp_path, "file\tlabel\na.png\treal\nb.png\tai\n").rename(tmp_path / "m.tsv")
    assert [(Path(i.path).name, i.label) for i in load_items([m])] == [("a.png", 0), ("b.png", 1)]


@pytest.mark.parametrize("name, says", [
    ("~/x.png", "line 3: ~/x.png: '~' is not expanded"),
    ("~bob/x.png", "line 3: ~bob/x.png: '~' is not expanded"),
    ("https://example.com/x.png", "line 3: https://example.com/x.png: a URL, which is not fetched"),
])
def test_a_home_or_url_row_is_refused_not_counted_missing(tmp_path, name, says):
    """Looked for under the manifest's folder, these were counted as unreadable images named
    "~/x.png: no such file" (the user's file is there) or "https:/example.com/x.png"."""
    with pytest.raises(ValueError) as exc:
        load_items([_manifest(tmp_path, f"file,label\na.png,real\n{name},ai\n")])
    assert says in str(exc.value)
    # the name is the manifest folder's own when something of that name is there
    (tmp_path / "~x.png").write_bytes(b"")
    (tmp_path / "~").mkdir()
    (tmp_path / "~" / "x.png").write_bytes(b"")
    assert len(load_items([_manifest(tmp_path, "file,label\na.png,real\n~/x.png,ai\n~x.png,ai\n")])) == 3


def test_rows_labelled_unknown_are_counted_on_the_summary(tmp_path):
    """eval said "2 labelled images" for a six-row manifest and nothing of the four rows it left out."""
    from aiidetect.train.data import LeftOut

    stats = LeftOut()
    m = _manifest(tmp_path, "file,label\na.png,real\nb.png,ai\nc d.png,unknown\nq.png,Unknown\n")
    assert len(load_items([m], link_stats=stats)) == 2
    assert "2 manifest row(s) labelled unknown left out" in stats.note()


def test_a_manifest_row_given_twice_with_its_label_is_used_once_as_a_folder_given_twice(tmp_path):
    """A manifest listing a file twice with one label stopped the run (exit 2), where a folder given twice
    is used once with a note: one rule for both (drop_copies)."""
    from aiidetect.train.data import LeftOut

    stats = LeftOut()
    m = _manifest(tmp_path, "file,label\na.png,real\nb.png,ai\n./a.png,real\nb.png,ai\n")
    items = load_items([m], link_stats=stats)
    assert [(Path(i.path).name, i.label) for i in items] == [("a.png", 0), ("b.png", 1)]
    assert stats.copies == [(str(tmp_path / "a.png"),) * 2, (str(tmp_path / "b.png"),) * 2]
    assert f"{tmp_path / 'a.png'} (given twice)" in stats.note()


def test_an_image_from_two_data_sources_is_counted_once(tmp_path):
    """`calibrate data data/`, a manifest beside the folder it lists: every image counted twice, and
    calibrate's band took 12 AI images given twice for the 20 a 5% false-negative target needs. One file
    given twice is one image, as a copy is: used once and said, or refused with two labels."""
    from aiidetect.train.data import LeftOut

    root = tmp_path / "d"
    (root / "real").mkdir(parents=True)
    (root / "ai" / "g").mkdir(parents=True)
    for name in ("real/r.png", "ai/g/a.png"):
        (root / name).write_bytes(name.encode())  # two files, not one copied
    (root / "m.csv").write_text("file,label\nreal/r.png,real\n")
    for sources in ([root, str(root) + "/"], [root / "m.csv", root], [root / "m.csv", tmp_path / "d" / ".." / "d"]):
        stats = LeftOut()
        assert sorted(os.path.basename(i.path) for i in load_items(sources, link_stats=stats)) == ["a.png", "r.png"]
        assert any(a.endswith("r.png") for a, _ in stats.copies), stats.copies
        assert all(os.path.samefile(a, b) for a, b in stats.copies) and "each image used once" in stats.note()
        assert "(copy of " not in stats.note(), stats.note()  # one file under two spellings: not a copy
    (root / "m.csv").write_text("file,label\nreal/r.png,ai\n")
    with pytest.raises(ValueError, match=r"real/r\.png \(real\) = .*real/r\.png \(AI\)"):
        load_items([root / "m.csv", root])
    assert len(load_items([root])) == 2


def _copies_set(root: Path) -> Path:
    """real/ + ai/g/ of tiny distinct files, ai/g/copy.png the same bytes as real/r0.png."""
    for name in ("real/r0.png", "real/r1.png", "ai/g/a0.png", "ai/g/a1.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode())
    (root / "ai" / "g" / "copy.png").write_bytes((root / "real" / "r0.png").read_bytes())
    return root


def test_a_copy_of_an_image_with_the_other_label_is_refused_naming_both(tmp_path):
    """The repeat check compared paths only: a photo copied into real/ and ai/ went into training twice,
    taught as both real and AI. A hard link is such a copy too; so is a file in a folder given beside."""
    root = _copies_set(tmp_path / "d")
    r0, copy = root / "real" / "r0.png", root / "ai" / "g" / "copy.png"
    with pytest.raises(ValueError, match="other label") as exc:
        load_items([root])
    assert f"{copy} (AI) = {r0} (real)" in str(exc.value) and "give each image once" in str(exc.value)
    copy.unlink()
    os.link(r0, copy)
    with pytest.raises(ValueError, match=r"copy\.png \(AI\) = .*r0\.png \(real\)"):
        load_items([root])
    copy.unlink()
    # a manifest is checked the same way, against a folder given beside it too
    (root / "m.csv").write_text("file,label\nreal/r0.png,real\nai/g/a0.png,ai\n")
    (tmp_path / "more" / "real").mkdir(parents=True)
    (tmp_path / "more" / "ai").mkdir()
    (tmp_path / "more" / "ai" / "x.png").write_bytes(r0.read_bytes())
    with pytest.raises(ValueError, match=r"x\.png \(AI\) = .*r0\.png \(real\)"):
        load_items([root / "m.csv", tmp_path / "more"])


def test_a_copy_with_the_same_label_is_used_once_the_first_kept_and_counted(tmp_path):
    """Crawled datasets hold exact duplicates (ImageNet has them): refusing them stopped every run on such
    a set. Each image is used once, the first in the loader's order kept (a folder's files by path, a
    manifest's by row, the sources as given), whether the copy is a file or a hard link; the summary says so."""
    from aiidetect.train.data import LeftOut

    root = _copies_set(tmp_path / "d")
    (root / "ai" / "g" / "copy.png").unlink()
    r0 = root / "real" / "r0.png"
    (root / "real" / "renamed.png").write_bytes(r0.read_bytes())
    os.link(root / "ai" / "g" / "a1.png", root / "ai" / "g" / "a0-hard.png")  # sorts before a1.png
    stats = LeftOut()
    items = load_items([root], link_stats=stats)
    paths = [i.path for i in items]
    assert len(items) == 4 and str(root / "real" / "renamed.png") not in paths
    assert str(root / "ai" / "g" / "a0-hard.png") in paths and str(root / "ai" / "g" / "a1.png") not in paths
    assert stats.copies == [(str(root / "real" / "renamed.png"), str(r0)),
                            (str(root / "ai" / "g" / "a1.png"), str(root / "ai" / "g" / "a0-hard.png"))]
    assert f"2 byte-identical copy(ies) of an image with the same label left out, each image used once: " \
           f"{root / 'real' / 'renamed.png'} (copy of {r0})" in stats.note()
    # a manifest's order, not the paths' order, says which is kept; the same run twice keeps the same one
    (root / "m.csv").write_text("file,label\nreal/renamed.png,real\nreal/r0.png,real\nai/g/a0.png,ai\n")
    for _ in range(2):
        stats = LeftOut()
        assert [i.path for i in load_items([root / "m.csv"], link_stats=stats)] == \
               [str(root / "real" / "renamed.png"), str(root / "ai" / "g" / "a0.png")]
        assert stats.copies == [(str(r0), str(root / "real" / "renamed.png"))]
    # no copy, nothing said
    (root / "real" / "renamed.png").unlink()
    (root / "ai" / "g" / "a0-hard.png").unlink()
    stats = LeftOut()
    assert len(load_items([root], link_stats=stats)) == 4 and stats.copies == [] and stats.note() is None


def test_equal_sizes_empty_files_and_files_not_read_are_no_copies(tmp_path):
    """Only equal bytes make a copy. What decoding reports as unreadable is left to it: empty files, files
    over the decode size limit (never read past it) and FIFOs (never opened: reading one waits forever)."""
    from aiidetect.hashing import sha256_file
    from aiidetect.train.data import drop_copies

    root = _copies_set(tmp_path / "d")
    (root / "ai" / "g" / "copy.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"real/r0.pnG")  # same size, other bytes
    for name in ("real/e.png", "ai/g/e.png"):
        (root / name).write_bytes(b"")
    items = load_items([root])
    assert len(items) == 7
    if hasattr(os, "mkfifo"):  # a folder lists no FIFO; a manifest may name them
        os.mkfifo(root / "real" / "f.png")
        os.mkfifo(root / "ai" / "g" / "f.png")
        (root / "m.csv").write_text("file,label\nreal/f.png,real\nai/g/f.png,ai\n")
        assert len(load_items([root / "m.csv"])) == 2
    big = [it for it in items if it.path.endswith(("r0.png", "a0.png"))]
    (root / "ai" / "g" / "a0.png").write_bytes((root / "real" / "r0.png").read_bytes())
    n = (root / "real" / "r0.png").stat().st_size
    assert drop_copies(big, max_bytes=n - 1) == big  # over the limit: left to decoding, which refuses them
    with pytest.raises(ValueError, match="other label"):
        drop_copies(big, max_bytes=n)
    with pytest.raises(OSError, match=f"more than {n - 1} bytes"):
        sha256_file(root / "real" / "r0.png", max_bytes=n - 1)


def test_train_eval_and_calibrate_refuse_a_copy_with_exit_2_before_any_model(tmp_path, monkeypatch):
    """As the user meets it: one line naming both paths on stderr, exit 2, nothing on stdout, no backbone built."""
    import aiidetect.backbone
    from conftest import run_cli_in_process

    def refuse(*a, **k):
        raise AssertionError("the backbone was built before the data was checked")

    monkeypatch.setattr(aiidetect.backbone, "create_backbone", refuse)
    root = _copies_set(tmp_path / "d")
    for args in (("train", "linear", str(root), "--backbone-config", "tiny-vit", "--out", str(tmp_path / "h")),
                 ("train", "mpft", str(root), "--backbone-config", "tiny-vit", "--out", str(tmp_path / "h")),
                 ("eval", str(root), "-d", "metadata", "--split", "train"),
                 ("calibrate", str(root), "-d", "metadata", "--split", "train", "--out", str(tmp_path / "f"))):
        r = run_cli_in_process(*args)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout, r.stderr)
        assert f"{root / 'ai' / 'g' / 'copy.png'} (AI) = {root / 'real' / 'r0.png'} (real)" in r.stderr, (args, r.stderr)
    assert not (tmp_path / "h").exists() and not (tmp_path / "f").exists()


def test_eval_and_calibrate_take_a_link_as_they_take_a_copy(tmp_path):
    """`eval` and `calibrate` as the user runs them: a symbolic link back to a listed image with the same
    label is read once with a note on stderr, as a byte copy is (eval: exit 0), not refused with exit 2; the
    note says it is the same file, not a copy."""
    from PIL import Image

    from conftest import run_cli_in_process

    root = tmp_path / "d"
    for k in range(5):  # calibrate's least: 5 of each
        for name in (f"real/r{k}.png", f"ai/g/a{k}.png"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * k, 10 + 100 * name.startswith("ai"), 7)).save(root / name)
    (root / "real" / "r5.png").symlink_to(root / "real" / "r0.png")
    note = f"{root / 'real' / 'r5.png'} (same file as {root / 'real' / 'r0.png'})"
    r = run_cli_in_process("eval", str(root), "-d", "metadata", "--split", "train", "-f", "json")
    assert r.returncode == 0 and note in r.stderr, r.stderr
    assert json.loads(r.stdout)["run"]["n_real"] == 5
    # calibrate reads the data as eval does (metadata alone then gives it nothing to fuse, a later stop)
    r = run_cli_in_process("calibrate", str(root), "-d", "metadata", "--split", "train", "--out", str(tmp_path / "f"))
    assert "10 labelled images" in r.stderr and note in r.stderr, r.stderr


def test_eval_scores_a_same_label_copy_once_and_says_so(tmp_path):
    """eval stopped (exit 2) on a dataset with a duplicate; each image is now scored once, exit 0, and
    the summary on stderr names the copy left out."""
    from PIL import Image

    from conftest import run_cli_in_process

    root = tmp_path / "d"
    for k, name in enumerate(("real/r0.png", "real/r1.png", "ai/g/a0.png", "ai/g/a1.png")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40 * k, 10, 200 - 40 * k)).save(root / name)
    (root / "real" / "r2.png").write_bytes((root / "real" / "r0.png").read_bytes())
    r = run_cli_in_process("eval", str(root), "-d", "metadata", "--split", "train", "-f", "json")
    assert r.returncode == 0, r.stderr
    run = json.loads(r.stdout)["run"]
    assert (run["n_items"], run["n_real"], run["n_ai"]) == (4, 2, 2)
    assert f"{root / 'real' / 'r2.png'} (copy of {root / 'real' / 'r0.png'})" in r.stderr, r.stderr


def test_the_dev_manifest_leaves_out_its_unknown_rows(dev_manifest):
    items = load_items([dev_manifest])
    assert (len(items), sum(i.label for i in items)) == (365, 272)


def test_a_manifest_whose_files_all_miss_says_where_it_looked(tmp_path, monkeypatch):
    """Paths written relative to the current folder, not the CSV's: every file
    was unreadable and eval "finished" with exit 0 and nothing measured."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.png").write_bytes(b"")
    (tmp_path / "lists").mkdir()
    man = tmp_path / "lists" / "m.csv"
    man.write_text("file,label\ndata/a.png,real\ndata/b.png,ai\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"none of its 2 files exist .*relative to its own folder"):
        load_items([man])
    # some present, some missing: read, and the missing ones are counted as unreadable by eval
    (tmp_path / "lists" / "data").mkdir()
    (tmp_path / "lists" / "data" / "a.png").write_bytes(b"")
    assert len(load_items([man])) == 2


def test_a_manifest_that_is_not_utf8_names_itself(tmp_path):
    p = tmp_path / "m.csv"
    p.write_bytes("file,label\ncafé.png,real\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"m\.csv: not UTF-8 text .*save it as UTF-8"):
        load_items([p])


def _png(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    # the loader lists files; it does not decode them. The name makes each file's bytes its own: copies of
    # one file under two paths are refused or left out (drop_copies).
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + str(p).encode())
    return p


def test_links_out_of_a_data_folder_are_not_followed_unless_asked(tmp_path):
    """scan's link rule (discover.LinkFence) holds for training/eval data: `calibrate sub/` with a
    link `evil -> /` in it collected 102 "labelled images" from all over the machine."""
    from aiidetect.train.data import LeftOut

    out = tmp_path / "elsewhere"
    _png(out / "real" / "x.png")
    _png(out / "ai" / "g" / "y.png")
    _png(out / "stray.png")
    _png(tmp_path / "other" / "o.png")
    data = tmp_path / "data"
    _png(data / "real" / "r.png")
    _png(data / "ai" / "g" / "a.png")
    (data / "real" / "evil").symlink_to(out)            # a folder link out
    (data / "ai" / "g" / "b.png").symlink_to(tmp_path / "other" / "o.png")  # a file link out
    stats = LeftOut()
    items = load_items([data], link_stats=stats)
    assert sorted(os.path.relpath(i.path, data) for i in items) == [
        "ai/g/a.png", "real/r.png"]
    assert stats.outside == 2 and stats.loops == 0
    assert "2 symbolic link(s) leading out of the data folders not followed" in stats.note()
    followed = {os.path.relpath(i.path, data) for i in load_items([data], follow_links=True)}
    assert {"real/evil/stray.png", "ai/g/b.png"} <= followed
    # a layout found only through a link out is no layout; the error says why
    sub = tmp_path / "sub"
    _png(sub / "one.png")
    (sub / "evil").symlink_to(out.parent)
    with pytest.raises(ValueError, match="unknown layout.*1 symbolic link"):
        load_items([sub])
    # a folder link back up, met while finding 0_real/1_fake, is walked once: it gave every image
    # again under gen/loop/, gen/loop/loop/... five levels deep
    ufd = tmp_path / "ufd"
    _png(ufd / "gen" / "0_real" / "r.png")
    _png(ufd / "gen" / "1_fake" / "f.png")
    (ufd / "gen" / "loop").symlink_to(ufd / "gen")
    stats = LeftOut()
    assert len(load_items([ufd], link_stats=stats)) == 2 and stats.loops == 1 and stats.outside == 0
    # a link inside the data is followed; one that gives images again is one image twice, as a copy is:
    # refused here as the other class (test_a_link_back_to_a_listed_image_is_a_copy), naming both
    (data / "real" / "inside").symlink_to(data / "ai")
    with pytest.raises(ValueError, match=r"ai/g/a\.png \(AI\) = .*inside/g/a\.png \(real\)"):
        load_items([data])
    (data / "real" / "inside").unlink()
    (data / "real" / "inside").symlink_to(out / "real")  # ...and one out: not followed
    _png(data / "ai" / "g2" / "c.png")
    (data / "ai" / "g" / "lnk").symlink_to(data / "ai" / "g2")  # c.png reached as ai/g/lnk/c.png and ai/g2/c.png
    stats = LeftOut()
    assert sorted(os.path.relpath(i.path, data) for i in load_items([data], link_stats=stats)) == [
        "ai/g/a.png", "ai/g/lnk/c.png", "real/r.png"]
    assert stats.copies == [(str(data / "ai" / "g2" / "c.png"), str(data / "ai" / "g" / "lnk" / "c.png"))]
    (data / "ai" / "g" / "lnk").unlink()
    (data / "ai" / "g" / "up").symlink_to(data / "ai")  # back up: walked once
    stats = LeftOut()
    assert len(load_items([data], link_stats=stats)) == 3 and stats.loops == 1 and stats.outside == 3
    # a manifest is the user's own list: its paths are taken wherever they point
    man = tmp_path / "m" / "m.csv"
    man.parent.mkdir()
    man.write_text(f"file,label\n{out / 'real' / 'x.png'},real\n{out / 'ai' / 'g' / 'y.png'},ai\n")
    assert len(load_items([man])) == 2


def test_an_image_again_through_a_link_is_refused_when_the_data_folder_is_given_through_a_link(tmp_path):
    """A repeat check by resolved paths missed this: with the data folder itself named through a link
    (`data -> /mnt/...`, macOS' /tmp), the direct path kept the link's spelling, the two never matched, and
    the image was trained on twice as both classes. The file's identity and bytes do not depend on a name."""
    real = tmp_path / "store"
    _png(real / "real" / "r.png")
    _png(real / "ai" / "g" / "a.png")
    (real / "real" / "inside").symlink_to(real / "ai")
    named = tmp_path / "data"
    named.symlink_to(real)
    with pytest.raises(ValueError, match=r"a\.png \(AI\) = .*inside/g/a\.png \(real\)"):
        load_items([named])


def test_a_link_back_to_a_listed_image_is_a_copy(tmp_path):
    """A byte copy of a listed image with the same label was used once with a note, while a symbolic link to
    it stopped the run (exit 2) as "an image twice through a symbolic link": one image, two rules. A link,
    symbolic or hard, now meets the copy's rule: used once and said with one label, refused with two."""
    from aiidetect.train.data import LeftOut

    root = _copies_set(tmp_path / "d")
    r0, copy = root / "real" / "r0.png", root / "ai" / "g" / "copy.png"
    copy.unlink()
    for make in (os.symlink, os.link):
        make(r0, root / "real" / "again.png")  # sorts before r0.png: the link is the one kept
        stats = LeftOut()
        paths = [i.path for i in load_items([root], link_stats=stats)]
        assert str(r0) not in paths and str(root / "real" / "again.png") in paths and len(paths) == 4, make
        assert stats.copies == [(str(r0), str(root / "real" / "again.png"))], make
        (root / "real" / "again.png").unlink()
        make(r0, copy)
        with pytest.raises(ValueError, match=r"copy\.png \(AI\) = .*r0\.png \(real\)"):
            load_items([root])
        copy.unlink()


def test_a_manifest_row_with_a_nul_in_its_name_is_an_unreadable_image_not_a_stop(tmp_path):
    """The repeat check keys a file it cannot stat by its resolved name; resolving a name with a NUL raised
    a bare "embedded null byte" that stopped the run without naming the row. No file has that name: the
    row is kept, and decoding counts it unreadable, as before."""
    _png(tmp_path / "z.png")
    (tmp_path / "m.csv").write_bytes(b"file,label\nx\x00y.png,real\nz.png,ai\n")
    assert [os.path.basename(i.path) for i in load_items([tmp_path / "m.csv"])] == ["x\x00y.png", "z.png"]


def test_one_file_listed_twice_is_found_without_reading_it(tmp_path, monkeypatch):
    """A folder given twice (or a manifest beside its folder) lists each file twice under one identity: that
    is one image without reading its bytes. Every file of an archive given twice was hashed in full."""
    from aiidetect.train import data as train_data
    from aiidetect.train.data import LeftOut

    for k in range(1, 4):  # each file a size of its own: no two files to compare
        _png(tmp_path / "d" / "real" / f"{'r' * k}.png")
        _png(tmp_path / "d" / "ai" / "g" / f"{'a' * (k + 3)}.png")
    read = []
    real_hash = train_data.sha256_file
    monkeypatch.setattr(train_data, "sha256_file", lambda p, *a: read.append(p) or real_hash(p, *a))
    stats = LeftOut()
    assert len(load_items([tmp_path / "d", tmp_path / "d"], link_stats=stats)) == 6
    assert len(stats.copies) == 6 and read == []


def test_a_manifest_without_its_column_names_says_so(tmp_path):
    """The first row of a list typed without column names was only "needs 'file' and 'label' columns;
    its first line has ['a.png', 'real']", lower-cased, leaving the user to work out why."""
    with pytest.raises(ValueError) as exc:
        load_items([_manifest(tmp_path, "A.png,Real\nb.png,ai\n")])
    assert "its first line has ['A.png', 'Real']; that looks like an image's row: add a first line" in str(exc.value)


@pytest.mark.skipif(os.sep != "/", reason="a backslash separates folders there")
def test_a_windows_path_in_a_manifest_is_refused_naming_its_line(tmp_path):
    """"sub\\a.png" is one name on Linux: counted as a missing image while sub/a.png sat there."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"")
    with pytest.raises(ValueError) as exc:
        load_items([_manifest(tmp_path, "file,label\nsub\\a.png,ai\nb.png,real\nsub\\none.png,ai\n")])
    assert str(exc.value).count("line ") == 1 and "line 2: sub\\a.png: '\\' between folders" in str(exc.value)
