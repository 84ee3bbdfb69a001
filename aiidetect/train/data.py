"""Labelled datasets in the layouts the field uses, read into one list of items.

One layout detector serves every training command and `aiidetect eval`, so a
folder means the same thing to both. Supported (auto-detected per argument):

- ``real/`` and ``ai/<generator>/`` (files directly in ``ai/`` get generator "unknown-ai");
- GenImage, pointed at any level (pick the split with ``split=``):
  nested as released ``<generator>/<subset>/{train,val}/{ai,nature}/``,
  one generator folder ``<subset>/{train,val}/{ai,nature}/``,
  one subset folder ``{train,val}/{ai,nature}/``,
  or flattened ``<generator>/{train,val}/{ai,nature}/``.
  GenImage subset folder names (``imagenet_ai_0419_sdv4`` ...) are mapped to the
  released generator folder names (``stable_diffusion_v_1_4`` ...), so the same
  images get the same generator label at every level;
- UniversalFakeDetect / CNNSpot: ``<generator>/[<class>/]{0_real,1_fake}/``.
  Folders directly above ``0_real``/``1_fake`` that are LSUN/CNNSpot object classes
  (``airplane``, ``cat``, ...) are classes, never generators: the CNNSpot/UFD
  training set ``train/<class>/0_real|1_fake`` is ProGAN's, so its generator is
  ``progan`` (or the name of the folder given, when that is not a split name).
  The UFD diffusion test folders keep their reals beside them (``laion/0_real``,
  ``imagenet/0_real``); those reals form a pool that `protocol_pairs` pairs with
  the diffusion subsets the way the UFD evaluation code does;
- a CSV manifest (``.csv`` or ``.tsv``) with columns ``file,label[,generator][,subset]`` (paths relative
  to the CSV), like ../shared/data/dev/manifest.csv. Labels are real/0 and
  ai/fake/1 (any case, spaces around ignored); rows labelled ``unknown`` are
  left out (counted in LeftOut.unlabelled). Commas, semicolons or tabs, as the first line shows
  (or a first line ``sep=;``, Excel's, names).
  Any other label, a row without a file, a row with more cells than column names, or a file listed
  again with the other label, a "~/..." or URL path that is not there under the CSV's folder, or a
  Windows path ("sub\\a.png") missing where its "/" spelling exists, is a ValueError naming the lines:
  a row dropped in silence changes the numbers.
  A file listed again with its label is one image given twice (drop_copies, below).
  So is a manifest none of whose files exist.

One image given twice is found in every layout and across the sources given together, by one rule
(drop_copies): the same file (a folder given twice, a symbolic or hard link back to an image listed
already) or the same bytes under another path is refused with two labels; with one, the first is kept.

Every item carries a ``subset``: the benchmark subset whose own reals and fakes
are scored together by `aiidetect eval --protocol` (GenImage: the generator's
folder; UFD/CNNSpot: the test folder; for reals the pool they belong to; ""
when the layout has no subsets).
"""
from __future__ import annotations

import contextlib
import csv
import os
import random
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

# Training reads the same file types a scan does.
from ..discover import IMAGE_EXTS, LinkFence
from ..hashing import sha256_file
from ..limits import DEFAULT_MAX_BYTES

GENIMAGE_SPLITS = ("train", "val")
GENIMAGE_CLASSES = ("ai", "nature")
UFD_CLASSES = ("0_real", "1_fake")
# GenImage's subset folders, by the token after "imagenet_[ai_NNNN_]", -> the
# generator folder they are released under.
GENIMAGE_SUBSET_GENERATORS = {
    "adm": "ADM", "biggan": "BigGAN", "glide": "glide", "midjourney": "Midjourney",
    "sdv4": "stable_diffusion_v_1_4", "sdv5": "stable_diffusion_v_1_5", "vqdm": "VQDM", "wukong": "wukong",
}
# Object/scene classes of the CNNSpot (Wang et al. 2020) and UFD folders: the
# 20 LSUN object classes of the ProGAN set plus the classes of the StyleGAN(2)
# and CycleGAN test folders. A folder with one of these names is a class.
UFD_OBJECT_CLASSES = frozenset({
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
    "bedroom", "church", "church_outdoor", "apple", "orange", "summer", "winter", "zebra",
})
# Folder names that say which split, not which generator.
SPLIT_NAMES = frozenset({"train", "val", "test", "training", "validation", "testing", "dataset", "data",
                         "progan_train", "progan_val", "cnn_synth_testset"})
# UFD diffusion test set: the real pools and which subsets the UFD evaluation
# code scores against which pool (guided was sampled on ImageNet, the rest on LAION).
UFD_REAL_POOLS = ("laion", "imagenet")
UFD_POOL_FOR = (("guided", "imagenet"), ("ldm", "laion"), ("glide", "laion"), ("dalle", "laion"))
MAX_DEPTH = 5
# A manifest's file name endings: a spreadsheet's tab-separated export is named .tsv, and its content is read as
# a .csv's is (the delimiter by the first line), so refusing the name alone turned away a file the reader takes.
MANIFEST_EXTS = (".csv", ".tsv")


@dataclass(frozen=True)
class Item:
    path: str
    label: int          # 0 real, 1 ai
    generator: str      # "real" for real images
    subset: str = ""    # benchmark subset (or real pool) for protocol metrics

@dataclass
class LeftOut:
    """What the data loader met and left out, for the summary: symbolic links not followed (LinkFence's
    rule), folder links looping back, and images given twice with the same label (drop_copies). Named
    LinkStats before it held the copies too; the `link_stats` arguments that take it keep their name."""
    outside: int = 0                 # links that lead out of the data folders
    loops: int = 0                   # folder links back to a folder already being walked
    examples: list = field(default_factory=list)
    copies: list = field(default_factory=list)  # (path left out, path of the same file or bytes kept)
    unlabelled: int = 0              # manifest rows labelled "unknown"

    def counts(self) -> dict[str, int]:
        """The note's numbers, for metrics.json (`run.left_out`) and calibrate's manifest (`data.left_out`):
        a script reading `n_items` alone could not tell 2 images from a 6-row manifest from 2 rows."""
        return {"unknown_label_rows": self.unlabelled, "copies": len(self.copies),
                "links_outside": self.outside, "link_loops": self.loops}

    def note(self) -> str | None:
        """One line for a command's summary, or None when nothing was left out."""
        parts = []
        if self.outside:
            parts.append(f"{self.outside} symbolic link(s) leading out of the data folders not followed "
                         f"(--follow-links), e.g. {', '.join(self.examples[:3])}")
        if self.loops:
            parts.append(f"{self.loops} folder link(s) looping back skipped")
        if self.copies:
            more = f" and {len(self.copies) - 3} more" if len(self.copies) > 3 else ""
            shown = "; ".join(_left_out(a, b) for a, b in self.copies[:3])
            parts.append(f"{len(self.copies)} byte-identical copy(ies) of an image with the same label left out, "
                         f"each image used once: {shown}{more}")
        if self.unlabelled:
            # "365 labelled images" from a 430-row manifest, and no word of the rest: the user counts rows
            parts.append(f"{self.unlabelled} manifest row(s) labelled unknown left out")
        return "; ".join(parts) or None


def _left_out(path: str, kept: str) -> str:
    """How the note names one image left out: a link or another spelling of a folder reaches the kept
    file itself, which "copy of" misdescribed."""
    if path == kept:
        return f"{path} (given twice)"
    try:
        same = os.path.samefile(path, kept)
    except (OSError, ValueError):  # gone since, or a NUL in the name
        same = False
    return f"{path} (same file as {kept})" if same else f"{path} (copy of {kept})"


# The older name, for scripts that pass one to aiidetect.api.load_labelled (docs/api.md).
LinkStats = LeftOut


class _Walker:
    """Lists the folders of one load: a link inside them is followed only where LinkFence allows
    (scan's rule), each folder once per listing. `calibrate sub/` with a link `evil -> /` in it
    collected 102 "labelled images" from all over the machine, through layouts found under /."""

    def __init__(self, folders: Iterable[str | Path], follow_links: bool = False, stats: LeftOut | None = None):
        self.fence = LinkFence([str(f) for f in folders], follow_links)
        self.stats = stats if stats is not None else LeftOut()
        self._counted: set[str] = set()  # layout detection and listing meet the same links

    def follows(self, p: str) -> bool:
        """Whether the link at p is followed; counts it once when not."""
        if self.fence.allows(os.path.realpath(p)):
            return True
        if p not in self._counted:
            self._counted.add(p)
            self.stats.outside += 1
            if len(self.stats.examples) < 5:
                self.stats.examples.append(p)
        return False

    def is_dir(self, p: Path) -> bool:
        return p.is_dir() and (not p.is_symlink() or self.follows(str(p)))

    def _entries(self, d: Path) -> list:
        try:
            with os.scandir(d) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError:
            return []

    def _key(self, p) -> tuple[int, int] | None:
        try:
            st = os.stat(p)
            return (st.st_dev, st.st_ino)
        except OSError:
            return None

    def _loop(self, p: str) -> None:
        if p not in self._counted:
            self._counted.add(p)
            self.stats.loops += 1

    def subdirs(self, d: Path) -> list[Path]:
        out = []
        for e in self._entries(d):
            try:
                if e.is_dir() and (not e.is_symlink() or self.follows(e.path)):
                    out.append(Path(e.path))
            except OSError:
                continue
        return out

    def images_under(self, d: Path) -> list[Path]:
        """Image files under d, at any depth, sorted; a folder link back up is not walked (forever).
        A file reached again through a link is listed again: drop_copies treats it as any copy."""
        found: list[Path] = []
        top = self._key(d)
        stack = [(d, frozenset({top} if top else ()))]
        while stack:
            here, ancestors = stack.pop()
            for e in self._entries(here):
                try:
                    link = e.is_symlink()
                    if e.is_dir():
                        if link and not self.follows(e.path):
                            continue
                        key = self._key(e.path)
                        if key is None or key in ancestors:
                            self._loop(e.path)
                            continue
                        stack.append((Path(e.path), ancestors | {key}))
                    elif e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS \
                            and (not link or self.follows(e.path)):
                        found.append(Path(e.path))
                except OSError:
                    continue
        return sorted(found)

    def walk_dirs(self, src: Path, leaf_names: Sequence[str], max_depth: int = MAX_DEPTH) -> Iterator[Path]:
        """Folders under src (src included) that hold one of leaf_names, without
        descending into the leaves themselves: a benchmark has millions of files in
        its leaves and none of them matters for the layout."""
        top = self._key(src)
        stack = [(src, 0, frozenset({top} if top else ()))]
        while stack:
            d, depth, ancestors = stack.pop()
            subs = self.subdirs(d)
            if any(s.name in leaf_names for s in subs):
                yield d
            if depth < max_depth:
                for s in reversed(subs):
                    if s.name in leaf_names:
                        continue
                    key = self._key(s)
                    if key is None or key in ancestors:
                        self._loop(str(s))
                        continue
                    stack.append((s, depth + 1, ancestors | {key}))


def images_in(folder: str | Path, follow_links: bool = False, link_stats: LeftOut | None = None) -> list[Path]:
    """Every image file under a plain folder (no layout), by the same link rule as load_items."""
    return _Walker([folder], follow_links, link_stats).images_under(Path(folder))


def genimage_generator(folder_name: str) -> str:
    """GenImage subset folder name -> released generator name (other names unchanged)."""
    m = re.fullmatch(r"imagenet_(?:ai_\d+_)?([A-Za-z0-9]+)", folder_name)
    if m and m.group(1).lower() in GENIMAGE_SUBSET_GENERATORS:
        return GENIMAGE_SUBSET_GENERATORS[m.group(1).lower()]
    return folder_name


def _genimage_name(chain: Sequence[str]) -> str:
    """Generator of the split folders under chain[-1]: a GenImage subset folder
    (imagenet_...) is named by its generator folder above it (nested layout)
    or, failing that, by the released name its token maps to; any other folder
    (flattened layout) is the generator itself."""
    here = chain[-1] if chain else "unknown-ai"
    if here.lower().startswith("imagenet_"):
        mapped = genimage_generator(here)
        if mapped != here:
            return mapped
        return chain[-2] if len(chain) >= 2 else here
    return here


def _genimage_split_dirs(src: Path, w: _Walker) -> list[Path]:
    return [d for d in w.walk_dirs(src, GENIMAGE_CLASSES, 4) if d.name in GENIMAGE_SPLITS]


def detect_layout(src: Path, walker: _Walker | None = None, follow_links: bool = False) -> str:
    """'manifest' | 'folder' | 'genimage' | 'ufd' (UniversalFakeDetect/CNNSpot); ValueError otherwise.
    Links inside src are followed by `walker`'s rule (default: only those staying inside src)."""
    w = walker or _Walker([src], follow_links)
    if src.is_file() and src.suffix.lower() in MANIFEST_EXTS:
        return "manifest"
    if not src.is_dir():
        raise ValueError(f"{src}: not a CSV manifest ({', '.join(MANIFEST_EXTS)}) or a folder")
    if w.is_dir(src / "real") and w.is_dir(src / "ai"):
        return "folder"
    if _genimage_split_dirs(src, w):
        return "genimage"
    if next(w.walk_dirs(src, UFD_CLASSES), None) is not None:
        return "ufd"
    raise ValueError(f"{src}: unknown layout; expected real/+ai/<gen>/, GenImage (nested "
                     f"<generator>/<subset>/train|val/ai|nature or flattened <generator>/train|val/ai|nature), "
                     f"UniversalFakeDetect/CNNSpot (<generator>/[<class>/]0_real|1_fake) or a CSV manifest")


def _genimage_items(src: Path, split: str, w: _Walker) -> list[Item]:
    items: list[Item] = []
    for d in _genimage_split_dirs(src, w):
        if d.name != split:
            continue
        # the folder above the split, and the one above that, src's own names included
        chain = [*src.resolve().parts, *d.relative_to(src).parts[:-1]]
        gen = _genimage_name(chain)
        if w.is_dir(d / "nature"):
            items += [Item(str(p), 0, "real", gen) for p in w.images_under(d / "nature")]
        if w.is_dir(d / "ai"):
            items += [Item(str(p), 1, gen, gen) for p in w.images_under(d / "ai")]
    return items


def _is_split_name(name: str) -> bool:
    return name.lower() in SPLIT_NAMES


def _ufd_generator(holder: Path) -> str:
    """Generator of a folder holding 0_real/1_fake: the nearest folder above
    (itself included) that is not an object class. Classes are never
    generators; a split-named folder of classes (train/, val/, dataset/) is the
    CNNSpot/UFD training set, which is ProGAN's."""
    # classes sit one level deep (<generator>/<class>/0_real), so only the holder can be one
    d = holder.parent if holder.name.lower() in UFD_OBJECT_CLASSES else holder
    return "progan" if _is_split_name(d.name) else (d.name or "unknown-ai")


def _ufd_items(src: Path, w: _Walker) -> list[Item]:
    items: list[Item] = []
    for h in w.walk_dirs(src, UFD_CLASSES):
        gen = _ufd_generator(h.resolve())
        for cls in UFD_CLASSES:
            d = h / cls
            if not w.is_dir(d):
                continue
            lab = 1 if cls == "1_fake" else 0
            items += [Item(str(p), lab, gen if lab else "real", gen) for p in w.images_under(d)]
    return items


def load_items(sources: Iterable[str | Path], split: str = "train", follow_links: bool = False,
               link_stats: LeftOut | None = None, check_copies: bool = True) -> list[Item]:
    """Items of every source. A symbolic link inside a data folder is followed only when it stays
    inside the folders given (scan's rule; `follow_links` lifts it); the links left are counted in
    `link_stats`. A manifest's paths are the user's own list and are taken wherever they point.
    One image listed twice (the same file under two paths: a folder given twice, a link back to an image
    listed already; or a byte-identical copy) is refused, or left out when the labels agree (drop_copies,
    counted in `link_stats`); a caller that joins several loads
    passes `check_copies=False` and checks the whole once, so no file is hashed twice."""
    sources = list(sources)
    items: list[Item] = []
    layouts = set()
    w = _Walker([s for s in sources if Path(s).is_dir()], follow_links, link_stats)
    for s in sources:
        src = Path(s)
        try:
            layout = detect_layout(src, w)
        except ValueError as exc:
            note = w.stats.note()
            raise ValueError(f"{exc}; {note}" if note else str(exc)) from None
        layouts.add(layout)
        if layout == "manifest":
            items += _from_manifest(src, w.stats)
        elif layout == "folder":
            items += [Item(str(p), 0, "real") for p in w.images_under(src / "real")]
            ai = src / "ai"
            for p in w.images_under(ai):
                rel = p.relative_to(ai).parts
                g = rel[0] if len(rel) > 1 else "unknown-ai"
                items.append(Item(str(p), 1, g, g))
        elif layout == "genimage":
            items += _genimage_items(src, split, w)
        else:
            items += _ufd_items(src, w)
    if not items:
        raise ValueError("no labelled images found in " + ", ".join(map(str, sources))
                         + (f" (GenImage split {split!r})" if "genimage" in layouts else "")
                         + (f"; {note}" if (note := w.stats.note()) else ""))
    if check_copies:
        items = drop_copies(items, w.stats)
    fake_real = [i.path for i in items if i.label == 1 and i.generator == "real"]
    if fake_real:
        # "real" names the real images' row wherever images are grouped by generator: eval's table
        # showed this generator's detection rate as the real photos' accuracy.
        raise ValueError(f"{len(fake_real)} AI image(s) have the generator name 'real' (first: {fake_real[0]}), "
                         "which names the real images; rename that generator")
    return items


def _label(y: int) -> str:
    return "AI" if y else "real"


def _by_name(path: str) -> tuple:
    """drop_copies' key of a file known by its name only (not stat'ed, or no inode numbers)."""
    try:
        return ("path", os.path.realpath(os.path.abspath(path)))
    except ValueError:  # a NUL in the name: no file has it, nothing to resolve
        return ("path", os.path.abspath(path))


def drop_copies(items: Sequence[Item], stats: LeftOut | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> list[Item]:
    """`items` with each image once. Two items that are one image (the same file under two paths: a
    folder given twice, a manifest beside the folder it lists, a symbolic or hard link back to an image
    listed already; or the same bytes under another path: a photo copied into both real/ and ai/, a file
    renamed, an archive unpacked twice) are a ValueError naming both when their labels differ: one image
    taught or scored as both real and AI. With the same label (crawled datasets hold exact duplicates)
    the first in `items`' order is kept and the others are left out, recorded in `stats.copies`: a copy
    was weighted twice in training and, split by path, found in training and validation both. The
    generator and subset are the kept item's. This is the loader's only repeat check, so a link and a
    copy meet one rule.

    The content key is the file's SHA-256, the one a scan keys its records and result cache by; only
    files whose size another file shares are hashed (copies have equal sizes), each file once (a hard
    link or symbolic link is not read again; a file only listed twice is not read). Files not hashed
    (that cannot be stat'ed or opened as regular files, empty ones and those over `max_bytes`, the
    decode limit, all left to decoding, which reports them as unreadable) are one image only when they
    are one file; none is read past `max_bytes`. A file changed after this check is scanned as it is then."""
    by_size: dict[int, list[tuple[tuple, int]]] = {}
    groups: dict[object, list[int]] = {}
    for k, it in enumerate(items):
        try:
            st = os.stat(it.path)
        except (OSError, ValueError):  # ValueError: a NUL in the path
            groups.setdefault(_by_name(it.path), []).append(k)
            continue
        # the file's identity, so a file reached by two names is read once; a file system without inode
        # numbers (st_ino 0) would make every file of a size one
        ident = (st.st_dev, st.st_ino) if st.st_ino else _by_name(it.path)
        if stat.S_ISREG(st.st_mode) and 0 < st.st_size <= max_bytes:
            by_size.setdefault(st.st_size, []).append((ident, k))
        else:
            groups.setdefault(ident, []).append(k)
    for same_size in by_size.values():
        if len({ident for ident, _ in same_size}) < 2:  # one file (perhaps listed twice): nothing to compare
            for ident, k in same_size:
                groups.setdefault(ident, []).append(k)
            continue
        digests: dict[tuple, str | None] = {}
        for ident, k in same_size:
            if ident not in digests:
                try:
                    digests[ident] = sha256_file(items[k].path, max_bytes)
                except OSError:
                    digests[ident] = None
            groups.setdefault(digests[ident] or ident, []).append(k)
    conflicts: list[str] = []
    dropped: dict[int, int] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort()
        first = items[group[0]]
        for k in group[1:]:
            it = items[k]
            if it.label != first.label:
                conflicts.append(f"{it.path} ({_label(it.label)}) = {first.path} ({_label(first.label)})")
            else:
                dropped[k] = group[0]
    if conflicts:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise ValueError(f"{len(conflicts)} image(s) are the same file as, or a byte-identical copy of, an image "
                         f"with the other label: {'; '.join(conflicts[:3])}{more}; one image cannot be both "
                         f"real and AI, give each image once, with its label")
    if stats is not None:
        stats.copies += [(items[k].path, items[j].path) for k, j in sorted(dropped.items())]
    return [it for k, it in enumerate(items) if k not in dropped]


REAL_LABELS = ("real", "0")
AI_LABELS = ("ai", "fake", "1")
# Rows marked so are unlabelled on purpose (the dev set's format samples) and
# are left out; any other label is a mistake that would change the numbers.
UNLABELLED = ("unknown",)
# What a spreadsheet writes for "CSV": a comma, or where the comma is the decimal mark (Excel in
# European locales) a semicolon; tab-separated text is the other export.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}


# Excel's first line naming the delimiter ("sep=;"), which it writes and reads itself: no manifest's column
# names (it names neither file nor label), so taking it as the delimiter changes no manifest read before.
_SEP_HINT = re.compile(r"sep=(.)", re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_HOME = re.compile(r"~[^/\\]*[/\\]|~$")


def _not_a_path(name: str) -> str | None:
    """Why a manifest cell is no file name this reader can open (None when it may be one)."""
    if _URL.match(name):
        return "a URL, which is not fetched: download the image and list the file"
    if _HOME.match(name):
        return "'~' is not expanded (paths are relative to the manifest's folder, or absolute): write the full path"
    return None


def _delimiter(first_line: str) -> str:
    """The delimiter whose split of the first line names both 'file' and 'label' (a comma otherwise, for the
    message): `file;label` read with commas was one column named 'file;label', and the run stopped."""
    for d in DELIMITERS:
        try:
            names = {h.strip().lower() for h in next(csv.reader([first_line], delimiter=d), [])}
        except csv.Error:  # the reader proper names the line
            continue
        if {"file", "label"} <= names:
            return d
    return ","


class _ManifestLines:
    """A manifest's lines less its blank lines and comments (a line whose first character, past spaces, is `#`:
    hand-made lists start with a header of notes), numbered as an editor shows them, so a refusal still names
    the right line. `num`: the number of the last line handed out; `comments`: (number, text) of those held back.
    A comment is a whole line, never part of a row: `# a, "b` read as CSV would open a quoted cell swallowing the
    rows after it."""

    def __init__(self, f):
        self._f, self.num, self.comments = f, 0, []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        while True:
            line = next(self._f)
            self.num += 1
            text = line.strip()
            if text.startswith("#"):
                self.comments.append((self.num, line))
            elif text:
                return line


def _from_manifest(csv_path: Path, stats: LeftOut | None = None) -> list[Item]:
    from itertools import chain

    from ..report.safe import path_from_text

    base = csv_path.parent
    out = []
    seen: dict[str, tuple[int, int]] = {}
    bad: list[str] = []
    # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark,
    # which would otherwise glue itself to the first column's name.
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        lines = _ManifestLines(f)
        try:
            first_line = next(lines, "")
            hinted = _SEP_HINT.fullmatch(first_line.rstrip("\r\n"))
            if hinted:
                delim = hinted.group(1)
                if delim not in DELIMITERS:
                    raise ValueError(f"{csv_path}: line {lines.num}: {first_line.strip()!r} names a delimiter this "
                                     "reader does not take; save the list separated by commas, semicolons or tabs")
                first_line = next(lines, "")
            else:
                delim = _delimiter(first_line)
            names_line = lines.num  # the column names' line, past comments and a "sep=" line
            reader = csv.reader(chain([first_line], lines), delimiter=delim)
            names = next(reader, [])
            header = [h.strip().lower() for h in names]
            where = ("its first line" if names_line <= 1 else f"its line {names_line}"
                     + (" (below the sep= line)" if hinted else ""))
            if "file" not in header or "label" not in header:
                # A list typed without its column names starts with an image: say so, not only that the names lack
                a_row = set(header) & set(REAL_LABELS + AI_LABELS + UNLABELLED) and set(header) - {"file", "label"}
                raise ValueError(f"{csv_path}: a manifest needs 'file' and 'label' columns (file,label[,generator]"
                                 f"[,subset]); {where} has {names or 'nothing'}"
                                 + ("; that looks like an image's row: add a first line naming the columns, "
                                    "e.g. file,label" if a_row else ""))
            twice = sorted({h for h in header if h in ("file", "label", "generator", "subset") and header.count(h) > 1})
            if twice:
                # Each row kept the last of them: "a.png,real,ai" was an AI image, without a word.
                raise ValueError(f"{csv_path}: {where} names the column(s) {', '.join(twice)} more than "
                                 "once; which one holds the value is anyone's guess")
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                row = dict(zip(header, cells))
                line = lines.num
                if any(c.strip() for c in cells[len(header):]):
                    # An unquoted comma in a cell shifts the cells after it: "a.png,shot in Paris, France,real"
                    # under file,note,label was labelled " France", and "x.png,hello, ai,real" was an AI image.
                    bad.append(f"line {line}: {len(cells)} cells under the {len(header)} column names of line "
                               f"{names_line} (a {DELIMITERS[delim]} inside a cell? put that cell in double quotes)")
                    continue
                lab = (row.get("label") or "").strip().lower()
                if lab in UNLABELLED:
                    if stats is not None:
                        stats.unlabelled += 1
                    continue
                if lab not in REAL_LABELS + AI_LABELS:
                    # A row split by another delimiter than the first line's is one cell: say which, not only "no label"
                    other = [n for d, n in DELIMITERS.items() if d != delim and len(cells) == 1 and d in cells[0]]
                    bad.append(f"line {line}: " + (f"label {row['label']!r}" if "label" in row else "no label")
                               + (f" (one cell holding a {other[0]}, where line {names_line} is {DELIMITERS[delim]}-"
                                  "separated: one delimiter for the whole file)" if other else ""))
                    continue
                y = 1 if lab in AI_LABELS else 0
                name = (row.get("file") or "").strip()
                if not name:
                    bad.append(f"line {line}: no file")
                    continue
                gen = (row.get("generator") or "").strip() or ("unknown-ai" if y else "real")
                sub = (row.get("subset") or "").strip() or ("" if y == 0 else gen)
                # UTF-8 text, as records hold names: opened by those bytes whatever the locale's file name encoding
                p = Path(path_from_text(name))
                if (not p.is_absolute() and (why := _not_a_path(name))
                        and not os.path.lexists(base / p)):
                    # Looked for under the manifest's folder, then named as "~/a.jpg: no such file" or
                    # "https:/example.com/a.jpg": a file missing where the user never put it.
                    bad.append(f"line {line}: {name}: {why}")
                    continue
                if (os.sep == "/" and "\\" in name and not os.path.lexists(base / p)
                        and os.path.lexists(base / path_from_text(name.replace("\\", "/")))):
                    # A list written on Windows: "ai\sd\x.png" is one file name here, missing, while the image
                    # is at ai/sd/x.png. Not read as that: a backslash is a legal character in a name.
                    bad.append(f"line {line}: {name}: '\\' between folders is part of the name here; write '/'")
                    continue
                path = str(p if p.is_absolute() else base / p)
                key = os.path.normpath(path)
                if key in seen:
                    first, y0 = seen[key]
                    if y0 != y:
                        bad.append(f"line {line}: {name} again (first on line {first}, with the other label)")
                        continue
                    # With its label again it is kept here, as a folder given twice is: drop_copies uses it
                    # once and the note says "(given twice)".
                seen.setdefault(key, (line, y))
                out.append(Item(path, y, "real" if y == 0 else gen, sub))
        except UnicodeDecodeError as exc:  # decoded a buffer ahead of the reader: no line to name
            raise ValueError(f"{csv_path}: not UTF-8 text ({exc}); save it as UTF-8") from None
        except csv.Error as exc:  # a cell over the csv module's size limit, a NUL in a quoted cell
            raise ValueError(f"{csv_path}: line {lines.num}: {exc}") from None
    for num, text in lines.comments:
        if num < names_line:
            continue
        # `#1.png,real` was a row before comments were read: held back as one in silence, that image would leave
        # every number. A comment whose file cell names a file here is refused; ./#1.png or "#1.png" lists it.
        with contextlib.suppress(csv.Error):
            name = (dict(zip(header, next(csv.reader([text], delimiter=delim), []))).get("file") or "").strip()
            if name.startswith("#") and os.path.lexists(base / path_from_text(name)):
                bad.append(f"line {num}: {name} is a file here, but a line that starts with '#' is a comment: "
                           f"write ./{name} or \"{name}\" to list it")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"{csv_path}: {len(bad)} row(s) cannot be used: {'; '.join(bad[:5])}{more}. "
                         f"Labels: {', '.join(REAL_LABELS)} (real), {', '.join(AI_LABELS)} (AI), "
                         f"{', '.join(UNLABELLED)} (row left out); each file with one label")
    # Paths written relative to the current folder instead of the CSV's all
    # miss, and the run "finished" with every image unreadable and exit 0.
    # Stops at the first file that exists: a good manifest costs one stat.
    if out and not any(os.path.lexists(i.path) for i in out):
        hint = ""
        if base.resolve() != Path.cwd().resolve() and any(
                os.path.lexists(os.path.relpath(i.path, base)) for i in out[:50]):
            hint = "; they exist relative to the current folder, but a manifest's paths are relative to its own folder"
        raise ValueError(f"{csv_path}: none of its {len(out)} files exist (first: {out[0].path}){hint}")
    return out


def protocol_pairs(items: Sequence[Item]) -> dict[str, str | None]:
    """AI subset -> the subset (real pool) whose reals it is scored against.

    A subset's own reals when it has any (GenImage, CNNSpot GAN folders);
    otherwise the UFD pairing (guided -> imagenet, ldm*/glide*/dalle -> laion);
    otherwise the one real pool when there is exactly one; else None, meaning
    the reals without a subset ("" pool), i.e. all unassigned reals."""
    real_pools = {i.subset for i in items if i.label == 0}
    out: dict[str, str | None] = {}
    for s in sorted({i.subset or i.generator for i in items if i.label == 1}):
        if s in real_pools:
            out[s] = s
            continue
        pool = next((p for prefix, p in UFD_POOL_FOR if s.lower().startswith(prefix) and p in real_pools), None)
        named = [p for p in real_pools if p]
        if pool is None and len(named) == 1 and "" not in real_pools:
            pool = named[0]
        out[s] = pool if pool is not None else ("" if "" in real_pools else None)
    return out


def summarize(items: Sequence[Item]) -> dict:
    """Training-set summary for a head's manifest."""
    gens = Counter(i.generator for i in items)
    return {"n": len(items), "n_real": sum(1 for i in items if i.label == 0),
            "n_ai": sum(1 for i in items if i.label == 1), "generators": dict(sorted(gens.items()))}


def require_both_classes(items: Sequence[Item], what: str = "a probe") -> None:
    """ValueError unless `items` hold real and AI images: said before any image is decoded or the
    backbone is loaded, not by the fit after every image went through it."""
    n_ai = sum(1 for i in items if i.label == 1)
    if not n_ai or n_ai == len(items):
        raise ValueError(f"{what} needs both real and AI images; the data has {len(items) - n_ai} real and {n_ai} AI")


def few_shot(items: Sequence[Item], shots: int | None, seed: int = 0, by: str = "label") -> list[Item]:
    """Keep at most `shots` items per class (by="label") or per generator (by="generator")."""
    if not shots:
        return list(items)
    rng = random.Random(seed)
    groups: dict = {}
    for it in items:
        groups.setdefault(it.label if by == "label" else it.generator, []).append(it)
    out = []
    for k in sorted(groups, key=str):
        g = list(groups[k])
        rng.shuffle(g)
        out += g[:shots]
    return sorted(out, key=lambda i: i.path)


def split_train_val(items: Sequence[Item], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Stratified by generator so every generator is seen in both parts when it can be."""
    rng = random.Random(seed)
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.generator, []).append(it)
    tr, va = [], []
    for k in sorted(groups):
        g = sorted(groups[k], key=lambda i: i.path)
        rng.shuffle(g)
        n_val = int(round(len(g) * val_fraction)) if len(g) > 1 else 0
        va += g[:n_val]
        tr += g[n_val:]
    return tr, va
