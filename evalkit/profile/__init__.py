"""What a checkpoint costs: parameters per component, MACs per denoiser pass and per image,
attention share, and (with real or random weights) latency and peak memory.

Counting needs configs only: components are built on the meta device, so an architecture
can be sized before it is trained, and a 7 GB checkpoint folder profiles in about a second.

    from evalkit.profile import preset, profile_spec, render_table
    print(render_table(profile_spec(preset("sd2"), [256, 512])))

See docs/profile.md for the counting convention and reference numbers.
"""

from evalkit.profile.configs import PRESETS, ComponentSpec, PipelineSpec, preset
from evalkit.profile.macs import MacCount, MacCounter, count_macs, denoiser_macs, text_encoder_macs, vae_decode_macs
from evalkit.profile.params import ComponentParams, count_parameters
from evalkit.profile.profiler import (
    DenoiserForward,
    Profile,
    ProtocolCost,
    build_meta,
    denoiser_forward,
    native_resolution,
    profile_spec,
)
from evalkit.profile.report import SCHEMA, render_markdown, render_table, to_record
from evalkit.profile.sources import (
    denoiser_spec_from_file,
    spec_from_pipeline_folder,
    spec_from_ref,
    vae_spec_from_file,
    with_denoiser,
    with_vae,
)

__all__ = [
    "PRESETS",
    "SCHEMA",
    "ComponentParams",
    "ComponentSpec",
    "DenoiserForward",
    "MacCount",
    "MacCounter",
    "PipelineSpec",
    "Profile",
    "ProtocolCost",
    "build_meta",
    "count_macs",
    "count_parameters",
    "denoiser_forward",
    "denoiser_macs",
    "denoiser_spec_from_file",
    "native_resolution",
    "preset",
    "profile_spec",
    "render_markdown",
    "render_table",
    "spec_from_pipeline_folder",
    "spec_from_ref",
    "text_encoder_macs",
    "to_record",
    "vae_decode_macs",
    "vae_spec_from_file",
    "with_denoiser",
    "with_vae",
]
