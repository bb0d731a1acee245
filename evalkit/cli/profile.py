"""`evalkit profile`: parameters, MACs, attention share, latency and memory of a checkpoint.

A thin shell over `evalkit.profile`: resolve what the user pointed at into configs, count on
the meta device, optionally time the protocol with real (or, for presets, random) weights,
and print / write the report.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import click

from evalkit.cli.options import run_options
from evalkit.errors import EvalkitError
from evalkit.stepdir import StepDir, safe_name, step_label

if TYPE_CHECKING:
    from evalkit.options import RunOptions

# How profiling uses some of generate's options (their defaults and checks stay generate's).
PROFILE_HELP = MappingProxyType({
    "steps": "Denoising steps of the protocol.",
    "guidance_scale": "CFG scale (> 1 doubles the passes).",
    "dtype": "Parameter bytes and latency dtype: auto (bytes in bfloat16; latency bf16 on CUDA, fp32 on CPU), "
             "float32, float16, bfloat16.",
    "device": "Device for --latency.",
    "name": "Model name (default: from the source).",
    "revision": "Hub revision.",
    "ema": "Profile checkpoint-N/unet_ema.",
    "allow_pickle": "Allow pickled weights (only --latency loads weights).",
})


@click.command("profile")
@click.argument("checkpoint", required=False, default="")
@click.option("--preset", "preset_name", default="",
              help="Built-in public configs: sd1.5, sd2, sdxl, study-sdxl, study-sdxl-c128 (no downloads).")
@click.option("--unet-config", "denoiser_config", type=click.Path(path_type=Path), default=None,
              help="A UNet (or PixArt/SD3 transformer) config.json or its folder: replaces the pipeline's "
                   "denoiser, or is profiled alone.")
@click.option("--vae-config", type=click.Path(path_type=Path), default=None, help="A VAE config.json to add/replace.")
@click.option("--resolution", "resolutions", type=int, multiple=True,
              help="Image size; repeat for several (default: native). Latency uses the first.")
@click.option("--latency", is_flag=True, help="Also time the protocol (needs weights: a checkpoint, or a preset "
                                              "with random weights).")
@click.option("--max-batch", type=int, default=0, help="Batch sweep cap for --latency (default: 64 CUDA, 4 CPU).")
@click.option("--batch-sizes", default="", help="Explicit batch sizes for --latency, e.g. 1,8 (overrides the sweep).")
@click.option("--repeats", type=int, default=1, show_default=True, help="Timed calls per batch size.")
@click.option("--json", "json_path", default="", help="Write the JSON report here ('-' for stdout).")
@click.option("--markdown", "markdown_path", default="", help="Write a Markdown report here ('-' for stdout).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Runs folder: writes OUT/<model>/<step>/profile.json next to generation.json.")
@run_options(("steps", "guidance_scale", "dtype", "device", "name", "base", "revision", "ema", "allow_pickle"),
             helps=PROFILE_HELP)
def profile(checkpoint: str, preset_name: str, denoiser_config: Path | None, vae_config: Path | None,
            resolutions: tuple[int, ...], latency: bool, max_batch: int, batch_sizes: str, repeats: int,
            json_path: str, markdown_path: str, out: Path | None, options: RunOptions) -> None:
    """What CHECKPOINT costs: parameters per component, GMACs per denoiser pass and per image,
    attention share, and with --latency seconds per image, images/s and peak memory.

    CHECKPOINT is anything `evalkit generate` takes (pipeline folder, hub id, training folder,
    single file with --base); only config files are read unless --latency is given. Without a
    CHECKPOINT, profile a --preset and/or a --unet-config.
    """
    import torch

    from evalkit.profile import ProtocolCost, profile_spec, render_markdown, render_table, to_record

    targets = _targets(checkpoint, preset_name, denoiser_config, vae_config, options)
    bytes_dtype, request = _dtypes(options, resolutions)
    timed: Any = None
    timed_on = ""
    for spec, ref in targets:
        result = profile_spec(spec, resolutions, ProtocolCost(options.steps, options.guidance_scale), bytes_dtype)
        if latency:
            if timed is None:
                timed = _measure(spec, ref, request, result.compute[0].resolution, max_batch, batch_sizes, repeats,
                                 options.allow_pickle)
                timed_on = ref.step_label if ref is not None else ""
            else:  # the steps of one training run share their architecture, so their cost
                result.notes.append(f"latency measured once, on step {timed_on}, for the whole training run")
            result.latency = timed
        record = to_record(result)
        if ref is not None and len(targets) > 1:
            record["step"] = ref.step
        label = f"{safe_name(result.name)}-{ref.step_label}" if ref is not None and len(targets) > 1 else ""
        _emit(result, record, json_path, markdown_path, render_table, render_markdown, label)
        if out is not None:
            label_of_step = step_label(ref.step if ref is not None else None)
            path = StepDir.of(out, safe_name(result.name), label_of_step).write_profile(record)
            click.echo(f"wrote {path}", err=True)
        del result
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _targets(checkpoint: str, preset_name: str, denoiser_config: Path | None, vae_config: Path | None,
             options: RunOptions) -> list[tuple[Any, Any]]:
    """(spec, checkpoint ref or None) for everything to profile."""
    from evalkit.generation.checkpoints import ResolveOptions, resolve
    from evalkit.profile import (
        denoiser_spec_from_file,
        preset,
        spec_from_ref,
        vae_spec_from_file,
        with_denoiser,
        with_vae,
    )

    if checkpoint and preset_name:
        raise EvalkitError("give either a CHECKPOINT or --preset, not both", "drop one of them")
    if not (checkpoint or preset_name or denoiser_config):
        raise EvalkitError("nothing to profile", "give a CHECKPOINT, --preset NAME or --unet-config unet.json")
    pairs: list[tuple[Any, Any]]
    if checkpoint:
        refs = resolve(checkpoint, ResolveOptions.of(options))
        pairs = [(spec_from_ref(ref), ref) for ref in refs]
    elif preset_name:
        pairs = [(preset(preset_name), None)]
    else:
        pairs = [(None, None)]
    name = options.name
    out = []
    for spec, ref in pairs:
        if denoiser_config is not None:
            own = _config_name(denoiser_config)
            label = name or (f"{spec.name}+{own}" if spec is not None else own)
            spec = with_denoiser(spec, denoiser_spec_from_file(denoiser_config), label)
        if vae_config is not None:
            spec = with_vae(spec, vae_spec_from_file(vae_config))
        if name and ref is None:
            spec = replace(spec, name=name)
        out.append((spec, ref))
    return out


def _config_name(path: Path) -> str:
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    stem = path.stem if path.is_file() and path.stem != "config" else folder.resolve().name
    return stem or "denoiser"


def _dtypes(options: RunOptions, resolutions: tuple[int, ...]) -> tuple[Any, Any]:
    """Parameter bytes are counted in bfloat16 under auto, whatever device the latency runs on."""
    import torch

    from evalkit.generation.protocol import DTYPES, GenerationRequest
    from evalkit.options import AUTO

    if resolutions:
        options = replace(options, resolution=resolutions[0])  # checked as generate's --resolution is
    return (torch.bfloat16 if options.dtype == AUTO else DTYPES[options.dtype]), GenerationRequest.of(options)


def _measure(spec: Any, ref: Any, request: Any, resolution: int, max_batch: int, batch_sizes: str, repeats: int,
             allow_pickle: bool) -> Any:
    from evalkit.profile.latency import (
        DEFAULT_MAX_BATCH,
        batch_sweep,
        load_checkpoint,
        measure_latency,
        random_weights_pipeline,
    )

    if spec.source.get("denoiser_override") or spec.source.get("vae_override") or (ref is None and not
                                                                                     spec.source.get("preset")):
        raise EvalkitError("--latency needs weights, and a --unet-config/--vae-config has none",
                           "time a CHECKPOINT or a --preset (random weights), or drop --latency")
    device = request.torch_device()
    dtype = request.torch_dtype(device)
    request = replace(request, resolution=resolution)
    sizes = _batch_sizes(batch_sizes) if batch_sizes else batch_sweep(max_batch or DEFAULT_MAX_BATCH.get(device.type,
                                                                                                        4))
    click.echo(f"timing {spec.name} on {device} ({str(dtype).removeprefix('torch.')}), {resolution} px, "
               f"{request.steps} steps, batches {sizes}", err=True)
    if ref is not None:
        loaded = load_checkpoint(ref, device, dtype, allow_pickle)
        weights = "loaded"
    else:
        loaded = random_weights_pipeline(spec, device, dtype)
        weights = "random (preset)"
    report = measure_latency(loaded, request, sizes, repeats, log=lambda line: click.echo(line, err=True))
    report.weights = weights
    return report


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise EvalkitError(f"--batch-sizes {text!r} is not a comma-separated list of numbers", "e.g. 1,4,16") from e
    if not sizes or min(sizes) < 1:
        raise EvalkitError(f"--batch-sizes {text!r} needs positive sizes", "e.g. 1,4,16")
    return sizes


def _emit(result: Any, record: dict[str, Any], json_path: str, markdown_path: str, table: Any, markdown: Any,
          label: str) -> None:
    to_stdout = "-" in (json_path, markdown_path)
    if not to_stdout:
        click.echo(table(result) + "\n")
    if json_path:
        _write(json_path, json.dumps(record, indent=2), label)
    if markdown_path:
        _write(markdown_path, markdown(result), label)


def _write(target: str, text: str, label: str) -> None:
    if target == "-":
        click.echo(text)
        return
    path = Path(target)
    if label:  # one file per checkpoint of a training folder: p.json -> p.<model>-<step>.json
        path = path.with_name(f"{path.stem}.{label}{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")

