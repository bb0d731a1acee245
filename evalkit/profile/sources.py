"""PipelineSpecs from what the user points at: presets, config files, pipeline folders, hub ids.

Only JSON is read: model_index.json and each component's config.json. A 7 GB SDXL folder
therefore profiles in about a second, and a hub id needs only its config files (fetched
through `evalkit.runtime.assets`, so offline mode and the one-line errors are the generator's).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.fileio.jsonfile import read_json_object
from evalkit.generation.adapters import adapter_for
from evalkit.generation.checkpoints import CheckpointRef, HubPipeline, PipelineDir, SingleFile, TrainingStep
from evalkit.profile.build import component_class, is_module_class
from evalkit.profile.configs import DENOISER, OTHER, TEXT_ENCODER, VAE, ComponentSpec, PipelineSpec

CONFIG_PATTERNS = ["model_index.json", "*/config.json"]
DENOISER_FAMILIES = {"PixArtTransformer2DModel": "pixart", "SD3Transformer2DModel": "sd3"}
_NOTES = {"safety_checker": "not run: evalkit removes the safety checker"}


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise EvalkitError(f"{path} does not exist", "point at a diffusers config.json or a folder holding one")
    return read_json_object(path, "restore or re-save the config file (one JSON object of config values)")


def spec_from_pipeline_folder(folder: Path, name: str, source: dict[str, Any]) -> PipelineSpec:
    """Every torch module a pipeline folder lists, with its config; tokenizers and schedulers skipped."""
    index = read_json(folder / "model_index.json")
    pipeline_class = str(index.get("_class_name", "?"))
    adapter = adapter_for(pipeline_class)
    components = []
    for key, value in sorted(index.items()):
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2 or not all(value):
            continue
        library, class_name = str(value[0]), str(value[1])
        probe = ComponentSpec(key, library, class_name, {}, OTHER)
        try:
            cls = component_class(probe)
        except EvalkitError:
            if key == adapter.denoiser or key.startswith(("text_encoder", "vae")):
                raise
            continue  # an extra we cannot import is not part of what the protocol runs
        if not is_module_class(cls):
            continue  # tokenizers, schedulers, feature extractors
        config_path = folder / key / "config.json"
        if not config_path.is_file():
            raise EvalkitError(f"pipeline folder {folder} lists {key} but has no {key}/config.json",
                               "the folder is incomplete; re-save or re-download it")
        components.append(ComponentSpec(key, library, class_name, read_json(config_path),
                                        _role(key, adapter.denoiser), _NOTES.get(key, "")))
    if not any(c.role == DENOISER for c in components):
        raise EvalkitError(f"pipeline folder {folder} has no {adapter.denoiser} component",
                           "the folder is incomplete; re-save or re-download it")
    return PipelineSpec(name, pipeline_class, adapter.family, tuple(components), source)


def _role(key: str, denoiser: str) -> str:
    if key == denoiser:
        return DENOISER
    if key.startswith("text_encoder"):
        return TEXT_ENCODER
    if key == "vae":
        return VAE
    return OTHER


def spec_from_ref(ref: CheckpointRef) -> PipelineSpec:
    """The configs behind a resolved checkpoint (see evalkit.generation.checkpoints); no weights are read."""
    match ref.source:
        case PipelineDir() | HubPipeline():
            return _base_spec(ref.source, ref.name)
        case TrainingStep(denoiser_dir=denoiser_dir, base=base):
            spec = _base_spec(base, ref.name)
            denoiser = denoiser_spec_from_file(denoiser_dir / "config.json")
            record = {**spec.source, "kind": "training_step", "denoiser_folder": str(denoiser_dir)}
            return replace(with_denoiser(spec, denoiser), source=record)
        case SingleFile(path=path, base=base):
            spec = _base_spec(base, ref.name)
            record = {**spec.source, "kind": "single_file", "file": str(path),
                      "note": "shapes from the base pipeline's configs; the file is assumed to match them"}
            return replace(spec, source=record)
    raise AssertionError(ref.source)


def _base_spec(source: PipelineDir | HubPipeline, name: str) -> PipelineSpec:
    match source:
        case PipelineDir(path=path):
            return spec_from_pipeline_folder(path, name, {"kind": "pipeline", "path": str(path.resolve())})
        case HubPipeline(repo_id=repo_id, revision=revision):
            from evalkit.runtime.assets import resolve_hub_snapshot

            folder = resolve_hub_snapshot(repo_id, revision, allow_patterns=CONFIG_PATTERNS)
            return spec_from_pipeline_folder(folder, name, {"kind": "hub", "repo_id": repo_id, "revision": revision,
                                                            "snapshot": folder.name})
    raise AssertionError(source)


def denoiser_spec_from_file(path: Path) -> ComponentSpec:
    """A UNet/transformer from its config.json (or a folder holding one)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    config = read_json(path)
    class_name = str(config.get("_class_name") or ("UNet2DConditionModel" if "down_block_types" in config else ""))
    if class_name not in ("UNet2DConditionModel", *DENOISER_FAMILIES):
        supported = ", ".join(("UNet2DConditionModel", *DENOISER_FAMILIES))
        raise EvalkitError(f"{path} configures {class_name or 'an unknown class (no _class_name)'}, not a "
                           "denoiser evalkit profiles", f"give a config.json of one of: {supported}")
    name = "unet" if class_name == "UNet2DConditionModel" else "transformer"
    return ComponentSpec(name, "diffusers", class_name, config, DENOISER)


def vae_spec_from_file(path: Path) -> ComponentSpec:
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    config = read_json(path)
    class_name = str(config.get("_class_name") or "AutoencoderKL")
    return ComponentSpec("vae", "diffusers", class_name, config, VAE)


def denoiser_family(component: ComponentSpec) -> str:
    """The adapters family a bare denoiser config belongs to (decides its dummy inputs)."""
    if component.class_name in DENOISER_FAMILIES:
        return DENOISER_FAMILIES[component.class_name]
    return "sdxl" if component.config.get("addition_embed_type") == "text_time" else "sd"


def with_denoiser(spec: PipelineSpec | None, denoiser: ComponentSpec, name: str = "") -> PipelineSpec:
    """`spec` with its denoiser replaced by `denoiser`, or a denoiser-only spec when there is no pipeline."""
    if spec is None:
        return PipelineSpec(name or denoiser.name, "", denoiser_family(denoiser), (denoiser,),
                            {"kind": "config", "denoiser": denoiser.class_name})
    current = spec.component(DENOISER)
    if current is not None and current.class_name != denoiser.class_name:
        raise EvalkitError(f"the pipeline's denoiser is a {current.class_name}, the given config a "
                           f"{denoiser.class_name}", "give a config of the same class, or drop the pipeline")
    renamed = replace(denoiser, name=current.name if current is not None else denoiser.name)
    components = tuple(renamed if c.role == DENOISER else c for c in spec.components)
    return replace(spec, name=name or spec.name, components=components,
                   source={**spec.source, "denoiser_override": True})


def with_vae(spec: PipelineSpec, vae: ComponentSpec) -> PipelineSpec:
    others = tuple(c for c in spec.components if c.role != VAE)
    return replace(spec, components=(*others, vae), source={**spec.source, "vae_override": True})


def text_encoder_specs(spec: PipelineSpec) -> list[ComponentSpec]:
    return [c for c in spec.components if c.role == TEXT_ENCODER]
