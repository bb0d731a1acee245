"""evalkit.options: each option declared once, offered by the CLI and evaluate() alike, checked in one place."""

from __future__ import annotations

import inspect
import math
from dataclasses import fields
from pathlib import Path

import pytest

from evalkit.cli.app import cli as cli_group
from evalkit.errors import EXIT_USAGE, EvalkitError
from evalkit.evaluation.evaluator import PROTOCOL_FIELDS, evaluate
from evalkit.generation.checkpoints import ResolveOptions
from evalkit.generation.generator import GenerateOptions
from evalkit.generation.protocol import SCHEDULERS, GenerationRequest
from evalkit.options import DEFAULTS, IN_PROCESS, OPTION_FIELDS, SCHEDULER_CLASSES, RunOptions, names_in, spec_of
from evalkit.runtime.torchrun import placed

# evaluate()'s keywords that are not options: what to evaluate, not how.
EVALUATE_OWN = {
    "metrics": "the CLI's --metrics is run's own argument; evaluate() also takes Metric objects",
    "prompts": "generate and run default it differently; evaluate() also takes PromptSet objects",
    "step": "picks checkpoint-N of a training folder, or files a pipeline object under a step",
    "curves": "the CLI always rewrites a training folder's curves; a training loop may defer them",
}


def _flags(command: str) -> dict[str, str]:
    """click parameter name (the RunOptions field for generated options) -> its first flag."""
    return {p.name: p.opts[0] for p in cli_group.commands[command].params if p.name}


def test_every_option_is_a_cli_flag_and_an_evaluate_keyword():
    run_flags = _flags("run")
    for name in OPTION_FIELDS:
        assert name in run_flags, f"option {name} is no flag of `evalkit run`"
    assert set(names_in("source", "protocol", "output", "prompts")) <= set(_flags("generate"))

    keywords = {n: p for n, p in inspect.signature(evaluate).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert set(PROTOCOL_FIELDS) == set(names_in("protocol"))  # taken as **protocol
    assert not set(PROTOCOL_FIELDS) & set(keywords)
    for name in OPTION_FIELDS:
        if spec_of(name).cli_only:
            continue
        assert name in keywords or name in PROTOCOL_FIELDS, f"option {name} is no keyword of evaluate()"
    for name, parameter in keywords.items():
        if name in EVALUATE_OWN:
            continue
        assert name in OPTION_FIELDS and not spec_of(name).cli_only, f"evaluate({name}=) is no option"
        default = Path(parameter.default) if name == "out" else parameter.default
        assert default == getattr(IN_PROCESS, name), f"evaluate({name}=) has its own default"


def test_cli_defaults_are_the_options_defaults():
    for command in ("generate", "run"):
        for param in cli_group.commands[command].params:
            if param.name in OPTION_FIELDS:
                assert param.default == getattr(DEFAULTS, param.name), (command, param.name)


def test_engine_option_objects_are_views_of_one_group_each():
    assert {f.name for f in fields(GenerationRequest)} == set(names_in("protocol"))
    assert {f.name for f in fields(ResolveOptions)} == set(names_in("source"))
    assert GenerationRequest() == GenerationRequest.of(DEFAULTS)
    assert ResolveOptions() == ResolveOptions.of(DEFAULTS)
    assert set(SCHEDULERS) == set(SCHEDULER_CLASSES)
    options = RunOptions(out=Path("o"), batch_size=3, shard="1/4", quiet=True)
    assert GenerateOptions.of(options) == GenerateOptions(Path("o"), 3, False, 1, 4, True)
    assert GenerateOptions.of(DEFAULTS).auto_batch


@pytest.mark.parametrize(("values", "problem"), [
    ({"guidance_scale": -1.0}, "guidance_scale must be >= 0 (got -1.0)"),
    ({"guidance_scale": math.nan}, "guidance_scale must be a finite number"),
    ({"limit": -1}, "limit must be >= 0 (got -1)"),
    ({"steps": 0}, "steps must be at least 1 (got 0)"),
    ({"resolution": 30}, "resolution must be a positive multiple of 8"),
    ({"batch_size": "lots"}, "batch_size 'lots' is neither a number nor 'auto'"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"shard": "3/2"}, "shard '3/2' is out of range"),
    ({"score_batch_size": 0}, "score_batch_size must be at least 1"),
    ({"scheduler": "magic"}, "unknown scheduler 'magic'"),
    ({"compile_denoiser": "always"}, "compile_denoiser 'always' is not one of auto, on, off"),
])
def test_rules_name_the_parameter(values, problem):
    with pytest.raises(EvalkitError) as raised:
        RunOptions(**values)
    assert raised.value.problem.startswith(problem) and raised.value.param == next(iter(values))


@pytest.mark.parametrize(("args", "line"), [
    (["generate", "x", "--cfg", "-1"], "error: --cfg must be >= 0 (got -1.0) — the protocol uses 7.5"),
    (["generate", "x", "--limit", "-1"], "error: --limit must be >= 0 (got -1) — 0 means all prompts"),
    (["run", "x", "--metrics", "clip", "--score-batch-size", "0"], "error: --score-batch-size must be at least 1"),
    (["score", "x", "--metrics", "clip", "--batch-size", "0"], "error: --batch-size must be at least 1"),
    (["generate", "x", "--batch-size", "0"], "error: --batch-size must be at least 1 (got 0)"),
    (["run", "x", "--metrics", "clip", "--compile", "yes"], "error: --compile 'yes' is not one of auto, on, off"),
])
def test_the_cli_names_its_flag(args, line, cli):
    code, _, err = cli(*args)
    assert code == EXIT_USAGE and err.startswith(line) and len(err.strip().splitlines()) == 1, err


def test_evaluate_checks_its_keywords_before_loading_anything(tmp_path):
    with pytest.raises(EvalkitError, match=r"^batch_size must be at least 1 \(got 0\)$"):
        evaluate(str(tmp_path / "missing"), metrics="clip", batch_size=0)
    with pytest.raises(EvalkitError, match=r"^guidance_scale must be >= 0"):
        evaluate(str(tmp_path / "missing"), metrics="clip", guidance_scale=-2.0)


def test_torchrun_places_each_process():
    assert placed(DEFAULTS, {}) == DEFAULTS
    assert placed(DEFAULTS, {"WORLD_SIZE": "2", "RANK": "1"}).shard == "1/2"
    assert placed(RunOptions(shard="0/3"), {"WORLD_SIZE": "2", "RANK": "1"}).shard == "0/3"
    with pytest.raises(EvalkitError, match="shard '2/2' is out of range"):
        placed(DEFAULTS, {"WORLD_SIZE": "2", "RANK": "2"})
