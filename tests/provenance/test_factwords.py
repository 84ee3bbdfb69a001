"""The words `meta`'s table and the report's cards give the C2PA status and the watermark check."""
from __future__ import annotations

from aiidetect.provenance.factwords import c2pa_line, watermark_words


def test_a_manifest_that_names_no_signer_or_generator_says_so_in_words():
    # C2paFacts.to_dict leaves out a signer or claim generator the manifest does not give: the table printed
    # "claim generator None; signer None", the Python values the line was written to replace.
    line = c2pa_line({"status": "unverified", "valid": False})
    assert line == "C2PA: claim generator not named; signer not named; signature NOT verified"
    assert "None" not in c2pa_line({"status": "valid", "valid": True, "signer": "", "claim_generator": None})


def test_an_agreement_just_under_the_threshold_does_not_read_as_the_threshold():
    # 115 of the 136 bits agree (84.6%): "85% of bits agree (a match needs 85%)" beside "none found".
    below = {"pattern": "StableDiffusionV1", "agreement": round(115 / 136, 4), "threshold": 0.85}
    said = watermark_words({"checked": True, "results": [below]})
    assert said == ("checked, none found (absence proves nothing): 'StableDiffusionV1' 84.6% of bits agree "
                    "(a match needs 85%)")
    above = {**below, "agreement": round(116 / 136, 4)}
    assert watermark_words({"checked": True, "results": [above]}).startswith("checked, FOUND: 'StableDiffusionV1' "
                                                                             "85.3% of bits agree")


def test_an_image_too_small_for_the_watermark_is_not_said_to_be_checked():
    # Under 256x256 pixels in total the decoder measures nothing (watermark.detect returns no result), yet
    # `--watermark always` recorded {"checked": true, "results": []}: "checked, none found" in `meta` and the card.
    import io

    from PIL import Image

    from aiidetect.provenance import analyze

    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 40)).save(buf, "PNG")
    wm = analyze(buf.getvalue(), options={"watermark": "always"}).facts["watermark"]
    assert wm["checked"] is False
    assert watermark_words(wm) == "not checked (300x200 is too small to carry the watermark: under 65,536 pixels)"
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (10, 200, 40)).save(buf, "PNG")
    assert analyze(buf.getvalue(), options={"watermark": "always"}).facts["watermark"]["checked"] is True


def test_the_c2pa_line_says_when_other_manifest_stores_were_not_read_and_that_a_valid_one_is_a_claim():
    # `meta`'s table read "manifest INVALID (assertion.dataHash.mismatch)" for a file of two stores, as if the
    # first were the file's whole account; and "signature and content hash valid" for a self-signed one.
    two = c2pa_line({"status": "invalid", "valid": False, "failures": ["assertion.dataHash.mismatch"], "stores": 2})
    assert two.endswith("manifest INVALID (assertion.dataHash.mismatch); 2 manifest stores in the file, only one "
                        "read"), two
    assert "manifest stores" not in c2pa_line({"status": "invalid", "valid": False, "stores": "2"})
    assert "counted as a claim" in c2pa_line({"status": "valid", "valid": True})
    trusted = c2pa_line({"status": "valid", "valid": True, "trusted": True})
    assert "vouched for by a trust list" in trusted and "counted as a claim" not in trusted
