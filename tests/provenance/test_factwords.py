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
