"""Fuzzing the metadata reader (lora/metadata.py; issue 22 items 4-6): random JSON and strings up to 1 MB, as a
safetensors header could carry them. Whatever the metadata: no exception, a known kind or none, every kept field
text and bounded (each and in all), report lines short. The ci profile runs 60 examples; ``scripts/fuzz_long.py``
runs 10 000.
"""
from __future__ import annotations

import json

from fuzzing import examples, no_hang
from hypothesis import given
from hypothesis import strategies as st
from lcm_lora_pack.lora import kinds
from lcm_lora_pack.lora.metadata import FIELD_LIMIT, TOTAL_LIMIT, bounded_fields, read_pack_metadata


def _read(metadata):
    return read_pack_metadata(metadata, kinds.is_accelerator, kinds.STYLE)


JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=50),
                    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=12), inner,
                                                                                max_size=8), max_leaves=40)
SOURCE = st.fixed_dictionaries({}, optional={"kind": JSON | st.sampled_from(["lcm", "LCM", "tcd", "bogus"]),
                                             "weight": JSON, "applied_weight": JSON, "name": JSON})
VALUE = (st.text(max_size=200) | JSON.map(json.dumps) | st.lists(SOURCE, max_size=6).map(json.dumps)
         | st.integers(0, 1_000_000).map(lambda n: "hypersd" * (n // 7)) | JSON)
METADATA = st.dictionaries(st.sampled_from(["lcmpack.kind", "lcmpack.sources", "modelspec.title", "ss_output_name"])
                           | st.text(max_size=20) | st.integers(), VALUE, max_size=6) | JSON


@examples(60)
@given(METADATA)
def test_fuzz_the_reader_never_raises_and_bounds_what_it_keeps(metadata):
    with no_hang(30):
        found = _read(metadata)
        kept, notes = bounded_fields(metadata)
    assert found.kind is None or found.kind == kinds.STYLE or kinds.is_accelerator(found.kind)
    assert found.sources_kind is None or kinds.is_accelerator(found.sources_kind)
    assert all(isinstance(k, str) and isinstance(v, str) and len(v) <= FIELD_LIMIT for k, v in kept.items())
    assert sum(len(v) for v in kept.values()) <= TOTAL_LIMIT
    assert all(len(note) < 400 for note in [*found.notes, *notes])
