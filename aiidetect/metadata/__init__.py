"""The ``metadata`` detector family: provenance evidence (EXIF, XMP, generator
chunks, C2PA, watermarks) turned into a detector result. The parsers live in
``aiidetect.provenance``; this package holds the detector. Nothing here
imports torch."""
