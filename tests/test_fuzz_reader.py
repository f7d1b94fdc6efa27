"""Fuzzing the file reader (lora/io.py ``read_lora_file``) on mutated safetensors and pickle bytes (issue 18).

Whatever the bytes and the file suffix: a :class:`LoraFile` or a typed pack error (``LoraError``), never another
exception, never an unpickle (the tripwire of tests/fuzzing.py: a ``GLOBAL``/``REDUCE`` to a sentinel function,
and no ``pickle.find_class`` audit event at all), never a hang. Corpus: a valid kohya safetensors LoRA with
metadata, the same tensors saved by ``torch.save`` (zip and legacy formats), sentinel pickles (protocols 2 and
4, bare and inside a torch zip); mutations: byte flips and writes, truncation, insertion, a spliced sentinel
pickle, a rewritten safetensors header length, a mutated ``data.pkl`` re-zipped into a well-formed archive.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from fuzzing import examples, no_hang, sentinel_pickle, tripwire
from hypothesis import example, given
from hypothesis import strategies as st
from lcm_lora_pack.lora import io as lora_io
from lcm_lora_pack.lora.errors import LoraError
from lcm_lora_pack.lora.types import LoraFile
from safetensors.torch import save, save_file

pytestmark = [pytest.mark.timeout(900),
              pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")]

MODULES = ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
           "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k")
METADATA = {"modelspec.title": "LCM-LoRA", "ss_network_dim": "2"}


def lora_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for module, width in zip(MODULES, (8, 768), strict=True):
        tensors[f"{module}.lora_down.weight"] = torch.randn(2, width, generator=generator)
        tensors[f"{module}.lora_up.weight"] = torch.randn(8, 2, generator=generator)
        tensors[f"{module}.alpha"] = torch.tensor(1.0)
    return tensors


def _torch_bytes(obj, zip_format: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


def rezip(archive: bytes, pickle_bytes: bytes) -> bytes:
    """The torch zip ``archive`` with its ``data.pkl`` replaced (a well-formed zip around any pickle)."""
    source, out = zipfile.ZipFile(io.BytesIO(archive)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info, pickle_bytes if info.filename.endswith("/data.pkl") else source.read(info))
    return out.getvalue()


def _data_pkl(archive: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(archive))
    return source.read(next(n for n in source.namelist() if n.endswith("/data.pkl")))


TENSORS = lora_tensors()
TORCH_ZIP = _torch_bytes(lora_tensors(), zip_format=True)
CORPUS = {
    "safetensors": save(lora_tensors(), metadata=METADATA),
    "torch-zip": TORCH_ZIP,
    "torch-legacy": _torch_bytes(lora_tensors(), zip_format=False),
    "sentinel-p2": sentinel_pickle(2),
    "sentinel-p4": sentinel_pickle(4),
    "sentinel-in-zip": rezip(TORCH_ZIP, sentinel_pickle(2)),
}
SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin", ".pth", ".lora", "")

_byte = st.integers(0, 255)
_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), _byte),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("sentinel"), st.integers(0, 1 << 20), st.sampled_from([2, 4])),
    st.tuples(st.just("header-length"), st.sampled_from([0, 1, 7, 8, 127, 128, 1 << 31, (1 << 64) - 1])
              | st.integers(0, (1 << 64) - 1)),
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    """Apply byte-level ``mutations`` (positions taken modulo the current length)."""
    buffer = bytearray(data)
    for kind, *args in mutations:
        position = args[0] % (len(buffer) + 1) if kind != "header-length" else 0
        if kind == "flip" and position < len(buffer):
            buffer[position] ^= 1 << args[1]
        elif kind == "set" and position < len(buffer):
            buffer[position] = args[1]
        elif kind == "truncate":
            del buffer[position:]
        elif kind == "insert":
            buffer[position:position] = args[1]
        elif kind == "sentinel":
            buffer[position:position] = sentinel_pickle(args[1])
        elif kind == "header-length":
            buffer[:8] = struct.pack("<Q", args[0])
    return bytes(buffer)


def read_expecting_only_typed_errors(path: Path) -> LoraFile | LoraError:
    """``read_lora_file(path)`` under the hang guard and the tripwire; a non-pack exception propagates."""
    lora_io.clear_cache()
    with no_hang(), tripwire() as wire:
        try:
            result = lora_io.read_lora_file(path)
        except LoraError as error:
            result = error
    assert wire["detonated"] == 0, "a pickle payload ran: the reader unpickled a GLOBAL"
    assert not wire["find_class"], f"pickle looked up globals {wire['find_class'][:3]}"
    return result


@examples(ci=500)
@given(st.sampled_from(sorted(CORPUS)), st.sampled_from(SUFFIXES), st.lists(_mutation, max_size=4),
       st.booleans())
@example("sentinel-p2", ".pt", [], False)
@example("sentinel-p4", ".safetensors", [], False)
@example("sentinel-in-zip", ".ckpt", [], False)
@example("safetensors", ".safetensors", [("header-length", (1 << 64) - 1)], False)
def test_mutated_bytes_give_a_lora_or_a_typed_error(tmp_path_factory, base, suffix, mutations, in_pickle):
    data = CORPUS[base]
    if in_pickle and base == "torch-zip":  # mutate the pickle inside a well-formed archive
        data = rezip(data, mutate(_data_pkl(data), mutations))
    else:
        data = mutate(data, mutations)
    path = tmp_path_factory.mktemp("fuzz") / f"fuzz{suffix}"
    path.write_bytes(data)
    result = read_expecting_only_typed_errors(path)
    if base.startswith("sentinel"):
        assert isinstance(result, LoraError), "a sentinel pickle was accepted as a LoRA"


def _safetensors_with_first_byte(residue: int, extra: int) -> tuple[bytes, dict[str, str]]:
    """A valid LoRA safetensors file whose header length is ≡ ``residue`` (mod 256), padded via metadata.

    safetensors pads its header to a multiple of 8 bytes: the first byte is one of 32 values, 0x80 among them.
    """
    tensors = TENSORS
    for padding in range(extra, extra + 256, 8):  # +8 characters: +8 aligned header bytes
        metadata = METADATA | {"pad": "x" * padding}
        data = save(tensors, metadata=metadata)
        if data[0] == residue:
            return data, metadata
    raise AssertionError("no padding gives that header length")


@examples(ci=40)
@given(st.integers(0, 31).map(lambda r: 8 * r).filter(lambda r: r != 0x80), st.integers(0, 300))
def test_valid_safetensors_read_back_with_their_metadata(tmp_path_factory, residue, extra):
    data, metadata = _safetensors_with_first_byte(residue, extra)
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.safetensors"
    path.write_bytes(data)
    lora = read_expecting_only_typed_errors(path)
    assert isinstance(lora, LoraFile), lora
    assert lora.metadata == metadata and lora.kind == "lcm" and len(lora.modules) == len(MODULES)


def test_valid_safetensors_whose_first_byte_is_0x80_keep_their_metadata(tmp_path):
    data, metadata = _safetensors_with_first_byte(0x80, 0)
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(data)
    lora = read_expecting_only_typed_errors(path)
    assert isinstance(lora, LoraFile), lora
    assert lora.metadata == metadata and lora.kind == "lcm"


@pytest.mark.parametrize("content", ["null", "[1, 2]", '"x"', "3"])
def test_adapter_config_of_the_wrong_json_shape_is_a_typed_error(tmp_path, content):
    """Found by the fuzzer: an ``adapter_config.json`` holding a list/null raised TypeError in the reader."""
    tensors = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.randn(2, 8),
               "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.randn(8, 2)}
    save_file(tensors, str(tmp_path / "peft.safetensors"))
    (tmp_path / "adapter_config.json").write_text(content)
    lora_io.clear_cache()
    with pytest.raises(LoraError, match="adapter_config.json.*not a PEFT adapter config"):
        lora_io.read_lora_file(tmp_path / "peft.safetensors")


def test_corpus_is_what_it_claims():
    """The unmutated corpus: the LoRA reads in every container; the sentinel pickles really detonate."""
    import pickle

    for base in ("sentinel-p2", "sentinel-p4"):
        with tripwire() as wire:
            pickle.loads(CORPUS[base])
        assert wire["detonated"] == 1 and wire["find_class"]
    assert json.loads(CORPUS["safetensors"][8:8 + struct.unpack("<Q", CORPUS["safetensors"][:8])[0]])
