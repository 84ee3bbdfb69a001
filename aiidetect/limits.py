"""Per-file limits, set here once and honoured by every reader (scan, meta, eval,
train loaders, Pillow itself). docs/schema.md "Limits" lists the same numbers."""
from __future__ import annotations

# Larger than any camera sensor sold (the largest stills are ~102-150 MP medium format; 120 MP
# covers 102 MP 11648x8736 files), far below a decompression bomb. --max-pixels moves it,
# for Pillow too (decode.decode_bytes).
DEFAULT_MAX_PIXELS = 120_000_000
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
# Decoded pixels alive at once across all decode workers, in --max-pixels images: a scan's
# decode memory is bounded by --max-pixels, not by --workers (pixels.PixelBudget;
# docs/schema.md "Limits"). Two, so two cores stay busy on a folder of the largest images.
DECODE_BUDGET_IMAGES = 2
# A WebP's pixels count this many times, against that budget and against the limit: Pillow decodes every WebP,
# still or animated, through libwebp's animation decoder, which fills two RGBA canvases (the frame, and the
# canvas after disposal) beside Pillow's copy of the frame and the image. A 100 MP WebP (a 10000x10000 canvas:
# a 186-byte animation of 8x8 frames, or a 3.9 KB lossless still) peaked at 1.63 GB in `scan -d metadata`, a
# 100 MP PNG at 457 MB, a 50 MP WebP at 848 MB. A WebP whose cost alone passes the whole decode budget
# (DECODE_BUDGET_IMAGES x --max-pixels) is refused, `too-large`: 60 MP at the defaults, which peaks where two
# --max-pixels PNGs decoding side by side do.
WEBP_PIXEL_COST = 4

# A progressive JPEG is decoded scan by scan, each scan a pass over the blocks of the components it
# names, however few bytes it holds (a run of empty blocks is one symbol): a 362 KB 64 MP file of 1,000
# scans (testing.hostile.jpeg_scan_bomb(8192, 8192, 1000)) took Pillow's load() 36 s, and `aiidetect scan`
# of it 41 s before this cap; Pillow sets no scan limit. The standard progressive
# scripts pass over the image 5.3 times (YCbCr) or 6 times (greyscale), a CMYK one 6; legal but rarer
# scripts go further (successive approximation down to the last bit: 18), and a refused real file loses
# its pixel verdict, so the cap sits at 32, which still stops the 1,000-scan bombs (16 and 32 passes
# over a 120 MP greyscale image: 1.2 s and 3.2 s to decode, measured side by side with
# testing.hostile.jpeg_scan_bomb(10954, 10954, 10 or 26) on a loaded 2-core AMD EPYC with avx2, avx_vnni,
# avx512f, avx512_bf16, avx512_vnni, no AMX).
# Over it: `decode-error` (decode.jpeg_scan_problem).
JPEG_MAX_COVERAGE = 32
# Marker segments walked before a JPEG's pixels are decoded (by that check and by the metadata-stripping
# retry, which finds them the same way: structures.next_marker); a real JPEG has tens. Pillow reads each in
# Python and keeps every APP segment: 2 M empty APP1
# segments (8 MB: with_jpeg_segments(jpeg_with_app1(b""), [(0xE1, b"")] * 2_000_000)) took 4.2 s and a
# 328 MB peak to load(). Over it: `decode-error`.
JPEG_MAX_SEGMENTS = 65_536
# Fill (0xFF) and stray bytes between a JPEG's segments before its first scan, in all. libjpeg skips them in
# C, but Pillow's open reads each in its own Python loop turn before libjpeg sees the file: 10 MB of 0xFF after
# SOI took open() and load() 4.6 s, 50 MB took `scan -d metadata` 37 s (the pre-check counted none of them,
# so 512 MB passed it). Real files pad a few bytes, or resync past a wrong segment length inside one 64 KB
# segment. Over it: `decode-error` (decode.jpeg_scan_problem).
JPEG_MAX_GAP_BYTES = 1024 * 1024
# Bytes of quantization tables (DQT segments) before a JPEG's first scan. Pillow's open reads each 64-value table
# in Python (libjpeg reads them in C), and the metadata walk read each for the quantization-table evidence: 1,600
# full DQT segments (100 MB, 1.6 M tables: testing.hostile.jpeg_dqt_tables(1600)) took `aiidetect scan -d
# metadata` 18.3 s and `meta` 12 s, against 2.2 s and 1.9 s for as many bytes of APP5 segments. A JPEG defines
# at most four tables (ids 0 to 3), 516 bytes; two full segments (2,016 tables) pass. Over it: `decode-error`
# (decode.jpeg_scan_problem), and the metadata walk reads no table evidence from the file.
JPEG_MAX_DQT_BYTES = 128 * 1024
# Exif APP1 segments of a JPEG handed to Pillow, whose open joins each one to the EXIF it holds so far with
# `bytes +=` (a new copy each time): its work grows with the square of their number. 800 full segments (52 MB:
# testing.hostile.jpeg_exif_segments(800)) took Pillow's open alone 16 s, 1,600 (105 MB) took `aiidetect scan
# -d metadata` 105 s and `meta` more than 120 s. A camera writes one (EXIF is 64 KB at most); the metadata
# readers read four blocks (provenance.MAX_BLOCKS), from the file itself. The segments after the first this
# many are left out of the copy Pillow opens (metastrip.strip_oversize; image.pixels_without_metadata says so):
# at the cap Pillow copies at most 16 x 17 / 2 x 64 KB, 9 MB, and the pixels and orientation (the first
# segment's) are the file's own.
JPEG_MAX_EXIF_SEGMENTS = 16
# Bytes of a JPEG's other APPn and COM segments (their payloads, in all) handed to Pillow, before the first scan.
# Pillow's open reads each one and keeps it whole (its applist, app and comment): a 520 MB JPEG of 8,000 comments
# of 65,000 bytes took the scan's decode alone 1.06 GB and `scan -d metadata` 1.1 GB, two 512 MB such files with
# --workers 2 past 2 GB, though the byte budget holds 2 x --max-bytes (pixels.ByteBudget counts the file, not
# Pillow's copy of it). The metadata readers read these segments from the file itself (capped:
# docs/schema.md "Limits"); no pixel needs them but JFIF APP0, Adobe APP14 (libjpeg's colour space and transform)
# and, for a camera's multi-picture file, MPF APP2, whose last of each (the one libjpeg and Pillow use) is handed
# on past this total. Real files carry KB to a few MB (an ICC profile, XMP with an extended part, Photoshop's
# resources and thumbnail). The segments past it are left out of the copy Pillow opens (metastrip.strip_oversize;
# the record's image.pixels_without_metadata says so).
JPEG_MAX_APP_BYTES = 16 * 1024 * 1024

# Chunks walked in a PNG before its pixels are decoded. Pillow reads every chunk in Python, and keeps
# something of each one before the first IDAT: 8 M empty private chunks (96 MB: png_with([png_chunk(b"prIv",
# b"")] * 8_000_000)) took 49 s and a 1.07 GB peak to load(), 8 M empty IDAT chunks (png_many_idat(8_000_000))
# 7.2 s. libpng's 8 KiB IDAT chunks put 65,536 in a 512 MiB file (--max-bytes);
# the C2PA reader is handed at most as many (docs/schema.md "Limits"). Over it: `decode-error`.
PNG_MAX_CHUNKS = 100_000
# iCCP chunks of a PNG handed to Pillow. Its open inflates each one (up to PngImagePlugin.MAX_TEXT_CHUNK, 1 MiB,
# from about 1 KB of zlib) and keeps only the last; unlike its text chunks, it counts no total for them: 5,000
# such chunks (5.3 MB: testing.hostile.png_icc_chunks(5000)) took `aiidetect scan -d metadata` 34 s and `meta` 38 s,
# and PNG_MAX_CHUNKS of them would take minutes. The PNG format allows one; no reader here uses the profile. The
# chunks after the first are left out of the copy Pillow opens (metastrip.strip_oversize; the record's
# image.pixels_without_metadata says so): the pixels are the file's own.
PNG_MAX_ICC_CHUNKS = 1
# Chunks of a WebP, counted from their headers before any reader opens it (decode.webp_chunk_problem), walked
# for its metadata (provenance.containers) and handed to the C2PA reader. One chunk a frame (each frame's image
# sits inside its ANMF chunk, not beside it): an animation of almost 100,000 frames (VP8X, ANIM, then one ANMF
# each), the PNG cap's count; 55 minutes at 30 frames a second. libwebp's demuxer, which Pillow opens every WebP
# through, keeps a record of each frame (about 150 bytes) beside Pillow's copy of the file, though only the
# first frame is decoded: 4 M one-pixel frames (200 MB: testing.hostile.webp_frames(4_000_000)) took `aiidetect
# scan -d metadata` and `meta` 1.0 GB each (the file's bytes held, 200 MB, among them), 255 to 260 MB refused.
# Over it: `decode-error`, and the rest of the metadata is not read.
WEBP_MAX_CHUNKS = PNG_MAX_CHUNKS

# A PNG or WebP metadata chunk (text, EXIF, XMP, ICC profile, private) longer than this is not handed to Pillow:
# the file is decoded from a copy without it (decode.decode_bytes, metastrip.strip_oversize) and the record's
# image.pixels_without_metadata says so. Pillow copies such a chunk two or three times (its reads in blocks
# joined, the WebP reader's copy of the whole file, the block kept in its info): 100 MB EXIF, XMP or ICC
# chunks took `scan -d metadata` 476 MB (WebP) to 680 MB (an uncompressed XMP iTXt in a PNG). It is the EXIF
# reader's cap (provenance.exif.MAX_EXIF_BYTES), the largest of the metadata readers', far above an ICC profile.
# A HEIF/AVIF Exif or XMP item over it is unlinked from its image before pillow-heif opens the file (metastrip:
# it copied a 100 MB Exif item three times at open, `meta` peaking at 677 MB) and is not read; an ICC profile
# (`colr` property) over it is renamed `free` there (pillow-heif and Pillow held a 100 MB one six times: 785 MB).
# A TIFF entry over it of a type Pillow reads whole (BYTE, ASCII, UNDEFINED) gets type 0, which Pillow and
# exifread skip, in the copy every reader opens (tiffguard.without_oversize), and is not read: Pillow held a
# 100 MB one two or three times at open and its EXIF reader again (`scan -d metadata` 580 MB for a private BYTE
# tag, 785 MB for XMP; 272 MB now).
# JPEG tables (tag 347) over it are refused instead (tiffguard.check_tiff): the decoder needs them.
DECODE_MAX_METADATA_CHUNK = 8 * 1024 * 1024

# Bytes of a WebP's metadata and unknown chunks (any but VP8X, VP8, VP8L, ALPH, ANIM, ANMF: what libwebp decodes),
# in all, handed to Pillow. Pillow's WebP reader copies the whole file at open, and libwebp's demuxer keeps it: 50
# EXIF chunks of 8 MiB (419 MB, each under DECODE_MAX_METADATA_CHUNK) took `scan -d metadata` 1.3 GB. The payloads
# of those chunks past this total are left out of the copy Pillow opens as a chunk over that cap is (an empty
# chunk of its kind in its place: metastrip.strip_oversize; the record's image.pixels_without_metadata says so);
# the metadata readers read them from the file itself. Real files carry KB to a few MB of them.
WEBP_MAX_METADATA_BYTES = 16 * 1024 * 1024

# Frames of a GIF counted for the record's `image.frames` (only the first is decoded). Pillow finds a GIF's
# frames by parsing each in Python: 2 M one-pixel frames (46 MB: gif_tiny_frames(2_000_000, 1, 1)) took
# 3.5 s to count (n_frames). A GIF with more says this many.
# The Pillow timings in these comments: `/usr/bin/time -v python -c "import io; from PIL import Image; from
# aiidetect.testing.hostile import *; Image.open(io.BytesIO(BUILDER)).load()"`, one at a time on the
# 2-core AMD EPYC above, loaded by other jobs (load 3 to 4: the times are upper bounds, the peaks hold). TIFF pages have their own cap (10,000, provenance.tiffguard); other formats state
# their frame count in a header. An AVIF image sequence's (`avis`) count is the samples its track's table declares
# (at most AVIF_MAX_SAMPLES, refused over it): it says at most this many too.
MAX_FRAMES_COUNTED = 10_000

# Sub-blocks a GIF's walk reads, stray bytes between blocks counted one each (Pillow reads those a byte at a
# time). Pillow's open reads every extension sub-block before the first image in Python and keeps a comment's:
# 50 M one-byte comment sub-blocks (100 MB: gif_extension_blocks(50_000_000)) took `aiidetect scan -d metadata`
# 75 s and a 4.6 GB peak, 50 M of an application extension 43 s. Over it before the first image: `decode-error`.
# The frame count is this walk's too (Pillow's counted in Python: a first frame's image data in 50 M one-byte
# sub-blocks took 22 s), and stops here as at MAX_FRAMES_COUNTED. GIF writers fill sub-blocks to 255 bytes: a
# 512 MiB file (--max-bytes) holds 2,097,152 of them. At the cap, one-byte comment sub-blocks (4 MB) cost Pillow's
# open 1.1 s and 196 MB (gif_extension_blocks(2_097_152)), this walk 0.4 s.
GIF_MAX_BLOCKS = 1 << 21

# A PSD's image resources, walked before Pillow's open, which reads each in Python and keeps them all: 10 M empty
# resources (120 MB: psd(image_resource(1000, b"") * 10_000_000)) took `aiidetect scan -d metadata` 28 s and a
# 1.3 GB peak. Photoshop writes tens (20 to 40: provenance.iptc.MAX_RESOURCES); the ids its file format defines,
# 998 for paths and 1,000 for plug-ins among them, number a few thousand. Over it: `decode-error`.
PSD_MAX_RESOURCES = 65_536
# Rows of a PSD's composite image. Pillow reads a packbits composite's row table (two bytes a row and channel) a
# row at a time in Python at open, before any pixel limit: a 1-pixel-wide greyscale PSD of 50 M rows (200 MB:
# psd_rows(50_000_000)) took 21 s and 1.3 GB to scan. PSD allows 30,000 (Photoshop saves larger documents as PSB,
# which Pillow does not open). Over it: `decode-error`. A PSD's layers (Pillow walks each layer's row tables to
# count them) are counted from the layer section's header instead.
PSD_MAX_ROWS = 30_000

# Pixels of an RLE-compressed BMP (or DIB): Pillow decodes RLE8 and RLE4 in Python, pixel by pixel where a row
# ends early (an end-of-line pads the row a byte at a time) and for every RLE4 pixel: one pixel and an end-of-line
# a row, 10000x12000 in 48 KB (bmp_rle_row_ends(10000, 12000)), took `aiidetect scan -d metadata` 44 s and 1.1 GB.
# RLE BMPs are old Windows palette images; the cap lets a 4K screen (3840x2160) and an A4 page scanned at
# 300 dpi (2480x3508, 8.7 million pixels) through. At the cap, the same rows (4096x3072) take Pillow's load()
# 5.8 s on the 2-core machine at load 6.5 (4096x2048: 3.5 s). Over it: `decode-error`.
BMP_RLE_MAX_PIXELS = 3 << 22

# A HEIF or AVIF image made of others (a `grid` of tiles) is decoded tile by tile, each tile to the size its
# `ispe` declares, whatever the image's own size: a 3.5 KB HEIF whose 64x64 image was a 31x32 grid of one
# flat 2048x2048 tile referenced 992 times (testing.hostile.heif_grid(31, 32, 2048, 2048, 64, 64,
# tile=heif_tile(2048, 2048, flat=True))) took libheif
# 28 s; one whose `ispe` said 64x64 over a grid of 16384x15872 (260 MP, 100 KB) passed --max-pixels and took
# 24 s and 400 MB before libheif refused the size it decoded. Before any reader opens such a file
# (decode.heif_problem): a grid whose size is not its `ispe`, or with a whole row or column of tiles outside
# the image, is `decode-error`; the scan's decoder counts the coded pixels the image is made of (each tile's
# `ispe`, repeats counted; its alpha's too, decoded with it: the same grid as the alpha of a 64x64 image took 24 s)
# against DECODE_BUDGET_IMAGES x --max-pixels, `too-large` over it (a real grid's
# tiles pass its size by a part of a tile), and holds the primary image's own `ispe` to --max-pixels before any
# clean-aperture crop (Pillow gives the cropped size; libheif decodes the whole: 8192x8192 cropped to 64x64, 15 KB,
# took 303 MB); an AV1 tile or image (AVIF) counts the larger of its `ispe` and the frame its sequence header
# gives, which libavif decodes whole (16x16 tiles said 64x64 over 8192x8192 frames: 12.6 KB, 63 s). Tables
# walked in its `meta` box: at most this many entries in all (boxes, items located and their extents,
# references, property associations: an iPhone photo of 48 tiles holds about 500; libheif refuses more than
# 1,000 items). A cap per table bounded nothing: an `iloc` whose offsets and lengths take 0
# bytes lists 65,535 extents an item in no bytes (20 such items, 245 bytes, took 9 s to walk), and 13 MB of
# `dimg` references took 17 s and 238 MB. Each tile of a grid is an item with entries in four tables, so this
# also holds an AVIF grid to about 8,000 tiles: libavif's work grows faster than its tiles (200x200 tiles of
# 8x8, 1.8 MB, took it 8 s before it refused the grid). An image sequence's (`avis`) `moov` box, whose track
# libavif decodes instead of the item (its first frame counted as an item is: decode.avif_track_pixels), is walked
# within a budget of as many boxes (and `stsc` runs) of its own. Over it, `decode-error`.
HEIF_MAX_ENTRIES = 65_536

# An AVIF image sequence's (`avis`) track: the samples its sample table declares (chunks, `stco`/`co64`, times the
# samples per chunk, `stsc`), and the entries of each of those tables and of its sample sizes (`stsz`), at most this
# many; and its chunks times its `stsc` entries at most AVIF_MAX_CHUNK_LOOKUPS. libavif lists every sample before it
# decodes the first (about 56 bytes each, up to its own 2,592,000: a file of that many 8x8 frames, 88 MB, took
# `scan -d metadata` 785 MB) and finds each chunk's sample count by reading the `stsc` table back from its end: a
# 1.9 MB `avis` of 120,000 chunks and as many `stsc` entries took 15 s to open, its time growing with their square
# (testing.hostile.avis_chunks(120_000)). 65,536 frames are 36 minutes at 30 frames a second; writers put all the
# frames in one chunk (Pillow, libavif) or a chunk a second (ffmpeg), each `stsc` entry a change of chunk length.
# Over either, `decode-error`.
AVIF_MAX_SAMPLES = 65_536
AVIF_MAX_CHUNK_LOOKUPS = 1 << 24

# Values of the TIFF and EXIF entries Pillow decodes one by one into Python objects: the size, layout, resolution,
# palette, XMP and ICC tags it reads when it opens a TIFF file and the camera tags the EXIF reader asks it for
# (provenance.tiffguard.PILLOW_DECODED), and every entry of an EXIF, GPS or Interoperability sub-IFD (which a TIFF's
# load() and the EXIF reader's get_ifd turn into a dict whole), in all the IFDs walked (a TIFF file's pages; an EXIF
# block's IFD0, IFD1 and sub-IFDs); byte and text types not counted (Pillow slices those whole). Pillow 13 reads no
# more tag data than the file holds, but a value costs it a Python int or an IFDRational: a 16 MB TIFF whose
# XResolution held 2 M RATIONALs (testing.hostile.tiff_decoded_values()) took `aiidetect scan -d metadata` 12.5 s
# and `meta` 15.5 s (418 MB), one whose ColorMap held 8 M SHORTs 3.4 s, an 8 MB one with 1 M RATIONALs in a private
# tag of its EXIF sub-IFD (tiff_exif_ifd_values()) a decode worker's job 9.0 s; at --max-bytes, minutes. The
# largest a writer fills is a 16-bit palette's ColorMap (3 x 65,536); the others hold one value or one a sample.
# A page's ColorMap no larger than an 8-bit palette is left out (tiffguard.PALETTE_VALUES: Pillow decodes each page's
# when it counts the pages, and a 400-page palette TIFF it wrote went over); 10,000 pages of them scan in 2.2 s.
# Over it: `decode-error` (`TIFF structure refused`), and an EXIF block's not read (`metadata.malformed`).
TIFF_MAX_DECODED_VALUES = 1 << 18

# Text a PNG's metadata walk makes of its text chunks in all (inflated, decoded), past which a chunk is not read
# unless it is an XMP or raw profile (their own count, provenance.containers.MAX_PROFILE_CHUNKS) or the first of a
# generator's keys. The walk kept 16 MiB of text (containers.MAX_TOTAL_TEXT_BYTES) but inflated every compressed
# chunk, up to 4 MiB each, before dropping it over that total: 5,000 zTXt chunks of a 4 KB zlib bomb each
# (20 MB: testing.hostile.png_ztxt_bombs(5000)) took `aiidetect scan -d metadata` 78 s and `meta` 79 s, the
# per-file time budget being asked every 4,096 chunks. Pillow's own total for text chunks is as large
# (PngImagePlugin.MAX_TEXT_MEMORY, 64 MiB); a ComfyUI workflow, the largest text real files carry, about 1 MiB.
# A chunk that fails to read (a zlib stream broken after megabytes of text) counts as the most one makes, 4 MiB.
PNG_MAX_TEXT_WORK_BYTES = 64 * 1024 * 1024

# Bytes of a C2PA manifest store handed to the C2PA reader (c2pa-rs, native code the time budget cannot stop), as
# the metadata walk counts them: a JPEG's APP11 JUMBF segments, a PNG's caBX chunks, a WebP's C2PA chunks, a
# HEIF/AVIF's top-level C2PA uuid boxes, the C2PA tags (52545) of a TIFF's pages, in all. c2pa-rs holds the store
# several times over while it reads it: a 100 MB JPEG whose store carried a 100 MB box beside a signed manifest
# (testing.hostile.jpeg_c2pa_store) took `aiidetect scan -d metadata` 693 MB and `meta` 688 MB (c2pa-rs alone
# 526 MB), the same store after a HEIC (heif_c2pa_store) 626 MB and 589 MB; refused, 275 MB and 226 MB.
# A store holds claims, signatures and a thumbnail per manifest (tens of KB each): real ones are KB to a few MB.
# Over it: the manifest is not read (`c2pa.unreadable`, an error saying why).
C2PA_MAX_STORE_BYTES = 32 * 1024 * 1024

# Metadata parsing: per-file wall-clock budget. Parsers are linear and capped (below and in
# aiidetect/provenance/*); the budget is the second line of defence. When it runs out the
# record keeps the evidence read so far and gets a neutral `metadata-timeout` note.
METADATA_BUDGET_S = 5.0

# The HTML report: full cards for at most this many files (AI-generated first, then uncertain,
# errors, likely real); every file still gets its row in the table. 100,000 cards made a
# 418 MB page that Chromium took minutes to load (docs/report.md "Large reports").
REPORT_MAX_CARDS = 2_000
# A saved run's line longer than this many characters is not read (an error card says so), so a
# 2 GB line costs the report no memory. The largest genuine records are far below it.
REPORT_MAX_LINE_CHARS = 64 * 1024 * 1024
