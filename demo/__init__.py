"""The demo model family: a small, real, trained SD1.5-family model that runs everywhere (CPU included).

Everything is made in code from seeds, without downloads:

* :mod:`.world` -- the procedural captioned image world (coloured shapes on coloured backgrounds, plus a
  striped style marked by a trigger phrase) that every model here is trained and evaluated on;
* :mod:`.clip_init` -- the full-shape CLIP-L text encoder ComfyUI's ``CLIPTextEncode`` runs, generated
  per tensor from a seed and checked against a stored fingerprint (it is never shipped);
* :mod:`.nets`, :mod:`.train` -- ComfyUI's own TAESD and one-level SD1.5 UNet classes set up for training,
  the attribute classifier and a kohya-format LoRA for the style;
* :mod:`.files` -- where the shipped files live and how the full checkpoint is assembled at set-up;
* :mod:`.geometry` -- where the drawn shape is (segmentation by the known colours) and mask IoU;
* :mod:`.shape_check`, :mod:`.malformed` -- the stricter quality check (shape fit, one fill colour) and the
  hard negatives it is measured on;
* :mod:`.finetune` -- the fine-tuned teacher's shipped form (an int8 delta on the teacher);
* :mod:`.evaluate`, :mod:`.sheet` -- the quality numbers and the main job's side-by-side sheets.
* :mod:`.sweep` -- the distillation sweep's grid, time plan and table (steps x rank x data mode, issue 26).

docs/demo_model_card.md says what was trained, how, and how well it came out.
"""
