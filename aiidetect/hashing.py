"""SHA-256 of a file's bytes: the one helper every manifest, bundle, export
sidecar and weights identity uses, so a digest written by one is checked the
same way by the others."""
from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20  # bounded memory whatever the file size


def sha256_file(path: str | Path) -> str:
    """Hex digest of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
