"""A container run under an arbitrary uid: HOME unset and no password entry (`Path.home()` raises)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

# What `docker run -u 12345` without HOME looks like to Python: getpwuid has no entry for the uid.
_NO_USER = """
import pwd, runpy, sys
def _no_entry(uid):
    raise KeyError(f"getpwuid(): uid not found: {uid}")
pwd.getpwuid = _no_entry
sys.argv = ["aiidetect", *sys.argv[1:]]
runpy.run_module("aiidetect", run_name="__main__", alter_sys=True)
"""
_FOLDER_VARS = ("HOME", "AIIDETECT_CACHE", "AIIDETECT_WEIGHTS", "AIIDETECT_CLIP_CACHE", "XDG_CACHE_HOME",
                "XDG_DATA_HOME", "HF_HOME", "HF_HUB_CACHE")


def _run_homeless(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _FOLDER_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", _NO_USER, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def _image(tmp_path: Path) -> Path:
    from PIL import Image

    p = tmp_path / "in" / "a.png"
    p.parent.mkdir()
    Image.new("RGB", (16, 16), (120, 30, 200)).save(p)
    return p


def test_scan_without_a_home_runs_with_caches_off(tmp_path):
    img = _image(tmp_path)
    r = _run_homeless(tmp_path, "scan", "-d", "metadata", "-f", "jsonl", str(img))
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 1 and recs[0]["file"] == str(img) and recs[0]["verdict"] != "error"
    assert "Could not determine home" not in r.stderr
    notes = [line for line in r.stderr.splitlines() if "caches are off" in line]
    assert len(notes) == 1 and "AIIDETECT_CACHE" in notes[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no "~" folder in the cwd


def test_doctor_without_a_home_reports_the_folders_off(tmp_path):
    r = _run_homeless(tmp_path, "doctor", "--format", "json")
    assert r.returncode in (0, 1), r.stderr
    rep = json.loads(r.stdout)
    for name in ("aiidetect cache", "CLIP weights", "user heads"):
        row = rep["caches"][name]
        assert row["path"] is None and "no home folder" in row["note"], row
    assert not (tmp_path / "~").exists()


def test_no_folder_is_guessed_without_a_home(monkeypatch, tmp_path):
    import pwd

    from aiidetect import userdirs
    from aiidetect.clip_env import default_cache_dirs
    from aiidetect.heads import weights_dirs

    for var in _FOLDER_VARS:
        monkeypatch.delenv(var, raising=False)

    def no_entry(uid):
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # invalid per the XDG spec: ignored
    assert userdirs.home() is None and userdirs.cache_base() is None and userdirs.data_base() is None
    assert userdirs.hf_hub_cache() is None and default_cache_dirs() == []
    assert all(p.is_absolute() for p in weights_dirs())
    monkeypatch.setenv("HF_HOME", "~/hf")  # huggingface_hub would read a relative "~/hf/hub"
    assert userdirs.hf_hub_cache() is None
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert userdirs.cache_base() is None  # aiidetect's cache never followed XDG_CACHE_HOME
    assert userdirs.hf_hub_cache() == tmp_path / "x" / "huggingface" / "hub"
    monkeypatch.setenv("AIIDETECT_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    assert userdirs.cache_base() == tmp_path / "c"
    assert weights_dirs()[0] == tmp_path / "d" / "aiidetect" / "weights"


def test_with_a_home_the_folders_are_where_they_always_were(monkeypatch, tmp_path):
    """Existing users keep their caches: XDG_CACHE_HOME moves the hub cache (huggingface_hub's rule), not
    aiidetect's own cache, nor open_clip's download folder."""
    from aiidetect import userdirs
    from aiidetect.clip_env import default_cache_dirs
    from aiidetect.heads import user_weights_dir

    for var in _FOLDER_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert userdirs.cache_base() == tmp_path / "h" / ".cache" / "aiidetect"
    assert default_cache_dirs() == [tmp_path / "h" / ".cache" / "clip"]
    assert user_weights_dir() == tmp_path / "h" / ".local" / "share" / "aiidetect" / "weights"
    monkeypatch.setenv("AIIDETECT_CLIP_CACHE", str(tmp_path / "clip"))
    assert default_cache_dirs()[0] == tmp_path / "clip"


_HF_RULES = """
import importlib, json, os, sys
from aiidetect.userdirs import hf_hub_cache
import huggingface_hub.constants as c
out = []
for combo in json.loads(sys.argv[1]):
    for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        os.environ.pop(k, None)
    os.environ.update(combo)
    importlib.reload(c)
    out.append([c.HF_HUB_CACHE, str(hf_hub_cache())])
print(json.dumps(out))
"""


def test_hub_cache_follows_huggingface_hubs_own_rules(tmp_path):
    """The hub lookup is given a cache_dir, so it must name the folder huggingface_hub would have used."""
    pytest.importorskip("huggingface_hub")
    t = str(tmp_path)
    combos = [{}, {"XDG_CACHE_HOME": t + "/x"}, {"XDG_CACHE_HOME": "rel"}, {"HF_HOME": t + "/hf"},
              {"HF_HOME": "~/hf"}, {"HF_HOME": "$HOME/hf2", "XDG_CACHE_HOME": t + "/x"},
              {"HF_HUB_CACHE": t + "/hub", "HF_HOME": t + "/hf"}, {"HUGGINGFACE_HUB_CACHE": t + "/legacy"},
              {"HF_HUB_CACHE": "~/hub2", "HUGGINGFACE_HUB_CACHE": t + "/legacy"}]
    env = {k: v for k, v in os.environ.items() if k not in _FOLDER_VARS}
    env.update(HOME=t + "/home", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _HF_RULES, json.dumps(combos)], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    for combo, (theirs, ours) in zip(combos, json.loads(r.stdout)):
        assert ours == theirs, combo


def test_hub_cache_is_not_looked_up_under_a_relative_home(monkeypatch, tmp_path):
    """huggingface_hub, left to itself without a home, reads a relative "~/.cache/huggingface" in the cwd:
    a checkpoint planted in the folder a scan starts from must not become the backbone."""
    pytest.importorskip("huggingface_hub")
    import pwd

    from aiidetect.backbone import pretrained_candidates
    from aiidetect.fetch import hub_filenames

    for var in _FOLDER_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
    monkeypatch.chdir(tmp_path)
    repo = "timm/vit_test.openai"
    snap = tmp_path / "~" / ".cache" / "huggingface" / "hub" / f"models--{repo.replace('/', '--')}"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc")
    for f in hub_filenames():
        (snap / "snapshots" / "abc").mkdir(parents=True, exist_ok=True)
        (snap / "snapshots" / "abc" / f).write_bytes(b"planted")
    assert pretrained_candidates("ViT-B-16", "openai", {"hf_hub": repo}, []) == []


def test_cache_info_and_weights_fetch_without_a_home_say_what_to_set(tmp_path):
    info = _run_homeless(tmp_path, "cache", "info")
    assert info.returncode == 0, info.stderr
    assert [line.split()[:2] for line in info.stdout.splitlines()] == [["results", "off"], ["features", "off"],
                                                                           ["optimize", "off"], ["weights-ids", "off"]]
    fetch = _run_homeless(tmp_path, "weights", "fetch", "ViT-B-32/openai", "--dry-run")
    assert fetch.returncode == 2
    assert "AIIDETECT_CLIP_CACHE" in fetch.stderr and "--cache-dir" in fetch.stderr and "--debug" not in fetch.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    clear = _run_homeless(tmp_path, "cache", "clear", "all")
    assert clear.returncode == 0 and "results: nothing to clear (off: no home folder" in clear.stderr, clear.stderr


def test_a_new_head_without_a_home_or_output_is_a_usage_error(tmp_path):
    img = _image(tmp_path)
    r = _run_homeless(tmp_path, "calibrate", str(img.parent), "-d", "metadata")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: no folder for new heads") and "AIIDETECT_WEIGHTS" in r.stderr, r.stderr
    assert "--debug" not in r.stderr


def test_missing_backbone_remedy_names_a_folder_to_set(monkeypatch):
    if importlib.util.find_spec("open_clip") is None:  # imported through aiidetect, which quiets torchvision
        pytest.skip("clip extra not installed")
    import pwd

    from aiidetect.backbone import BackboneUnavailable, resolve_pretrained_file

    for var in _FOLDER_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
    with pytest.raises(BackboneUnavailable) as e:
        resolve_pretrained_file("ViT-B-32", "openai")
    assert "into the folder $AIIDETECT_CLIP_CACHE names" in str(e.value.remedy)


def test_optimize_show_without_a_home_is_a_usage_error(tmp_path):
    r = _run_homeless(tmp_path, "optimize", "--show", "--backbone-config", "tiny-vit")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: no folder to store the optimize decision") and "AIIDETECT_CACHE" in r.stderr
    assert "--debug" not in r.stderr, r.stderr


def test_the_caches_off_note_does_not_deny_a_named_heads_folder(tmp_path):
    img = _image(tmp_path)
    env_heads = tmp_path / "heads"
    r = subprocess.run([sys.executable, "-c", _NO_USER, "scan", "-d", "metadata", "-q", str(img)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120,
                       env={**{k: v for k, v in os.environ.items() if k not in _FOLDER_VARS},
                            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                            "XDG_DATA_HOME": str(env_heads)})
    assert r.returncode == 0, r.stderr
    note = [line for line in r.stderr.splitlines() if "caches are off" in line]
    assert note and "no user heads folder is searched" not in note[0] and "XDG_DATA_HOME" in note[0]
