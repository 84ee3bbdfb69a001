"""The docs cite the code: command lines, tests, files, modules and each other. These tests keep the
citations true after a rename or a refactor. Each check lists every stale item (file:line: item) in
one message. Nothing here runs a command, loads a model or reads outside the repo: the command lines
are checked against the click tree the CLI builds, the code references against the source (ast)."""
from __future__ import annotations

import ast
import functools
import glob
import re
import shlex
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


# ---------------------------------------------------------------- reading the markdown

@functools.lru_cache(maxsize=None)
def _split(doc: Path):
    """(fenced blocks as [(first line number, language, lines)], the text outside them with every
    fenced line blanked so that line numbers stay right)."""
    blocks, prose = [], []
    fence = None
    for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        m = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", line)
        if fence is None and m:
            fence = m.group(1)
            blocks.append((n + 1, m.group(2).lower(), []))
            prose.append("")
        elif fence is not None and line.strip().startswith(fence):
            fence = None
            prose.append("")
        elif fence is not None:
            blocks[-1][2].append(line)
            prose.append("")
        else:
            prose.append(line)
    return blocks, "\n".join(prose)


def _inline_code(doc: Path):
    """(line, text) of every inline code span outside fences; a span may run over a line break
    within a paragraph (never over a blank line)."""
    _, prose = _split(doc)
    for m in re.finditer(r"(?<!`)`([^`]+?)`(?!`)", prose):
        if "\n\n" in m.group(1):
            continue
        yield prose.count("\n", 0, m.start()) + 1, m.group(1).replace("\n", " ")


def _all_text(doc: Path):
    """(line, text) of every line, fenced or not."""
    for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        yield n, line


# ---------------------------------------------------------------- command lines

@functools.lru_cache(maxsize=None)
def _cli():
    import typer

    from aiidetect.cli import app

    return typer.main.get_command(app)


SHELL_BLOCKS = {"", "bash", "sh", "shell", "console", "text"}
# the names that invoke the CLI: `aiidetect`, `python -m aiidetect`
_INVOKE = re.compile(r"^(?:(?:/\S*/)?python3?(?:\s+-X\s+\S+)*\s+-m\s+)?aiidetect$")


def _segments(line: str):
    """Split a shell line into simple commands at pipes, &&, ||, ; and comments (outside quotes)."""
    out, cur, quote, i = [], "", None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == quote:
                quote = None
            cur += c
        elif c in "'\"":
            quote = c
            cur += c
        elif c == "#" and (not cur or cur[-1].isspace()):
            break
        elif line.startswith(("&&", "||"), i):
            out.append(cur)
            cur = ""
            i += 1
        elif c == ";" or (c == "|" and (not cur or cur[-1].isspace()) and line[i + 1:i + 2] in (" ", "")):
            # a pipe is ` | `; `table|json` and `linear|mpft|flow` are alternatives written in one word
            out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    out.append(cur)
    return out


def _tokens(seg: str):
    seg = re.sub(r"\$\([^()]*\)", "$SUB", seg)  # `X=$(mktemp -d) aiidetect ...`: one word
    try:
        return shlex.split(seg)
    except ValueError:
        return seg.split()


def _command_words(tokens):
    """The words after `aiidetect` in one simple command, or None if it does not run aiidetect:
    prompts (`machine1$`), env-var prefixes (`X=1`, `X=$(mktemp -d)`) and `time ...` are skipped."""
    i = 0
    while i < len(tokens) and (re.match(r"^[\w.-]*\$$", tokens[i]) or re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[i])):
        i += 1
    # `/usr/bin/time -f %e aiidetect ...`
    if i < len(tokens) and tokens[i].rsplit("/", 1)[-1] == "time":
        i += 1
        while i < len(tokens) and tokens[i].startswith("-"):
            i += 2 if tokens[i] in ("-f", "-o") else 1
    for j in range(i, min(i + 6, len(tokens))):
        if _INVOKE.match(" ".join(tokens[i:j + 1])):
            return tokens[j + 1:]
    return None


def _is_placeholder(word: str) -> bool:
    return (word in ("...", "…") or word.startswith(("<", "$", "[")) or word.isupper()
            or bool(re.fullmatch(r"[A-Z_]+\.\.\.", word)))


def _choices(param):
    """The values an option accepts when they are a fixed set (an Enum or Literal annotation), else None."""
    import enum
    import types
    import typing

    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    while typing.get_origin(ann) in (typing.Union, list, getattr(types, "UnionType", typing.Union)):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) != 1:
            return None
        ann = args[0]
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return {str(e.value) for e in ann}
    if typing.get_origin(ann) is typing.Literal:
        return {str(a) for a in typing.get_args(ann)}
    return None


def _bad_value(param, value: str):
    """The alternatives of a shown value (`table|json`) that the option refuses, [] if all are taken
    or the value is a placeholder (`DIR`, `$X`, `<n>`, `…`)."""
    allowed = _choices(param) if param is not None else None
    if not allowed or _is_placeholder(value) or value in ("...", "…"):
        return []
    return [v for v in value.split("|") if v and v not in allowed]


def _param(cmd, spelling):
    return next((p for p in cmd.params if spelling in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])), None)


def _options(cmd):
    """{spelling: (takes a value, hidden)} for one click command, -h/--help included."""
    opts = {"-h": (False, False), "--help": (False, False)}
    for p in cmd.params:
        if p.param_type_name != "option":
            continue
        for o in p.opts + p.secondary_opts:
            # an option whose value may be left out (click: is_flag=False with a flag_value) still takes one
            takes = (not p.is_flag and not p.count) or bool(getattr(p, "_flag_needs_value", False))
            opts[o] = (takes, bool(p.hidden))
    return opts


def _check_words(words):
    """Problems with one aiidetect command line (words after `aiidetect`), [] if it parses."""
    cmd, path, problems = _cli(), ["aiidetect"], []
    words = [w.strip("[]") for w in words]
    i = 0
    while i < len(words):
        w = words[i]
        if not w or w in ("\\",):
            i += 1
            continue
        if w == "--" or re.match(r"^\d*[<>]", w) or w.startswith("$("):
            break  # end of options, a redirection, a command substitution
        opts = _options(cmd)
        if w.startswith("-") and len(w) > 1:
            name = w.split("=", 1)[0]
            if name in ("…", "-…"):
                i += 1
                continue
            if name not in opts:
                problems.append(f"`{' '.join(path)}` has no option {name}")
            elif opts[name][1]:
                problems.append(f"`{' '.join(path)}` {name} is a hidden old spelling (use the current one)")
            if name in opts and opts[name][0]:
                value = w.split("=", 1)[1] if "=" in w else (words[i + 1] if i + 1 < len(words) else "")
                bad = _bad_value(_param(cmd, name), value)
                if bad:
                    problems.append(f"`{' '.join(path)} {name}` takes no value {'|'.join(bad)}")
            i += 2 if (name in opts and opts[name][0] and "=" not in w) else 1
            continue
        subs = getattr(cmd, "commands", None)
        if subs:  # a group: this word names a subcommand
            if _is_placeholder(w) or w in ("...", "…"):
                break
            # `linear|mpft|flow`, and in prose `summary/failed/merge`: alternatives
            alts = [a for a in re.split(r"[|/]", w) if a]
            missing = [a for a in alts if a not in subs]
            if missing:
                problems.append(f"`{' '.join(path)}` has no command {'|'.join(missing)}")
                break
            if len(alts) > 1:  # `train linear|mpft|flow`: every alternative, with the rest of the line
                for a in alts:
                    problems += _check_words([*path[1:], a, *words[i + 1:]])
                return problems
            cmd = subs[w]
            path.append(w)
        i += 1
    return problems


def _shell_commands(doc: Path):
    """(line, tokens) of every simple command a doc shows: each line of a shell fence (continuations
    joined; a fence in another language is code, not commands), and each inline code span."""
    blocks, _ = _split(doc)
    for start, lang, lines in blocks:
        if lang not in SHELL_BLOCKS:
            continue
        logical = []  # [start line, text]
        for k, line in enumerate(lines):
            if logical and logical[-1][1].endswith("\\"):
                logical[-1][1] = logical[-1][1][:-1] + " " + line.strip()
            elif logical and re.match(r"^\s+\[?-", line) and re.match(r"^\S", lines[logical[-1][0] - start]):
                # a synopsis wrapped without a backslash: `aiidetect train linear DATA... [--shots N]`
                # then indented lines of `[--val-fraction F] ...`
                logical[-1][1] += " " + line.strip()
            else:
                logical.append([start + k, line.rstrip()])
        for n, text in logical:
            yield n, [_tokens(seg) for seg in _segments(text)]
    for n, span in _inline_code(doc):
        yield n, [_tokens(seg) for seg in _segments(span.replace("\\|", "|"))]


def _group_path(words):
    """The words naming the group of the command `aiidetect <words>` runs (`['weights']` for
    `weights list -f json`), or None."""
    cmd, path = _cli(), []
    for w in words:
        subs = getattr(cmd, "commands", None)
        if w.startswith("-") or not subs:
            continue
        if w not in subs:
            return None
        if not getattr(subs[w], "commands", None):
            return path
        cmd = subs[w]
        path.append(w)
    return None


def _command_lines(doc: Path):
    """(line, words after aiidetect) of the aiidetect command lines a doc shows. In a command summary
    `aiidetect weights list | verify [-f json]` lists siblings, not a pipe: a word after ` | ` that
    names a sibling command is read as `aiidetect weights verify [-f json]`."""
    for n, segments in _shell_commands(doc):
        group = None
        for tokens in segments:
            words = _command_words(tokens)
            if words is not None:
                group = _group_path(words)
                yield n, words
                continue
            siblings = getattr(functools.reduce(lambda c, w: c.commands[w], group or [], _cli()), "commands", {})
            if group is not None and tokens and tokens[0].strip("[]") in siblings:
                yield n, [*group, *tokens]
            else:
                group = None


@functools.lru_cache(maxsize=None)
def _hidden_only():
    """Option spellings that exist only as hidden old spellings (`--out`, `--json`, `--batch`)."""
    visible, hidden = set(), set()

    def walk(cmd):
        for name, (_, h) in _options(cmd).items():
            (hidden if h else visible).add(name)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(_cli())
    return frozenset(hidden - visible)


def _names_old_spelling(doc: Path, n: int) -> bool:
    """Lines that name an old spelling on purpose: a row of cli.md's `| old | new |` table, or a
    sentence saying "its old spelling"."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    if "old spelling" in lines[n - 1].lower():
        return True
    k = n - 1
    while k >= 0 and lines[k].lstrip().startswith("|"):
        k -= 1
    header = lines[k + 1] if k + 1 < n else ""
    return re.sub(r"\s", "", header).lower().startswith("|old|new|")


def _short_forms(doc: Path):
    """(line, problems) of inline code that shows options without `aiidetect`: `--json` (only a
    spelling that is nowhere but hidden is reported: the span names no command), or a command and
    options (`calibrate --method platt`, checked like a whole command line where the words name a
    command; where they name a group, `export -f html` being `results export`, only hidden spellings)."""
    top = _cli().commands
    for n, span in _inline_code(doc):
        words = _tokens(span.replace("\\|", "|"))
        if not words or _command_words(words) is not None:
            continue
        if words[0].startswith("--"):
            names = [words[0].split("=")[0]]
            problems = [f"{x} is a hidden old spelling (use the current one)" for x in names if x in _hidden_only()]
        elif words[0] in top and any(w.startswith("-") for w in words[1:]):
            problems = _check_words(words)
            if any("has no command" in p for p in problems):
                # `export -f html` (results export, said just before): only a hidden spelling is certain
                problems = [p for p in problems if "hidden old spelling" in p]
        else:
            continue
        if problems and not _names_old_spelling(doc, n):
            yield n, problems


def test_command_lines_parse_with_the_current_cli():
    stale, seen = [], 0
    for doc in DOCS:
        for n, words in _command_lines(doc):
            seen += 1
            if _names_old_spelling(doc, n):
                continue
            for p in _check_words(words):
                stale.append(f"{_rel(doc)}:{n}: {p}")
        for n, problems in _short_forms(doc):
            stale += [f"{_rel(doc)}:{n}: {p}" for p in problems]
    assert seen > 100, seen  # the extraction really found the docs' commands
    assert not stale, "stale command lines in the docs:\n" + "\n".join(stale)


# ---------------------------------------------------------------- cited tests

@functools.lru_cache(maxsize=None)
def _defs(py: Path):
    """{'test_x', 'TestY', 'TestY::test_z'} defined in a Python file."""
    tree = ast.parse(py.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{b.name}" for b in node.body if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))}
        if isinstance(node, ast.Assign):  # test_x = some_factory(...)
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


_TEST_REF = re.compile(r"(?<![\w/.-])(tests/[\w/.-]+\.py)?((?:::[A-Za-z_]\w*)+)(\[[^\]\s`]*\])?")


def test_cited_tests_exist():
    stale, seen = [], 0
    for doc in DOCS:
        for n, line in _all_text(doc):
            last_file = None
            for m in _TEST_REF.finditer(line):
                file, names = m.group(1), m.group(2)[2:]
                if file:
                    last_file = file
                elif last_file is None:
                    continue  # `::name` with no test file before it on the line: not a test citation
                py = REPO / (file or last_file)
                seen += 1
                if not py.is_file():
                    stale.append(f"{_rel(doc)}:{n}: {file or last_file} does not exist")
                elif names not in _defs(py):
                    stale.append(f"{_rel(doc)}:{n}: {file or last_file}::{names} is not defined")
        # a test named without its file (`test_exif_every_container`): some test file defines it
        for n, span in _inline_code(doc):
            m = re.fullmatch(r"(test_\w+)(\[[^\]]*\])?", span.strip())
            if m:
                seen += 1
                if m.group(1) not in _all_test_names():
                    stale.append(f"{_rel(doc)}:{n}: {span} is defined in no test file")
    assert seen > 5, seen
    assert not stale, "stale test citations in the docs:\n" + "\n".join(stale)


@functools.lru_cache(maxsize=None)
def _all_test_names() -> frozenset:
    names = set()
    for py in (REPO / "tests").rglob("*.py"):
        names.add(py.stem)
        names |= {x.split("::")[-1] for x in _defs(py)}
    return frozenset(names)


# ---------------------------------------------------------------- cited paths

_PATH_REF = re.compile(r"(?<![\w/.~$-])((?:benchmarks|scripts|aiidetect|tests|docs|weights|\.ci)/[\w./*<>{}…,-]*[\w*>}…/]"
                       r"|pyproject\.toml|constraints[\w-]*\.txt)")
# a results file named without its folder, on a line that cites benchmarks/results/ or abbreviated
# (`…-dev429-patience.json`): benchmarks/results/ holds it
_RESULT_NAME = re.compile(r"`([\w*…-]+\.json)`")


def _expand(ref: str):
    """`a-{8bit,7bit}.json` -> both names."""
    m = re.search(r"\{([^{}]*)\}", ref)
    if not m:
        return [ref]
    return [x for alt in m.group(1).split(",") for x in _expand(ref[:m.start()] + alt + ref[m.end():])]


def _path_exists(ref: str) -> bool:
    for one in _expand(ref):
        pattern = re.sub(r"<[^>]*>|…", "*", one)  # `<name>` and `…` stand for some name
        if any(c in pattern for c in "*?["):
            if not glob.glob(str(REPO / pattern)):  # a glob names at least one file
                return False
        elif not (REPO / pattern).exists():
            return False
    return True


def test_cited_paths_exist():
    stale, seen = [], 0
    for doc in DOCS:
        for n, line in _all_text(doc):
            refs = [m.group(1).split("::")[0].rstrip(".,") for m in _PATH_REF.finditer(line)]
            refs = [r for r in refs if not r.startswith("aiidetect/mine/")]  # families.md's worked example:
            # the family a reader adds is called `mine`
            for m in _RESULT_NAME.finditer(line):
                if "benchmarks/results/" in line or "…" in m.group(1) or "*" in m.group(1):
                    refs.append("benchmarks/results/" + m.group(1))
            for ref in refs:
                seen += 1
                if not _path_exists(ref):
                    stale.append(f"{_rel(doc)}:{n}: {ref}")
    assert seen > 50, seen
    assert not stale, "paths cited in the docs that do not exist:\n" + "\n".join(stale)


_SCRIPT = re.compile(r"^(?:benchmarks|scripts)/[\w/-]+\.py$")


def test_script_options_exist():
    """`python benchmarks/x.py --opt ...`: each --opt is spelled in the script (argparse scripts only)."""
    stale, seen = [], 0
    for doc in DOCS:
        for n, segments in _shell_commands(doc):
            for tokens in segments:
                k = next((i for i, w in enumerate(tokens[:4]) if _SCRIPT.match(w)), None)
                if k is None or not re.match(r"^(\S*/)?python3?$", tokens[0]) or not (REPO / tokens[k]).is_file():
                    continue  # a missing script is test_cited_paths_exist's finding
                source = (REPO / tokens[k]).read_text(encoding="utf-8")
                if "add_argument" not in source:
                    continue
                for w in tokens[k + 1:]:
                    if w == "--" or re.match(r"^\d*[<>|]", w):
                        break  # the rest goes to another program, or is a redirection
                    w = w.strip("[]").split("=", 1)[0]
                    if not re.match(r"^--[a-z][\w-]*$", w):
                        continue
                    seen += 1
                    if f'"{w}"' not in source and f"'{w}'" not in source:
                        stale.append(f"{_rel(doc)}:{n}: {tokens[k]} has no option {w}")
    assert seen > 10, seen
    assert not stale, "script options in the docs that the scripts do not take:\n" + "\n".join(stale)


def _visible_options():
    """{(command path, first long spelling): every spelling} of the options `--help` shows."""
    out = {}
    todo = [((), _cli())]
    while todo:
        path, cmd = todo.pop()
        todo += [(path + (n,), sub) for n, sub in getattr(cmd, "commands", {}).items()]
        for p in cmd.params:
            if p.param_type_name != "option" or p.hidden:
                continue
            spellings = [o for o in p.opts + p.secondary_opts if o.startswith("--")]
            if spellings and spellings[0] != "--help":
                out[(" ".join(path) or "aiidetect", spellings[0])] = spellings
    return out


def test_every_option_is_named_in_the_docs():
    """A reader of the docs learns of every option `--help` shows: `scan --explain`, `report --thumbnails`,
    `eval --plots`, `train flow --max-images/--proxy-kinds`, `export onnx --opset`, `--version` and more were
    in --help only. Any spelling counts (`--no-thumbnails` names `--thumbnails/--no-thumbnails`)."""
    named = set()
    for doc in DOCS:
        named |= set(re.findall(r"(?<![\w-])--[a-z][\w-]*", doc.read_text(encoding="utf-8")))
    options = _visible_options()
    assert len(options) > 100, len(options)
    missing = sorted(f"{path} {first}" for (path, first), spellings in options.items() if not set(spellings) & named)
    assert not missing, "options that --help shows and no doc names:\n" + "\n".join(missing)


def test_cli_doc_names_the_commands_that_take_each_option():
    """docs/cli.md's "One naming scheme" table says which commands take each option; a script author reads
    it as the whole list. `--follow-links` was listed for `scan` and `meta` alone, where eval, calibrate and
    the trainers take it too. Checked both ways; a row that points at a group (`--backbone`) is left out."""
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    table = text[text.index("## One naming scheme"):text.index("Old spellings")]
    options = _visible_options()
    commands = {path for path, _ in options}
    stale, rows = [], 0
    for line in table.splitlines():
        m = re.match(r"^\| `(--[\w-]+)", line)
        if not m or "group (below)" in line:
            continue
        cell = line.strip().strip("|").split(" | ")[2]
        while re.search(r"\([^()]*\)", cell):  # asides name other things: `(also html)`, `(docs/schema.md)`
            cell = re.sub(r"\([^()]*\)", "", cell)
        named = set()
        for span in re.findall(r"`([^`]+)`", cell):  # `train linear/mpft/flow` is three commands
            *group, last = span.split()
            named |= {" ".join([*group, w]) for w in last.split("/")}
        named &= commands
        real = {path for (path, _), spellings in options.items() if m.group(1) in spellings}
        rows += 1
        if named != real:
            stale.append(f"{m.group(1)}: listed but not taken {sorted(named - real)}; taken but not listed "
                         f"{sorted(real - named)}")
    assert rows >= 8, rows
    assert not stale, "docs/cli.md's option table and the CLI disagree:\n" + "\n".join(stale)


def test_install_profiles_name_every_extra():
    """docs/install.md's profile table is where a reader learns what each extra adds and weighs: `[ray]` joined
    `[all]` with no row, while the `[all]` row said "everything above" and gave the size measured before it.
    `[provenance]` is only kept for old install lines (pyproject.toml says so)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    text = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    table = text[text.index("## Install profiles"):text.index("How these were measured")]
    rows = {m.group(1): line for line in table.splitlines() for m in [re.match(r"^\| `\[([\w-]+)\]` \|", line)] if m}
    missing = sorted(set(extras) - set(rows) - {"provenance"})
    assert not missing, f"extras without a row in docs/install.md: {missing}"
    members = re.fullmatch(r"aiidetect\[([\w,-]+)\]", extras["all"][0]).group(1)
    assert f"`[{members}]`" in rows["all"], (members, rows["all"])


def test_cited_environment_variables_are_read():
    """Every AIIDETECT_* variable the docs name is spelled somewhere in the code, tests or scripts."""
    code = "".join(p.read_text(encoding="utf-8") for d in ("aiidetect", "tests", "benchmarks", "scripts")
                   for p in (REPO / d).rglob("*") if p.suffix in (".py", ".sh") and p.name != Path(__file__).name)
    stale, seen = [], 0
    for doc in DOCS:
        for n, line in _all_text(doc):
            for var in re.findall(r"\bAIIDETECT_[A-Z0-9_]*[A-Z0-9]\b", line):
                seen += 1
                if var not in code:
                    stale.append(f"{_rel(doc)}:{n}: {var}")
    assert seen > 10, seen
    assert not stale, "environment variables the docs name that nothing reads:\n" + "\n".join(stale)


def _help_texts():
    """(command path, text) of every command's and option's help in the CLI."""
    out = []

    def walk(cmd, path):
        out.append((path, cmd.help or ""))
        for p in cmd.params:
            out.append((f"{path} {'/'.join(getattr(p, 'opts', []) or [p.name])}", getattr(p, "help", None) or ""))
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, f"{path} {name}")

    walk(_cli(), "aiidetect")
    return out


def test_the_heads_folder_default_names_xdg_data_home():
    """The user's heads folder is $XDG_DATA_HOME/aiidetect/weights when that is set (aiidetect.userdirs.data_base),
    ~/.local/share/aiidetect/weights only otherwise: `scan --help`, `weights install --help`, docs/api.md and
    four more docs gave the second as the default, and a user with XDG_DATA_HOME set looked in the wrong folder.
    Wherever that folder is named as a default (not a path below it), $XDG_DATA_HOME is named just before it."""
    default = re.compile(r"~/\.local/share/aiidetect/weights(?![\w/-])")
    places = [(f"{_rel(doc)}:{n}", line) for doc in DOCS for n, line in _paragraph_lines(doc)]
    places += [(f"--help of {path}", " ".join(text.split())) for path, text in _help_texts()]
    seen, stale = 0, []
    for where, text in places:
        for m in default.finditer(text):
            seen += 1
            if "XDG_DATA_HOME" not in text[max(0, m.start() - 120):m.start()]:
                stale.append(where)
    assert seen >= 6, seen
    assert not stale, "the heads folder named without $XDG_DATA_HOME:\n" + "\n".join(stale)


def _paragraph_lines(doc: Path):
    """(first line, text) of every paragraph (or table row), its lines joined: a default may be worded over
    a line break."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    start, cur = None, []
    for n, line in enumerate([*lines, ""], 1):
        if line.strip() and not line.lstrip().startswith("|"):
            start = start or n
            cur.append(line.strip())
            continue
        if cur:
            yield start, " ".join(cur)
        start, cur = None, []
        if line.lstrip().startswith("|"):
            yield n, line


def _api_callables():
    """{name: [signatures]} of what docs/api.md may show as a call: the public names of aiidetect.api and
    the Scanner's methods (`scan` is both, the method and the one-call function), and aiidetect.caches'."""
    import inspect

    import aiidetect.api as api
    import aiidetect.caches as caches

    out: dict = {}
    for name in api.__all__:
        obj = getattr(api, name)
        if callable(obj) and not isinstance(obj, type) or name == "Scanner":
            out.setdefault(name, []).append(inspect.signature(obj))
    for name, obj in vars(api.Scanner).items():
        if not name.startswith("_") and inspect.isfunction(obj):
            out.setdefault(name, []).append(inspect.signature(obj))
    for name in ("cache_info", "clear_caches"):
        out.setdefault(name, []).append(inspect.signature(getattr(caches, name)))
    return out


def _call_problems(args: list[str], sig) -> list[str]:
    """What in one call or signature shown in the docs (`f(a, b=None)`) the real signature does not take: a
    keyword it has no parameter for, or a name at the place of another positional parameter. Shown as a
    signature (every item a name, or a name and its default), the order of every item before `*` counts:
    a reader passes them in that order."""
    signature = all(re.fullmatch(r"\s*(\*\*?\w*|\.\.\.|…|[A-Za-z_]\w*(\s*=\s*[^=].*)?)\s*", a, re.S) for a in args)

    params = [p for p in sig.parameters.values() if p.name != "self"]
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = {p.name for p in params}
    keyword_only = {p.name for p in params if p.kind == p.KEYWORD_ONLY}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
    problems, i, star = [], 0, False
    for a in args:
        a = a.strip()
        if a in ("*", "...", "…") or a.startswith("**"):
            star = star or a == "*"
            continue
        m = re.fullmatch(r"([A-Za-z_]\w*)\s*=.*", a, re.S)
        if m and (star or not signature):
            if m.group(1) not in names and not var_kw:
                problems.append(f"no parameter {m.group(1)}")
        elif m and (m.group(1) in keyword_only or (var_kw and m.group(1) not in positional)):
            pass  # a keyword the function takes only as one (`Scanner(detectors=[...])` into its **kw)
        elif m or (re.fullmatch(r"[A-Za-z_]\w*", a) and not star):
            a = m.group(1) if m else a
            if i < len(positional) and positional[i] != a:
                problems.append(f"its parameter {i + 1} is {positional[i]}, not {a}")
            elif i >= len(positional) and not any(p.kind == p.VAR_POSITIONAL for p in params):
                problems.append(f"takes {len(positional)} positional parameters, not {a}")
        i += 1
    return problems


def _split_args(text: str) -> list[str]:
    out, depth, cur, quote = [], 0, "", None
    for c in text:
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += c
    return [*out, cur] if cur.strip() else out


def test_the_api_doc_shows_calls_the_functions_take():
    """docs/api.md writes each function as a call (`meta_reports(paths, max_pixels=None, max_bytes=None)`): a
    reader passes arguments in that order. meta_reports' second parameter is `watermark`, so the documented
    `meta_reports(paths, 1000)` set the watermark mode, not the pixel limit. Each parameter a call there names
    must be the function's, at its place."""
    callables = _api_callables()
    doc = REPO / "docs" / "api.md"
    seen, stale = 0, []
    for n, span in _inline_code(doc):
        for m in re.finditer(r"(?:\b[\w.]*\.)?\b(\w+)\(([^()]*(?:\([^()]*\)[^()]*)*)\)", span):
            sigs = callables.get(m.group(1))
            if not sigs:
                continue
            seen += 1
            args = _split_args(m.group(2))
            found = [_call_problems(args, sig) for sig in sigs]
            if all(found):
                stale.append(f"docs/api.md:{n}: `{m.group(0)}`: {'; '.join(found[0])}")
    assert seen >= 15, seen
    assert not stale, "calls in docs/api.md that the functions do not take:\n" + "\n".join(stale)



def test_the_meta_functions_name_only_options_meta_has():
    """docs/api.md maps each parameter of `meta_reports` to `aiidetect meta`'s option: it gave `recursive` as
    `--recursive`, which `meta` does not take (`No such option`; folders are always searched there)."""
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    bullet = text[text.index("- `aiidetect.api.meta_report("):]
    bullet = bullet[:bullet.index("\n- ")]
    meta = _cli().commands["meta"]
    options = {o for p in meta.params for o in [*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ())]}
    named = set(re.findall(r"`(--[a-z][\w-]*)`", bullet))   # an option alone, not another command's line
    assert named and not named - options, named - options

# ---------------------------------------------------------------- links between docs

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation removed except - and _,
    each space a -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = text.strip().lower()
    out = []
    for c in text:
        if c in "-_ " or unicodedata.category(c)[0] in "LN":
            out.append("-" if c == " " else c)
    return "".join(out)


@functools.lru_cache(maxsize=None)
def _anchors(doc: Path) -> frozenset:
    blocks, prose = _split(doc)
    seen: dict = {}
    anchors = set()
    for line in prose.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = _slug(m.group(1))
            k = seen.get(s, 0)
            anchors.add(s if k == 0 else f"{s}-{k}")
            seen[s] = k + 1
        anchors |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", line))
    return frozenset(anchors)


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_links_between_docs_resolve():
    stale, seen = [], 0
    for doc in DOCS:
        _, prose = _split(doc)
        for n, line in enumerate(prose.splitlines(), 1):
            for m in _LINK.finditer(re.sub(r"`[^`]*`", "", line)):
                target = m.group(1)
                if re.match(r"^[a-z]+:", target):  # https:, mailto:
                    continue
                file, _, anchor = target.partition("#")
                dest = (doc.parent / file).resolve() if file else doc
                seen += 1
                if not dest.exists():
                    stale.append(f"{_rel(doc)}:{n}: {target} (no such file)")
                elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                    stale.append(f"{_rel(doc)}:{n}: {target} (no heading #{anchor} in {dest.name})")
        # sections named in prose: docs/schema.md, "Discovery"; "Recipes" below
        for n, line in enumerate(prose.splitlines(), 1):
            refs = [(REPO / m.group(1), m.group(2)) for m in _SECTION_REF.finditer(line)]
            refs += [(doc, m.group(1)) for m in _SECTION_HERE.finditer(line)]
            for dest, title in refs:
                seen += 1
                if not dest.is_file():
                    continue  # test_cited_paths_exist reports it
                if not any(h.lower().startswith(title.lower()) for h in _headings(dest)):
                    stale.append(f"{_rel(doc)}:{n}: {_rel(dest)} has no section \"{title}\"")
    assert seen > 10, seen
    assert not stale, "links in the docs that do not resolve:\n" + "\n".join(stale)


_SECTION_REF = re.compile(r"(docs/[\w/-]+\.md),? (?:section )?\"([^\"]{3,80})\"")
_SECTION_HERE = re.compile(r"\"([A-Z][^\"]{2,80})\" (?:below|above)")


def _headings(doc: Path):
    _, prose = _split(doc)
    return [re.sub(r"[`*]", "", m.group(1)) for m in re.finditer(r"(?m)^#{1,6}\s+(.*?)\s*#*\s*$", prose)]


# ---------------------------------------------------------------- dotted references into the package

PKG = REPO / "aiidetect"
_FILE_SUFFIXES = {"py", "md", "json", "jsonl", "csv", "sqlite", "html", "png", "txt", "onnx", "pt", "bin", "tar",
                  "gz", "parquet", "safetensors", "log", "sh", "jpg", "yaml", "toml"}


def _module_file(parts):
    """The source file of aiidetect.<parts>, or None."""
    base = PKG.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


@functools.lru_cache(maxsize=None)
def _module_names(py: Path):
    """(names bound at the top level of a module, {class: names in its body}, certain): certain is False
    when the module could bind names ast cannot see (star imports, a module __getattr__)."""
    tree = ast.parse(py.read_text(encoding="utf-8"))
    names, classes, certain = set(), {}, True

    def bind(node):
        nonlocal certain
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if node.name == "__getattr__":
                certain = False
            if isinstance(node, ast.ClassDef):
                body = set()
                for b in node.body:
                    if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        body.add(b.name)
                    elif isinstance(b, (ast.Assign, ast.AnnAssign)):
                        for t in (b.targets if isinstance(b, ast.Assign) else [b.target]):
                            body |= {x.id for x in ast.walk(t) if isinstance(x, ast.Name)}
                classes[node.name] = body
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(x.id for x in ast.walk(t) if isinstance(x, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.name == "*":
                    certain = False
                names.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For)):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    bind(child)
                elif isinstance(child, ast.ExceptHandler):
                    for c in child.body:
                        bind(c)

    for node in tree.body:
        bind(node)
    return frozenset(names), classes, certain


def _resolve(parts):
    """True if aiidetect.<parts> exists, False if it certainly does not, None if unsure."""
    for k in range(len(parts), -1, -1):  # the longest prefix that is a module
        py = _module_file(parts[:k])
        if py is None:
            continue
        rest = parts[k:]
        if not rest:
            return True
        names, classes, certain = _module_names(py)
        if rest[0] not in names:
            if (PKG.joinpath(*parts[:k], rest[0])).exists():
                return None  # a data folder inside the package
            return False if certain else None
        if len(rest) == 1:
            return True
        if rest[0] in classes and len(rest) == 2:
            return rest[1] in classes[rest[0]] or None  # inherited attributes: unsure
        return None  # an attribute of an instance or an imported object: not followed
    return None


@functools.lru_cache(maxsize=None)
def _top_modules():
    """aiidetect's top-level modules ({name: is a package})."""
    out = {p.stem: False for p in PKG.glob("*.py") if p.stem != "__init__"}
    out.update({p.parent.name: True for p in PKG.glob("*/__init__.py")})
    return out


_DOTTED = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(\(.*)?$")


def _dotted_refs(span: str):
    """The package path a backticked span names, or None when it is not clearly one. Checked:
    `aiidetect.x.y`; and a bare `module.Name` / `module.sub.name` / `module.func()` starting with a
    top-level module of the package. A bare `package.word` (`metadata.malformed`, `provenance.x`) is
    an evidence id or a JSON key as often as code, so it is left alone."""
    m = _DOTTED.match(span.strip())
    if not m:
        return None
    parts = m.group(1).split(".")
    if parts[-1] in _FILE_SUFFIXES:
        return None
    if parts[0] == "aiidetect":
        return parts[1:]
    top = _top_modules()
    if parts[0] not in top:
        return None
    called, last = m.group(2) is not None, parts[-1]
    if len(parts) >= 3 and _module_file(parts[:2]) is not None:
        return parts  # module.submodule.attr
    if top[parts[0]]:
        return None
    # `calibration.slope_note` is a manifest key, `calibration.T` a fitted value: a bare lowercase
    # `module.word` is only taken for code when called (`probability.fit_temperature(x, y, bounds)`)
    return parts if called or (last[0].isupper() and len(last) > 1) else None


def test_dotted_references_resolve():
    stale, seen = [], 0
    for doc in DOCS:
        for n, span in _inline_code(doc):
            parts = _dotted_refs(span)
            if parts is None:
                continue
            seen += 1
            if _resolve(parts) is False:
                stale.append(f"{_rel(doc)}:{n}: {span}")
    assert seen > 10, seen
    assert not stale, "references into the package that do not resolve:\n" + "\n".join(stale)


# ---------------------------------------------------------------- the checks themselves

@pytest.mark.parametrize("line, stale", [
    ("aiidetect scan photos/ --format json", False),
    ("aiidetect train linear|mpft|flow DATA...", False),
    ("aiidetect weights list | verify [-f json]", False),
    ("AIIDETECT_CACHE=$(mktemp -d) aiidetect train flow --real X --out-dir /tmp/f", False),
    ("aiidetect eval DATA --out runs/x", True),  # hidden old spelling
    ("aiidetect scan photos/ --no-such-option", True),
    ("aiidetect trian linear DATA", True),
    ("aiidetect scan x --format table|json|jsonl|csv|html", False),
    ("aiidetect scan x --format yaml", True),  # not one of --format's choices
    ("aiidetect scan x --runtime onnx --onnx DIR --dtype auto", False),
    ("aiidetect --show-completion bash", True),  # a flag: `bash` would be read as a command
    ("aiidetect cache info | clear", False),  # siblings listed, not a pipe
    ("aiidetect cache info | clean", False),  # a real pipe into some other program
    ("aiidetect cache info | clear --all", True),  # the sibling read as `cache clear --all`
    ("aiidetect train linear DATA [--shots N]\n    [--seed S]\n    [--json]", True),  # a wrapped synopsis
    ("aiidetect eval DATA \\\n  --out runs/x", True),  # a continued line is one command
])
def test_command_check_itself(line, stale, tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(f"```bash\n{line}\n```\n", encoding="utf-8")
    assert bool([p for _, words in _command_lines(doc) for p in _check_words(words)]) is stale


def test_slug_follows_github():
    assert _slug("Verified fast path (`aiidetect optimize`)") == "verified-fast-path-aiidetect-optimize"
    assert _slug("Every hyper-parameter (`aiidetect train mpft --help`)") == \
        "every-hyper-parameter-aiidetect-train-mpft---help"


def test_the_exit_code_summaries_name_every_exit_code():
    """README and docs/cli.md sum up the exit codes that docs/schema.md lists: they named 0, 1 and 2 only, and a
    script author reading them took 137 (a scan killed by its watchdog) or 130 for something undocumented."""
    schema = (REPO / "docs" / "schema.md").read_text(encoding="utf-8")
    table = schema[schema.index("## Exit codes"):].split("\n\n")[0]
    codes = {c for row in table.splitlines()[3:] for c in re.findall(r"\d+", row.split("|")[1])}
    assert {"0", "1", "2", "130", "137"} <= codes
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    summaries = {"README.md": readme[readme.index("Exit codes:"):].split("\n\n")[0],
                 "docs/cli.md": (REPO / "docs" / "cli.md").read_text(encoding="utf-8").split("\n\n")[1]}
    missing = [f"{name}: {c}" for name, text in summaries.items() for c in sorted(codes)
               if not re.search(rf"(?<![\d.]){c}(?![\d.])", text)]
    assert not missing, "exit codes of docs/schema.md not in the summary:\n" + "\n".join(missing)


# ---------------------------------------------------------------- numbers and codes the docs quote

_PROVENANCE = REPO / "docs" / "provenance.md"


def _emitted_evidence() -> dict[str, tuple[set[str], set[float]]]:
    """Evidence id -> (directions, strengths) as the provenance readers write them, read from the source:
    `_ev(id, direction, ..., key=...)` weighs STRENGTH[key or id] (a key built as "prefix" + suffix weighs any
    STRENGTH key that starts with the prefix), `Evidence(id, direction, 0.0, ...)` is a neutral note. An id or
    direction named by a module constant (`METADATA_TIMEOUT`) is read through the module; a call this reading
    cannot follow fails, rather than leaving its id out of every check."""
    import importlib

    from aiidetect.provenance import STRENGTH

    out: dict[str, tuple[set[str], set[float]]] = {}
    unread = []
    for path in sorted((REPO / "aiidetect" / "provenance").glob("*.py")):
        module = importlib.import_module("aiidetect.provenance" + ("" if path.stem == "__init__" else f".{path.stem}"))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # `_ev` itself builds its Evidence from its parameters: the calls of `_ev` are what is read
        inside_ev = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "_ev"
                     for n in ast.walk(f)}

        # names imported anywhere in the file, a function's own `from ..records import METADATA_TIMEOUT` too
        imported = {a.asname or a.name: (n.module or "", n.level, a.name) for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) for a in n.names}

        def value(arg):
            if isinstance(arg, ast.Constant):
                return arg.value
            if not isinstance(arg, ast.Name):
                return None
            v = getattr(module, arg.id, None)
            if v is None and arg.id in imported:
                mod, level, name = imported[arg.id]
                v = getattr(importlib.import_module("." * level + mod, "aiidetect.provenance"), name, None)
            return v if isinstance(v, str) else None

        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("_ev", "Evidence") and id(node) not in inside_ev):
                continue
            eid, direction = (value(a) for a in node.args[:2]) if len(node.args) >= 2 else (None, None)
            if eid is None or direction is None:
                unread.append(f"{_rel(path)}:{node.lineno}: {ast.unparse(node)[:80]}")
                continue
            dirs, strengths = out.setdefault(eid, (set(), set()))
            dirs.add(direction)
            if node.func.id == "Evidence":
                strengths.add(float(node.args[2].value))
                continue
            key = next((k.value for k in node.keywords if k.arg == "key"), None)
            if key is None:
                strengths.add(STRENGTH[eid])
            elif isinstance(key, ast.Constant):
                strengths.add(STRENGTH[key.value])
            else:
                assert isinstance(key, ast.BinOp) and isinstance(key.left, ast.Constant), ast.dump(key)
                strengths.update(v for k, v in STRENGTH.items() if k == key.left.value
                                 or k.startswith(key.left.value + "."))
    assert not unread, "evidence whose id or direction the docs checks cannot read (write them as literals or " \
                       "module constants):\n" + "\n".join(unread)
    return out


def _provenance_table() -> dict[str, tuple[int, str, str]]:
    """docs/provenance.md's evidence table: id -> (line, dir cell, LLR cell)."""
    rows = {}
    for n, line in _all_text(_PROVENANCE):
        if line.startswith("### Digital source types"):   # the next table is of IPTC terms, not evidence ids
            break
        m = re.match(r"^\| `([\w.-]+)`( \*)? \|([^|]*)\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = (n, m.group(3), m.group(4))
    return rows


def _weights_in(cell: str) -> set[float]:
    """The weights a cell states: decimal numbers outside parentheses ("2.0 valid / 0.5 unverified (0, neutral,
    ...)"); a neutral row's bare 0."""
    depth, kept = 0, ""
    for c in cell:
        depth += c == "("
        kept += c if depth == 0 else " "
        depth -= c == ")" and depth > 0
    found = {float(x) for x in re.findall(r"(?<![\w.])\d+\.\d+", kept)}
    return found or ({0.0} if re.fullmatch(r"\s*0\s*", kept) else set())


def test_provenance_table_weighs_what_the_readers_weigh():
    """Every evidence id the readers emit has a row in docs/provenance.md's table (or, for the notes that say a
    read was cut short, in docs/schema.md), every row names an id they emit, and each row's directions and
    weights are the STRENGTH entries behind it (a weight retuned in the code must be retuned in the table)."""
    emitted, rows = _emitted_evidence(), _provenance_table()
    schema = (REPO / "docs" / "schema.md").read_text(encoding="utf-8")
    notes = schema[schema.index("### Notes in the metadata evidence"):].split("\n\n")[0]
    schema_notes = set(re.findall(r"^\| `([\w.-]+)` \|", notes, re.M))
    assert len(emitted) > 20 and len(rows) > 20, (len(emitted), len(rows))
    stale = [f"docs/provenance.md: no row for `{eid}`" for eid in sorted(emitted)
             if eid not in rows and eid not in schema_notes]
    stale += [f"docs/provenance.md:{n}: `{eid}` is not an id the readers emit" for eid, (n, _, _) in rows.items()
              if eid not in emitted]
    for eid, (n, dir_cell, llr_cell) in rows.items():
        if eid not in emitted:
            continue
        dirs, strengths = emitted[eid]
        said = set(re.findall(r"\b(ai|real|neutral)\b", dir_cell))
        if said != dirs:
            stale.append(f"docs/provenance.md:{n}: `{eid}` direction {sorted(said)}, the readers write {sorted(dirs)}")
        said_weights = _weights_in(dir_cell) | _weights_in(llr_cell)  # `structure.jpeg-tables`: "ai 0.1 / real 0.2"
        if said_weights != strengths:
            stale.append(f"docs/provenance.md:{n}: `{eid}` weighs {sorted(said_weights)} here, "
                         f"{sorted(strengths)} in STRENGTH")
    assert not stale, "the evidence table and the readers disagree:\n" + "\n".join(stale)


def _fusion_constants() -> dict[str, float]:
    """The fusion rules' constants, and each evidence weight as `w:<STRENGTH key>`."""
    from aiidetect import fusion
    from aiidetect.provenance import STRENGTH

    return {"floor": fusion.DECISIVE_FLOOR, "cap": fusion.SOFT_EVIDENCE_CAP,
            "ai": fusion.DEFAULT_AI_THRESHOLD, "real": fusion.DEFAULT_REAL_THRESHOLD,
            **{f"w:{k}": v for k, v in STRENGTH.items()}}


# (doc, phrase with the number(s) as groups, the constants they must be). Each phrase must be found at least once:
# a doc reworded so that a pattern no longer matches fails here, and the pattern is updated with it. Where one
# number speaks for several readers (a row of docs/report.md's summary), the constant is a tuple: each of them must
# be that number; ("min", ...) and ("max", ...): the ends of a range the row gives for all of them.
# the readers behind one row of docs/report.md's strength table
_TOOL_NAMED = ("w:exif.software-generator", "w:png.software-generator", "w:xmp.generator-tool",
               "w:iptc.program-generator", "w:c2pa.generator-tool")
_CAMERA = ("w:exif.camera.make-model", "w:exif.camera.exposure", "w:exif.camera.makernote", "w:c2pa.capture")
_STRUCTURE = ("w:structure.generator-size", "w:structure.latent-size", "w:structure.jpeg-custom-tables")

_QUOTED_CONSTANTS = [
    ("docs/fusion.md", r"at least (\d+(?:\.\d+)?) nats, p", ["floor"]),
    ("docs/fusion.md", r"never above the (\d+(?:\.\d+)?)-nat floor", ["floor"]),
    ("docs/fusion.md", r"capped at \+/-(\d+(?:\.\d+)?) nats", ["cap"]),
    ("docs/fusion.md", r"counts at most (\d+(?:\.\d+)?) nats in all", ["cap"]),
    ("docs/fusion.md", r"decisive evidence counts at least (\d+(?:\.\d+)?) nats", ["floor"]),
    ("docs/fusion.md", r"Without a model the\s+band is (\d+(?:\.\d+)?) / (\d+(?:\.\d+)?)", ["real", "ai"]),
    ("docs/fusion.md", r"the default rules' \(ai >= (\d+(?:\.\d+)?), real <= (\d+(?:\.\d+)?)\)", ["ai", "real"]),
    ("docs/fusion.md", r"`soft_evidence_cap` in \[0, (\d+(?:\.\d+)?)\]", ["cap"]),
    ("docs/provenance.md", r"never their sum and never above (\d+(?:\.\d+)?) nats", ["floor"]),
    ("docs/provenance.md", r"soft\s+evidence at (\d+(?:\.\d+)?) nats in all", ["cap"]),
    ("docs/provenance.md", r"a signature or watermark at\s+least (\d+(?:\.\d+)?) nats", ["floor"]),
    ("docs/provenance.md", r"within fusion's \+/-(\d+(?:\.\d+)?) nats cap", ["cap"]),
    ("docs/report.md", r"upper threshold \((\d+(?:\.\d+)?) by default\)", ["ai"]),
    ("docs/report.md", r"lower threshold \((\d+(?:\.\d+)?)\)", ["real"]),
    ("docs/report.md", r"soft metadata counts at most (\d+(?:\.\d+)?) nats", ["cap"]),
    ("docs/schema.md", r"soft evidence at most (\d+(?:\.\d+)?) nats", ["cap"]),
    ("docs/schema.md", r"a signature or watermark at least (\d+(?:\.\d+)?)\)", ["floor"]),
    # evidence weights quoted outside docs/provenance.md's table
    ("docs/fusion.md", r"parameters (\d+\.\d+), XMP\s+`trainedAlgorithmicMedia` (\d+\.\d+)",
     ["w:generator.parameters", "w:xmp.ai-source-type"]),
    ("docs/fusion.md", r"camera EXIF \(-(\d+\.\d+)\) and camera quantization tables \(-(\d+\.\d+)\)",
     ["w:exif.camera.exposure", "w:structure.jpeg-custom-tables"]),
    ("docs/provenance.md", r"`parameters` (\d+\.\d+) with XMP `trainedAlgorithmicMedia` (\d+\.\d+)",
     ["w:generator.parameters", "w:xmp.ai-source-type"]),
    ("docs/provenance.md", r"at most\s+(\d+\.\d+) \+ (\d+\.\d+) nats", ["w:exif.camera.makernote", "w:exif.gps"]),
    ("docs/provenance.md", r"generator size\s+\((\d+\.\d+)\) alone", ["w:structure.generator-size"]),
    ("docs/provenance.md", r"`metadata.no-camera` and\s+standard JPEG tables are named in the record at (\d+) nats",
     [("w:metadata.no-camera", "w:structure.jpeg-standard-tables")]),
    ("docs/report.md", r"decisive \((\d+) nats; (\d+) when invalid\)", ["w:c2pa.ai-generated", "w:c2pa.ai-generated.invalid"]),
    ("docs/report.md", r"prompt, seed, model\) \| decisive \((\d+)\)", ["w:generator.parameters"]),
    ("docs/report.md", r"\(Stable Diffusion\) \| decisive \((\d+)\)", ["w:watermark.match"]),
    ("docs/report.md", r"\"trainedAlgorithmicMedia\" \| decisive \((\d+)\)", ["w:xmp.ai-source-type"]),
    ("docs/report.md", r"claim generator \| strong \((\d+); (\d+\.\d+) for the claim generator",
     [_TOOL_NAMED, "w:c2pa.generator-tool.invalid"]),
    ("docs/report.md", r"towards real \((\d+\.\d+) to (\d+); (\d+\.\d+) for a C2PA capture",
     [("min", *_CAMERA), ("max", *_CAMERA), "w:c2pa.capture.unverified"]),
    ("docs/report.md", r"weak \((\d+\.\d+) to (\d+\.\d+)\)", [("min", *_STRUCTURE), ("max", *_STRUCTURE)]),
]


def test_fusion_constants_quoted_in_the_docs_are_the_code_s():
    """The decisive floor, the soft-evidence cap, the default band and evidence weights are quoted in prose
    across the docs; each quote must be the constant in aiidetect/fusion.py or provenance.STRENGTH."""
    const, stale = _fusion_constants(), []
    for doc, pattern, names in _QUOTED_CONSTANTS:
        text = (REPO / doc).read_text(encoding="utf-8")
        found = list(re.finditer(pattern, text))
        if not found:
            stale.append(f"{doc}: the phrase /{pattern}/ is gone: update _QUOTED_CONSTANTS with the doc")
        for m in found:
            n = text.count("\n", 0, m.start()) + 1
            for name, v in zip(names, m.groups(), strict=True):
                if isinstance(name, str) or name[0] not in ("min", "max"):
                    stale += [f"{doc}:{n}: {m.group(0)!r} says {v}, the code {k} = {const[k]}"
                              for k in ((name,) if isinstance(name, str) else name) if float(v) != const[k]]
                else:
                    end = {"min": min, "max": max}[name[0]](const[k] for k in name[1:])
                    if float(v) != end:
                        stale.append(f"{doc}:{n}: {m.group(0)!r} says {v}, the {name[0]} of {', '.join(name[1:])} "
                                     f"is {end}")
    assert not stale, "\n".join(stale)


def test_the_fusion_reasons_example_is_what_fuse_prints():
    """docs/fusion.md "Reasons" shows the lines of one file: a C2PA AI declaration validly signed by a signer no
    trust list vouches for (every one offline: counted as a claim), camera make and model
    in EXIF, and a linear probe at p_ai 0.03. They must be the lines `fuse` writes for those results today: the
    example showed the declaration at its own +7.00 nats (rule 3 counts it at the 9.2-nat floor) and the camera
    at -1.50 (make and model weigh 0.7)."""
    from aiidetect.fusion import fuse
    from aiidetect.provenance import STRENGTH
    from aiidetect.records import DetectorResult, Evidence

    text = (REPO / "docs" / "fusion.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Reasons\n"):]
    block = section[section.index("```\n") + 4:]
    shown = block[:block.index("```")].splitlines()
    meta = DetectorResult("ok", p_ai=0.99, evidence=[
        Evidence("c2pa.ai-generated", "ai", STRENGTH["c2pa.ai-generated"],
                 "C2PA declares the image generated by a trained model (c2pa.created: trainedAlgorithmicMedia); "
                 "signed by ...; signature valid; signer not checked against "
                 "a trust list (a self-made certificate signs as validly)", "c2pa", True, {"basis": "claim", "status": "valid"}),
        Evidence("exif.camera", "real", STRENGTH["exif.camera.make-model"],
                 "camera make/model in EXIF (Canon, Canon EOS 5D), no exposure settings; metadata can be copied",
                 "JPEG APP1")])
    out = fuse({"metadata": meta, "linear:univfd": DetectorResult("ok", p_ai=0.03)})
    assert shown == out.reasons
    m = re.search(r"\(P\(AI\) (\d\.\d+):", block)
    assert m and f"{out.p_ai:.3f}" == m.group(1), (m and m.group(0), out.p_ai)


def test_the_module_map_names_every_module():
    """docs/architecture.md's table is the map of the package: every top-level module and every subpackage of
    aiidetect/ is named in it (as `aiidetect/x.py`, `x.py` or `aiidetect/x/`), and every file it names exists.
    13 modules (records, limits, crashguard, train_record, perceptual, ...) and configs/ were not in it."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| stage")]
    named = {re.sub(r"^aiidetect/", "", m) for row in rows for m in re.findall(r"`([^`\s]+)`", row.split("|")[2])}
    pkg = REPO / "aiidetect"
    modules = {p.name for p in pkg.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    packages = {f"{p.name}/" for p in pkg.iterdir() if p.is_dir() and ((p / "__init__.py").exists()
                                                                     or any(p.glob("*.json")))}
    missing = sorted((modules | packages) - named)
    assert not missing, "docs/architecture.md's module map does not name: " + ", ".join(missing)
    gone = sorted(n for n in named if n.endswith((".py", "/")) and not (pkg / n).exists()
                  and not any(pkg.rglob(n.rstrip("/"))))
    assert not gone, "docs/architecture.md's module map names what is not in the package: " + ", ".join(gone)


# C2PA's own action labels (`c2pa.created`, `c2pa.edited`, ...) are spelled like evidence ids but are the
# standard's words, which the docs quote to say which action a term sits on.
_C2PA_ACTIONS = {"c2pa.created", "c2pa.edited", "c2pa.placed", "c2pa.opened", "c2pa.converted",
                 "c2pa.color_adjustments", "c2pa.cropped", "c2pa.drawing", "c2pa.filtered", "c2pa.orientation",
                 "c2pa.published", "c2pa.removed", "c2pa.repackaged", "c2pa.resized", "c2pa.transcoded", "c2pa.unknown"}

# the families of ids, those the readers had when this was written (a doc may outlive a family) and any they emit now
_EVIDENCE_FAMILIES = ("generator", "c2pa", "xmp", "exif", "png", "iptc", "metadata", "watermark", "structure")


def test_evidence_ids_named_in_the_docs_exist():
    """A backticked evidence id anywhere in the docs (`exif.camera`, `metadata:c2pa.unreadable`) is one the
    readers emit, or else code in aiidetect.provenance (`xmp.parse_xmp`): a renamed id must not leave prose
    telling users to look for one no record carries."""
    emitted, stale, seen = set(_emitted_evidence()), [], 0
    families = sorted(set(_EVIDENCE_FAMILIES) | {e.split(".")[0] for e in emitted if "." in e})
    evidence_id = re.compile(rf"^(?:\w+:)?((?:{'|'.join(families)})\.[a-z][\w.-]*)$")

    for doc in DOCS:
        for n, span in _inline_code(doc):
            m = evidence_id.match(span.strip())
            if not m or m.group(1).endswith(".py") or m.group(1) in _C2PA_ACTIONS:
                continue
            seen += 1
            if m.group(1) not in emitted and _resolve(["provenance", *m.group(1).split(".")]) is not True:
                stale.append(f"{_rel(doc)}:{n}: {span}")
    assert seen > 30, seen
    assert not stale, "evidence ids in the docs that no reader emits:\n" + "\n".join(stale)


def test_the_report_guide_says_a_valid_c2pa_signature_is_the_file_s_own_claim():
    """docs/report.md's strength table told the newsroom reader that "a valid signature proves who signed" and that
    a signed "digitalCapture" weighs up to 2 nats toward real; offline no trust list vouches for any signer, so a
    valid manifest counts as the file's own claim (an AI declaration at 7, not the signed floor; a capture at the
    unverified 0.5, provenance._c2pa)."""
    rows = [ln for ln in (REPO / "docs/report.md").read_text(encoding="utf-8").splitlines() if ln.startswith("|")]
    ai = next(r for r in rows if "C2PA manifest declaring AI creation" in r)
    capture = next(r for r in rows if 'signed C2PA "digitalCapture"' in r)
    assert "proves who signed" not in ai and "own claim" in ai and "no trust list vouches" in ai, ai
    assert "no trust list vouches" in capture and "2 only for a signer a trust list vouches for" in capture, capture


def test_schema_names_the_c2pa_facts_a_record_gained():
    """`facts.c2pa.stores` and `facts.c2pa.trusted` reached records (and a valid self-signed manifest's weights
    changed) with no word in docs/schema.md, whose Changes tell a script reading the records what moved."""
    from aiidetect.provenance.c2pa import C2paFacts

    f = C2paFacts(signature_valid=True, content_matches=True, state="Trusted")
    assert f.to_dict().get("trusted") is True
    f.stores = 2
    assert f.to_dict()["stores"] == 2
    text = (REPO / "docs/schema.md").read_text(encoding="utf-8")
    changes = text[text.index("### Changes"):text.index("## File names")]
    for key in ("stores", "trusted"):
        assert f"`{key}`" in changes and "`facts.c2pa`" in changes, key
    assert "two C2PA manifest stores" in text   # the metadata.conflict row
