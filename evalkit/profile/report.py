"""A Profile as a readable table, as JSON (`evalkit.profile/1`, recorded next to run results),
or as Markdown (docs, issue comments).

The JSON keeps exact integers (parameters, bytes, MACs, FLOPs); tables round. Its
`per_image` block is what a Pareto view of quality against cost needs: MACs and FLOPs per
image under the protocol, and (when measured) seconds per image and images/s.
"""

from __future__ import annotations

from typing import Any

from evalkit.profile.latency import LatencyReport
from evalkit.profile.macs import MacCount
from evalkit.profile.profiler import Profile

SCHEMA = "evalkit.profile/1"
CONVENTION = ("1 MAC = one multiply-add of a convolution, a linear layer or an attention matmul (QK^T, "
              "attention·V); biases, normalisations, activations, softmax and other elementwise ops not "
              "counted; FLOPs = 2 × MACs. 'attention' = everything inside attention modules: q/k/v/out "
              "projections + score and value matmuls. conv_linear = total without the score/value matmuls "
              "(the convention of conv/linear-only counters, and of the scaling study's Table 1). Denoiser "
              "figures are one forward pass at batch 1; per_image = steps × (2 with CFG) denoiser passes + "
              "one VAE decode + one forward of each text encoder.")


def to_record(profile: Profile) -> dict[str, Any]:
    from evalkit.runtime.provenance import git_commit, library_versions

    dtype = str(profile.dtype).removeprefix("torch.")
    components = [{"name": c.name, "class": c.class_name, "role": c.role, "parameters": c.parameters,
                   "bytes": c.nbytes(profile.dtype),
                   "share": round(c.parameters / profile.total_parameters, 6) if profile.total_parameters else 0.0,
                   **({"note": c.note} if c.note else {})} for c in profile.components]
    p = profile.protocol
    return {
        "schema": SCHEMA,
        "name": profile.name,
        "pipeline_class": profile.pipeline_class,
        "family": profile.family,
        "source": profile.source,
        "convention": CONVENTION,
        "parameters": {"dtype": dtype, "components": components, "total": profile.total_parameters,
                       "total_bytes": profile.total_parameters * profile.dtype.itemsize,
                       "denoiser": profile.denoiser.parameters},
        "protocol": {"steps": p.steps, "guidance_scale": p.guidance_scale, "denoiser_passes": p.denoiser_passes,
                     "vae_scale_factor": profile.vae_scale_factor, "context_length": profile.context_length,
                     "text_lengths": profile.text_lengths},
        "compute": [{"resolution": c.resolution, "latent_side": c.latent_side, "batch": 1,
                     "denoiser": c.denoiser.as_record(),
                     "vae_decode": c.vae_decode.as_record() if c.vae_decode else None,
                     "text_encoders": {k: v.as_record() for k, v in c.text_encoders.items()},
                     "text_encoding": c.text_encoding.as_record(),
                     "per_image": c.per_image.as_record()} for c in profile.compute],
        "latency": profile.latency.as_record() if profile.latency else None,
        "notes": profile.notes,
        "provenance": {"versions": library_versions(), "git_commit": git_commit()},
    }


# -- formatting ------------------------------------------------------------------------------------


def count(n: int) -> str:
    """Parameters with an SI suffix: 865.91 M, 2.57 B."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return str(n)


def nbytes(n: int | None) -> str:
    if n is None:
        return "-"
    for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n} B"


def gmacs(macs: MacCount | int | None) -> str:
    if macs is None:
        return "-"
    value = macs.total if isinstance(macs, MacCount) else macs
    if value == 0:
        return "0"
    return f"{value / 1e9:,.1f}" if value >= 1e8 else f"{value / 1e9:.4f}"


def _header(profile: Profile) -> list[str]:
    kind = profile.source.get("kind", "?")
    where = {"preset": f"preset {profile.source.get('preset')} (mirrors {profile.source.get('mirrors')})",
             "hub": f"hub {profile.source.get('repo_id')}@{profile.source.get('revision')}",
             "pipeline": f"folder {profile.source.get('path')}",
             "training_step": f"training checkpoint {profile.source.get('denoiser_folder')}",
             "single_file": f"single file {profile.source.get('file')} (shapes from its base's configs)",
             "config": "denoiser config"}.get(kind, kind)
    family = f"family {profile.family}"
    cls = f"{profile.pipeline_class} ({family})" if profile.pipeline_class else family
    how = ("counts from configs on the meta device; latency timed with weights" if profile.latency is not None
           else "configs only: every component built on the meta device, no weights read")
    return [f"evalkit profile: {profile.name} — {cls}, {where}", how]


def _param_rows(profile: Profile) -> list[list[str]]:
    total = profile.total_parameters
    rows = [[c.name + (" *" if c.note else ""), c.class_name, count(c.parameters), nbytes(c.nbytes(profile.dtype)),
             f"{100 * c.parameters / total:.1f} %" if total else "-"] for c in profile.components]
    rows.append(["total", "", count(total), nbytes(total * profile.dtype.itemsize), "100.0 %"])
    return rows


def _denoiser_rows(profile: Profile) -> list[list[str]]:
    return [[f"{c.resolution} px ({c.latent_side}x{c.latent_side})", gmacs(c.denoiser), gmacs(c.denoiser.attention),
             f"{100 * c.denoiser.attention_share:.1f} %", gmacs(c.denoiser.attention_matmul),
             gmacs(c.denoiser.conv_linear), gmacs(c.denoiser.flops)] for c in profile.compute]


def _image_rows(profile: Profile) -> list[list[str]]:
    passes = profile.protocol.denoiser_passes
    rows = []
    for c in profile.compute:
        denoise = c.denoiser.total * passes
        text = c.text_encoding if c.text_encoders else None
        rows.append([f"{c.resolution} px", gmacs(denoise), gmacs(c.vae_decode), gmacs(text),
                     gmacs(c.per_image), f"{c.per_image.flops / 1e12:,.2f}",
                     f"{100 * denoise / c.per_image.total:.1f} %" if c.per_image.total else "-"])
    return rows


def _latency_rows(latency: LatencyReport) -> list[list[str]]:
    best = latency.best
    return [[str(p.batch_size) + (" (best)" if p is best and len(latency.points) > 1 else ""),
             f"{p.median_seconds:.3f}", f"{p.seconds_per_image:.3f}", f"{p.images_per_second:.3f}",
             nbytes(p.peak_memory_bytes), _over(p.peak_memory_bytes, p.baseline_memory_bytes)]
            for p in latency.points]


def _over(peak: int | None, baseline: int | None) -> str:
    """Peak above what was resident before the call: activations, workspaces, decoded images."""
    if peak is None or baseline is None:
        return "-"
    return nbytes(max(0, peak - baseline))


PARAM_HEAD = ["component", "class", "parameters", "bytes ({dtype})", "share"]
DENOISER_HEAD = ["denoiser forward, batch 1", "GMACs", "attention GMACs", "attention share", "of which QK^T+AV",
                 "conv+linear only", "GFLOPs"]
IMAGE_HEAD = ["per image", "denoiser GMACs", "VAE decode", "text encoding", "total GMACs", "total TFLOPs",
              "denoiser share"]
LATENCY_HEAD = ["batch", "s/batch", "s/image", "images/s", "peak memory", "over baseline"]


def _protocol_line(profile: Profile) -> str:
    p = profile.protocol
    cfg = f" × 2 (CFG {p.guidance_scale:g})" if p.passes_per_step == 2 else f" (CFG {p.guidance_scale:g}: one pass)"
    return (f"per image = {p.steps} steps{cfg} = {p.denoiser_passes} denoiser passes + 1 VAE decode + 1 forward "
            f"per text encoder ({', '.join(f'{k} {v} tokens' for k, v in profile.text_lengths.items()) or 'none'})")


def _latency_line(latency: LatencyReport) -> str:
    device = latency.device.get("name") or latency.device.get("type")
    return (f"measured latency: {latency.device.get('type')} ({device}), {latency.dtype}, {latency.scheduler} "
            f"{latency.steps} steps, CFG {latency.guidance_scale:g}, {latency.resolution} px, weights "
            f"{latency.weights}; memory: {latency.memory_method}; sweep stopped: {latency.stopped}")


def render_table(profile: Profile) -> str:
    dtype = str(profile.dtype).removeprefix("torch.")
    head = [h.format(dtype=dtype) for h in PARAM_HEAD]
    parts = ["\n".join(_header(profile)), _text_table(head, _param_rows(profile), left=2)]
    marked = [c for c in profile.components if c.note]
    if marked:
        parts[-1] += "\n" + "\n".join(f"* {c.name}: {c.note}" for c in marked)
    parts.append("compute (1 MAC = one multiply-add; FLOPs = 2 × MACs; see docs/profile.md)\n"
                 + _text_table(DENOISER_HEAD, _denoiser_rows(profile), left=1))
    parts.append(_protocol_line(profile) + "\n" + _text_table(IMAGE_HEAD, _image_rows(profile), left=1))
    if profile.latency is not None:
        parts.append(_latency_line(profile.latency) + "\n" + _text_table(LATENCY_HEAD, _latency_rows(profile.latency),
                                                                         left=1))
    if profile.notes:
        parts.append("\n".join(f"note: {n}" for n in profile.notes))
    return "\n\n".join(parts)


def render_markdown(profile: Profile) -> str:
    dtype = str(profile.dtype).removeprefix("torch.")
    head = [h.format(dtype=dtype) for h in PARAM_HEAD]
    title = profile.name + (f" ({profile.pipeline_class})" if profile.pipeline_class else "")
    parts = [f"### {title}", _md_table(head, _param_rows(profile), left=2)]
    marked = [c for c in profile.components if c.note]
    if marked:
        parts.append("\n".join(f"\\* {c.name}: {c.note}" for c in marked))
    parts.append(_md_table(DENOISER_HEAD, _denoiser_rows(profile), left=1))
    parts.append(_protocol_line(profile) + ":")
    parts.append(_md_table(IMAGE_HEAD, _image_rows(profile), left=1))
    if profile.latency is not None:
        parts.append(_latency_line(profile.latency) + ":")
        parts.append(_md_table(LATENCY_HEAD, _latency_rows(profile.latency), left=1))
    parts.extend(f"Note: {n}" for n in profile.notes)
    return "\n\n".join(parts) + "\n"


def _text_table(head: list[str], rows: list[list[str]], left: int) -> str:
    """Columns padded to their widest cell; the first `left` columns left-aligned, numbers right."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                                 strict=True))).rstrip()

    return "\n".join([line(head), *(line(r) for r in rows)])


def _md_table(head: list[str], rows: list[list[str]], left: int) -> str:
    align = ["---" if i < left else "---:" for i in range(len(head))]
    lines = [head, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
