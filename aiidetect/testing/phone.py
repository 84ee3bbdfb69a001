"""Phone photos as phones write them, built in code from the public layouts (tiny, for tests):

- a JPEG with a multi-picture (MP) index, CIPA DC-007: an APP2 `MPF\\0` segment holding a TIFF header and an MP Index
  IFD (MPFVersion 0xB000, NumberOfImages 0xB001, MPEntry 0xB002: 16 bytes a picture, attribute, size, offset from the
  TIFF header, 0 for the first), the other pictures appended after the first's EOI;
- an HDR gain map: Apple's (the gain map the MP index's second picture, its XMP `HDRGainMap:HDRGainMapVersion`), or
  Android Ultra HDR v1 / Adobe gain map (the primary's XMP `hdrgm:Version` and a GContainer `Container:Directory`
  whose `GainMap` item gives the appended JPEG's length; that JPEG's own XMP `hdrgm:*` parameters);
- a Motion Photo (Google Motion Photo format v1: XMP `GCamera:MotionPhoto="1"` and a `MotionPhoto` directory item
  whose `Item:Length` is the MP4's, the MP4 appended after the EOI);
- Samsung's trailer after the EOI as exiftool's Samsung.pm reads it (blocks of 2 zero bytes, a 2-byte type, a
  4-byte name length, the name, the data; then the `SEFH` directory: version, count, and per block 2 zero bytes,
  the type, its offset back from the directory and its length; then the directory's length and `SEFT`);
- a HEIF whose primary image has an auxiliary image (`auxl`, an `auxC` type such as Apple's gain map
  `urn:com:apple:photo:2020:aux:hdrgainmap` or a depth map), with metadata items (`cdsc`) of either.
"""
from __future__ import annotations

import io
import struct

from PIL import Image

from .hostile import _noise, bmff_box, heif_file, heif_ispe, heif_tile, jpeg_segment

XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\0"
HDRGM = 'xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/"'
CONTAINER = ('xmlns:Container="http://ns.google.com/photos/1.0/container/" '
             'xmlns:Item="http://ns.google.com/photos/1.0/container/item/"')
APPLE_GAIN_MAP = 'xmlns:HDRGainMap="http://ns.apple.com/HDRGainMap/1.0/" HDRGainMap:HDRGainMapVersion="65536"'
AUX_APPLE_GAIN_MAP = b"urn:com:apple:photo:2020:aux:hdrgainmap"
AUX_DEPTH = b"urn:mpeg:hevc:2015:auxid:2"


def exif_block(make: str, model: str, **tags) -> bytes:
    """An APP1 EXIF payload (`Exif\\0\\0` and the TIFF block) naming make and model; tags: {0xNNNN: value}."""
    e = Image.Exif()
    e[0x010F], e[0x0110] = make, model
    for k, v in tags.items():
        e[int(k, 16) if isinstance(k, str) else k] = v
    return e.tobytes()


def jpeg(img: Image.Image | None = None, exif: bytes | None = None, quality: int = 90) -> bytes:
    b = io.BytesIO()
    (img or _noise()).save(b, "JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return b.getvalue()


def xmp_packet(attrs: str, inner: str = "") -> bytes:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" {attrs}>{inner}</rdf:Description></rdf:RDF></x:xmpmeta>').encode()


def after_app(j: bytes, *segs: bytes) -> bytes:
    """`j` with the segments inserted after its SOI and the APP0/APP1 segments Pillow wrote (JFIF, EXIF)."""
    pos = 2
    while j[pos + 1] in (0xE0, 0xE1):
        pos += 2 + struct.unpack(">H", j[pos + 2:pos + 4])[0]
    return j[:pos] + b"".join(segs) + j[pos:]


def _mpf(sizes: list[int], offsets: list[int]) -> bytes:
    entries = b"".join(struct.pack(">IIIHH", 0x20030000 if i == 0 else 0, s, o, 0, 0)
                       for i, (s, o) in enumerate(zip(sizes, offsets)))
    ifd = struct.pack(">H", 3) + struct.pack(">HHI4s", 0xB000, 7, 4, b"0100")
    ifd += struct.pack(">HHII", 0xB001, 4, 1, len(sizes))
    ifd += struct.pack(">HHII", 0xB002, 7, len(entries), 8 + 2 + 3 * 12 + 4) + bytes(4)
    return jpeg_segment(0xE2, b"MPF\0MM\0*" + struct.pack(">I", 8) + ifd + entries)


def multi_picture(primary: bytes, others: list[bytes], *segs: bytes) -> bytes:
    """`primary` with `segs` and an MP index of itself and `others`, appended after its EOI in that order."""
    def build(sizes, offsets):
        return after_app(primary, *segs, _mpf(sizes, offsets))
    first = build([0] * (1 + len(others)), [0] * (1 + len(others)))     # the index's size does not change
    header = first.index(b"MPF\0") + 4
    offsets, at = [0], len(first)
    for o in others:
        offsets.append(at - header)
        at += len(o)
    return build([len(first)] + [len(o) for o in others], offsets) + b"".join(others)


def gain_map_jpeg(style: str = "apple", primary: bytes | None = None, gain_map_exif: bytes | None = None,
                  gain_map_xmp: str = "", size: tuple[int, int] = (32, 24)) -> bytes:
    """An HDR photo: `primary` (default: noise with an iPhone's EXIF) and a smaller gain map JPEG after it, in
    Apple's layout (style "apple") or Android Ultra HDR's ("ultrahdr"). gain_map_xmp: more attributes of the gain
    map's own XMP description; gain_map_exif: an EXIF block of its own."""
    primary = primary or jpeg(exif=exif_block("Apple", "iPhone 15 Pro"))
    own = APPLE_GAIN_MAP if style == "apple" else f'{HDRGM} hdrgm:Version="1.0" hdrgm:GainMapMax="2.3" ' \
                                                  'hdrgm:HDRCapacityMax="2.3"'
    gm = after_app(jpeg(Image.new("RGB", size, (128, 128, 128)), gain_map_exif),
                   jpeg_segment(0xE1, XMP_APP1 + xmp_packet(f"{own} {gain_map_xmp}")))
    if style == "apple":
        return multi_picture(primary, [gm])
    directory = ('<Container:Directory><rdf:Seq><rdf:li rdf:parseType="Resource"><Container:Item '
                 'Item:Semantic="Primary" Item:Mime="image/jpeg"/></rdf:li><rdf:li rdf:parseType="Resource">'
                 f'<Container:Item Item:Semantic="GainMap" Item:Mime="image/jpeg" Item:Length="{len(gm)}"/></rdf:li>'
                 '</rdf:Seq></Container:Directory>')
    return multi_picture(primary, [gm], jpeg_segment(0xE1, XMP_APP1 + xmp_packet(
        f'{HDRGM} {CONTAINER} hdrgm:Version="1.0"', directory)))


def mp4(payload_bytes: int) -> bytes:
    """An MP4's outline: `ftyp`, then one `mdat` of payload_bytes."""
    body = bytes(range(256)) * (payload_bytes // 256)
    return bmff_box(b"ftyp", b"mp42\0\0\0\0isommp42") + bmff_box(b"mdat", body)


def motion_photo(primary: bytes | None = None, video: bytes | None = None) -> bytes:
    """A Google Motion Photo v1: `primary` (default: noise with a Pixel's EXIF), its XMP naming the MP4 after it."""
    primary = primary or jpeg(exif=exif_block("Google", "Pixel 8 Pro"))
    video = video if video is not None else mp4(1 << 16)
    directory = ('<Container:Directory><rdf:Seq><rdf:li rdf:parseType="Resource"><Container:Item '
                 'Item:Mime="image/jpeg" Item:Semantic="Primary" Item:Length="0" Item:Padding="0"/></rdf:li>'
                 '<rdf:li rdf:parseType="Resource"><Container:Item Item:Mime="video/mp4" Item:Semantic="MotionPhoto" '
                 f'Item:Length="{len(video)}" Item:Padding="0"/></rdf:li></rdf:Seq></Container:Directory>')
    xmp = xmp_packet('xmlns:GCamera="http://ns.google.com/photos/1.0/camera/" ' + CONTAINER +
                     ' GCamera:MotionPhoto="1" GCamera:MotionPhotoVersion="1" '
                     'GCamera:MotionPhotoPresentationTimestampUs="500000"', directory)
    return after_app(primary, jpeg_segment(0xE1, XMP_APP1 + xmp)) + video


def samsung_trailer(blocks: list[tuple[int, str, bytes]]) -> bytes:
    """Samsung's SEF trailer of (type, name, data) blocks, to append after a JPEG's EOI."""
    out, entries = b"", []
    for kind, name, data in blocks:
        entries.append((kind, len(out), 8 + len(name) + len(data)))
        out += struct.pack("<HHI", 0, kind, len(name)) + name.encode() + data
    directory = b"SEFH" + struct.pack("<II", 107, len(entries)) + b"".join(
        struct.pack("<HHII", 0, kind, len(out) - at, n) for kind, at, n in entries)
    return out + directory + struct.pack("<I", len(directory)) + b"SEFT"


def heif_with_aux(aux_type: bytes = AUX_APPLE_GAIN_MAP, primary_exif: bytes | None = None,
                  aux_exif: bytes | None = None, aux_xmp: bytes | None = None, aux_size: int = 32) -> bytes:
    """A HEIF of a 64x64 noise image with an auxiliary image of `aux_type` (flat, aux_size square); EXIF blocks
    (TIFF, no `Exif\\0\\0`) and an XMP packet described as the primary's or the auxiliary's (`cdsc`)."""
    h1, d1 = heif_tile(64, 64)
    h2, d2 = heif_tile(aux_size, aux_size, flat=True)
    items, mdat, refs, types = [], b"", [(b"auxl", 2, [1])], {}
    for i, (kind, data, of) in enumerate([(b"hvc1", d1, None), (b"hvc1", d2, None), (b"Exif", primary_exif, 1),
                                          (b"Exif", aux_exif, 2), (b"mime", aux_xmp, 2)], 1):
        if data is None:
            continue
        data = b"\0\0\0\0" + data if kind == b"Exif" else data     # an Exif item starts with its TIFF offset
        items.append((i, kind, [(len(mdat), len(data))], 0))
        mdat += data
        if of:
            refs.append((b"cdsc", i, [of]))
        if kind == b"mime":
            types[i] = b"application/rdf+xml"
    props = [h1, heif_ispe(64, 64), h2, heif_ispe(aux_size, aux_size), bmff_box(b"auxC", aux_type + b"\0", (0, 0))]
    return heif_file(items, props, {1: [1, 2], 2: [3, 4, 5]}, refs=refs, mdat=mdat, content_types=types)
