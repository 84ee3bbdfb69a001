"""extras.installed_version: the one version lookup doctor, the cache keys and run identities share."""
from aiidetect.extras import installed_version, installed_versions


def test_an_installed_distribution_has_its_version_and_a_missing_one_none():
    import PIL

    assert installed_version("pillow") == PIL.__version__
    assert installed_versions(("pillow", "no-such-distribution-aiidetect")) == {
        "pillow": PIL.__version__, "no-such-distribution-aiidetect": None}


def test_the_decoder_versions_are_read_once_and_shared_by_the_caches_and_the_training_record(monkeypatch):
    """The result cache, the feature cache's keys and a head's training record each read them in their own way
    (the record afresh at each call): a head could name other versions than the features it was fitted on."""
    from importlib import metadata

    from aiidetect import extras, feature_cache, result_cache
    from aiidetect.train_record import record

    installed = {**installed_versions(extras.DECODERS), **extras.codec_versions()}
    monkeypatch.setattr(extras, "_decoder_versions", None)  # a new process
    first, tag = extras.decoder_versions(), feature_cache.decoders_tag()
    assert first == installed
    first["pillow"] = "mutated by a caller"
    monkeypatch.setattr(metadata, "version", lambda dist: "0.0.1")  # installed meanwhile: this process keeps its own
    assert extras.decoder_versions() == installed
    assert record(["ab" * 32], "x")[0]["decoders"] == result_cache.build_identity()["decoders"] \
        == extras.decoder_versions()
    assert feature_cache.decoders_tag() == tag


def test_the_key_names_the_pillow_this_process_runs_not_the_one_installed_since(monkeypatch):
    """A long-lived host that imported Pillow 13, then `pip install -U pillow` underneath it: its keys and run
    identities named the new version (read from the installed metadata) while it decoded with the old."""
    from importlib import metadata

    import PIL

    from aiidetect import extras, result_cache

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda dist: "0.0.1" if dist.lower() == "pillow" else real(dist))
    monkeypatch.setattr(extras, "_decoder_versions", None)
    assert extras.decoder_versions()["pillow"] == PIL.__version__ != "0.0.1"
    assert result_cache.build_identity()["decoders"]["pillow"] == PIL.__version__
    # A decoder not imported yet is what an import would load: the installed one.
    assert extras.loaded_version("numpy", "no_such_module_aiidetect") == real("numpy")


def test_the_codec_libraries_pillow_decodes_with_are_in_the_key(monkeypatch):
    """Two Pillow builds of one version can link another libjpeg-turbo (its IDCT may differ in the last bit):
    the key named Pillow's version alone, so results decoded by the other were served."""
    from PIL import features

    from aiidetect import extras, feature_cache, result_cache

    monkeypatch.setattr(extras, "_decoder_versions", None)
    key, tag = result_cache.build_identity(), feature_cache.decoders_tag()
    assert key["decoders"]["libjpeg"] == features.version_codec("jpg")
    assert key["decoders"]["libjpeg-turbo"] == features.version_feature("libjpeg_turbo")
    assert key["decoders"]["libwebp"] == features.version_module("webp")
    real = features.version_feature
    monkeypatch.setattr(features, "version_feature", lambda n: "0.0.1" if n == "libjpeg_turbo" else real(n))
    monkeypatch.setattr(extras, "_decoder_versions", None)  # a new process on the other build
    assert result_cache.build_identity() != key and feature_cache.decoders_tag() != tag


def test_the_decoder_versions_are_the_same_in_every_process_of_one_install(tmp_path):
    """The key must not move between runs on one install (every row would be a miss): a process that has
    decoded a HEIF and imported numpy before asking names the same versions as one that asks first."""
    import json
    import subprocess
    import sys

    from aiidetect import extras

    ask = "import json; from aiidetect.extras import decoder_versions; print(json.dumps(decoder_versions()))"
    first = ("import io, numpy, pillow_heif; from PIL import Image; pillow_heif.register_heif_opener(); "
             "b = io.BytesIO(); Image.new('RGB', (16, 16)).save(b, 'HEIF'); Image.open(b).load(); ")
    bare, warm = (json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                            check=True).stdout) for code in (ask, first + ask))
    assert bare == warm == extras.decoder_versions()
    assert bare["libjpeg"] and bare["pillow"]


def test_the_metadata_detectors_parsers_are_named_as_loaded_too(monkeypatch):
    """Its cache identity (its results' key) read the parsers' versions from the installed metadata as well:
    an exifread upgraded under a host that had imported the old one keyed the old one's readings as the new's."""
    from importlib import metadata

    import exifread

    from aiidetect.metadata.detector import MetadataDetector

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda dist: "0.0.1" if dist.lower() == "exifread" else real(dist))
    libs = MetadataDetector({}).cache_identity()["libs"]
    assert libs["exifread"] == exifread.__version__ != "0.0.1"
    assert libs["c2pa-python"] == real("c2pa-python") and libs["pillow-heif"] == real("pillow-heif")


def test_the_metadata_detectors_decoder_versions_do_not_depend_on_what_was_imported_before():
    """Its key read Pillow's and pillow-heif's versions from the installed metadata in a process that had not
    decoded yet, and from the loaded modules in a host's next scan: where the two differ (Pillow-SIMD names no
    "pillow" distribution; a --user install over the system's), one host's scans had two keys and two --db runs."""
    import json
    import subprocess
    import sys

    code = ("import json; from importlib import metadata; real = metadata.version; "
            "metadata.version = lambda d: '0.0.1' if d.lower() in ('pillow', 'pillow-heif') else real(d); "
            "from aiidetect.metadata.detector import MetadataDetector; "
            "first = MetadataDetector({}).cache_identity(); import PIL, pillow_heif; "
            "print(json.dumps([first, MetadataDetector({}).cache_identity()]))")
    first, then = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                            check=True).stdout)
    assert first == then, (first, then)
