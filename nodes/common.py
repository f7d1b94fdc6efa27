"""Shared constants for the pack's nodes."""
from __future__ import annotations

NODE_PREFIX = "LCMPack_"
CATEGORY_ROOT = "LCM-LoRA"
CATEGORY_SAMPLING = f"{CATEGORY_ROOT}/sampling"
CATEGORY_LORA = f"{CATEGORY_ROOT}/lora"


def check_model_file(folder: str, input_name: str, value: str | None) -> bool | str:
    """Validation-time check that a file-name input names a file in ``models/<folder>``.

    ComfyUI 0.3.75 checks combo values against their list only for V1-style combos; V3 ``io.Combo`` inputs
    are not checked, so without this a missing LoRA would pass validation and fail mid-run. The message
    has the shape of core's ``value_not_in_list`` error and names the file.
    """
    if value is None:
        return True
    import folder_paths

    names = folder_paths.get_filename_list(folder)
    if value in names:
        return True
    shown = names if len(names) <= 20 else f"(list of length {len(names)})"
    return (f"Value not in list: {input_name}: '{value}' not in {shown}. Put the file into ComfyUI/models/{folder} "
            "(then press r in the frontend to refresh) or pick one of the list.")
