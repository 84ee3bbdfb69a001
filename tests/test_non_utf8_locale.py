"""A file system encoding that is not UTF-8: Linux in a latin-1 locale, or in the C locale with PYTHONUTF8=0
(ASCII). Python's str for a UTF-8 name is then not the name's text, so records and the results store keep a
name as the UTF-8 text of its bytes, and open it by those bytes (report.safe.display_path, path_from_text)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

# In a new interpreter: the file system encoding is fixed when Python starts. The library only (no torch import).
_SCRIPT = r"""
import json, os, sys
from aiidetect.api import Scanner
from aiidetect.decode import read_recorded
from aiidetect.report.safe import path_from_record
from aiidetect.store import path_key
from PIL import Image

d = sys.argv[1]
name = os.path.join(os.fsencode(d), "Gr\u00fc\u00dfe \u2615.png".encode("utf-8"))
Image.new("RGB", (8, 8)).save(os.fsdecode(name))
runs = []
for _ in range(2):
    s = Scanner(detectors=["metadata"], db=os.path.join(d, "db"), cache=False, on_note=lambda m: None)
    runs.append([r.to_dict() for r in s.scan(d)])
    s.close()
rec = runs[0][0]
read_recorded(path_from_record(rec["file"], rec["file_bytes"]), rec["sha256"])  # a report's thumbnail
print(json.dumps({"fs": sys.getfilesystemencoding(), "file": rec["file"], "file_bytes": rec["file_bytes"],
                  "resumed": s.stats["resumed"], "key": path_key(os.fsdecode(name))}))
"""


def test_a_scan_into_a_store_keeps_utf8_names_in_an_ascii_locale(tmp_path):
    """LC_ALL=C with PYTHONUTF8=0: the first non-ASCII name ended `scan --db` with UnicodeEncodeError (its key
    held surrogates, which SQLite refuses), and `report` died on the same name read back from the JSONL."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    r = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                       encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["fs"] == "ascii"
    name = str(tmp_path / "Gr\u00fc\u00dfe \u2615.png")
    # what a UTF-8 machine records and keys: a store or a saved run moves between the two unchanged
    assert (out["file"], out["file_bytes"], out["key"]) == (name, None, name)
    assert out["resumed"] == 1


_LISTS = r"""
import json, os, sys
from pathlib import Path
from aiidetect.api import Scanner
from aiidetect.train.data import _from_manifest
from PIL import Image

d = sys.argv[1]
name = os.path.join(os.fsencode(d), "Gr\u00fc\u00dfe \u2615.png".encode("utf-8"))
Image.new("RGB", (8, 8)).save(os.fsdecode(name))
listed = os.path.join(d, "list.txt")
with open(listed, "wb") as f:
    f.write(name + b"\n")  # `find DIR | aiidetect scan -`
with open(listed) as f:
    (rec,) = Scanner(detectors=["metadata"], cache=False).scan("-", stdin=f)
with open(os.path.join(d, "manifest.csv"), "w", encoding="utf-8") as f:
    f.write("file,label\nGr\u00fc\u00dfe \u2615.png,real\n")
(item,) = _from_manifest(Path(d) / "manifest.csv")
print(json.dumps({"fs": sys.getfilesystemencoding(), "stdin": rec.error and rec.error.message,
                  "manifest": os.path.exists(item.path)}))
"""


def test_a_list_on_stdin_and_a_manifest_name_utf8_files_in_an_ascii_locale(tmp_path):
    """The same locale: a name on `find DIR | aiidetect scan -` (decoded as UTF-8, then looked for under the
    ASCII encoding's bytes) was "no such file or directory", and `eval`/`train` refused a manifest of UTF-8
    names ("none of its files exist")."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    r = subprocess.run([sys.executable, "-c", _LISTS, str(tmp_path)], capture_output=True, text=True, env=env,
                       encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == {"fs": "ascii", "stdin": None, "manifest": True}
