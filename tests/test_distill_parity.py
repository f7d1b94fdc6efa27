"""One training step of the pack's trainer equals the reference script's step (fp32, CPU).

The reference is re-implemented here from diffusers' ``examples/consistency_distillation/
train_lcm_distill_lora_sd_wds.py`` / ``train_lcm_distill_lora_sdxl_wds.py``: diffusers ``UNet2DConditionModel``
(teacher, a second full copy as in the script) and a PEFT-wrapped student on the *same* weights (converted with
ComfyUI's own ``comfy.utils.unet_to_diffusers`` map), DDPMScheduler's schedule, the script's DDIM solver,
guidance, boundary scalings and loss. The pack side is its ``Trainer.compute_loss`` on a real ComfyUI model
(``ModelPatcher`` over ComfyUI's ``UNetModel``). Same batch, noise, w, timesteps and LoRA weights (B made
nonzero so every gradient is informative). Tolerances: loss ≤ 1e-5 relative, each LoRA gradient ≤ 1e-4 relative.
"""
from __future__ import annotations

import logging

import pytest
import torch
from harness.diffusers_unet import diffusers_kwargs, ldm_to_diffusers_names
from lcm_lora_pack.devkit.host import prepare_import
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG, VEGA_UNET_CONFIG, build_unet_state_dict

prepare_import()

from lcm_lora_pack.devkit.distill_reference import reference_loss, reference_scheduler  # noqa: E402
from lcm_lora_pack.distill import comfy_bridge  # noqa: E402
from lcm_lora_pack.distill.config import DistillConfig  # noqa: E402
from lcm_lora_pack.distill.dataset import EncodedData  # noqa: E402
from lcm_lora_pack.distill.lora_layers import DEFAULT_TARGETS  # noqa: E402
from lcm_lora_pack.distill.recipe import draw_step  # noqa: E402
from lcm_lora_pack.distill.trainer import Trainer  # noqa: E402

# An SDXL-family UNet small enough for CPU: SDXL's conditioning (context 2048, ADM 2816 = pooled 1280 + 6×256
# time ids, linear projections, 64-channel heads) on two levels with a middle transformer.
MINI_SDXL_CONFIG = {**VEGA_UNET_CONFIG, "channel_mult": [1, 1], "num_res_blocks": [1, 1], "transformer_depth": [0, 1],
                    "transformer_depth_output": [0, 0, 1, 1], "transformer_depth_middle": 1}
MINI_SDXL_DIFFUSERS = dict(sample_size=8, in_channels=4, out_channels=4,
                           down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(320, 320),
                           layers_per_block=1, transformer_layers_per_block=(1, 1), cross_attention_dim=2048,
                           attention_head_dim=5, use_linear_projection=True, addition_embed_type="text_time",
                           addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
                           norm_num_groups=32)
LOG = logging.getLogger(__name__)
BATCH, RANK, ALPHA, RES = 2, 4, 8.0, 64
LOSS_TOLERANCE, GRAD_TOLERANCE = 1e-5, 1e-4


def comfy_patcher(sdxl: bool, prediction: str, sd: dict):
    """A real ComfyUI MODEL: ModelPatcher over BaseModel/SDXL with the given UNet weights (fp32, CPU)."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = MINI_SDXL_CONFIG if sdxl else SD15_UNET_CONFIG
    model_config = (comfy.supported_models.SDXL if sdxl else comfy.supported_models.SD15)(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    model_type = {"epsilon": comfy.model_base.ModelType.EPS,
                  "v_prediction": comfy.model_base.ModelType.V_PREDICTION}[prediction]
    model = (comfy.model_base.SDXL if sdxl else comfy.model_base.BaseModel)(model_config, model_type=model_type)
    model.diffusion_model.load_state_dict(sd, strict=True)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def diffusers_twin(sdxl: bool, sd: dict):
    from diffusers import UNet2DConditionModel

    unet_config = MINI_SDXL_CONFIG if sdxl else SD15_UNET_CONFIG
    unet = UNet2DConditionModel(**(MINI_SDXL_DIFFUSERS if sdxl else diffusers_kwargs(SD15_UNET_CONFIG)))
    to_diff = ldm_to_diffusers_names(unet_config)
    missing, unexpected = unet.load_state_dict({to_diff[k]: v for k, v in sd.items() if k in to_diff}, strict=False)
    assert not missing and not unexpected, (missing[:4], unexpected[:4])
    return unet


def _inputs(sdxl: bool):
    generator = torch.Generator().manual_seed(5)
    width = 2048 if sdxl else 768
    latents = torch.randn((BATCH, 4, RES // 8, RES // 8), generator=generator)
    embeds = torch.randn((BATCH, 77, width), generator=generator)
    uncond = torch.zeros((1, 77, width)) if sdxl else torch.randn((1, 77, width), generator=generator)
    pooled = torch.randn((BATCH, 1280), generator=generator) if sdxl else None
    draw = draw_step(generator, BATCH, (4, RES // 8, RES // 8), 50, 3.0, 15.0)
    return latents, embeds, uncond, pooled, draw


def _pack_step(patcher, sdxl, loss_type, latents, embeds, uncond, pooled, draw, sizes, crops):
    info = comfy_bridge.inspect_model(patcher)
    patcher = comfy_bridge.training_model(patcher)  # the LoRA as weight functions on a clone, as the node trains
    device = comfy_bridge.load_for_training(patcher)
    y = uncond_y = None
    if sdxl:
        y = comfy_bridge.sdxl_adm(patcher, pooled, sizes, crops, RES)
        uncond_y = comfy_bridge.sdxl_adm(patcher, torch.zeros_like(pooled), sizes, crops, RES)
    data = EncodedData(latents=latents, context=embeds, uncond_context=uncond, y=y, uncond_y=uncond_y,
                       fingerprint="parity")
    config = DistillConfig(resolution=RES, train_batch_size=BATCH, lora_rank=RANK, lora_alpha=ALPHA, loss_type=loss_type).resolved(
        info.family)
    trainer = Trainer(info, data, config, comfy_bridge.UNetRunner(patcher, "no", device), None)
    generator = torch.Generator().manual_seed(11)
    for adapter in trainer.lora.adapters.values():
        adapter.lora_up.weight.data.normal_(0.0, 0.05, generator=generator)
    loss = trainer.compute_loss({"latents": latents, "context": embeds, "y": y, "uncond_y": uncond_y, "draw": draw})
    loss.backward()
    return trainer.lora, loss.detach(), info.alphas_cumprod


def _peft_student(unet, pack_lora):
    from peft import LoraConfig, get_peft_model

    student = get_peft_model(unet, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(DEFAULT_TARGETS)))
    params = dict(student.named_parameters())
    for key, adapter in pack_lora.adapters.items():
        name = pack_lora.diffusers_names[key]
        params[f"base_model.model.{name}.lora_A.default.weight"].data.copy_(adapter.lora_down.weight)
        params[f"base_model.model.{name}.lora_B.default.weight"].data.copy_(adapter.lora_up.weight)
    lora_params = [n for n in params if "lora_" in n]
    assert len(lora_params) == 2 * len(pack_lora.adapters), "PEFT and the pack target different modules"
    return student, params


def unet_weights(sdxl: bool) -> dict:
    """Seeded UNet weights with the output layer scaled ×50: a random UNet predicts ε̂/v̂ of std ≈ 0.02, a
    trained one ≈ 1; at unit scale f(z) − target is not a cancellation of large x̂₀ terms."""
    sd = build_unet_state_dict(MINI_SDXL_CONFIG if sdxl else SD15_UNET_CONFIG, seed=3)
    for key in ("out.2.weight", "out.2.bias"):
        sd[key] = sd[key] * 50.0
    return sd


@pytest.mark.parametrize(("sdxl", "prediction", "loss_type"), [
    (False, "epsilon", "huber"), (False, "v_prediction", "l2"), (True, "epsilon", "l2"), (True, "v_prediction", "huber"),
], ids=["sd15-eps-huber", "sd15-v-l2", "sdxl-family-eps-l2", "sdxl-family-v-huber"])
def test_one_step_equals_reference(sdxl, prediction, loss_type):
    sd = unet_weights(sdxl)
    latents, embeds, uncond, pooled, draw = _inputs(sdxl)
    sizes, crops = [(96, 80), (64, 64)], [(16, 8), (0, 0)]
    pack_lora, pack_loss, model_acp = _pack_step(comfy_patcher(sdxl, prediction, sd), sdxl, loss_type, latents, embeds, uncond, pooled,
                                      draw, sizes, crops)

    teacher = diffusers_twin(sdxl, sd).eval()
    student, params = _peft_student(diffusers_twin(sdxl, sd), pack_lora)
    added = uncond_added = None
    if sdxl:
        time_ids = torch.tensor([[h, w, top, left, RES, RES] for (h, w), (top, left) in zip(sizes, crops, strict=True)],
                                dtype=torch.float32)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        uncond_added = {"text_embeds": torch.zeros_like(pooled), "time_ids": time_ids}
    ref_loss = reference_loss(student, teacher, latents, embeds, uncond.expand(BATCH, -1, -1), added, uncond_added,
                              draw, reference_scheduler(prediction, model_acp), loss_type, huber_c=0.001)
    ref_loss.backward()

    assert ref_loss.item() > 1e-4, "degenerate step: the loss carries no signal"
    assert abs(pack_loss.item() - ref_loss.item()) <= LOSS_TOLERANCE * abs(ref_loss.item()), (pack_loss, ref_loss)
    errors, squared_diff, squared_ref = [], 0.0, 0.0
    for key, adapter in pack_lora.adapters.items():
        name = pack_lora.diffusers_names[key]
        for ours, part in ((adapter.lora_down.weight.grad, "lora_A"), (adapter.lora_up.weight.grad, "lora_B")):
            theirs = params[f"base_model.model.{name}.{part}.default.weight"].grad
            assert theirs is not None and theirs.norm() > 0, f"{name}.{part}: no reference gradient"
            errors.append((((ours - theirs).norm() / theirs.norm()).item(), f"{name}.{part}"))
            squared_diff += (ours - theirs).square().sum().item()
            squared_ref += theirs.square().sum().item()
    overall = (squared_diff / squared_ref) ** 0.5
    LOG.info("loss %.8g vs %.8g; LoRA gradients: all %.3g, worst %s", pack_loss, ref_loss, overall, max(errors))
    assert overall <= GRAD_TOLERANCE, overall
    if loss_type == "l2":
        assert max(errors)[0] <= GRAD_TOLERANCE, max(errors)
    else:
        # The pseudo-Huber gradient d/√(d² + c²) multiplies the fp32 rounding of d (≈1e-7) by up to 1/c = 1000, so
        # per tensor fp32 itself limits agreement to ~1e-4; the relative error of the whole gradient is asserted.
        assert max(errors)[0] <= 10 * GRAD_TOLERANCE, max(errors)


@pytest.mark.parametrize("base", [
    torch.nn.Linear(12, 10), torch.nn.Conv2d(6, 8, 3, stride=2, padding=1), torch.nn.Conv2d(6, 8, 1),
    torch.nn.Conv2d(6, 8, 3, padding=2, dilation=2)], ids=["linear", "conv3x3-s2", "conv1x1", "conv3x3-dilated"])
def test_weight_function_equals_the_peft_layer(base):
    """The trainer's weight function (W ↦ W + (α/r)·B·A, ComfyUI's form) computes PEFT's layer W(x) + (α/r)·B(A(x))
    and gives A and B the same gradients."""
    import torch.nn.functional as F
    from lcm_lora_pack.distill.lora_layers import LoraSet, Target

    generator = torch.Generator().manual_seed(2)
    lora = LoraSet({"m": Target("m", base)}, rank=3, alpha=5.0)
    adapter = lora.adapters["lora_unet_m"]
    adapter.lora_up.weight.data.normal_(0.0, 0.3, generator=generator)
    x = torch.randn((2, 12) if isinstance(base, torch.nn.Linear) else (2, 6, 9, 9), generator=generator)
    weight = lora.weight_functions()["m"](base.weight.detach().clone())
    if isinstance(base, torch.nn.Linear):
        ours = F.linear(x, weight, base.bias)
    else:
        ours = F.conv2d(x, weight, base.bias, base.stride, base.padding, base.dilation)
    peft = base(x) + adapter(x)
    torch.testing.assert_close(ours, peft, rtol=1e-5, atol=1e-6)
    grads = [torch.autograd.grad(out.square().sum(), [adapter.lora_down.weight, adapter.lora_up.weight])
             for out in (ours, peft)]
    for a, b in zip(*grads, strict=True):  # fp32 summation order differs: the whole tensor's relative error
        assert ((a - b).norm() / b.norm()).item() <= 1e-5
    lora.enabled = False
    assert torch.equal(lora.weight_functions()["m"](base.weight.detach()), base.weight.detach())
