"""Shared fixtures: offline, network-blocked, tiny models built once per session."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

NETBLOCK = Path(__file__).parent / "netblock"
for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_key] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETBLOCK), os.environ.get("PYTHONPATH", "")]))
sys.path.insert(0, str(NETBLOCK))
import sitecustomize as _netblock  # noqa: E402

_netblock.install()

import pytest  # noqa: E402

from evalkit.generation.checkpoints import ResolveOptions, resolve  # noqa: E402
from evalkit.generation.generator import GenerateOptions, Generator, StepResult  # noqa: E402
from evalkit.generation.protocol import GenerationRequest  # noqa: E402
from evalkit.prompts.sets import PromptSet, load_prompt_set  # noqa: E402

FAST_STEPS = 4  # tests that are not about the protocol itself use few denoising steps


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def sd_dir(models: Path) -> Path:
    from evalkit.tiny.sd import build_tiny_sd

    path = models / "tiny-sd"
    build_tiny_sd(seed=0).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def train_dir(models: Path) -> Path:
    from evalkit.tiny.sd import build_tiny_sd
    from evalkit.tiny.training import write_training_folder

    return write_training_folder(models / "tiny-train", build_tiny_sd(seed=1))


@pytest.fixture(scope="session")
def small_sets() -> list[PromptSet]:
    return [load_prompt_set("tifa-v1.0").head(5), load_prompt_set("coco-10k").head(4)]


@pytest.fixture
def generate(tmp_path: Path) -> Callable[..., list[StepResult]]:
    """Run the real generator in-process: generate(spec, out=..., resolve_opts..., **request)."""

    def run(spec: str | Path, sets: list[PromptSet], out: Path | None = None, batch_size: int = 4,
            auto_batch: bool = False, shard: tuple[int, int] = (0, 1), resolve_options: ResolveOptions | None = None,
            allow_pickle: bool = False, **request: object) -> list[StepResult]:
        request.setdefault("steps", FAST_STEPS)
        options = GenerateOptions(out=out or tmp_path / "out", batch_size=batch_size, auto_batch=auto_batch,
                                  shard_index=shard[0], shard_count=shard[1], quiet=True)
        generator = Generator(GenerationRequest(**request), options, allow_pickle=allow_pickle)  # type: ignore[arg-type]
        refs = resolve(str(spec), resolve_options or ResolveOptions(allow_pickle=allow_pickle))
        return generator.run(refs, sets)

    return run


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """Run `evalkit ARGS` through the real entry point; returns (exit code, stdout, stderr)."""
    from evalkit.cli.app import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["evalkit", *args])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = int(e.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
