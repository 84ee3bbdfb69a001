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

    installed = installed_versions(extras.DECODERS)
    monkeypatch.setattr(extras, "_decoder_versions", None)  # a new process
    first, tag = extras.decoder_versions(), feature_cache.decoders_tag()
    assert first == installed
    first["pillow"] = "mutated by a caller"
    monkeypatch.setattr(metadata, "version", lambda dist: "0.0.1")  # installed meanwhile: this process keeps its own
    assert extras.decoder_versions() == installed
    assert record(["ab" * 32], "x")[0]["decoders"] == result_cache.build_identity()["decoders"] \
        == extras.decoder_versions()
    assert feature_cache.decoders_tag() == tag
