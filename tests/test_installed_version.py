"""extras.installed_version: the one version lookup doctor, the cache keys and run identities share."""
from aiidetect.extras import installed_version, installed_versions


def test_an_installed_distribution_has_its_version_and_a_missing_one_none():
    import PIL

    assert installed_version("pillow") == PIL.__version__
    assert installed_versions(("pillow", "no-such-distribution-aiidetect")) == {
        "pillow": PIL.__version__, "no-such-distribution-aiidetect": None}
