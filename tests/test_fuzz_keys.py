"""Fuzzing key normalisation and format detection (lora/formats.py, lora/resolve.py, lora/detect.py) on generated
key sets (issue 18). Profiles: tests/fuzzing.py (``HYPOTHESIS_PROFILE=long`` for ≥ 10 000 examples each).

Properties: (1) every spelling of one UNet / text-encoder layer (kohya, PEFT with each prefix, legacy diffusers)
normalises to the same kohya spelling core's key map knows; (2) a well-formed file in one layout is detected as
that layout with every module and its alpha; (3) any key set at all -- odd names, shapes, dtypes, NaN, metadata
-- is parsed, classified and matched or refused with a typed pack error, nothing else.
"""
from __future__ import annotations

import json
import re

import pytest
import torch
from fuzzing import examples, no_hang
from hypothesis import given
from hypothesis import strategies as st
from lcm_lora_pack.lora import detect, formats, resolve
from lcm_lora_pack.lora.errors import LoraError, LoraTensorError
from lcm_lora_pack.lora.types import LoraFile

pytestmark = pytest.mark.timeout(600)

# --- layer names (diffusers spelling) ------------------------------------------------------------------

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
_index = st.integers(0, 11)
_attention = st.builds("{}.{}.attentions.{}.transformer_blocks.{}.attn{}.{}".format,
                       st.sampled_from(["down_blocks", "up_blocks"]), _index, _index, _index,
                       st.sampled_from([1, 2]), st.sampled_from(ATTENTION_PROJECTIONS))
_mid_attention = st.builds("mid_block.attentions.0.transformer_blocks.{}.attn{}.{}".format, _index,
                           st.sampled_from([1, 2]), st.sampled_from(ATTENTION_PROJECTIONS))
_other_unet = st.one_of(
    st.builds("{}.{}.resnets.{}.{}".format, st.sampled_from(["down_blocks", "up_blocks"]), _index, _index,
              st.sampled_from(["conv1", "conv2", "time_emb_proj", "conv_shortcut"])),
    st.builds("{}.{}.attentions.{}.{}".format, st.sampled_from(["down_blocks", "up_blocks"]), _index, _index,
              st.sampled_from(["proj_in", "proj_out"])),
    st.sampled_from(["conv_in", "conv_out", "time_embedding.linear_1", "mid_block.resnets.0.conv1"]))
UNET_LAYERS = st.one_of(_attention, _mid_attention, _other_unet)
TEXT_LAYERS = st.builds("text_model.encoder.layers.{}.{}".format, _index,
                        st.sampled_from(["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                         "self_attn.out_proj", "mlp.fc1", "mlp.fc2"]))


def _legacy(layer: str) -> str | None:
    """The legacy attention-processor spelling (``….attn1.processor.to_q``) of an attention projection."""
    for projection in ATTENTION_PROJECTIONS:
        if layer.endswith(f".{projection}") and ".attn" in layer:
            return layer[: -len(projection) - 1] + ".processor." + projection.removesuffix(".0")
    return None


def unet_spellings(layer: str) -> dict[str, str]:
    """``{format: module name}`` of one diffusers UNet layer in every layout the pack reads."""
    names = {"kohya": "lora_unet_" + layer.replace(".", "_"), "peft-unet": "unet." + layer,
             "peft-base": "base_model.model." + layer, "peft-unet-base": "unet.base_model.model." + layer,
             "peft-bare": layer}
    if _legacy(layer):
        names["diffusers-legacy"] = "unet." + _legacy(layer)
    return names


@examples(ci=150)
@given(UNET_LAYERS)
def test_every_spelling_of_a_unet_layer_normalises_to_its_kohya_name(layer):
    kohya = "lora_unet_" + layer.replace(".", "_")
    for fmt, module in unet_spellings(layer).items():
        assert kohya in resolve.module_spellings(module), (fmt, module)
        part, inner = detect.module_part(module)
        assert part == "unet", (fmt, module)
        if fmt != "diffusers-legacy":
            assert inner == layer.replace(".", "_"), (fmt, module)


@examples(ci=60)
@given(TEXT_LAYERS, st.sampled_from([("text_encoder.", "lora_te_", "te"), ("text_encoder_2.", "lora_te2_", "te2")]))
def test_every_spelling_of_a_text_encoder_layer_normalises_to_its_kohya_name(layer, component):
    peft_prefix, kohya_prefix, part = component
    kohya = kohya_prefix + layer.replace(".", "_")
    for module in (peft_prefix + layer, kohya):
        assert kohya in resolve.module_spellings(module), module
        assert detect.module_part(module) == (part, layer.replace(".", "_")), module


# --- well-formed files in one layout ---------------------------------------------------------------------

LAYOUTS = {  # format -> (up key, down key) templates, module name spelling
    "kohya": ("{}.lora_up.weight", "{}.lora_down.weight", "kohya"),
    "peft": ("{}.lora_B.weight", "{}.lora_A.weight", "peft-unet"),
    "diffusers-legacy": ("{}_lora.up.weight", "{}_lora.down.weight", "diffusers-legacy"),
}


@st.composite
def well_formed_files(draw):
    """``(tensors, metadata, fmt, {module: (rank, expected alpha)}, context width)`` of one layout."""
    fmt = draw(st.sampled_from(sorted(LAYOUTS)))
    up_key, down_key, spelling = LAYOUTS[fmt]
    layers = draw(st.lists(_attention, min_size=1, max_size=6, unique=True))
    if fmt == "diffusers-legacy":
        layers = [layer for layer in layers if _legacy(layer)]
    context = draw(st.sampled_from([768, 1024, 2048]))
    peft_alpha = draw(st.one_of(st.none(), st.integers(1, 128)))
    tensors, expected = {}, {}
    for layer in layers:
        module = unet_spellings(layer)[spelling]
        rank = draw(st.integers(1, 4))
        width = context if layer.rsplit(".", 2)[-2] == "attn2" and layer.endswith(("to_k", "to_v")) else 8
        tensors[up_key.format(module)] = torch.randn(8, rank)
        tensors[down_key.format(module)] = torch.randn(rank, width)
        alpha = rank
        if fmt != "peft" and draw(st.booleans()):
            alpha = draw(st.floats(0.5, 256, allow_nan=False))
            tensors[f"{module}.alpha"] = torch.tensor(alpha)
        elif fmt == "peft" and peft_alpha is not None:
            alpha = peft_alpha
        expected[module] = (rank, float(alpha))
    metadata = {}
    if fmt == "peft" and peft_alpha is not None:
        metadata[formats.DIFFUSERS_METADATA_KEY] = json.dumps({"unet.r": 4, "unet.lora_alpha": peft_alpha})
    return tensors, metadata, fmt, expected, context


@examples(ci=120)
@given(well_formed_files())
def test_a_well_formed_file_is_detected_with_every_module_and_alpha(case):
    tensors, metadata, fmt, expected, context = case
    parsed = formats.parse_modules(tensors, metadata, "fuzz.safetensors")
    assert parsed.format == fmt
    assert set(parsed.modules) == set(expected)
    for module, (rank, alpha) in expected.items():
        assert parsed.modules[module].rank == rank
        assert parsed.modules[module].alpha == pytest.approx(alpha, rel=1e-6)
    lora = LoraFile(name="fuzz", sha256="", format=parsed.format, family="unknown", kind="style",
                    modules=parsed.modules, extra=parsed.extra, metadata=metadata)
    family, _ = detect.detect_family(lora)
    has_context = any(re.search(r"attn2[._](processor[._])?to_[kv]$", module) for module in expected)
    if not has_context:
        assert family == "unknown"
    elif context == 2048:
        assert family in ("sdxl", "ssd-1b", "vega")
    else:
        assert family == detect.CONTEXT_FAMILY[context]


# --- anything at all -------------------------------------------------------------------------------------

SUFFIXES = tuple(s for up, down, _ in formats.LORA_SUFFIXES for s in (up, down)) + (
    ".alpha", ".lora_A.default.weight", ".lora_B.default.weight", ".hada_w1_a", ".hada_w2_b", ".lokr_w1",
    ".dora_scale", ".lora_mid.weight", ".diff", ".lora_magnitude_vector", ".weight", "")
PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "unet.", "text_encoder.", "text_encoder_2.",
            "base_model.model.", "unet.base_model.model.", "diffusion_model.", "")
_inner = st.one_of(UNET_LAYERS, UNET_LAYERS.map(lambda s: s.replace(".", "_")), TEXT_LAYERS,
                   st.text(st.characters(codec="utf-8"), max_size=40))
_key = st.builds(lambda p, i, s: p + i + s, st.sampled_from(PREFIXES), _inner, st.sampled_from(SUFFIXES))
_dims = st.lists(st.integers(0, 5), max_size=4)


@st.composite
def _tensor(draw):
    shape = draw(_dims)
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool]))
    tensor = torch.randn(shape).to(dtype) if dtype.is_floating_point else torch.ones(shape, dtype=dtype)
    if dtype.is_floating_point and tensor.numel() and draw(st.integers(0, 9)) == 0:
        tensor.view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e30]))
    return tensor


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=15), inner,
                                                                                 max_size=4), max_leaves=8)
_peft_config = st.dictionaries(st.sampled_from(["unet.r", "unet.lora_alpha", "lora_alpha", "unet.alpha_pattern",
                                                "alpha_pattern", "unet.use_rslora", "use_rslora", "r"]),
                               _json, max_size=4)
_metadata_value = st.one_of(_peft_config.map(json.dumps), _json.map(json.dumps), st.text(max_size=30))
METADATA = st.dictionaries(st.sampled_from([formats.DIFFUSERS_METADATA_KEY, "modelspec.title", "ss_output_name",
                                            "name", "other"]), _metadata_value, max_size=3)


def parse_classify_match(tensors: dict, metadata: dict, config: dict | None) -> LoraFile:
    """What the reader does after reading the bytes: parse, detect family/kind, match against a key map."""
    parsed = formats.parse_modules(tensors, metadata, "fuzz.safetensors", adapter_config_loader=lambda: config)
    lora = LoraFile(name="fuzz", sha256="", format=parsed.format, family="unknown", kind="style",
                    modules=parsed.modules, extra=parsed.extra, metadata=metadata)
    lora.family, _ = detect.detect_family(lora)
    lora.kind, _ = detect.detect_kind(lora)
    key_map = {spelling: f"diffusion_model.{spelling}.weight" for name in resolve.module_names(lora)
               for spelling in resolve.module_spellings(name)[-1:]}
    resolve.match_modules(lora, key_map, {target: torch.Size([8, 8]) for target in key_map.values()})
    return lora


@examples(ci=100)
@given(st.dictionaries(_key, _tensor(), max_size=8), METADATA, st.one_of(st.none(), _peft_config))
def test_any_key_set_is_parsed_or_refused_with_a_typed_error(tensors, metadata, config):
    with no_hang():
        try:
            parse_classify_match(tensors, metadata, config)
        except LoraError:
            pass


@examples(ci=30)
@given(st.sampled_from(sorted(LAYOUTS)), st.lists(st.integers(0, 3), min_size=1, max_size=4))
def test_rank_zero_modules_are_refused_at_read_time(fmt, ranks):
    up_key, down_key, spelling = LAYOUTS[fmt]
    tensors = {}
    for index, rank in enumerate(ranks):
        module = unet_spellings(f"down_blocks.0.attentions.0.transformer_blocks.{index}.attn1.to_q")[spelling]
        tensors[up_key.format(module)] = torch.randn(8, rank)
        tensors[down_key.format(module)] = torch.randn(rank, 8)
    try:
        parsed = formats.parse_modules(tensors, {}, "fuzz.safetensors")
    except LoraTensorError:
        assert 0 in ranks
        return
    assert all(module.rank >= 1 for module in parsed.modules.values())


@pytest.mark.parametrize("raw", ["null", "[1, 2]", '"text"', '{"unet.lora_alpha": "eight"}', '{"lora_alpha": [8]}',
                                 '{"lora_alpha": 8, "alpha_pattern": {"(": 4}}',
                                 '{"lora_alpha": 8, "alpha_pattern": {"to_q": "x"}}',
                                 '{"lora_alpha": 8, "alpha_pattern": [1]}', '{"lora_alpha": 1e999}',
                                 f'{{"lora_alpha": {10**400}}}', f'{{"lora_alpha": 8, "alpha_pattern": {{"to_q": {10**400}}}}}'])
def test_malformed_peft_metadata_is_a_typed_error(raw):
    """Found by the fuzzer: JSON of the wrong shape in ``lora_adapter_metadata`` raised AttributeError/ValueError."""
    tensors = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.randn(2, 8),
               "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.randn(8, 2)}
    with pytest.raises(LoraError, match="lora_adapter_metadata|PEFT config|alpha"):
        formats.parse_modules(tensors, {formats.DIFFUSERS_METADATA_KEY: raw}, "fuzz.safetensors")


@pytest.mark.parametrize("shape", [(0,), (3,), (2, 2)])
def test_an_alpha_tensor_that_is_not_one_number_is_a_typed_error(shape):
    """Found by the fuzzer: an empty ``.alpha`` tensor raised IndexError (and a 3-element one used its first)."""
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {f"{module}.lora_up.weight": torch.randn(8, 2), f"{module}.lora_down.weight": torch.randn(2, 8),
               f"{module}.alpha": torch.ones(shape)}
    with pytest.raises(LoraTensorError, match="alpha tensor of shape"):
        formats.parse_modules(tensors, {}, "fuzz.safetensors")
