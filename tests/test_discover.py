import io
import os

import pytest

from aiidetect.discover import DiscoveryError, discover, read_path_list


def _tree(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").mkdir()
    for p in ["a/1.jpg", "a/2.PNG", "a/readme.txt", "a/b/3.webp", "a/b/4.heic", "top.gif", "data.bin"]:
        (tmp_path / p).write_bytes(b"x")
    return tmp_path


def names(cands, root):
    return [os.path.relpath(c.path, root) for c in cands]


def test_recursive_sorted_and_skips_non_images(tmp_path):
    root = _tree(tmp_path)
    c, s = discover([str(root)])
    assert names(c, root) == ["a/1.jpg", "a/2.PNG", "a/b/3.webp", "a/b/4.heic", "top.gif"]
    assert s.skipped == 2


def test_no_recursive(tmp_path):
    root = _tree(tmp_path)
    c, _ = discover([str(root)], recursive=False)
    assert names(c, root) == ["top.gif"]


def test_include_exclude(tmp_path):
    root = _tree(tmp_path)
    c, s = discover([str(root)], include=["*.jpg", "*.webp"])
    assert names(c, root) == ["a/1.jpg", "a/b/3.webp"]
    c, s = discover([str(root)], exclude=["a/b/*"])
    assert names(c, root) == ["a/1.jpg", "a/2.PNG", "top.gif"] and s.excluded == 2


def test_explicit_file_always_gets_record(tmp_path):
    root = _tree(tmp_path)
    c, _ = discover([str(root / "a/readme.txt")])
    assert len(c) == 1 and c[0].explicit and c[0].error is None


def test_missing_argument_is_usage_error(tmp_path):
    with pytest.raises(DiscoveryError):
        discover([str(tmp_path / "nope")])


def test_stdin_list_missing_becomes_error_row(tmp_path):
    root = _tree(tmp_path)
    lst = f"{root / 'a/1.jpg'}\n{root / 'gone.jpg'}\n\n{root / 'a/b'}\n"
    c, _ = discover([], stdin=io.StringIO(lst))
    assert names(c, root) == ["a/1.jpg", "gone.jpg", "a/b/3.webp", "a/b/4.heic"]
    assert c[1].error[0] == "unreadable"


def test_stdin_list_splits_lines_at_newline_only(tmp_path):
    # form feed, U+2028, U+0085 and \x1c are legal in names; str.splitlines cut each such name in two
    odd = ["form\ffeed.jpg", "a\u2028b.jpg", "nel\u0085.jpg", "fs\x1cx.jpg", "lat\udce9in.jpg"]
    for n in odd:
        (tmp_path / n).write_bytes(b"x")
    lst = "".join(f"{tmp_path / n}\n" for n in odd).encode("utf-8", "surrogateescape")
    c, _ = discover([], stdin=io.BytesIO(lst))
    assert names(c, tmp_path) == odd and not any(x.error for x in c)
    # a list written on Windows still reads
    c, _ = discover([], stdin=io.BytesIO(f"{tmp_path / odd[0]}\r\n{tmp_path / odd[1]}\r\n".encode()))
    assert names(c, tmp_path) == odd[:2] and not any(x.error for x in c)


def test_stdin_list_saved_with_a_byte_order_mark_reads_its_first_path(tmp_path):
    # Notepad and PowerShell's Out-File put U+FEFF in front: the first path was a missing file
    for n in ("1.jpg", "2.jpg"):
        (tmp_path / n).write_bytes(b"x")
    lst = f"\ufeff{tmp_path / '1.jpg'}\r\n{tmp_path / '2.jpg'}\r\n"
    for stream in (io.BytesIO(lst.encode()), io.StringIO(lst)):
        c, _ = discover([], stdin=stream)
        assert names(c, tmp_path) == ["1.jpg", "2.jpg"] and not any(x.error for x in c)


def test_stdin_list_with_classic_mac_line_ends_still_reads(tmp_path):
    # a list whose lines end in "\r" alone (a "Macintosh" text export) read as one name per line before
    # the split moved to "\n": it must not turn into one missing file holding every name
    for n in ("1.jpg", "2.jpg"):
        (tmp_path / n).write_bytes(b"x")
    lst = f"{tmp_path / '1.jpg'}\r{tmp_path / '2.jpg'}\r".encode()
    c, _ = discover([], stdin=io.BytesIO(lst))
    assert names(c, tmp_path) == ["1.jpg", "2.jpg"] and not any(x.error for x in c)


def test_stdin_nul_list_keeps_names_exact(tmp_path):
    # `find -print0` is the way for names holding a newline or ending in "\r": they must come through whole
    odd = ["\nlead.jpg", "trail.jpg\n", "cr.jpg\r", "plain.jpg"]
    for n in odd:
        (tmp_path / n).write_bytes(b"x")
    lst = "".join(f"{tmp_path / n}\0" for n in odd).encode()
    c, _ = discover([], stdin=io.BytesIO(lst))
    assert sorted(names(c, tmp_path)) == sorted(odd) and not any(x.error for x in c)
    # a NUL list ended by a newline instead of its last NUL (`printf '%s\0' ...; echo`) still reads
    c, _ = discover([], stdin=io.BytesIO(f"{tmp_path / 'plain.jpg'}\0{tmp_path / 'cr.jpg'}\r\0\n".encode()))
    assert names(c, tmp_path) == ["plain.jpg", "cr.jpg\r"] and not any(x.error for x in c)


def test_a_first_name_starting_with_u_feff_is_not_taken_for_a_byte_order_mark(tmp_path, monkeypatch):
    # U+FEFF is legal in a name: `ls | aiidetect scan -` in a folder whose first file starts with it must
    # scan that file, not the file named without it (nor report it missing)
    monkeypatch.chdir(tmp_path)
    for n in ("\ufeffa.jpg", "a.jpg", "b.jpg"):
        (tmp_path / n).write_bytes(b"x")
    c, _ = discover([], stdin=io.BytesIO("\ufeffa.jpg\nb.jpg\n".encode()))
    assert [os.path.basename(x.path) for x in c] == ["\ufeffa.jpg", "b.jpg"] and not any(x.error for x in c)


def test_stdin_list_saved_as_utf16_reads():
    # Windows PowerShell's `>` and Out-File write UTF-16 with a byte-order mark: its NUL bytes read as
    # separators, each character became a path of its own, and a lone "/" among them scanned the whole disk
    listed = ["/srv/in/1.jpg", "/srv/in/caf\u00e9.jpg"]
    lst = "\ufeff" + "".join(f"{n}\r\n" for n in listed)
    for enc in ("utf-16-le", "utf-16-be"):
        assert read_path_list(io.BytesIO(lst.encode(enc))) == listed, enc


def test_symlink_loop_reported_not_fatal(tmp_path):
    root = _tree(tmp_path)
    os.symlink(root / "a", root / "a" / "b" / "back")       # dir loop
    os.symlink(root / "self.jpg", root / "self.jpg")        # file link loop
    c, _ = discover([str(root)])
    errs = {os.path.relpath(x.path, root): x.error for x in c if x.error}
    assert errs["a/b/back"][0] == "symlink-loop"
    assert errs["self.jpg"][0] == "symlink-loop"


def test_a_folder_left_is_no_parent_of_the_links_after_it(tmp_path):
    # The folders above the one walked are one set, each taken out as the walk leaves it: one left in made every
    # later link to it, or to a folder inside it, a `symlink-loop` row where it is a folder reached twice.
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "a" / "x" / "1.png").write_bytes(b"")
    (tmp_path / "b").mkdir()
    os.symlink("../a", tmp_path / "b" / "to_a")          # siblings' links sharing a target
    os.symlink("../a/x", tmp_path / "b" / "to_x")        # a folder inside one left
    os.symlink("../../a", tmp_path / "a" / "x" / "up")   # a real loop, still one
    c, s = discover([str(tmp_path)])
    assert [(os.path.relpath(x.path, tmp_path), x.error and x.error[0]) for x in c] == [
        ("a/x/1.png", None), ("a/x/up", "symlink-loop")]
    assert s.duplicates == 2


def test_duplicates_counted_once(tmp_path):
    root = _tree(tmp_path)
    c, s = discover([str(root / "a/1.jpg"), str(root / "a")])
    assert names(c, root).count("a/1.jpg") == 1 and s.duplicates == 1


def test_special_file_in_directory(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    c, _ = discover([str(tmp_path)])
    assert len(c) == 1  # it gets a row; decoding then says not-a-file


def _deep(root, depth: int, leaf: bytes) -> None:
    """root/a/a/.../a (depth folders) with x.jpg at the bottom, made through directory descriptors so
    the depth may pass PATH_MAX."""
    fds = [os.open(root, os.O_RDONLY)]
    try:
        for _ in range(depth):
            os.mkdir("a", dir_fd=fds[-1])
            fds.append(os.open("a", os.O_RDONLY, dir_fd=fds[-1]))
        fd = os.open("x.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=fds[-1])
        os.write(fd, leaf)
        os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)


def _remove_deep(root, depth: int) -> None:
    # shutil.rmtree recurses too: take the tree down from the bottom, through descriptors.
    fds = [os.open(root, os.O_RDONLY)]
    for _ in range(depth):
        fds.append(os.open("a", os.O_RDONLY, dir_fd=fds[-1]))
    os.unlink("x.jpg", dir_fd=fds[-1])
    for parent in reversed(fds[:-1]):
        os.close(fds.pop())
        os.rmdir("a", dir_fd=parent)
    os.close(fds.pop())


def test_a_tree_deeper_than_pythons_recursion_limit_is_walked(tmp_path):
    """Each folder level was one Python frame: 1,000 levels ended the whole scan with RecursionError.
    Past PATH_MAX the bottom cannot be reached by path: that file or folder is a record with a reason."""
    for depth in (1200, 2100):
        root = tmp_path / f"d{depth}"
        root.mkdir()
        (root / "top.jpg").write_bytes(b"x")
        _deep(root, depth, b"x")
        try:
            c, _ = discover([str(root)])
            assert [os.path.basename(x.path) for x in c] == ["x.jpg" if depth == 1200 else "a", "top.jpg"]
            if depth == 1200:
                assert c[0].error is None and c[0].path.count("/a") == depth
            else:
                assert c[0].error[0] == "unreadable" and "too long" in c[0].error[1]
        finally:
            _remove_deep(root, depth)


def test_links_out_of_the_scanned_folders_are_counted_not_followed(tmp_path):
    """A received archive may hold `evil -> /` or `photo.jpg -> ~/private.jpg`: a sweep must not walk
    this machine's other files (nor put their thumbnails in a report). Links that stay inside the
    scanned folders are followed as before; --follow-links follows the others too."""
    arch, outside = tmp_path / "arch", tmp_path / "outside"
    (arch / "sub").mkdir(parents=True)
    (outside / "deep").mkdir(parents=True)
    for p in (arch / "own.jpg", outside / "private.jpg", outside / "deep" / "p2.jpg"):
        p.write_bytes(b"x")
    os.symlink(outside, arch / "evil_dir")
    os.symlink(outside / "private.jpg", arch / "evil.jpg")
    os.symlink(outside / "notes.txt", arch / "gone.txt")                 # not an image: skipped as before
    os.symlink(arch / "sub", arch / "inside_dir")                         # stays inside: followed
    (arch / "sub" / "s.jpg").write_bytes(b"x")
    c, s = discover([str(arch)])
    assert names(c, arch) == ["inside_dir/s.jpg", "own.jpg"]
    assert s.outside_links == 2 and sorted(os.path.basename(p) for p in s.outside_examples) == ["evil.jpg", "evil_dir"]
    c, s = discover([str(arch)], follow_links=True)
    assert names(c, arch) == ["evil.jpg", "evil_dir/deep/p2.jpg", "inside_dir/s.jpg", "own.jpg"] and s.outside_links == 0
    # a folder named on the command line (or on stdin) is the user's choice, even through a link
    os.symlink(outside, tmp_path / "named")
    c, _ = discover([str(tmp_path / "named")])
    assert names(c, tmp_path / "named") == ["deep/p2.jpg", "private.jpg"]
    # with `outside` scanned too, the links lead into a scanned folder: followed, each file once
    c, s = discover([str(arch), str(outside)])
    assert names(c, arch) == ["evil_dir/deep/p2.jpg", "evil_dir/private.jpg", "inside_dir/s.jpg", "own.jpg"]
    assert s.outside_links == 0
    # `outside` named on stdin counts from where the list names it (the list is read as the walk goes):
    # the walk of `arch` before it leaves its links, and each file has its one record from its own folder
    c, s = discover([str(arch)], stdin=io.StringIO(str(outside) + "\n"))
    assert sorted(os.path.relpath(x.path, tmp_path) for x in c) == [
        "arch/inside_dir/s.jpg", "arch/own.jpg", "outside/deep/p2.jpg", "outside/private.jpg"]


def test_a_link_to_a_file_the_walk_reaches_is_not_a_second_record(tmp_path):
    """The file came first in name order and, having one link to it, was not remembered: the link
    gave it a second record. A link whose target the walk gives a record of its own is now the
    second path, whichever comes first; a target the walk does not reach keeps its link's record."""
    (tmp_path / "sub").mkdir()
    for p in ("a.jpg", "sub/x.jpg", "private/p.jpg"):
        (tmp_path / p).parent.mkdir(exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    os.symlink(tmp_path / "a.jpg", tmp_path / "z_after.jpg")      # the file first, then its link
    os.symlink(tmp_path / "a.jpg", tmp_path / "0_before.jpg")     # its link first
    os.symlink(tmp_path / "sub" / "x.jpg", tmp_path / "to_sub.jpg")
    os.symlink(tmp_path / "private" / "p.jpg", tmp_path / "pub.jpg")
    c, s = discover([str(tmp_path)])
    assert names(c, tmp_path) == ["a.jpg", "private/p.jpg", "sub/x.jpg"] and s.duplicates == 4
    # the walk does not reach sub/ without recursion, nor private/ when it is excluded: the links stand in
    c, _ = discover([str(tmp_path)], recursive=False)
    assert names(c, tmp_path) == ["a.jpg", "pub.jpg", "to_sub.jpg"]
    c, _ = discover([str(tmp_path)], exclude=["*/private/*"])
    assert names(c, tmp_path) == ["a.jpg", "pub.jpg", "sub/x.jpg"]


def test_a_file_swapped_for_a_link_after_listing_is_not_read(tmp_path):
    """Discovery saw a plain photo; before its worker opened it, something with write access to the
    folder (a shared inbox) put a link to a private file there. Following it read the private file
    into the report (its hash, size and metadata) past the rule that links out of the scanned
    folders are not followed. Now the file that was listed is the only one read."""
    import json

    from PIL import Image, PngImagePlugin

    from aiidetect.api import meta_report
    from aiidetect.metadata.detector import MetadataDetector
    from aiidetect.pipeline import Pipeline

    arch, outside = tmp_path / "inbox", tmp_path / "home"
    arch.mkdir()
    outside.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "PRIVATE-NOTE")
    Image.new("RGB", (8, 8)).save(outside / "private.png", pnginfo=info)
    Image.new("RGB", (8, 8)).save(arch / "a.png")
    Image.new("RGB", (8, 8)).save(arch / "b.png")
    cands, _ = discover([str(arch)])
    assert all(c.ident is not None for c in cands)
    (arch / "a.png").unlink()
    os.symlink(outside / "private.png", arch / "a.png")            # swapped between listing and reading
    recs = list(Pipeline([MetadataDetector({"watermark": "never"})]).run(cands))
    assert recs[0].error is not None and recs[0].error.code == "unreadable" and "replaced" in recs[0].error.message
    assert recs[0].sha256 is None and "PRIVATE-NOTE" not in json.dumps(recs[0].to_dict())
    assert recs[1].error is None                                       # the untouched file is scanned as before
    rep = meta_report(cands[0].path, watermark="never", ident=cands[0].ident)
    assert rep["error"]["code"] == "unreadable" and "PRIVATE-NOTE" not in json.dumps(rep)
    # without the listing's identity (a path handed to the library), the path is read as it stands
    assert meta_report(cands[0].path, watermark="never")["error"] is None


class _ListBeingWritten(io.RawIOBase):
    """stdin while `find` still walks: the pieces so far, and a note when a later one is asked for."""

    def __init__(self, pieces):
        self.pieces, self.asked = list(pieces), 0

    def readable(self):
        return True

    def readinto(self, b):
        if not self.pieces:
            return 0
        self.asked += 1
        data = self.pieces.pop(0)
        b[:len(data)] = data
        return len(data)


@pytest.mark.parametrize("sep", ["\0", "\n"])
def test_a_stdin_list_is_walked_as_it_comes(tmp_path, sep):
    # `find /archive | aiidetect scan -`: the whole list was read before the first file was given, so a
    # slow walk of a share printed nothing until it ended, and every path was held in memory
    from aiidetect.discover import iter_discover

    root = _tree(tmp_path)
    # a line list is known for one once its first 4,096 bytes hold no NUL (blank lines are skipped)
    first = f"{root / 'a' / '1.jpg'}{sep}" + ("" if sep == "\0" else "\n" * 4096)
    stream = _ListBeingWritten([first.encode(), f"{root / 'top.gif'}{sep}".encode()])
    it, _ = iter_discover([], stdin=io.BufferedReader(stream, 16))
    assert os.path.relpath(next(it).path, root) == "a/1.jpg" and stream.asked == 1
    assert names(it, root) == ["top.gif"]


def test_find_lists_a_folder_then_its_files_each_file_once(tmp_path):
    # `find DIR` names DIR first, then each folder and file in it: the folder's walk gives its files their
    # records, and the files named after it are the same files (the list is not known ahead any more)
    root = _tree(tmp_path)
    os.symlink(root / "a" / "1.jpg", root / "a" / "link.jpg")
    lst = "".join(f"{root / p}\n" for p in ["", "a", "a/1.jpg", "a/link.jpg", "a/readme.txt", "a/b", "a/b/3.webp",
                                            "top.gif"])
    c, s = discover([], stdin=io.StringIO(lst))
    assert names(c, root) == ["a/1.jpg", "a/2.PNG", "a/b/3.webp", "a/b/4.heic", "top.gif", "a/readme.txt"]
    assert not any(x.error for x in c)


class _Pieces(io.RawIOBase):
    """stdin handing over `size` bytes a read, as a pipe fed by a slow writer does."""

    def __init__(self, data: bytes, size: int):
        self.data, self.size = data, size

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.size, len(self.data))
        b[:n], self.data = self.data[:n], self.data[n:]
        return n


def test_a_nul_past_the_first_4096_bytes_never_reaches_a_path(tmp_path):
    # a line list whose first line is longer than 4,096 bytes, then NUL-separated paths (a corrupt or
    # hostile list): "a/1.jpg\0top.gif" went on as one path, and os.stat's "embedded null byte"
    # (a ValueError) ended the whole scan under --shard or --db
    from aiidetect.discover import iter_discover
    from aiidetect.shard import in_shard

    root = _tree(tmp_path)
    data = b"x" * 5000 + f"\n{root / 'a' / '1.jpg'}\0{root / 'top.gif'}\0".encode()
    assert not any("\0" in p for p in read_path_list(io.BufferedReader(_Pieces(data, 4096))))
    it, _ = iter_discover([], stdin=io.BufferedReader(_Pieces(data, 4096)))
    c = list(in_shard(it, (1, 1)))
    assert names([x for x in c if not x.error], root) == ["a/1.jpg", "top.gif"]


def test_a_print0_list_whose_first_path_is_past_path_max_is_read_as_one(tmp_path):
    # `find DIR -mindepth 40 -print0`: find prints paths longer than PATH_MAX; with no NUL in its first 4,096
    # bytes such a list was read by lines, and a later name holding a newline was cut in two
    # (a name past PATH_MAX opens nowhere: it comes as its start, length and digest)
    from aiidetect.discover import LongPath

    deep = "/d" * 2600
    data = f"{deep}\0/a/x\ny.jpg\0/b.jpg\0".encode()
    got = read_path_list(io.BufferedReader(_Pieces(data, 1000)))
    assert got[1:] == ["/a/x\ny.jpg", "/b.jpg"] and isinstance(got[0], LongPath) and got[0].size == 5200
    # a line list whose first line is as long is still read by lines
    data = f"{deep}\n/a/x.jpg\n".encode()
    got = read_path_list(io.BufferedReader(_Pieces(data, 1000)))
    assert got[1:] == ["/a/x.jpg"] and got[0].startswith("/d/d") and got[0].size == 5200


def test_a_path_over_many_reads_comes_whole():
    # each piece of a path not ended yet was joined and searched again at every read: a line of N
    # pieces cost N*N/2 pieces (a 64 MB list with no newline took 30 s; read whole before, 0.2 s)
    # (a name is at most PATH_MAX: past that, its start, length and digest come, not the name)
    import hashlib

    name = "/" + "é" * (2 << 20)
    data = f"/a.jpg\r\n{name}\r\n/b.jpg".encode()
    got = read_path_list(io.BufferedReader(_Pieces(data, 997), 997))
    assert got[0] == "/a.jpg" and got[2] == "/b.jpg" and got[1].size == len(name.encode())
    assert got[1].digest == hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    name = "/" + "é" * 2000  # 4,001 bytes, over 41 reads of 97
    data = f"/a.jpg\r\n{name}\r\n/b.jpg".encode()
    assert read_path_list(io.BufferedReader(_Pieces(data, 97), 97)) == ["/a.jpg", name, "/b.jpg"]


def test_a_link_named_on_stdin_after_its_target_folder_has_its_record(tmp_path):
    # `arch` is walked before `outside` is named: its link is left then (outside the folders so far). Named on
    # stdin after `outside` came, the link was taken for one the walk had followed, and dropped as a
    # duplicate: its target is no image by name, so `outside`'s walk gave it no record either, and the file
    # named explicitly had none at all
    arch, outside = tmp_path / "arch", tmp_path / "outside"
    arch.mkdir()
    outside.mkdir()
    (outside / "blob").write_bytes(b"x")
    os.symlink(outside / "blob", arch / "link.jpg")
    c, s = discover([], stdin=io.StringIO(f"{arch}\n{outside}\n{arch / 'link.jpg'}\n"))
    assert names(c, tmp_path) == ["arch/link.jpg"] and c[0].explicit


def test_a_list_of_files_costs_three_stats_a_file(tmp_path, monkeypatch):
    # `find /share -type f | aiidetect scan -`: each file named is stat'ed to tell a folder, a missing path and
    # a file named twice (3 calls); asking whether a folder walked before gave it a record cost 3 more a file
    # when no folder had been walked at all (a million files on a network share: 3 million round trips)
    root = _tree(tmp_path)
    lst = "".join(f"{root / p}\n" for p in ["a/1.jpg", "a/2.PNG", "a/b/3.webp", "top.gif", "data.bin"])
    calls = []
    for fn in ("stat", "lstat"):
        real = getattr(os, fn)
        monkeypatch.setattr(os, fn, lambda *a, _real=real, **k: calls.append(a[0]) or _real(*a, **k))
    c, _ = discover([], stdin=io.StringIO(lst))
    monkeypatch.undo()
    assert len(c) == 5 and len(calls) <= 3 * 5, calls


def test_a_file_named_on_stdin_in_other_spelling_than_its_walked_folder_keeps_its_record(tmp_path, monkeypatch):
    # the walk of `root` left a/1.jpg out by --exclude (its path as walked matches); named on stdin relative to
    # the working folder, the file was judged by that spelling, which the pattern misses: taken for one the
    # walk had given a record, it was dropped as a duplicate, and the file named explicitly had none at all
    root = _tree(tmp_path)
    monkeypatch.chdir(root)
    c, s = discover([], stdin=io.StringIO(f"{root}\na/1.jpg\n"), exclude=[f"{root}/a/*"])
    assert "a/1.jpg" in [x.path for x in c] and s.duplicates == 0


class _MakesFileOnRead(io.RawIOBase):
    """stdin whose writer makes a file, then names it: the walk of its folder is over by then."""

    def __init__(self, make, data: bytes):
        self.make, self.data = make, data

    def readable(self):
        return True

    def readinto(self, b):
        if self.make:
            self.make(), setattr(self, "make", None)
        n = min(len(b), len(self.data))
        b[:n], self.data = self.data[:n], self.data[n:]
        return n


def test_a_file_made_after_its_folder_was_walked_and_named_on_stdin_has_its_record(tmp_path):
    # `aiidetect scan inbox -` while files keep arriving: inbox is walked first; a file made there after the walk
    # and then named on stdin was taken for one the walk had given a record (its folder was walked) and dropped
    # as a duplicate: no record at all
    root = _tree(tmp_path)
    os.utime(root / "a", ns=(10**18, 10**18))  # the walk's listing is older than what comes next, on any clock tick
    stream = _MakesFileOnRead(lambda: (root / "a" / "new.jpg").write_bytes(b"x"), f"{root / 'a' / 'new.jpg'}\n".encode())
    c, s = discover([str(root / "a")], stdin=io.BufferedReader(stream))
    assert names(c, root) == ["a/1.jpg", "a/2.PNG", "a/b/3.webp", "a/b/4.heic", "a/new.jpg"]
    assert c[-1].explicit and s.duplicates == 0
    # in a folder unchanged since its walk, a file named again is the walk's: one record (as `find DIR` lists)
    c, s = discover([str(root / "a")], stdin=io.StringIO(f"{root / 'a' / 'new.jpg'}\n"))
    assert names(c, root).count("a/new.jpg") == 1 and s.duplicates == 1


def test_a_line_list_written_a_line_at_a_time_gives_its_first_path_at_once():
    # `(echo a.jpg; sleep 30) | aiidetect scan -`: the list's kind was told from its first 4,096 bytes, so a
    # script naming one file and then pausing got no record until 4,096 bytes more or the list's end
    from aiidetect.discover import iter_path_list

    stream = _ListBeingWritten([b"/x/1.jpg\n", b"/x/2.jpg\n"])
    paths = iter_path_list(io.BufferedReader(stream, 16))
    assert next(paths) == "/x/1.jpg" and stream.asked == 1
    assert list(paths) == ["/x/2.jpg"]
    # a -print0 list still reads its names whole, newlines and all, when a NUL comes in the same write
    stream = _ListBeingWritten([b"/x/a\nb.jpg\0/y.jpg\0"])
    assert list(iter_path_list(io.BufferedReader(stream, 16))) == ["/x/a\nb.jpg", "/y.jpg"]


def test_a_list_with_no_line_ends_is_not_held_and_gets_one_record_that_says_why():
    # a binary file, or a list with no separator at all, piped in: it was held whole as one "path" (a 300 MB
    # one took 1.2 GB and came back as a 300 MB record); a name of PATH_MAX bytes or more opens nowhere
    from aiidetect.discover import LongPath

    data = b"a" * (1 << 20) + b"\n/x/1.jpg\n"
    got = read_path_list(io.BufferedReader(_Pieces(data, 65536)))
    assert isinstance(got[0], LongPath) and got[0].size == 1 << 20 and len(got[0]) < 300 and got[1:] == ["/x/1.jpg"]
    c, _ = discover([], stdin=io.BufferedReader(_Pieces(data, 65536)))
    assert c[0].error[0] == "unreadable" and "1,048,576 bytes" in c[0].error[1] and "PATH_MAX" in c[0].error[1]
    assert c[1].path == "/x/1.jpg"
    # two such names are two records, apart (--db and --shard key them by path)
    assert len({p for p in read_path_list(io.BytesIO(b"a" * 5000 + b"1\n" + b"a" * 5000 + b"2\n"))}) == 2


def test_a_utf16_list_is_read_as_it_comes_and_a_bad_pair_is_no_slash():
    # a UTF-16 list (PowerShell's `>`) was read whole before the first path (100 MB of it took 540 MB); and one
    # holding a byte pair that is no character fell back to UTF-8, whose NULs cut "d/a.png" into "d", "/", ...:
    # the lone "/" walked the whole disk
    from aiidetect.discover import iter_path_list

    stream = _ListBeingWritten(["\ufeff/x/1.jpg\r\n".encode("utf-16-le"), "/x/2.jpg\r\n".encode("utf-16-le")])
    paths = iter_path_list(io.BufferedReader(stream, 16))
    assert next(paths) == "/x/1.jpg" and stream.asked == 1
    assert list(paths) == ["/x/2.jpg"]
    bad = b"\xff\xfe\x00\xd8\n\x00" + "d/a.png\n".encode("utf-16-le")
    assert read_path_list(io.BytesIO(bad)) == ["\ufffd", "d/a.png"]


def test_a_folder_walked_again_gives_a_record_to_a_file_made_since_its_first_walk(tmp_path):
    # `aiidetect scan inbox -` with inbox named again on stdin: its second walk counted every file as one the
    # first had given a record, so a file made in between had none
    root = _tree(tmp_path)
    os.utime(root / "a", ns=(10**18, 10**18))  # the first listing is older than what comes next, on any clock tick
    stream = _MakesFileOnRead(lambda: (root / "a" / "new.jpg").write_bytes(b"x"), f"{root / 'a'}\n{root / 'a'}\n".encode())
    c, s = discover([str(root / "a")], stdin=io.BufferedReader(stream))
    # and the files of the first walk, their ctime past that listing's mtime too, no second record
    assert names(c, root) == ["a/1.jpg", "a/2.PNG", "a/b/3.webp", "a/b/4.heic", "a/new.jpg"]
    # a folder unchanged since its first walk: its second walk gives nothing more
    c, s = discover([str(root / "a")], stdin=io.StringIO(f"{root / 'a'}\n"))
    assert names(c, root) == ["a/1.jpg", "a/2.PNG", "a/b/3.webp", "a/b/4.heic", "a/new.jpg"] and s.duplicates == 5


def test_a_file_of_a_walk_whose_folder_changed_since_keeps_one_record(tmp_path):
    # a file written after its folder's last change (a copy's data lands after its name; `cp -a`, tar and rsync
    # set the folder's mtime back) has a ctime past that mtime without being new: once the folder changed after
    # its walk, the walk's file named on stdin, or met by a second walk, got a second record (and was counted twice)
    root = _tree(tmp_path)
    os.utime(root / "a", ns=(10**18, 10**18))  # every file's ctime is past the folder's mtime at the walk

    def change():
        (root / "a" / "notes.txt").write_bytes(b"x")  # the folder changes after its walk

    listed = f"{root / 'a' / '1.jpg'}\n{root / 'a'}\n"
    c, s = discover([str(root / "a")], stdin=io.BufferedReader(_MakesFileOnRead(change, listed.encode())))
    assert names(c, root) == ["a/1.jpg", "a/2.PNG", "a/b/3.webp", "a/b/4.heic"] and s.duplicates == 5


def test_an_over_long_first_name_after_a_byte_order_mark_still_says_why():
    # Notepad's mark in front of a list whose first name is past PATH_MAX: dropping the mark made the name a plain
    # string, so its record said "no such file or directory", not its length
    from aiidetect.discover import LongPath

    c, _ = discover([], stdin=io.BytesIO(b"\xef\xbb\xbf/x/" + b"a" * 5000 + b"\n/y.jpg\n"))
    assert isinstance(c[0].path, LongPath) and "PATH_MAX" in c[0].error[1] and c[1].path == "/y.jpg"


def test_a_print0_list_of_names_near_path_max_over_many_reads_comes_whole():
    # names of 4,000 bytes (under PATH_MAX), newlines inside, in reads of 1,000 bytes: none is cut at a newline,
    # held back as over-long, or split where a read ends
    names = [f"/d{i}/" + "x" * 1503 + "\n" + "é" * 1246 for i in range(3)]
    assert all(len(n.encode()) == 4000 for n in names)
    data = "".join(n + "\0" for n in names).encode()
    assert read_path_list(io.BufferedReader(_Pieces(data, 1000), 1000)) == names


def test_a_list_on_a_descriptor_above_1023_still_says_it_would_wait():
    # select() refuses descriptors of 1024 or more (ValueError), which read as "not waiting": a library host
    # with many files open lost the early hand-over of records while its list's writer was quiet
    import os

    from aiidetect.discover import ListState

    r, w = os.pipe()
    high = os.dup2(r, 1500)
    try:
        with os.fdopen(high, "rb", closefd=False) as stream:
            state = ListState(stream)
            assert state.fd == 1500 and state.waiting()
            os.write(w, b"a.jpg\n")
            assert not state.waiting()
    finally:
        for fd in (r, w, high):
            os.close(fd)


def test_a_missing_path_says_what_the_shell_would_have_done_with_it(tmp_path, monkeypatch):
    """A laptop user's `aiidetect scan '~/photos'` (quoted: no shell expands it) or a Windows path pasted into
    a macOS or Linux terminal said only "no such file or directory"; the error now says why it names nothing.
    Nothing is rewritten: `~x` and `a\\b` are legal names, taken as they are when they exist."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DiscoveryError, match=r"~ is expanded by the shell.*" + str(tmp_path / "home" / "photos")):
        discover(["~/photos"])
    for win in ("C:\\photos\\a.jpg", "D:/a.jpg", "photos\\a.jpg"):
        with pytest.raises(DiscoveryError, match=r"a Windows path\?.*separated by /"):
            discover([win])
    with pytest.raises(DiscoveryError, match=r"^no such file or directory: x/nothere\.jpg$"):
        discover(["x/nothere.jpg"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "~").mkdir()
    (tmp_path / "a\\b.jpg").write_bytes(b"x")
    files, _ = discover(["~", "a\\b.jpg"])
    assert sorted(os.path.basename(c.path) for c in files) == ["a\\b.jpg"]


def test_a_path_the_system_refuses_says_why_not_that_it_is_missing(tmp_path):
    """A name past the file system's 255 bytes (a long title saved from a browser, cut nowhere) was "no such file
    or directory", as a typo is: the error, and a listed name's record, give the system's own reason."""
    import errno

    long = str(tmp_path / ("y" * 300 + ".jpg"))
    with pytest.raises(DiscoveryError, match=r"^cannot read .*y\.jpg: " + os.strerror(errno.ENAMETOOLONG) + "$"):
        discover([long])
    (c,), _ = discover([], stdin=io.StringIO(long + "\n"))
    assert c.error == ("unreadable", os.strerror(errno.ENAMETOOLONG))


def test_a_big_folder_is_walked_holding_its_names_not_its_entries(tmp_path, monkeypatch):
    # A folder's listing is held while it is walked (name order): as DirEntry objects, about 220 bytes an entry
    # (a folder of 100,000 files added 21 MB to a scan's peak), where its names take about 70.
    import aiidetect.discover as disc
    from aiidetect.discover import iter_discover

    live = [0]
    scandir = os.scandir

    class Entry:  # counts the scandir entries still held by someone
        __slots__ = ("_e",)

        def __init__(self, e):
            self._e = e
            live[0] += 1

        def __del__(self):
            live[0] -= 1

        def __getattr__(self, name):
            return getattr(self._e, name)

    class Scandir:
        def __init__(self, top):
            self._it = scandir(top)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._it.close()

        def __iter__(self):
            return (Entry(e) for e in self._it)

    for i in range(300):
        (tmp_path / f"f{i:03d}.png").write_bytes(b"")
    (tmp_path / "f000.png").unlink()
    os.symlink("f001.png", tmp_path / "f000.png")  # links are still told apart (a link in the walk: outside_links)
    monkeypatch.setattr(disc.os, "scandir", Scandir)
    it, summ = iter_discover([str(tmp_path)])
    first = next(it)
    held = live[0]
    rest = list(it)
    assert held == 0
    assert {c.path for c in [first, *rest]} == {str(tmp_path / f"f{i:03d}.png") for i in range(1, 300)}


def test_a_deep_tree_is_walked_in_memory_linear_in_its_depth(tmp_path):
    # The walk kept, for each folder on the way down, its own copy of the set of folders above it: at 2,100
    # levels (about where a path passes PATH_MAX) 2.2 million keys, 85 MB, 40 bytes a key; at 600 levels 7 MB.
    import tracemalloc

    from aiidetect.discover import iter_discover

    depth = 600
    d = tmp_path
    for _ in range(depth):
        d = d / "d"
    d.mkdir(parents=True)
    (d / "bottom.png").write_bytes(b"")
    # What the walk adds, and tracing left as found: already on (`-X tracemalloc`, PYTHONTRACEMALLOC, which
    # pytest suggests for a ResourceWarning), it counted all the run had allocated before (30 MB), and was
    # turned off for the tests after this one.
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        it, _ = iter_discover([str(tmp_path)])
        found = next(it)  # the walk is at its deepest here
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not tracing:
            tracemalloc.stop()
    assert found.path == str(d / "bottom.png") and list(it) == []
    # Each level's own share: its path (1.2 KB at the bottom), its listing, its walk state. Not the levels above
    # it again.
    assert held < depth * 3000, held
