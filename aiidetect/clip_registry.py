"""open_clip's pretrained registry, read without importing open_clip.

Importing open_clip imports torch (seconds, and impossible on the light
install). `scan` only needs to know *where* a checkpoint would be to say
"not on this machine"; `weights fetch` only needs its URL. Both read the
registry from open_clip's ``pretrained.py`` source with ``ast``: the
``_pcfg(url=..., hf_hub=..., quick_gelu=...)`` calls in module-level dicts.
When the source cannot be read this way (open_clip changed its layout) the
caller falls back to importing open_clip.
"""
from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

_KEYS = ("url", "hf_hub", "quick_gelu")


def _pretrained_source() -> Path | None:
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "pretrained.py"
    return p if p.is_file() else None


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return None


def _entry(node: ast.AST) -> dict[str, Any] | None:
    """`_pcfg(url=..., hf_hub=..., ...)` -> {url, hf_hub, quick_gelu}; None for anything else."""
    if not isinstance(node, ast.Call):
        return None
    out: dict[str, Any] = {}
    for i, arg in enumerate(node.args[:2]):  # positional url, hf_hub
        out[("url", "hf_hub")[i]] = _literal(arg)
    for kw in node.keywords:
        if kw.arg in _KEYS:
            out[kw.arg] = _literal(kw.value)
    if not (out.get("url") or out.get("hf_hub")):
        return None
    return {"url": out.get("url") or "", "hf_hub": out.get("hf_hub") or "", "quick_gelu": bool(out.get("quick_gelu"))}


def _tags(node: ast.AST) -> dict[str, dict[str, Any]]:
    """dict(tag=_pcfg(...), ...) or {"tag": _pcfg(...)}."""
    out: dict[str, dict[str, Any]] = {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        for kw in node.keywords:
            e = _entry(kw.value)
            if kw.arg and e:
                out[kw.arg] = e
    elif isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values):
            e = _entry(v)
            if isinstance(k, ast.Constant) and isinstance(k.value, str) and e:
                out[k.value] = e
    return out


@lru_cache(maxsize=4)
def _parse(path: str) -> dict[str, dict[str, dict[str, Any]]]:
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    named: dict[str, dict[str, dict[str, Any]]] = {}
    registry: dict[str, dict[str, dict[str, Any]]] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            continue
        name = stmt.targets[0].id
        tags = _tags(stmt.value)
        if tags:
            named[name] = tags
        elif name == "_PRETRAINED" and isinstance(stmt.value, ast.Dict):
            for k, v in zip(stmt.value.keys, stmt.value.values):
                if isinstance(k, ast.Constant) and isinstance(k.value, str):
                    if isinstance(v, ast.Name) and v.id in named:
                        registry[k.value] = named[v.id]
                    else:
                        inline = _tags(v)
                        if inline:
                            registry[k.value] = inline
    return registry


def lookup(model: str, tag: str) -> dict[str, Any] | None:
    """{url, hf_hub, quick_gelu} for open_clip's (model, tag), or None when the source
    cannot be read or does not list it. Tags match case-insensitively, as in open_clip."""
    src = _pretrained_source()
    if src is None:
        return None
    try:
        reg = _parse(str(src))
    except (OSError, SyntaxError, ValueError):
        return None
    clean = tag.lower().replace("-", "_")  # open_clip's _clean_tag
    tags = reg.get(model)
    if tags is None and model.endswith("-quickgelu"):
        # open_clip derives "<model>-quickgelu" from the quick_gelu tags of <model>.
        tags = {t: e for t, e in (reg.get(model[: -len("-quickgelu")]) or {}).items() if e.get("quick_gelu")}
    got = (tags or {}).get(clean)
    return dict(got) if got else None


def lookup_with_import(model: str, tag: str) -> dict[str, Any] | None:
    """lookup(), falling back to open_clip's own registry (imports torch)."""
    got = lookup(model, tag)
    if got is not None:
        return got
    from .clip_env import import_open_clip

    cfg = import_open_clip().get_pretrained_cfg(model, tag)
    if not cfg:
        return None
    return {"url": cfg.get("url") or "", "hf_hub": cfg.get("hf_hub") or "", "quick_gelu": bool(cfg.get("quick_gelu"))}
