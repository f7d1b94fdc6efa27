"""Fuzzing kind detection by name and metadata (accelerators/match.py, lora/detect.py; issue 22 item 6):
random strings up to 1 MB, plain and built from the tokens the name rules look for. Profiles: tests/fuzzing.py
(``HYPOTHESIS_PROFILE=long`` for ≥ 10 000 examples; scripts/fuzz_long.py).

Properties: every text is classified (a registry kind or none) within the hang guard, the answer depends only on the
text's first ``accelerators.FIELD_LIMIT`` characters (the bound), and metadata of any size is classified the same way.
"""
from __future__ import annotations

import pytest
from fuzzing import examples, no_hang
from hypothesis import given
from hypothesis import strategies as st
from lcm_lora_pack import accelerators
from lcm_lora_pack.lora import detect, kinds

pytestmark = pytest.mark.timeout(600)
MEGABYTE = 1_000_000

WORDS = st.sampled_from(["hyper", "sd", "SD", "xl", "15", "1", "8", "12", "step", "steps", "cfg", "pcm", "lcm",
                         "tcd", "lightning", "dmd2", "flash", "animate", "diff", "wan", "2.2", "qwen", "flux",
                         "-", "_", " ", ".", "é", "\x00", "😀"])
TEXTS = st.one_of(st.text(max_size=300),
                  st.builds(lambda words, repeat: "".join(words) * repeat, st.lists(WORDS, max_size=40),
                            st.integers(1, MEGABYTE // 40)))


@examples(ci=30)
@given(TEXTS)
def test_fuzz_detection_is_bounded_and_answers_a_known_kind(text):
    with no_hang(10):
        text = text[:MEGABYTE]
        kind = kinds.kind_from_text(text)
        assert kind is None or kind in accelerators.all_kinds()
        assert kind == kinds.kind_from_text(text[:accelerators.FIELD_LIMIT])
        titled = detect.kind_from_metadata({"modelspec.title": text}, loadable_only=False)
        assert (titled[0] if titled else None) == kind
        found = detect.kind_from_metadata({key: text for key in detect.KIND_METADATA_KEYS})
        assert found is None or found[0] in accelerators.all_kinds()


