"""Image files the tests make themselves: every decoding path, good and bad."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def noise_rgb(w=64, h=48, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def noise_pngs(folder: Path, n: int, w: int = 48, h: int = 40, seed: int = 0, grow: int = 0) -> list[str]:
    """n noise PNGs im0.png ... in folder (distinct bytes; heights h, h + grow, ...)."""
    paths = []
    for i in range(n):
        p = Path(folder) / f"im{i}.png"
        noise_rgb(w, h + i * grow, seed + i).save(p)
        paths.append(str(p))
    return paths


def save(img: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    img.save(path, format=fmt, **kw)
    return path


def jpeg_bytes(img=None, **kw) -> bytes:
    b = io.BytesIO()
    (img or noise_rgb()).save(b, "JPEG", **kw)
    return b.getvalue()


def bomb_png(width=30000, height=30000) -> bytes:
    """A valid PNG header claiming a huge canvas with a tiny compressed body:
    a decompression bomb as far as the pixel limit is concerned."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    row = b"\x00" + b"\x00" * width
    comp = zlib.compressobj(9)
    body = b""
    for _ in range(64):  # only the first rows: size check must fire before any decoding
        body += comp.compress(row)
    body += comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def make_zoo(d: Path) -> dict[str, Path]:
    """name -> path of every kind of file the decoder must handle."""
    d.mkdir(parents=True, exist_ok=True)
    z: dict[str, Path] = {}
    z["jpeg"] = save(noise_rgb(), d / "ok.jpg", quality=90)
    full = jpeg_bytes(noise_rgb(256, 256, 1), quality=95)
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    z["truncated"] = d / "truncated.jpg"
    (d / "empty.jpg").write_bytes(b"")
    z["empty"] = d / "empty.jpg"
    (d / "random.png").write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    z["random"] = d / "random.png"
    (d / "bomb.png").write_bytes(bomb_png())
    z["bomb"] = d / "bomb.png"
    z["cmyk"] = save(noise_rgb().convert("CMYK"), d / "cmyk.jpg", "JPEG")
    a16 = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    z["png16"] = save(Image.fromarray(a16), d / "gray16.png", "PNG")
    frames = [noise_rgb(32, 32, seed=10 + i).convert("P") for i in range(4)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    z["gif"] = d / "anim.gif"
    z["palette"] = save(noise_rgb().convert("P"), d / "palette.png", "PNG")
    rgba = noise_rgb().convert("RGBA")
    z["rgba"] = save(rgba, d / "alpha.png", "PNG")
    z["gray"] = save(noise_rgb().convert("L"), d / "gray.tif", "TIFF")
    z["bmp"] = save(noise_rgb(), d / "ok.bmp", "BMP")
    z["webp"] = save(noise_rgb(), d / "ok.webp", "WEBP", quality=90)
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        z["heic"] = save(noise_rgb(), d / "ok.heic", "HEIF", quality=90)
    except Exception:  # pragma: no cover - pillow-heif is a dependency
        pass
    z["avif"] = save(noise_rgb(), d / "ok.avif", "AVIF")
    # EXIF orientation 6 (rotate 90 CW): a 64x48 image must come out 48x64
    ex = Image.Exif()
    ex[0x0112] = 6
    z["rotated"] = save(noise_rgb(), d / "rotated.jpg", "JPEG", exif=ex.tobytes())
    # A PNG named .jpg: misleading extension, still decodes by content
    z["misnamed"] = save(noise_rgb(), d / "actually_png.jpg", "PNG")
    (d / "notes.txt").write_text("not an image")
    return z
