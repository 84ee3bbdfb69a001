"""Which images a head was trained on, by content, so that `eval` and `calibrate` can tell when they
are measuring a head on its own training images (metrics that mean nothing, reported as if held out).

The record is a file beside the head's tensors, ``train-keys.bin``, listed with its SHA-256 in the
manifest's ``files`` (so verify, pack and install check and carry it like the tensors), and described
by the manifest's ``training_images`` block: {"file", "key", "count", "what", "decoders"}.

The file holds, sorted and without repeats, the first 8 bytes of each training image's SHA-256 (the
content key a scan records and the result cache uses): 8 MB for a million images, where the full
digests (32 MB) would make every head as large as its training set's index. Sorted fixed-width keys
answer "was this image trained on?" exactly up to a prefix collision: with N training images and M
evaluation images the chance that any evaluation image falsely matches is at most N*M / 2**64
(1e6 x 1e6 images: 5e-8). A Bloom filter of the same 8 bytes per image would be no smaller at that
false-match rate, and one small enough to embed (1 byte per image) wrongly drops about 1 image in 50
from every evaluation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

KEYS_FILE = "train-keys.bin"
PHASH_FILE = "train-phash.bin"    # the perceptual half (load_phashes)
KEY_BYTES = 8
KEY_KIND = "sha256-prefix-8-sorted"
# A head's record of more training images than this is damaged, not large (64 M images = 512 MB).
MAX_KEYS = 64 << 20


def pack_keys(digests: Iterable[str]) -> bytes:
    """Hex SHA-256 digests -> the sorted unique 8-byte prefixes, concatenated (big-endian, so byte order
    is numeric order)."""
    keys = sorted({bytes.fromhex(d[:2 * KEY_BYTES]) for d in digests if d})
    return b"".join(keys)


def record(digests: Iterable[str], what: str, phashes: Iterable[int | None] | None = None
           ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(the manifest's training_images block, {file name: bytes}) for heads.save_head's extra_files.
    `phashes`: the perceptual hash of each training image's bytes (decode.phash_bytes; None for
    one too small or flat to have one), recorded beside the keys as block["perceptual"] so that eval
    can tell re-encoded or resized copies of training images too. block["decoders"]: the versions of the
    libraries that turned the images' bytes into the pixels fitted on (extras.DECODERS; the feature cache is
    keyed by them, docs/heads.md "Feature cache"): another Pillow can give other pixels, and training the
    head again from its images needs the same."""
    from .extras import decoder_versions

    blob = pack_keys(digests)
    block: dict[str, Any] = {"file": KEYS_FILE, "key": KEY_KIND, "count": len(blob) // KEY_BYTES, "what": what,
                             "decoders": decoder_versions()}
    files = {KEYS_FILE: blob}
    if phashes is not None:
        from . import perceptual

        hs = list(phashes)
        pblob = perceptual.pack([h for h in hs if h is not None])
        block["perceptual"] = {"file": PHASH_FILE, "kind": perceptual.KIND,
                               "count": len(pblob) // perceptual.HASH_BYTES, "without_hash": sum(h is None for h in hs)}
        files[PHASH_FILE] = pblob
    return block, files


def load_phashes(head_dir: str | Path, manifest: Mapping[str, Any], verify: bool = False):
    """The head's training images' perceptual hashes (sorted unique uint64); NoRecord when there are
    none to use (a head trained before they were recorded: near-duplicates then are unknown, not none).
    Checked as load_keys checks the keys."""
    from . import perceptual

    block = manifest.get("training_images")
    sub = block.get("perceptual") if isinstance(block, Mapping) else None
    if sub is None:
        raise NoRecord("the head records no perceptual hashes of its training images (trained by an older "
                       "version, or made elsewhere)")
    if not isinstance(sub, Mapping) or sub.get("kind") != perceptual.KIND:
        kind = sub.get("kind") if isinstance(sub, Mapping) else None
        if isinstance(kind, str) and kind.startswith("dct-phash-64-"):
            # An older definition of the hash (another decode of the same bytes moved it up to 8 bits):
            # compared with this version's, a copy would be missed and a stranger matched.
            raise NoRecord(f"the head's perceptual record is not one this version reads: its hashes are "
                           f"{kind[:40]!r}, this version computes {perceptual.KIND} (retrain the head to record them)")
        raise NoRecord(f"the head's perceptual record is not one this version reads ({perceptual.KIND})")
    return _load_sorted(head_dir, manifest, sub, PHASH_FILE, "perceptual record", perceptual.KIND, "hashes", verify)


class NoRecord(Exception):
    """The head records no training images (trained before heads did, or shipped by others), or its record
    cannot be used; str(exc) says which."""


def load_keys(head_dir: str | Path, manifest: Mapping[str, Any], verify: bool = False):
    """The head's training keys as a sorted numpy uint64 array; NoRecord when there are none to use.
    The file's checksum is the manifest's: checked here with `verify` (a fusion model, whose files
    nothing else checks when it is loaded), else by the caller (heads.verify_files, when the head was
    loaded)."""
    block = manifest.get("training_images")
    if block is None:
        raise NoRecord("the head records no training images (trained by an older version, or made elsewhere)")
    if not isinstance(block, Mapping) or block.get("key") != KEY_KIND:
        raise NoRecord(f"the head's training_images record is not one this version reads ({KEY_KIND})")
    return _load_sorted(head_dir, manifest, block, KEYS_FILE, "training_images record", KEY_KIND, "keys", verify)


def _load_sorted(head_dir, manifest: Mapping[str, Any], block: Mapping[str, Any], suffix: str, what: str,
                 kind: str, unit: str, verify: bool):
    """The sorted, unique big-endian 8-byte words of the file `block` describes ({"file", "count"}): the
    keys, or the perceptual hashes. NoRecord for a file not in the head's folder or not listed with a
    checksum, a count that is not one, a length other than the count's, or words out of order."""
    import hashlib

    import numpy as np

    from .hashing import read_regular
    from .heads import in_folder

    # (an ONNX export names the copy after its head: <family>-<name>.train-keys.bin)
    if not in_folder(block.get("file")) or not str(block.get("file")).endswith(suffix):
        raise NoRecord(f"the head's {what} is not one this version reads ({kind})")
    fname, count = str(block["file"]), block.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_KEYS:
        raise NoRecord(f"the head's {what} count is not a number of images")
    files = manifest.get("files") if isinstance(manifest.get("files"), Mapping) else {}
    if fname not in files:
        raise NoRecord(f"{fname} is not listed in the head's files (no checksum to trust it by)")
    try:
        blob = read_regular(Path(head_dir) / fname, count * KEY_BYTES)
    except OSError as exc:
        raise NoRecord(f"cannot read {fname}: {exc}") from exc
    if len(blob) != count * KEY_BYTES:
        raise NoRecord(f"{fname} holds {len(blob)} bytes, not {count} {unit} of {KEY_BYTES}")
    if verify and hashlib.sha256(blob).hexdigest() != files[fname]:
        raise NoRecord(f"{fname} checksum differs from the manifest: damaged or changed")
    words = np.frombuffer(blob, dtype=">u8").astype(np.uint64)
    if words.size > 1 and not bool(np.all(words[1:] > words[:-1])):
        raise NoRecord(f"{fname} is not sorted: damaged")
    return words


def key_of(digest: str | None) -> int | None:
    if not digest or len(digest) < 2 * KEY_BYTES:
        return None
    try:
        return int(digest[:2 * KEY_BYTES], 16)
    except ValueError:
        return None


def member_mask(keys, digests: Iterable[str | None]):
    """Boolean array: which of `digests` (None for a file never read) are among the sorted `keys`."""
    import numpy as np

    ks = [key_of(d) for d in digests]
    have = np.array([k is not None for k in ks], dtype=bool)
    q = np.array([k if k is not None else 0 for k in ks], dtype=np.uint64)
    if keys.size == 0 or q.size == 0:
        return np.zeros(q.size, dtype=bool)
    pos = np.searchsorted(keys, q).clip(0, keys.size - 1)
    return have & (keys[pos] == q)
