"""Sampling nodes: LCM model sampling patch (more LCM/TCD nodes join this module's NODES)."""
from __future__ import annotations

from comfy_api.latest import io

from ..samplers.boundary import DEFAULT_SIGMA_DATA, DEFAULT_TIMESTEP_SCALING
from ..samplers.comfy_model_sampling import make_lcm_model_sampling, prediction_type_of
from .common import CATEGORY_SAMPLING, NODE_PREFIX


class ModelSamplingLCM(io.ComfyNode):
    """Clone a model and patch its sampling to the LCM grid and boundary condition."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_PREFIX}ModelSamplingLCM",
            display_name="LCM Model Sampling",
            category=CATEGORY_SAMPLING,
            description="Sets a model to LCM sampling: the distillation timestep grid and the consistency "
                        "boundary condition, with the constants configurable (core hard-codes 50 / 10 / 0.5). "
                        "Works for eps and v-prediction models.",
            inputs=[
                io.Model.Input("model", tooltip="The model (with an LCM-LoRA applied) to sample with LCM."),
                io.Int.Input("original_inference_steps", default=50, min=1, max=1000,
                             tooltip="Steps of the teacher's skipping schedule used in distillation (50 for all "
                                     "published LCM-LoRAs). Sets the timestep grid: k = 1000 // this value."),
                io.Float.Input("timestep_scaling", default=DEFAULT_TIMESTEP_SCALING, min=0.0, max=1000.0, step=0.1,
                               tooltip="Scale of the timestep in the boundary condition c_skip/c_out (10 for "
                                       "published LCM-LoRAs)."),
                io.Float.Input("sigma_data", default=DEFAULT_SIGMA_DATA, min=0.001, max=10.0, step=0.01,
                               tooltip="sigma_data of the boundary condition (0.5 for published LCM-LoRAs)."),
            ],
            outputs=[io.Model.Output(tooltip="A patched clone of the model; the input model is not changed.")],
        )

    @classmethod
    def validate_inputs(cls, original_inference_steps: int = 50, **_) -> bool | str:
        if not 1 <= original_inference_steps <= 1000:
            return (f"original_inference_steps={original_inference_steps} is outside 1..1000; "
                    "use 50 for published LCM-LoRAs.")
        return True

    @classmethod
    def execute(cls, model, original_inference_steps: int, timestep_scaling: float,
                sigma_data: float) -> io.NodeOutput:
        patched = model.clone()
        sampling = make_lcm_model_sampling(model.model.model_config, prediction_type_of(model),
                                           original_inference_steps, timestep_scaling, sigma_data)
        patched.add_object_patch("model_sampling", sampling)
        return io.NodeOutput(patched)


NODES = [ModelSamplingLCM]
