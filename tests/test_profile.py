"""evalkit profile: parameter counts, MAC counts against hand-computed numbers, meta-only
counting, the per-image protocol total, the CLI and a CPU latency smoke run.

Every expected MAC number below is worked out by hand from the layer shapes (the working is
in the comments), not re-derived with the counter, so a counting mistake fails a test.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor

from evalkit.errors import EvalkitError
from evalkit.profile import (
    MacCount,
    ProtocolCost,
    build_meta,
    count_macs,
    count_parameters,
    preset,
    profile_spec,
    render_markdown,
    render_table,
    spec_from_pipeline_folder,
    to_record,
)

DEVICES = ("meta", "cpu")  # meta: how profiling counts; cpu: real kernels (SDPA takes a fused path there)


def _on(device: str, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.device(device):
        return build().eval()


# -- MACs of single layers, by hand ------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_conv_and_linear_macs_are_hand_counts(device):
    conv = _on(device, lambda: torch.nn.Conv2d(3, 8, 3, padding=1))
    x = torch.zeros(1, 3, 16, 16, device=device)
    # 16·16 outputs × 8 out channels × (3 in channels × 3·3 kernel) = 55,296; the bias is not counted
    assert count_macs(conv, lambda: conv(x)) == MacCount(conv=55_296)

    strided = _on(device, lambda: torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2))
    y = torch.zeros(2, 8, 16, 16, device=device)
    # batch 2 × 8·8 outputs × 16 out channels × (8/2 in channels per group × 9) = 73,728
    assert count_macs(strided, lambda: strided(y)).conv == 73_728

    linear = _on(device, lambda: torch.nn.Linear(32, 64))
    z = torch.zeros(2, 10, 32, device=device)
    # 2·10 tokens × 32 in × 64 out = 40,960
    assert count_macs(linear, lambda: linear(z)) == MacCount(linear=40_960)


@pytest.mark.parametrize("device", DEVICES)
def test_self_attention_macs_include_scores_and_values(device):
    attn = _on(device, lambda: Attention(query_dim=32, heads=4, dim_head=8))
    x = torch.zeros(1, 16, 32, device=device)
    macs = count_macs(attn, lambda: attn(x))
    # projections q, k, v, out: 4 × 16 tokens × 32 × 32 = 65,536
    # QK^T: 4 heads × 16 × 16 × 8 = 8,192; attention·V: the same 8,192
    assert macs == MacCount(linear=65_536, matmul=16_384, attention=81_920, attention_matmul=16_384)
    assert macs.total == 81_920 and macs.flops == 163_840 and macs.attention_share == 1.0


@pytest.mark.parametrize("device", DEVICES)
def test_cross_attention_macs(device):
    attn = _on(device, lambda: Attention(query_dim=32, cross_attention_dim=24, heads=2, dim_head=16))
    x = torch.zeros(1, 16, 32, device=device)
    context = torch.zeros(1, 5, 24, device=device)
    macs = count_macs(attn, lambda: attn(x, encoder_hidden_states=context))
    # q: 16×32×32 = 16,384; k, v: 2 × 5×24×32 = 7,680; out: 16,384   -> 40,448
    # QK^T: 2 heads × 16 × 5 × 16 = 2,560; attention·V: 2,560          -> 5,120
    assert macs == MacCount(linear=40_448, matmul=5_120, attention=45_568, attention_matmul=5_120)


def test_attention_without_sdpa_counts_the_same():
    """The classic processor (baddbmm + bmm) and SDPA are the same matmuls."""
    attn = Attention(query_dim=32, heads=4, dim_head=8).eval()
    attn.set_processor(AttnProcessor())
    x = torch.zeros(1, 16, 32)
    assert count_macs(attn, lambda: attn(x)).matmul == 16_384


def test_only_work_inside_attention_modules_is_attention():
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.before = torch.nn.Linear(32, 32)
            self.attn = Attention(query_dim=32, heads=4, dim_head=8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(self.before(x))

    block = _on("meta", Block)
    macs = count_macs(block, lambda: block(torch.zeros(1, 16, 32, device="meta")))
    # before: 16×32×32 = 16,384 (not attention); attention as in the self-attention test: 81,920
    assert macs.total == 98_304 and macs.attention == 81_920
    assert macs.attention_share == pytest.approx(81_920 / 98_304)


# -- a whole tiny UNet, by hand ----------------------------------------------------------------------


def _hand_unet(device: str) -> UNet2DConditionModel:
    return _on(device, lambda: UNet2DConditionModel(
        sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8,), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",), mid_block_type=None,
        cross_attention_dim=8, attention_head_dim=4, norm_num_groups=4))


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_unet_macs_are_the_hand_count(device):
    """One level (8 channels, 4x4 latents = 16 tokens), no mid block, text context 3 × 8.

    time embedding: Linear(8,32) 256 + Linear(32,32) 1,024                            = 1,280 (linear)
    conv_in 3x3 4->8: 16·8·4·9                                                      = 4,608 (conv)
    down resnet 8->8: conv1 9,216 + conv2 9,216 (conv) + time proj Linear(32,8) 256 (linear)
    each of 3 transformers (1 down, 2 up):
      proj_in / proj_out 1x1 convs: 2 · 16·8·8                                      = 2,048 (conv)
      self-attn: q,k,v,out 4·16·8·8 = 4,096 (linear); QK^T 16·16·8 + AV 16·16·8     = 4,096 (matmul)
      cross-attn: q 1,024 + k,v 2·3·8·8 = 384 + out 1,024 (linear); QK^T+AV 2·16·3·8 = 768 (matmul)
      GEGLU feed-forward: Linear(8,64) 16·8·64 = 8,192 + Linear(32,8) 16·32·8 = 4,096 (linear)
    2 up resnets 16->8 (skip concat): conv1 16·8·16·9 = 18,432 + conv2 9,216 + 1x1 shortcut 2,048
      (conv) + time proj 256 (linear)
    conv_out 3x3 8->4: 16·4·8·9                                                    = 4,608 (conv)
    conv   = 4,608 + 18,432 + 3·2,048 + 2·29,696 + 4,608                             = 93,184
    linear = 1,280 + 256 + 3·(4,096 + 2,432 + 12,288) + 2·256                       = 58,496
    matmul = 3·(4,096 + 768)                                                        = 14,592
    attention = 3·(4,096 + 4,096 + 2,432 + 768)                                     = 34,176
    """
    unet = _hand_unet(device)
    sample, context = torch.zeros(1, 4, 4, 4, device=device), torch.zeros(1, 3, 8, device=device)
    timestep = torch.tensor([10], device=device)
    macs = count_macs(unet, lambda: unet(sample, timestep, context))
    assert macs == MacCount(conv=93_184, linear=58_496, matmul=14_592, attention=34_176, attention_matmul=14_592)
    assert macs.total == 166_272


# The same UNet profiled from its config gets the protocol's 77-token context instead of 3:
# per transformer, cross-attention k,v grow from 2·3·8·8 = 384 to 2·77·8·8 = 9,856 and QK^T+AV
# from 2·16·3·8 = 768 to 2·16·77·8 = 19,712, so 166,272 + 3·(9,472 + 18,944) = 251,520.
HAND_UNET_77_TOKENS = 251_520


def _hand_unet_config(tmp_path: Path) -> Path:
    config = tmp_path / "unet.json"
    config.write_text(json.dumps({"_class_name": "UNet2DConditionModel", **_hand_unet("meta").config}))
    return config


def test_per_image_total_is_the_protocol_arithmetic(tmp_path):
    """steps × 2 (CFG) denoiser passes + one VAE decode + one text-encoder forward."""
    from evalkit.profile import denoiser_spec_from_file, with_denoiser

    spec = with_denoiser(None, denoiser_spec_from_file(_hand_unet_config(tmp_path)), "hand")
    # resolution 32 with the default VAE factor 8 gives the 4x4 latents counted above
    with_cfg = profile_spec(spec, [32], ProtocolCost(steps=10, guidance_scale=7.5))
    assert with_cfg.context_length == 77
    assert with_cfg.compute[0].denoiser.total == HAND_UNET_77_TOKENS
    assert with_cfg.compute[0].per_image.total == 20 * HAND_UNET_77_TOKENS  # no VAE, no text encoder given
    assert with_cfg.compute[0].vae_decode is None and len(with_cfg.notes) == 2
    no_cfg = profile_spec(spec, [32], ProtocolCost(steps=10, guidance_scale=1.0))
    assert no_cfg.compute[0].per_image.total == 10 * HAND_UNET_77_TOKENS


# -- parameter counts -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, Path]]:
    from evalkit.tiny.dit import build_tiny_pixart, build_tiny_sd3
    from evalkit.tiny.sd import build_tiny_sd, build_tiny_sdxl

    root = tmp_path_factory.mktemp("profile-pipes")
    built = {"sd": build_tiny_sd(seed=3), "sdxl": build_tiny_sdxl(), "pixart": build_tiny_pixart(),
             "sd3": build_tiny_sd3(with_t5=True)}
    out = {}
    for name, pipe in built.items():
        pipe.save_pretrained(str(root / name))
        out[name] = (pipe, root / name)
    return out


@pytest.mark.parametrize("family", ["sd", "sdxl", "pixart", "sd3"])
def test_parameter_counts_match_direct_sums_over_the_loaded_modules(tiny_pipelines, family):
    pipe, folder = tiny_pipelines[family]
    profile = profile_spec(spec_from_pipeline_folder(folder, family, {"kind": "pipeline"}))
    expected = {name: sum(p.numel() for p in module.parameters())
                for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}
    assert {c.name: c.parameters for c in profile.components} == expected
    assert profile.total_parameters == sum(expected.values())
    record = to_record(profile)["parameters"]
    assert sum(c["share"] for c in record["components"]) == pytest.approx(1.0, abs=1e-5)
    assert record["total_bytes"] == 2 * sum(expected.values())  # bfloat16


@pytest.mark.parametrize("family", ["pixart", "sd3"])
def test_transformer_families_count_the_same_on_meta_and_on_real_weights(tiny_pipelines, family):
    from evalkit.profile import denoiser_macs

    pipe, folder = tiny_pipelines[family]
    profile = profile_spec(spec_from_pipeline_folder(folder, family, {"kind": "pipeline"}), [32])
    real = denoiser_macs(pipe.transformer, family, 16, profile.context_length)
    assert profile.compute[0].denoiser == real and real.attention_matmul > 0


def test_public_presets_have_the_released_parameter_counts():
    """The counts of the released checkpoints (their safetensors headers), so the in-code
    configs are checked against something other than themselves."""
    released = {
        "sd1.5": {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863},
        "sd2": {"unet": 865_910_724, "text_encoder": 340_387_840, "vae": 83_653_863},
        "sdxl": {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840,
                 "vae": 83_653_863},
    }
    for name, counts in released.items():
        modules = build_meta(preset(name))
        for component, n in counts.items():
            assert count_parameters(modules[component]) == n, (name, component)


# -- config-only means no memory ---------------------------------------------------------------------


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_config_only_profiling_allocates_no_parameter_memory():
    spec = preset("sdxl")
    build_meta(spec)  # warm imports and caches so the RSS comparison sees only the profile itself
    before = _rss()
    modules = build_meta(spec)
    profile = profile_spec(spec, [256])
    grown = _rss() - before
    assert all(p.is_meta for m in modules.values() for p in m.parameters())
    assert profile.total_parameters > 3_400_000_000  # 13.9 GB in float32 had anything been allocated
    assert grown < 400 << 20, f"RSS grew by {grown >> 20} MiB"


def test_pipeline_folder_profile_reads_no_weights(sd_dir, monkeypatch):
    import safetensors.torch

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("profiling read a weights file")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    profile = profile_spec(spec_from_pipeline_folder(sd_dir, "tiny-sd", {"kind": "pipeline"}))
    assert profile.compute[0].resolution == 32 and profile.denoiser.parameters > 0


def test_hub_id_profiles_from_cached_configs_alone(cli, sd_dir, tmp_path, monkeypatch):
    """A hub snapshot holding only model_index.json and config.json files is enough."""
    import huggingface_hub.constants as hub_constants

    commit = "0" * 39 + "2"
    snapshot = tmp_path / "hub" / "models--evalkit-test--configs-only" / "snapshots" / commit
    for config in [sd_dir / "model_index.json", *sd_dir.glob("*/config.json")]:
        target = snapshot / config.relative_to(sd_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(config, target)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code, out, err = cli("profile", "evalkit-test/configs-only", "--json", "-")
    assert code == 0, err
    record = json.loads(out)
    assert record["source"] == {"kind": "hub", "repo_id": "evalkit-test/configs-only", "revision": "main",
                                "snapshot": commit}
    assert {c["name"] for c in record["parameters"]["components"]} == {"unet", "vae", "text_encoder"}


# -- the scaling study's Table 1 (256 px) -------------------------------------------------------------


@pytest.fixture(scope="module")
def sd2_profile():
    return profile_spec(preset("sd2"), [256, 512])


@pytest.mark.parametrize(("name", "params", "gmacs"), [
    ("sd2", 0.87e9, 86), ("study-sdxl", 2.39e9, 198), ("study-sdxl-c128", 0.42e9, 35)])
def test_study_table_1_is_reproduced_with_conv_linear_counting(name, params, gmacs, sd2_profile):
    """Table 1 counts convolutions and linear layers only; ours adds the attention matmuls."""
    profile = sd2_profile if name == "sd2" else profile_spec(preset(name), [256])
    denoiser = profile.compute[0].denoiser
    assert profile.denoiser.parameters == pytest.approx(params, rel=0.01)
    assert denoiser.conv_linear / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert denoiser.total > denoiser.conv_linear


def test_resolution_scaling_and_errors(sd2_profile):
    small, large = (c.denoiser for c in sd2_profile.compute)
    assert 3.8 < large.conv_linear / small.conv_linear < 4.0  # pixels ×4; the 77-token k/v projections do not grow
    assert large.attention_matmul / small.attention_matmul > 14  # self-attention scores grow with pixels²
    with pytest.raises(EvalkitError, match="not a positive multiple of 8"):
        profile_spec(preset("sd2"), [260])
    with pytest.raises(EvalkitError, match="unknown preset"):
        preset("sd9")


# -- reports and CLI ---------------------------------------------------------------------------------


def test_table_json_and_markdown(sd_dir):
    profile = profile_spec(spec_from_pipeline_folder(sd_dir, "tiny-sd", {"kind": "pipeline"}), [32, 64])
    table = render_table(profile)
    assert "component" in table and "UNet2DConditionModel" in table and "per image" in table
    markdown = render_markdown(profile)
    assert "| component | class | parameters | bytes (bfloat16) | share |" in markdown
    record = json.loads(json.dumps(to_record(profile)))
    assert record["schema"] == "evalkit.profile/1"
    first = record["compute"][0]
    assert first["per_image"]["total"] == (100 * first["denoiser"]["total"] + first["vae_decode"]["total"]
                                           + first["text_encoding"]["total"])
    assert first["denoiser"]["flops"] == 2 * first["denoiser"]["total"]


def test_cli_unet_config_json(cli, tmp_path):
    code, out, err = cli("profile", "--unet-config", str(_hand_unet_config(tmp_path)), "--resolution", "32",
                         "--json", "-")
    assert code == 0, err
    record = json.loads(out)
    assert record["compute"][0]["denoiser"]["total"] == HAND_UNET_77_TOKENS
    assert record["parameters"]["components"][0]["name"] == "unet"


def test_cli_writes_profile_next_to_run_results(cli, sd_dir, tmp_path):
    code, out, err = cli("profile", str(sd_dir), "--out", str(tmp_path / "runs"), "--markdown", str(tmp_path / "p.md"))
    assert code == 0, err
    assert "per image" in out
    written = json.loads((tmp_path / "runs" / sd_dir.name / "final" / "profile.json").read_text())
    assert written["name"] == sd_dir.name and written["latency"] is None
    assert (tmp_path / "p.md").read_text().startswith("### ")


def test_cli_errors_are_one_line(cli, tmp_path):
    code, _, err = cli("profile")
    assert code == 2 and err.startswith("error: nothing to profile — ")
    code, _, err = cli("profile", "--unet-config", str(tmp_path / "missing.json"))
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("profile", "--preset", "sd2", "--unet-config", str(tmp_path), "--latency")
    assert code == 2


# -- latency (CPU smoke) ------------------------------------------------------------------------------


def test_latency_smoke_on_cpu(sd_dir):
    from evalkit.generation.checkpoints import ResolveOptions, resolve
    from evalkit.generation.protocol import GenerationRequest
    from evalkit.profile.latency import load_checkpoint, measure_latency

    ref = resolve(str(sd_dir), ResolveOptions())[0]
    request = GenerationRequest(steps=2, resolution=32, device="cpu")
    loaded = load_checkpoint(ref, torch.device("cpu"), torch.float32)
    report = measure_latency(loaded, request, [1, 2], repeats=1)
    assert [p.batch_size for p in report.points] == [1, 2]
    assert all(p.median_seconds > 0 and p.peak_memory_bytes for p in report.points)
    assert report.best is not None and report.steps == 2 and report.scheduler == "DDIMScheduler"
    record = report.as_record()
    assert record["batch1_seconds_per_image"] > 0 and record["best_batch_size"] in (1, 2)
