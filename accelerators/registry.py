"""The one list of accelerator records (pure data). Order is detection order: the first record whose name rule
matches wins (so the specific names come first: Hyper-SD3 before Hyper-SD, "pcm_…_lcmlike" before LCM,
AnimateDiff-Lightning / Qwen-Image-Lightning / Wan Lightning before SDXL-Lightning).

Adding a kind is adding one :class:`Accelerator` here: detection (``lora/detect.py``), the presets of KSampler (LCM)
(``samplers/presets.py``), the loader's kind combo, the node tooltips, the help pages and docs/accelerators.md's
table (``scripts/build_accelerator_docs.py``) all read this list.
"""
from __future__ import annotations

from .match import Tokens, rules, steps_in_tokens
from .records import Accelerator, ContentSignature, Download, Recipe, Source, kind_fits_family

READ = "2026-12"  # when the team read the cards (docs/accelerators.md; team notes §8, §17)
HYPER_SD = Source("https://huggingface.co/ByteDance/Hyper-SD", READ, "card: LoRAs, schedulers, cfg, scales")
BASE_BETAS = "SD1.5/SDXL scheduler config (scaled_linear 0.00085-0.012, set_alpha_to_one False, clip_sample False)"

LCM_SCRIPT = ContentSignature(
    rank=64,
    groups={"attention": r"(attn[12]_(processor_)?to_(q|k|v|out_0)|to_out_0)$", "feed-forward": r"ff_net_(0_proj|2)$",
            "resnet": r"(resnets_\d+_conv[12]|in_layers_2|out_layers_3)$",
            "time-embedding": r"(time_emb_proj|emb_layers_1)$"},
    description="rank 64 with one alpha on attention, feed-forward, resnet and time-embedding layers of the UNet "
                "only, as diffusers' LCM-LoRA script writes it")

_SD3 = Accelerator(
    "hyper-sd3", "Hyper-SD3", ("sd3",), "lora", rules("hypersd3"),
    ("Hyper-SD3-4steps-CFG-lora.safetensors", "Hyper-SD3-8steps-CFG-lora.safetensors",
     "Hyper-SD3-16steps-CFG-lora.safetensors"),
    tuple(Recipe(f"hyper-sd3-{steps}step", "euler", "trailing", "discrete", cfg, "ByteDance/Hyper-SD card, SD3 CFG "
                 f"LoRAs: StableDiffusion3Pipeline's FlowMatchEulerDiscreteScheduler (shift 3), {steps} steps, "
                 f"guidance_scale {cfg:g}, LoRA scale 0.125",
                 steps=steps, strength=0.125, when=rules(f"steps={steps}")[0], runs_on="flow",
                 scheduler="euler / normal",
                 note="core's 'normal' scheduler is the pipeline's timesteps linspace(1000, 1000·σ_min, n); 'simple' "
                      "is another schedule (tests/test_accel_family_parity.py)")
          for steps, cfg in ((4, 3.0), (8, 5.0), (16, 7.0))),
    "Hyper-SD3 LoRA: load it at strength 0.125 and sample with core's KSampler, euler, scheduler normal, the "
    "file's step count, cfg 3/5/7 at 4/8/16 steps.",
    (HYPER_SD,), (Download("ByteDance/Hyper-SD", "Hyper-SD3-8steps-CFG-lora.safetensors"),),
    notes=("strength trap: the card uses LoRA scale 0.125, not 1.0",))

_HYPER_FLUX = Accelerator(
    "hyper-flux", "Hyper-FLUX", ("flux",), "lora", rules("hyperflux"),
    ("Hyper-FLUX.1-dev-8steps-lora.safetensors", "Hyper-FLUX.1-dev-16steps-lora.safetensors"),
    (Recipe("hyper-flux", "euler", "trailing", "discrete", 1.0, "ByteDance/Hyper-SD card, FLUX.1-dev LoRAs: the "
            "pipeline's FlowMatchEuler, the file's step count, guidance_scale 3.5, LoRA scale 0.125",
            guidance=3.5, strength=0.125, runs_on="flow", scheduler="euler / simple"),),
    "Hyper-FLUX LoRA: load it at strength 0.125 and sample with core's KSampler (euler, the file's step count, "
    "cfg 1) and FluxGuidance 3.5.",
    (HYPER_SD,), (Download("ByteDance/Hyper-SD", "Hyper-FLUX.1-dev-8steps-lora.safetensors"),),
    notes=("strength trap: the card uses LoRA scale 0.125, not 1.0",))

_HYPER_CFG = Accelerator(
    "hyper-sd-cfg", "Hyper-SD CFG", ("sd1.x", "sdxl"), "lora", rules("hypersd cfg"),
    ("Hyper-SD15-8steps-CFG-lora.safetensors", "Hyper-SDXL-12steps-CFG-lora.safetensors"),
    (Recipe("hyper-sd-cfg", "ddim", "trailing", "discrete", 5.0,
            "ByteDance/Hyper-SD CFG-preserved LoRAs (8/12 steps): DDIMScheduler trailing at the file's step count; "
            "cfg 5 from the card's 5-8 range", cfg_range=(5.0, 8.0),
            note="the cfg range is from the team's notes of the card; live clients (krita-ai-diffusion) run these "
                 "LoRAs at cfg 1.8 for speed, below the card's range"),),
    "Hyper-SD CFG LoRA: KSampler (LCM) preset auto samples it with DDIM trailing at the file's step count, cfg 5 "
    "(negative prompt works).",
    (HYPER_SD,), (Download("ByteDance/Hyper-SD", "Hyper-SDXL-12steps-CFG-lora.safetensors"),))

_HYPER_UNIFIED = Accelerator(
    "hyper-sd-unified", "Hyper-SD unified (1-step)", ("sd1.x", "sdxl"), "lora", rules("hypersd steps=1"),
    ("Hyper-SD15-1step-lora.safetensors", "Hyper-SDXL-1step-lora.safetensors"),
    (Recipe("hyper-sd-unified", "tcd", "lcm-grid", "tcd", 1.0,
            "ByteDance/Hyper-SD card, unified LoRA (Hyper-SD*-1step-lora): TCDScheduler, eta 1.0, 1-8 steps, "
            "guidance_scale 0", gamma=1.0),
     Recipe("hyper-sd-unet-1step", "lcm", "fixed", "lcm-full", 1.0,
            "ByteDance/Hyper-SD card, 1-step SDXL UNet: LCMScheduler with timesteps [800], guidance_scale 0",
            steps=1, timesteps=(800,), img2img=False, checkpoint=True)),
    "Hyper-SD unified (1-step) LoRA: KSampler (LCM) preset auto samples it with TCD (gamma 1.0), 1-8 steps, cfg 1.",
    (HYPER_SD,), (Download("ByteDance/Hyper-SD", "Hyper-SDXL-1step-lora.safetensors"),))

_HYPER = Accelerator(
    "hyper-sd", "Hyper-SD", ("sd1.x", "sdxl"), "lora", rules("hypersd"),
    ("Hyper-SD15-2steps-lora.safetensors", "Hyper-SDXL-8steps-lora.safetensors"),
    (Recipe("hyper-sd", "ddim", "trailing", "discrete", 1.0,
            "ByteDance/Hyper-SD card, n-step LoRAs: DDIMScheduler(timestep_spacing='trailing'), the file's step "
            "count, guidance_scale 0"),),
    "Hyper-SD n-step LoRA: KSampler (LCM) preset auto samples it with DDIM trailing at the file's step count, cfg 1.",
    (HYPER_SD,), (Download("ByteDance/Hyper-SD", "Hyper-SDXL-8steps-lora.safetensors"),))

_FLUX_TURBO = Accelerator(
    "flux-turbo-alpha", "FLUX.1-Turbo-Alpha", ("flux",), "lora", rules("flux turbo"),
    ("FLUX.1-Turbo-Alpha.safetensors",),
    (Recipe("flux-turbo-alpha", "euler", "trailing", "discrete", 1.0, "alimama-creative/FLUX.1-Turbo-Alpha card: "
            "8 steps, guidance_scale 3.5, LoRA fused at 1.0", steps=8, guidance=3.5, runs_on="flow",
            scheduler="euler / simple"),),
    "FLUX.1-Turbo-Alpha LoRA: load it at strength 1.0 and sample with core's KSampler (euler, 8 steps, cfg 1) and "
    "FluxGuidance 3.5.",
    (Source("https://huggingface.co/alimama-creative/FLUX.1-Turbo-Alpha", READ, "card"),),
    (Download("alimama-creative/FLUX.1-Turbo-Alpha", "diffusion_pytorch_model.safetensors",
              save_as="FLUX.1-Turbo-Alpha.safetensors"),),
    notes=("published as diffusion_pytorch_model.safetensors: rename it (e.g. FLUX.1-Turbo-Alpha.safetensors) so "
           "that the name says what it is",))

_PCM_SOURCE = "wangfuyun/PCM_Weights card and G-U-N/Phased-Consistency-Model demo/app.py"
_PCM = Accelerator(
    "pcm", "PCM", ("sd1.x", "sdxl"), "lora", rules("=pcm", "phasedconsistency"),
    ("pcm_sd15_smallcfg_4step_converted.safetensors", "pcm_sdxl_normalcfg_8step_converted.safetensors",
     "pcm_sdxl_lcmlike_lora_converted.safetensors"),
    (Recipe("pcm", "ddim", "trailing", "discrete", 1.0,
            f"{_PCM_SOURCE}: 'use DDIM or Euler instead of LCM', DDIMScheduler(timestep_spacing='trailing', "
            "clip_sample=False, set_alpha_to_one=False), the file's step count; SmallCFG: guidance 1-2",
            cfg_range=(1.0, 2.0), note="the authors' demo samples with TCDScheduler trailing (guidance 0 for "
                                       "smallcfg); the card's DDIM is the pack's choice"),
     Recipe("pcm-normalcfg", "ddim", "trailing", "discrete", 3.0,
            f"{_PCM_SOURCE}: DDIM trailing at the file's step count; NormalCFG: guidance 2-9 (2.5-3.5 at 4 steps, "
            "3-6 at 8)", cfg_range=(2.0, 9.0), when=rules("=normalcfg")[0],
            note="cfg 3 lies in the card's ranges at 4 and 8 steps"),
     Recipe("pcm-lcmlike", "lcm", "lcm-grid", "lcm", 1.0,
            f"{_PCM_SOURCE}: the LCM-like LoRA samples with LCMScheduler, guidance 1-2", cfg_range=(1.0, 2.0),
            when=rules("=lcmlike")[0])),
    "PCM LoRA: KSampler (LCM) preset auto samples it with DDIM trailing at the file's step count (SmallCFG cfg 1, "
    "NormalCFG cfg 3) or, for the LCM-like LoRA, with LCM.",
    (Source("https://huggingface.co/wangfuyun/PCM_Weights", READ, "card: DDIM/Euler trailing, cfg by variant"),
     Source("https://github.com/G-U-N/Phased-Consistency-Model/blob/master/demo/app.py", READ, "authors' demo")),
    (Download("wangfuyun/PCM_Weights", "sd15/pcm_sd15_smallcfg_4step_converted.safetensors"),
     Download("wangfuyun/PCM_Weights", "sdxl/pcm_sdxl_normalcfg_8step_converted.safetensors")),
    notes=("strength trap: a NormalCFG PCM LoRA at cfg 1 is below the card's 2-9",))

_TCD = Accelerator(
    "tcd", "TCD", ("sd1.x", "sd2.x", "sdxl"), "lora", rules("=tcd", "trajectoryconsistency"),
    ("TCD-SD15-LoRA.safetensors", "TCD-SDXL-LoRA.safetensors"),
    (Recipe("tcd", "tcd", "lcm-grid", "tcd", 1.0,
            "h1t/TCD-SD15-LoRA, TCD-SDXL-LoRA cards: TCDScheduler, eta (gamma) 0.3, 4 steps, guidance_scale 0",
            gamma=0.3),),
    "TCD LoRA: KSampler (LCM) preset auto samples it with TCD (gamma 0.3), 4-8 steps, cfg 1.",
    (Source("https://huggingface.co/h1t/TCD-SDXL-LoRA", READ, "card"),),
    (Download("h1t/TCD-SD15-LoRA", "pytorch_lora_weights.safetensors", save_as="TCD-SD15-LoRA.safetensors"),
     Download("h1t/TCD-SDXL-LoRA", "pytorch_lora_weights.safetensors", save_as="TCD-SDXL-LoRA.safetensors")),
    style_weight="style weight 1.0 with the TCD-LoRA at 1.0 (diffusers' TCD-LoRA guide mixes a style LoRA at "
                 "[1.0, 1.0]); lower the style if details burn.",
    notes=("published as pytorch_lora_weights.safetensors: its content is not distinguishable from LCM's; set the "
           "loader's kind to tcd or rename the file",))

_QWEN = Accelerator(
    "qwen-image-lightning", "Qwen-Image-Lightning", ("qwen-image",), "lora", rules("qwen lightning"),
    ("Qwen-Image-Lightning-4steps-V1.0.safetensors", "Qwen-Image-Lightning-8steps-V1.1.safetensors"),
    (Recipe("qwen-image-lightning", "euler", "trailing", "discrete", 1.0, "lightx2v/Qwen-Image-Lightning card: "
            "FlowMatchEulerDiscreteScheduler with base_shift = max_shift = log 3 (shift 3), the file's step count, "
            "true_cfg_scale 1", shift=3.0, runs_on="flow", scheduler="euler / simple"),),
    "Qwen-Image-Lightning LoRA: sample with core's KSampler (euler, the file's step count, cfg 1) after "
    "ModelSamplingAuraFlow shift 3.",
    (Source("https://huggingface.co/lightx2v/Qwen-Image-Lightning", READ, "card"),),
    (Download("lightx2v/Qwen-Image-Lightning", "Qwen-Image-Lightning-8steps-V1.1.safetensors"),))

_WAN22 = Accelerator(
    "wan22-lightning", "Wan 2.2 Lightning", ("wan",), "lora", rules("wan22 lightning"),
    ("Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors",
     "Wan2.2-Lightning_T2V-A14B-4steps-lora_LOW_fp16.safetensors"),
    tuple(Recipe(f"wan22-lightning-{expert}", "euler", "trailing", "discrete", 1.0, "lightx2v/Wan2.2-Lightning card: "
                 f"4 steps split between the two experts, cfg 1; this file goes on the {expert}-noise expert",
                 steps=4, when=rules(f"={expert}")[0], runs_on="core", scheduler="euler / simple",
                 expert=f"{expert}-noise", note="no diffusers scheduler setup in the record: core's sampler, not "
                                                "compared with the authors' scripts")
          for expert in ("high", "low")),
    "Wan 2.2 Lightning LoRA: a pair: the HIGH file on the high-noise expert, the LOW file on the low-noise "
    "expert, 4 steps in all, cfg 1.",
    (Source("https://huggingface.co/lightx2v/Wan2.2-Lightning", READ, "card"),),
    (Download("lightx2v/Wan2.2-Lightning", "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1/high_noise_model.safetensors",
              save_as="Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors"),
     Download("lightx2v/Wan2.2-Lightning", "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1/low_noise_model.safetensors",
              save_as="Wan2.2-Lightning_T2V-A14B-4steps-lora_LOW_fp16.safetensors")),
    notes=("pair trap: the card puts each file on its own expert (HIGH on the high-noise model, LOW on the "
           "low-noise model); the loader refuses the two files on one model, and a file on an expert whose model "
           "file name names the other one (where ComfyUI records the file: 0.33)",
           "ComfyUI loads Wan 2.2's A14B experts as its Wan 2.1 architecture (WAN21_T2V): family wan"))

_WAN21 = Accelerator(
    "wan21-lightx2v", "Wan 2.1 lightx2v", ("wan",), "lora", rules("wan lightx2v", "wan stepdistill"),
    ("Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors",),
    (Recipe("wan21-lightx2v", "euler", "trailing", "discrete", 1.0, "lightx2v Wan2.1 StepDistill-CfgDistill card: "
            "4 steps, cfg 1", steps=4, runs_on="flow", scheduler="euler / simple",
            note="no diffusers scheduler setup in the record: core's sampler, not compared with the authors' "
                 "scripts"),),
    "Wan 2.1 lightx2v LoRA: sample with core's KSampler, 4 steps, cfg 1.",
    (Source("https://huggingface.co/lightx2v/Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v", READ, "card"),),
    (Download("Kijai/WanVideo_comfy", "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"),))

_AD_LIGHTNING = Accelerator(
    "animatediff-lightning", "AnimateDiff-Lightning", ("sd1.x",), "motion-module", rules("animatediff lightning"),
    ("animatediff_lightning_4step_comfyui.safetensors", "animatediff_lightning_8step_diffusers.safetensors"),
    (Recipe("animatediff-lightning", "euler", "trailing", "discrete", 1.0,
            "ByteDance/AnimateDiff-Lightning card: EulerDiscreteScheduler(timestep_spacing='trailing', "
            "beta_schedule='linear'), the file's step count, guidance_scale 1.0", beta_schedule="linear",
            note="a motion module (AnimateDiff-Evolved loads it); pick the preset on KSampler (LCM) and set steps "
                 "to the file's count"),),
    "AnimateDiff-Lightning motion module: load it with AnimateDiff-Evolved; KSampler (LCM) preset "
    "animatediff-lightning samples Euler trailing on linear betas, the file's step count, cfg 1.",
    (Source("https://huggingface.co/ByteDance/AnimateDiff-Lightning", READ, "card: diffusers and ComfyUI usage"),),
    (Download("ByteDance/AnimateDiff-Lightning", "animatediff_lightning_4step_comfyui.safetensors",
              "animatediff_models"),))

_LIGHTNING = Accelerator(
    "lightning", "Lightning", ("sdxl",), "lora", rules("lightning"),
    ("sdxl_lightning_2step_lora.safetensors", "sdxl_lightning_4step_lora.safetensors"),
    (Recipe("lightning", "euler", "trailing", "discrete", 1.0,
            "ByteDance/SDXL-Lightning card: EulerDiscreteScheduler(timestep_spacing='trailing'), the file's step "
            "count, guidance_scale 0"),
     Recipe("lightning-x0", "euler", "trailing", "x0", 1.0,
            "ByteDance/SDXL-Lightning card, 1-step UNet (sdxl_lightning_1step_unet_x0): EulerDiscreteScheduler "
            "trailing with prediction_type='sample', 1 step, guidance_scale 0", steps=1, img2img=False,
            checkpoint=True)),
    "Lightning LoRA: KSampler (LCM) preset auto samples it with Euler on trailing timesteps at the file's step "
    "count, cfg 1.",
    (Source("https://huggingface.co/ByteDance/SDXL-Lightning", READ, "card"),),
    (Download("ByteDance/SDXL-Lightning", "sdxl_lightning_4step_lora.safetensors"),))

_DMD2 = Accelerator(
    "dmd2", "DMD2", ("sdxl",), "lora", rules("dmd"),
    ("dmd2_sdxl_4step_lora_fp16.safetensors",),
    (Recipe("dmd2", "lcm", "fixed", "lcm-full", 1.0,
            "tianweiy/DMD2 card, 4-step LoRA/UNet: LCMScheduler with timesteps [999, 749, 499, 249], "
            "guidance_scale 0", steps=4, timesteps=(999, 749, 499, 249), img2img=False,
            note="text-to-image only: the card shows no image-to-image, and diffusers' LCMScheduler with custom "
                 "timesteps and strength < 1 re-noises its last step (num_inference_steps is not reset)"),
     Recipe("dmd2-unet-1step", "lcm", "fixed", "lcm-full", 1.0,
            "tianweiy/DMD2 card, 1-step UNet: LCMScheduler with timesteps [399], guidance_scale 0",
            steps=1, timesteps=(399,), img2img=False, checkpoint=True)),
    "DMD2 LoRA: KSampler (LCM) preset auto samples it with LCM at timesteps 999, 749, 499, 249, cfg 1.",
    (Source("https://huggingface.co/tianweiy/DMD2", READ, "card"),),
    (Download("tianweiy/DMD2", "dmd2_sdxl_4step_lora_fp16.safetensors"),),
    style_weight="DMD2's card fuses the LoRA at scale 1.0 and notes a smaller scale may suit community models; "
                 "start the style at 1.0 and lower it if the image burns.")

_FLASH = Accelerator(
    "flash", "Flash Diffusion", ("sd1.x", "sdxl"), "lora", rules("flashsd", "flashdiffusion"),
    ("flash-sd.safetensors", "flash-sdxl.safetensors"),
    (Recipe("flash", "lcm", "lcm-grid", "lcm", 1.0,
            "jasperai/flash-sd, flash-sdxl cards: LCMScheduler (its timestep_spacing='trailing' is not read by "
            "LCMScheduler.set_timesteps), 4 steps, guidance_scale 0"),),
    "Flash Diffusion LoRA: KSampler (LCM) preset auto samples it with LCM, 4 steps, cfg 1.",
    (Source("https://huggingface.co/jasperai/flash-sdxl", READ, "card"),),
    (Download("jasperai/flash-sdxl", "pytorch_lora_weights.safetensors", save_as="flash-sdxl.safetensors"),))

_ANIMATELCM = Accelerator(
    "animatelcm", "AnimateLCM", ("sd1.x",), "lora", rules("animatelcm", "==sd15lorabeta"),
    ("AnimateLCM_sd15_t2v_lora.safetensors", "sd15_lora_beta.safetensors"),
    (Recipe("animatelcm", "lcm", "lcm-grid", "lcm", 1.5,
            "diffusers' AnimateDiff docs (Using AnimateLCM): LCMScheduler.from_config(…, beta_schedule='linear'), "
            "6 steps, guidance_scale 1.5, sd15_lora_beta at 1.0; wangfuyun/AnimateLCM card's example (as its users "
            "quote it): the same scheduler, 6 steps, guidance_scale 2.0, the LoRA at 0.8", beta_schedule="linear",
            cfg_range=(1.0, 2.0), strength=0.8,
            note="strength 0.8 is the card's example, 1.0 diffusers' docs; in AnimateDiff-Evolved (d8d163c, animatediff/utils_model.py) the beta schedule equal to these "
                 "linear betas is 'lcm >> sqrt_linear'; its plain 'lcm' uses ComfyUI's 'linear' (diffusers' "
                 "scaled_linear)"),),
    "AnimateLCM LoRA: use it with the AnimateLCM motion module (AnimateDiff-Evolved); KSampler (LCM) preset auto "
    "samples LCM on linear betas, 4-8 steps, cfg 1.5.",
    (Source("https://huggingface.co/wangfuyun/AnimateLCM", READ, "card"),
     Source("https://huggingface.co/docs/diffusers/api/pipelines/animatediff", READ, "Using AnimateLCM")),
    (Download("wangfuyun/AnimateLCM", "AnimateLCM_sd15_t2v_lora.safetensors"),
     Download("wangfuyun/AnimateLCM", "AnimateLCM_sd15_t2v.ckpt", "animatediff_models")))

_LCM = Accelerator(
    "lcm", "LCM", ("sd1.x", "sdxl", "ssd-1b", "vega"), "lora", rules("^lcm", "latentconsistency", "vegart"),
    ("lcm-lora-sdv1-5.safetensors", "lcm-lora-sdxl.safetensors", "pytorch_lora_weights.safetensors (by content)"),
    (Recipe("lcm", "lcm", "lcm-grid", "lcm", 1.0,
            "latent-consistency/lcm-lora-sdv1-5 / -sdxl cards: LCMScheduler, 4-8 steps, guidance_scale 1-2",
            cfg_range=(1.0, 2.0)),),
    "LCM model sampling set: sample with KSampler (LCM) (preset auto) or the LCM sampler, 'simple' scheduler, "
    "4-8 steps, cfg 1-2.",
    (Source("https://huggingface.co/latent-consistency/lcm-lora-sdv1-5", READ, "card; arXiv 2311.05556"),),
    (Download("latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors",
              save_as="lcm-lora-sdv1-5.safetensors"),
     Download("latent-consistency/lcm-lora-sdxl", "pytorch_lora_weights.safetensors", save_as="lcm-lora-sdxl.safetensors")),
    content=LCM_SCRIPT,
    style_weight="style weight ~0.8 with the LCM-LoRA at 1.0 (LCM-LoRA paper, arXiv 2311.05556 sec. 4; diffusers' "
                 "LCM-LoRA guide uses adapter weights [1.0, 0.8]).")

_TURBO = Accelerator(
    "turbo", "SD/SDXL-Turbo", ("sd2.x", "sdxl"), "checkpoint", (),
    ("sd_xl_turbo_1.0_fp16.safetensors",),
    (Recipe("turbo", "euler_ancestral", "trailing", "discrete", 1.0,
            "stabilityai/sdxl-turbo card and diffusers' SDXL-Turbo docs: EulerAncestralDiscreteScheduler with "
            "timestep_spacing='trailing', 1-4 steps, guidance_scale 0", checkpoint=True),),
    "SD/SDXL-Turbo checkpoint: pick preset turbo on KSampler (LCM).",
    (Source("https://huggingface.co/stabilityai/sdxl-turbo", READ, "card"),),
    (Download("stabilityai/sdxl-turbo", "sd_xl_turbo_1.0_fp16.safetensors", "checkpoints"),))

ACCELERATORS: list[Accelerator] = [
    _SD3, _HYPER_FLUX, _HYPER_CFG, _HYPER_UNIFIED, _HYPER, _FLUX_TURBO, _PCM, _TCD, _QWEN, _WAN22, _WAN21,
    _AD_LIGHTNING, _LIGHTNING, _DMD2, _FLASH, _ANIMATELCM, _LCM, _TURBO,
]


def records() -> list[Accelerator]:
    """The registry as it is now (read at call time, so a record added to :data:`ACCELERATORS` is seen)."""
    return list(ACCELERATORS)


def get(kind: str) -> Accelerator | None:
    return next((record for record in ACCELERATORS if record.kind == kind), None)


def all_kinds() -> tuple[str, ...]:
    return tuple(record.kind for record in ACCELERATORS)


def loadable_kinds() -> tuple[str, ...]:
    """Kinds of LoRAs the pack's loader applies (the loader's ``kind`` combo, ``lcmpack.kind`` values)."""
    return tuple(record.kind for record in ACCELERATORS if record.loadable)


def detect_name(text: str, loadable_only: bool = False, family: str | None = None) -> Accelerator | None:
    """The first record whose name rule matches ``text`` (bounded, linear: ``match.py``). ``loadable_only``: None
    when that record is not a LoRA the pack's loader applies; ``family`` (a LoRA's measured family): None when that
    record is for another family class (a Qwen-Image-Lightning name on an SD LoRA does not make it SDXL-Lightning,
    the next record that would match, nor a Qwen-Image accelerator)."""
    tokens = Tokens.of(text)
    found = next((record for record in ACCELERATORS if record.name_matches(tokens)), None)
    if found is None or (loadable_only and not found.loadable):
        return None
    return found if family is None or kind_fits_family(family, found.families) else None


def recipes() -> dict[str, Recipe]:
    """Every recipe KSampler (LCM) runs, by preset name, in registry order."""
    return {recipe.name: recipe for record in ACCELERATORS for recipe in record.presets()}


def recipe_kind(name: str) -> str | None:
    """The kind whose record holds the preset ``name``."""
    return next((record.kind for record in ACCELERATORS for recipe in record.recipes if recipe.name == name), None)


def recipe_for(kind: str, file_name: str = "") -> Recipe | None:
    """The recipe of ``kind`` that the file name selects (variant, then default); None: no recipe."""
    record = get(kind)
    return None if record is None else record.recipe_for(Tokens.of(file_name))


def steps_from_name(text: str) -> int | None:
    """The step count a published name carries ("Hyper-SDXL-8steps-lora" → 8, "sdxl_lightning_4step" → 4)."""
    return steps_in_tokens(Tokens.of(text))
