"""When two metric results may be compared: the project's central invariant, written once.

Two numbers mean the same thing only when the images were made the same way (protocol
fingerprint), from the same prompts (prompt-set fingerprint), and scored the same way (metric
fingerprint: card, weights, versions). Curves draw one line per key, the leaderboard puts one
key per column, the evaluator skips a step whose run.json already holds the wanted keys, and
`check` refuses to compare across keys, saying which part differs (the helpers below).
"""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_json
from evalkit.results.model import RunResult


@dataclass(frozen=True, order=True)
class ComparabilityKey:
    """Ordered protocol first, so sorting keys groups a protocol's metric variants together."""

    protocol_fingerprint: str
    metric_fingerprint: str
    prompt_set_fingerprint: str

    @classmethod
    def from_json(cls, doc: dict[str, str]) -> ComparabilityKey:
        return cls(doc["protocol_fingerprint"], doc["metric_fingerprint"], doc["prompt_set_fingerprint"])

    def to_json(self) -> dict[str, str]:
        """The key as curve files store it (in this key order)."""
        return {"metric_fingerprint": self.metric_fingerprint, "prompt_set_fingerprint": self.prompt_set_fingerprint,
                "protocol_fingerprint": self.protocol_fingerprint}

    @property
    def digest(self) -> str:
        """sha256 of the key: stable across runs and machines, so its prefix can name a series."""
        return sha256_json(self.to_json())


def metric_key(run: RunResult, name: str) -> ComparabilityKey:
    """The key of metric `name` in `run` (which must hold it)."""
    entry = run.metrics[name]
    return ComparabilityKey(run.protocol.fingerprint, entry.fingerprint, entry.prompt_set_fingerprint)


def require_same_protocol(base: RunResult, new: RunResult) -> None:
    """Refuse runs whose images were generated differently, naming the settings that differ."""
    b, n = base.protocol, new.protocol
    if b.fingerprint == n.fingerprint:
        return
    b_settings, n_settings = b.settings(), n.settings()
    differ = [f"{k} {b_settings.get(k)!r} vs {n_settings.get(k)!r}" for k in sorted(set(b_settings) | set(n_settings))
              if b_settings.get(k) != n_settings.get(k)]
    raise EvalkitError(f"the runs used different generation protocols (baseline {b.fingerprint[:12]}…, new "
                       f"{n.fingerprint[:12]}…" + (f": {'; '.join(differ)}" if differ else "") + ")",
                       "generate both with the same settings (scheduler, steps, cfg, seed, resolution, dtype)")


def require_same_metric(name: str, base: RunResult, new: RunResult) -> None:
    """Refuse a metric scored on other prompts or computed differently (same protocol assumed)."""
    b_key, n_key = metric_key(base, name), metric_key(new, name)
    b, n = base.metrics[name], new.metrics[name]
    if b_key.prompt_set_fingerprint != n_key.prompt_set_fingerprint:
        size_b = _set_size(base, b.prompt_set)
        size_n = _set_size(new, n.prompt_set)
        raise EvalkitError(f"{name} was scored on different prompts: baseline {b.prompt_set} with {size_b} prompts "
                           f"(fingerprint {b_key.prompt_set_fingerprint[:12]}…), new {n.prompt_set} with {size_n} "
                           f"(fingerprint {n_key.prompt_set_fingerprint[:12]}…)",
                           "compare runs generated with the same prompts and the same --subset/--limit "
                           "(a smoke run compares only with a smoke baseline)")
    if b_key.metric_fingerprint != n_key.metric_fingerprint:
        raise EvalkitError(f"{name} was computed differently in the two runs (metric fingerprint "
                           f"{b_key.metric_fingerprint[:12]}… vs {n_key.metric_fingerprint[:12]}…: another card, "
                           "model, weights or metric version)",
                           f"re-score both with the same card, or leave {name} out with --metrics")


def _set_size(run: RunResult, prompt_set: str) -> int | str:
    record = run.prompt_sets.get(prompt_set)
    return record.n if record is not None else "?"
