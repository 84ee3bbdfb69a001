"""Model files from places a hostile party can touch (a shared drive, a mirror): reading one must not
run code the file holds, and a damaged one must be refused, never give verdicts."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli_in_process

torch = pytest.importorskip("torch")


class _Writer(torch.nn.Module):
    """A TorchScript module whose __setstate__, run by torch.jit.load, writes a file of its choosing."""

    def __init__(self, target: str):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.target = target

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]):
        self.w = state[0]
        self.target = state[1]
        self.training = state[2]
        torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8).fill_(33)


@pytest.fixture(scope="module")
def code_archive(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-ts")
    target = d / "pwned"
    torch.jit.script(_Writer(str(target))).save(str(d / "ViT-B-32.pt"))
    assert not target.exists()
    return d / "ViT-B-32.pt", target


def test_torchscript_archive_code_never_runs_on_inspect(code_archive, tmp_path):
    archive, target = code_archive
    r = run_cli_in_process("weights", "inspect", str(archive), "--format", "json",
                           env={"AIIDETECT_CACHE": str(tmp_path / "cache")})
    assert not target.exists(), "reading the archive ran its TorchScript"
    assert r.returncode == 2
    assert "restored by its own code" in json.loads(r.stdout)[0]["error"]


def test_torchscript_archive_code_never_runs_on_backbone_read(code_archive):
    """The reads a backbone build makes (--backbone-weights, the CLIP cache): the meta-device path's
    image tower and the full path's tensors."""
    from aiidetect.weights_identity import WeightsFormatError, iter_tensors, read_image_tower

    archive, target = code_archive
    with pytest.raises(WeightsFormatError, match="restored by its own code"):
        read_image_tower(archive)
    with pytest.raises(WeightsFormatError, match="restored by its own code"):
        list(iter_tensors(archive))
    assert not target.exists(), "building a backbone on the archive ran its TorchScript"


class _Typed(torch.nn.Module):
    """Attributes TorchScript pickles through torch.jit._pickle (typed lists, a dict of tensors)."""

    def __init__(self):
        super().__init__()
        self.sizes: list[int] = [1, 2]
        self.named: dict[str, torch.Tensor] = {"a": torch.ones(2)}
        self.many: list[torch.Tensor] = [torch.zeros(3)]
        self.lin = torch.nn.Linear(2, 2)
        self.register_buffer("buf", torch.arange(3.0))

    def forward(self, x):
        return self.lin(x)


def test_torchscript_reader_gives_jit_loads_state_dict(tmp_path):
    """The archive reader that replaced torch.jit.load reads the same parameters and buffers from an
    archive whose other attributes are typed containers, and no tensor those containers hold."""
    from aiidetect.weights_identity import read_torchscript_tensors

    p = tmp_path / "typed.pt"
    torch.jit.script(_Typed()).save(str(p))
    got, want = read_torchscript_tensors(p), torch.jit.load(str(p)).state_dict()
    assert sorted(got) == sorted(want) == ["buf", "lin.bias", "lin.weight"]
    assert all(torch.equal(got[k], want[k]) and got[k].dtype == want[k].dtype for k in want)


def test_torchscript_archive_with_a_compressed_entry_is_refused(tmp_path):
    """torch writes its archives stored; a deflated data.pkl could inflate to any size as it is read
    (a few MB of zeros hold gigabytes), so such an archive is refused before anything is unpickled."""
    import zipfile

    from aiidetect.weights_identity import WeightsFormatError, read_torchscript_tensors

    p = tmp_path / "packed.pt"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("packed/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("packed/constants.pkl", b"\x80\x02).")
        z.writestr("packed/code/__torch__.py", b"")
        z.writestr("packed/version", b"3\n")
    with pytest.raises(WeightsFormatError, match="compressed"):
        read_torchscript_tensors(p)
    r = run_cli_in_process("weights", "inspect", str(p), "--format", "json",
                           env={"AIIDETECT_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 2 and "data.pkl is compressed" in json.loads(r.stdout)[0]["error"]


@pytest.mark.parametrize("entry, change, refusal", [
    ("byteorder", lambda d: b"big", "big-endian"),
    ("data/0", lambda d: d[:-1], "not whole torch.float32 elements"),
    ("byteorder", None, None),  # older archives have none: little-endian
])
def test_torchscript_archive_byte_order_and_tensor_data_length_are_checked(tmp_path, entry, change, refusal):
    import zipfile

    from aiidetect.weights_identity import WeightsFormatError, read_torchscript_tensors

    torch.jit.script(torch.nn.Linear(3, 2)).save(str(tmp_path / "a.pt"))
    p = tmp_path / "b.pt"
    with zipfile.ZipFile(tmp_path / "a.pt") as src, zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/" + entry):
                if change is None:
                    continue
                data = change(data)
            dst.writestr(info, data)
    if refusal is None:
        assert sorted(read_torchscript_tensors(p)) == ["bias", "weight"]
    else:
        with pytest.raises(WeightsFormatError, match=refusal):
            read_torchscript_tensors(p)


def _raw_archive(path, pkl: bytes, data: dict[str, bytes]) -> None:
    """A TorchScript archive laid out as torch writes one, around a hand-written data.pkl."""
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/data.pkl", pkl)
        z.writestr("a/constants.pkl", b"\x80\x02).")
        z.writestr("a/code/__torch__.py", b'class M(Module):\n  __parameters__ = ["w", ]\n  __buffers__ = []\n'
                                          b"  w : Tensor\n  training : bool\n")
        for key, raw in data.items():
            z.writestr(f"a/data/{key}", raw)
        z.writestr("a/version", b"3\n")


def _pk_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _pk_str(s: str) -> bytes:
    return b"X" + len(s.encode()).to_bytes(4, "little") + s.encode()


def _pk_int(n: int) -> bytes:
    return b"\x8a\x08" + n.to_bytes(8, "little", signed=True)


def _pk_storage(key: str) -> bytes:  # ("storage", torch.FloatStorage, key, "cpu", 0), BINPERSID
    return (b"(" + _pk_str("storage") + _pk_global("torch", "FloatStorage") + _pk_str(key) + _pk_str("cpu")
            + _pk_int(0) + b"tQ")


def _pk_tensor(storage: bytes, size: int, stride: int) -> bytes:  # _rebuild_tensor_v2 as torch's pickler calls it
    return (_pk_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + _pk_int(0) + b"(" + _pk_int(size)
            + b"t(" + _pk_int(stride) + b"t\x89" + _pk_global("collections", "OrderedDict") + b")RtR")


def _pk_module(attr: str, value: bytes) -> bytes:  # __torch__.M with {attr: value}: NEWOBJ, BUILD
    return b"\x80\x02" + _pk_global("__torch__", "M") + b")\x81}" + _pk_str(attr) + value + b"sb."


@pytest.mark.parametrize("case", ["set_state_of_a_tensor", "expanded_view"])
def test_torchscript_data_pkl_cannot_make_a_small_archive_a_huge_tensor(tmp_path, case):
    """pickle's BUILD ran Tensor.__setstate__, whose set_() grew an empty storage to the size data.pkl
    named: a 600-byte archive made `weights inspect` allocate and hash 1 GB (any size memory allowed).
    A stride-0 view of one stored element did the same through the hash's copy."""
    from aiidetect.weights_identity import WeightsFormatError, read_torchscript_tensors

    p = tmp_path / f"{case}.pt"
    if case == "set_state_of_a_tensor":
        # BUILD on the storage's tensor with the legacy state (source, offset, size, stride)
        grown = _pk_storage("0") + b"(" + _pk_storage("0") + _pk_int(0) + b"(" + _pk_int(1 << 28) + b"t(" \
            + _pk_int(1) + b"ttb"
        _raw_archive(p, _pk_module("w", grown), {"0": b""})
        why = "sets the state of a Tensor"
    else:
        _raw_archive(p, _pk_module("w", _pk_tensor(_pk_storage("0"), 1 << 28, 0)), {"0": b"\0" * 4})
        why = "expanded view"
    with pytest.raises(WeightsFormatError, match=why):
        read_torchscript_tensors(p)


def test_hand_written_archive_helpers_make_a_readable_archive(tmp_path):
    """The helpers above write what the reader accepts, so the refusals are the reader's, not a typo's."""
    from aiidetect.weights_identity import read_torchscript_tensors

    p = tmp_path / "fine.pt"
    _raw_archive(p, _pk_module("w", _pk_tensor(_pk_storage("0"), 2, 1)),
                 {"0": torch.tensor([1.0, 2.0]).numpy().tobytes()})
    assert read_torchscript_tensors(p)["w"].tolist() == [1.0, 2.0]


def test_a_refused_archive_says_what_to_use_instead_and_its_conversion_keeps_the_identity(code_archive, tmp_path,
                                                                                          monkeypatch):
    """A refusal named the problem and stopped there. It gives the hub's safetensors and a one-line
    conversion; that line, run as the message gives it, writes the same weights identity."""
    import re
    import sys

    from aiidetect.weights_identity import TS_REFUSED_HINT, WeightsFormatError, compute, read_torchscript_tensors

    archive, _target = code_archive
    with pytest.raises(WeightsFormatError) as err:
        read_torchscript_tensors(archive)
    assert "restored by its own code" in str(err.value) and "weights fetch MODEL/TAG --hub" in str(err.value)
    src = tmp_path / "typed.pt"
    torch.jit.script(_Typed()).save(str(src))
    line = re.search(r'python -c "(.*)" IN\.pt OUT\.safetensors$', TS_REFUSED_HINT).group(1)
    monkeypatch.setattr(sys, "argv", ["-c", str(src), str(tmp_path / "typed.safetensors")])
    exec(compile(line, "<hint>", "exec"), {})  # noqa: S102 - the message's own command
    assert compute(tmp_path / "typed.safetensors")["weights_id"] == compute(src)["weights_id"]


class _OpenAILayerNorm(torch.nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class _OpenAIBlock(torch.nn.Module):
    """OpenAI CLIP's ResidualAttentionBlock: an attention with in_proj_weight, an mlp Sequential, the text
    tower's causal mask as a plain tensor attribute."""

    def __init__(self, width: int, mask=None):
        import collections

        super().__init__()
        self.attn = torch.nn.MultiheadAttention(width, 2)
        self.ln_1 = _OpenAILayerNorm(width)
        self.mlp = torch.nn.Sequential(collections.OrderedDict([
            ("c_fc", torch.nn.Linear(width, width * 4)), ("gelu", torch.nn.GELU()),
            ("c_proj", torch.nn.Linear(width * 4, width))]))
        self.ln_2 = _OpenAILayerNorm(width)
        self.attn_mask = mask

    def forward(self, x):
        mask = self.attn_mask.to(x.dtype) if self.attn_mask is not None else None
        x = x + self.attn(self.ln_1(x), self.ln_1(x), self.ln_1(x), need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _OpenAIClip(torch.nn.Module):
    """The layout of OpenAI's ViT archives, small: parameters on the root and the visual tower (proj,
    class_embedding, positional_embedding, text_projection, logit_scale), the three int buffers OpenAI
    added, convert_weights' float16 for conv, linear, attention and projections (LayerNorms and
    embeddings stay float32), and one buffer viewing another tensor's storage at an offset."""

    def __init__(self, w: int = 8, ctx: int = 4):
        super().__init__()
        torch.manual_seed(0)
        visual = torch.nn.Module()
        visual.conv1 = torch.nn.Conv2d(3, w, 4, stride=4, bias=False)
        visual.class_embedding = torch.nn.Parameter(torch.randn(w))
        visual.positional_embedding = torch.nn.Parameter(torch.randn(5, w))
        visual.ln_pre, visual.ln_post = _OpenAILayerNorm(w), _OpenAILayerNorm(w)
        visual.transformer = torch.nn.Module()
        visual.transformer.resblocks = torch.nn.Sequential(_OpenAIBlock(w))
        visual.proj = torch.nn.Parameter(torch.randn(w, 6))
        self.visual = visual
        self.transformer = torch.nn.Module()
        self.transformer.resblocks = torch.nn.Sequential(_OpenAIBlock(w, torch.full((ctx, ctx), float("-inf")).triu(1)))
        self.token_embedding = torch.nn.Embedding(10, w)
        self.positional_embedding = torch.nn.Parameter(torch.randn(ctx, w))
        self.ln_final = _OpenAILayerNorm(w)
        self.text_projection = torch.nn.Parameter(torch.randn(w, 6))
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6052))
        for name, v in (("input_resolution", 8), ("context_length", ctx), ("vocab_size", 10)):
            self.register_buffer(name, torch.tensor(v))
        self.register_buffer("pos_tail", self.positional_embedding.detach()[1:])  # shares its storage
        for m in self.modules():  # OpenAI's convert_weights
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.half()
            if isinstance(m, torch.nn.MultiheadAttention):
                for t in (m.in_proj_weight, m.in_proj_bias):
                    t.data = t.data.half()
        for t in (self.visual.proj, self.text_projection):
            t.data = t.data.half()

    def encode_image(self, image):
        v = self.visual
        x = v.conv1(image.half()).flatten(2).permute(0, 2, 1)
        x = torch.cat([v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], 1) + v.positional_embedding.half()
        x = v.transformer.resblocks(v.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return v.ln_post(x[:, 0]) @ v.proj

    def encode_text(self, text):
        x = (self.token_embedding(text) + self.positional_embedding).half()
        x = self.ln_final(self.transformer.resblocks(x.permute(1, 0, 2)).permute(1, 0, 2))
        return x[:, -1] @ self.text_projection

    def forward(self, image, text):
        return self.logit_scale.exp() * self.encode_image(image) @ self.encode_text(text).t() + self.pos_tail.sum()


class _ScriptedAttrs(torch.nn.Module):
    """A scripted module (not traced): a ModuleList, a plain tensor attribute (no parameter, no buffer:
    data.pkl holds it, state_dict does not), a float16 parameter, an int buffer."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)])
        self.mask = torch.ones(2)
        self.scale = torch.nn.Parameter(torch.ones(2, dtype=torch.float16))
        self.register_buffer("steps", torch.tensor([3]))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x) * self.mask
        return x * self.scale.float() + self.steps


@pytest.mark.parametrize("kind", ["openai-traced", "scripted"])
def test_torchscript_reader_gives_what_jit_load_state_dict_gives(tmp_path, kind):
    """Names, dtypes, shapes, strides, values and shared storages as torch.jit.load(...).state_dict()
    gives them: for OpenAI's layout (traced with its three methods, as its archives' code shows) and for a
    scripted module, whose plain tensor attributes data.pkl holds and state_dict leaves out (they came out
    as weights, changing the archive's weights identity)."""
    import warnings

    from aiidetect.weights_identity import read_torchscript_tensors

    p = tmp_path / f"{kind}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "scripted":
            torch.jit.script(_ScriptedAttrs()).save(str(p))
        else:
            m, image, text = _OpenAIClip(), torch.randn(1, 3, 8, 8), torch.zeros(1, 4, dtype=torch.long)
            torch.jit.trace_module(m, {"forward": (image, text), "encode_image": image, "encode_text": text},
                                   check_trace=False).save(str(p))
        want = torch.jit.load(str(p), map_location="cpu").state_dict()
    got = read_torchscript_tensors(p)
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert (got[k].dtype, got[k].shape, got[k].stride()) == (v.dtype, v.shape, v.stride()), k
        assert torch.equal(got[k], v), k
    if kind == "scripted":
        assert "mask" not in got and got["scale"].dtype == torch.float16
    else:
        assert {want[k].dtype for k in want} >= {torch.float16, torch.float32, torch.int64}
        assert "visual.transformer.resblocks.0.attn.in_proj_weight" in got and "logit_scale" in got
        assert got["pos_tail"].untyped_storage().data_ptr() == got["positional_embedding"].untyped_storage().data_ptr()


def test_torchscript_code_is_read_bounded_and_must_define_the_classes(tmp_path, monkeypatch):
    """Which attributes are weights comes from code/ (deflated: it could inflate to any size), read up to
    a cap; a class data.pkl names but no code defines is a refusal (jit.load could not load it either)."""
    import zipfile

    import aiidetect.weights_identity as wi

    fine = _pk_module("w", _pk_tensor(_pk_storage("0"), 1, 1))
    p = tmp_path / "undefined.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a/data.pkl", fine)
        z.writestr("a/data/0", b"\0" * 4)
        z.writestr("a/code/__torch__.py", b"class N(Module):\n  __parameters__ = []\n")
    with pytest.raises(wi.WeightsFormatError, match="does not define M"):
        wi.read_torchscript_tensors(p)
    p = tmp_path / "big-code.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a/data.pkl", fine)
        z.writestr("a/data/0", b"\0" * 4)
        z.writestr("a/code/__torch__.py", b'class M(Module):\n  __parameters__ = ["w", ]\n' + b"#" * 5000,
                   compress_type=zipfile.ZIP_DEFLATED)
    assert list(wi.read_torchscript_tensors(p)) == ["w"]
    monkeypatch.setattr(wi, "_TS_CODE_CAP", 1000)
    with pytest.raises(wi.WeightsFormatError, match="code/ holds more than"):
        wi.read_torchscript_tensors(p)


def test_torchscript_archive_with_two_entries_of_one_name_is_refused(tmp_path):
    """zipfile reads the last of two same-named entries, torch's reader need not: one file could hold
    different weights for aiidetect than for torch, so its weights identity vouched for neither."""
    import warnings
    import zipfile

    from aiidetect.weights_identity import WeightsFormatError, read_torchscript_tensors

    p = tmp_path / "twice.pt"
    _raw_archive(p, _pk_module("w", _pk_tensor(_pk_storage("0"), 1, 1)), {"0": b"\0" * 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
        with zipfile.ZipFile(p, "a") as z:
            z.writestr("a/data/0", b"\1" * 4)
    with pytest.raises(WeightsFormatError, match="more than one entry named a/data/0"):
        read_torchscript_tensors(p)


def test_torchscript_declarations_are_read_from_the_class_body_only():
    """torch's importer reads __parameters__ and __buffers__ where the class declares them; the same text
    in a method's body declares nothing (it made a plain tensor attribute a weight)."""
    from aiidetect.weights_identity import _ts_classes

    code = ('op_version_set = 1\nclass V(Module):\n  __parameters__ = ["a", ]\n  __buffers__ = ["b", ]\n'
            '  def forward(self: __torch__.V) -> int:\n    __parameters__ = ["mask"]\n    return 1\n'
            'class C:\n  x : Tensor\n')
    assert _ts_classes(code) == {"V": (True, frozenset({"a", "b"})), "C": (False, frozenset())}
