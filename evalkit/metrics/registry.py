"""Metric names → metric objects: one registry of declared implementations, built-in or plugin.

An implementation is a row: its factory, called as `factory(card, context) -> Metric` and named
lazily ("package.module:attribute", imported only when a card uses it, so reading the registry —
`evalkit metrics list`, checking a card — never imports a model library), the card params it
accepts (`params.Param`: type, default, meaning) and the run-time inputs it reads (`reads`: names
of `MetricContext` fields; it is handed a context holding only those).

Built-in rows are `BUILTINS`. A third-party package declares the same `Implementation` row and
registers it under the `evalkit.metrics` entry-point group; the entry point's name is the
implementation's name, so a card's `implementation:` can name a plugin and configure it with
`params:` like any built-in. `--metrics NAME` with a plugin's name and no card file scores with
the card the row's `card` declares (`PluginCard`: prompt set, direction, models), named after
the plugin with no params set; a plugin without one needs a card file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from evalkit.errors import EvalkitError, did_you_mean
from evalkit.fileio.safenames import require_folder_name
from evalkit.metrics.cards import MetricCard, ModelRef, read_card, shipped_cards
from evalkit.metrics.context import NO_INPUTS, MetricContext
from evalkit.metrics.params import Param, param_values
from evalkit.runtime.extras import require, require_installed
from evalkit.runtime.imports import import_object

if TYPE_CHECKING:
    from evalkit.metrics.api import Metric

ENTRY_POINT_GROUP = "evalkit.metrics"
PLUGIN_HINT = "fix or uninstall the plugin package"

MetricFactory = Callable[[MetricCard, MetricContext], "Metric"]


@dataclass(frozen=True)
class PluginCard:
    """The card a bare plugin name scores with: `--metrics NAME` without a card file."""

    prompt_set: str
    higher_is_better: bool
    display_name: str = ""
    description: str = ""
    models: tuple[ModelRef, ...] = ()


@dataclass(frozen=True)
class Implementation:
    """One implementation a card's `implementation:` may name."""

    factory: str  # "package.module:attribute", a callable (card, context) -> Metric
    params: tuple[Param, ...] = ()
    reads: tuple[str, ...] = ()  # MetricContext inputs it is given; the others reach it as None
    card: PluginCard | None = None  # plugins: what a bare `--metrics NAME` scores with
    extras: tuple[str, ...] = ()  # evalkit extras (runtime.extras.EXTRAS) its code needs
    local_files: tuple[str, ...] = ()  # params naming local weight files (`metrics list` checks them)
    card_refs: tuple[str, ...] = ()  # params naming another card whose files it uses (PRDC: its FID card)
    # It needs only each image and its prompt's text (no per-prompt data: TIFA's questions, FID's COCO
    # images), so `NAME@SET` may score it on another prompt set, free prompts included.
    any_prompts: bool = False

    def values(self, card: MetricCard) -> dict[str, Any]:
        """The card's params checked against this row, with the declared defaults filled in."""
        return param_values(card, self.params)

    def check(self, card: MetricCard) -> None:
        """What `create` would refuse, found without importing anything: the card's params, the extras."""
        self.values(card)
        for extra in self.extras:
            require_installed(extra, f"metric {card.name!r}")

    def create(self, card: MetricCard, context: MetricContext) -> Metric:
        self.values(card)  # a typo or a wrong type is refused before any model code is imported
        for extra in self.extras:
            require(extra, f"metric {card.name!r}")
        factory: MetricFactory = import_object(self.factory)
        return factory(card, context.only(self.reads))

    def default_card(self, name: str) -> MetricCard:
        if self.card is None:
            raise EvalkitError(f"metric plugin {name!r} declares no default card, so it needs a card file",
                               f"write a card with `implementation: {name}` (see metrics/clip.yaml) and pass its path")
        return MetricCard(name=name, implementation=name, prompt_set=self.card.prompt_set,
                          higher_is_better=self.card.higher_is_better,
                          display_name=self.card.display_name or name, description=self.card.description,
                          models=self.card.models)


BUILTINS: Mapping[str, Implementation] = MappingProxyType({
    "clip_score": Implementation(
        factory="evalkit.metrics.clip_score:ClipScore",
        any_prompts=True,
        params=(Param("scale", str, "cosine", "cosine (raw, the study's), torchmetrics (100·cos, mean clamped at 0) "
                                              "or hessel (2.5·max(cos, 0) per image)"),),
    ),
    "tifa": Implementation(
        factory="evalkit.metrics.tifa.metric:TifaMetric",
        params=(Param("vqa_backend", str, "git-large", "a VQA backend of evalkit.metrics.tifa.vqa.BACKENDS"),
                Param("questions", str, "tifa-v1.0", "sample: the 19 shipped questions; otherwise the TIFA v1.0 "
                                                     "question file (hub dataset or --tifa-qa)"),
                Param("dtype", str, "float32", "VQA precision: float32 (the reference's), bfloat16 or float16")),
        reads=("tifa_qa",),
    ),
    "imagereward": Implementation(factory="evalkit.metrics.imagereward:ImageReward", any_prompts=True),
    "pickscore": Implementation(factory="evalkit.metrics.pickscore:PickScore", any_prompts=True),
    "dsg": Implementation(
        factory="evalkit.metrics.dsg:DSG",
        params=(Param("vqa_backend", str, "mplug-large", "a VQA backend of evalkit.metrics.tifa.vqa.BACKENDS"),
                Param("dtype", str, "float32", "VQA precision: float32 (the reference's), bfloat16 or float16")),
    ),
    "vqascore": Implementation(
        factory="evalkit.metrics.vqascore:VQAScore",
        any_prompts=True,
        params=(Param("backend", str, "clip-flant5",
                      "the VQA model: clip-flant5 (CLIP-FlanT5, the paper's) or qwen2.5-vl (Qwen2.5-VL/Qwen2-VL)"),
                Param("question_template", str, None,
                      "the question, {} replaced by the prompt (default: t2v_metrics' for the backend)"),
                Param("answer", str, "Yes", "the answer whose likelihood is the score"),
                Param("dtype", str, "bfloat16", "bfloat16: the reference's on CUDA (float32 on CPU); float32")),
    ),
    "aesthetic": Implementation(
        factory="evalkit.metrics.aesthetic:Aesthetic",
        any_prompts=True,
        local_files=("head",),
        params=(Param("head", str, "~/.cache/evalkit/models/sac+logos+ava1-l14-linearMSE.pth",
                      "the MLP head: the authors' .pth (read with weights_only=True) or a .safetensors"),),
    ),
    "hpsv2": Implementation(
        factory="evalkit.metrics.hpsv2:HPSv2",
        extras=("hpsv2",),
        any_prompts=True,
        params=(Param("version", str, "v2.1", "v2.1 or v2.0 (not comparable)"),
                Param("file", str, None, "the checkpoint file in the hps model (default: the version's official name)"),
                Param("antialias", bool, None, "antialias of the reference's tensor resize", required=True,
                      hint="the reference's tensor resize used false (torchvision < 0.17); see metrics/hpsv2.yaml"),
                Param("scale", str, "cosine", "cosine, or percent (100·cos, as the HPSv2 benchmark prints)"),
                Param("architecture", object, "ViT-H-14", "an open_clip model name or its config mapping")),
    ),
    "fid": Implementation(
        factory="evalkit.metrics.fid:FID",
        extras=("fid",),
        local_files=("weights",),
        params=(Param("resize", str, "tf1-bilinear", "resize to 299: tf1-bilinear (torch-fidelity's TF1-exact)"),
                Param("weights", str, "~/.cache/torch/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth",
                      "local Inception weights (.pth read with weights_only=True, or .safetensors)"),
                Param("n", int, 10000, "the number of images the card is meant for"),
                Param("label", str, None, "the display label (default: FID-<n/1000>K)"),
                Param("kid_subsets", int, 100, "KID subsets"),
                Param("kid_subset_size", int, 1000, "KID subset size"),
                Param("kid_seed", int, 0, "KID subset seed"),
                Param("bootstrap_resamples", int, 50, "resamples for intervals and `evalkit check`")),
        reads=("coco_images",),
    ),
    "cmmd": Implementation(
        factory="evalkit.metrics.cmmd:CMMD",
        params=(Param("sigma", float, 10.0, "the Gaussian RBF kernel's bandwidth (the paper's 10)"),
                Param("scale", float, 1000.0, "the factor the MMD is reported at (the paper's 1000)"),
                Param("bootstrap_resamples", int, 200, "resamples for intervals and `evalkit check`")),
        reads=("coco_images",),
    ),
    "prdc": Implementation(
        factory="evalkit.metrics.prdc:PRDC",
        extras=("fid",),
        card_refs=("features",),
        params=(Param("features", str, "fid", "the FID card whose Inception features and reference it reuses"),
                Param("value", str, "precision", "the headline value: precision, recall, density or coverage"),
                Param("pr_k", int, 3, "k of precision/recall (torch-fidelity's prc_neighborhood)"),
                Param("dc_k", int, 5, "k of density/coverage (prdc's nearest_k)"),
                Param("bootstrap_resamples", int, 200, "resamples for intervals and `evalkit check`")),
        reads=("coco_images",),
    ),
})


def plugin_entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """name → where it comes from, for `evalkit metrics list` and did-you-mean."""
    names = {name: f"card {Path(card.path).name}" for name, card in shipped_cards().items()}
    for name, ep in plugin_entry_points().items():
        names.setdefault(name, f"plugin {ep.value}")
    return dict(sorted(names.items()))


def card_of(spec: str) -> MetricCard:
    """The card a spec names: a shipped card name, a card file (.yaml), or a plugin name; `SPEC@SET`
    is that card scoring prompt set SET instead (metrics that need only the prompt's text), named
    NAME@SET so it sits beside the card on its own set. The card's content changes with the set, so
    its fingerprint does too, and its path records `SPEC@SET`, so `check` and `merge` re-create the
    same metric from run.json."""
    base, at, prompt_set = spec.rpartition("@")
    if not at:
        return _card_of(spec)
    card = _card_of(base)
    plugins = plugin_entry_points()
    row = BUILTINS.get(card.implementation) or (_plugin_row(card.implementation, plugins[card.implementation])
                                                if card.implementation in plugins else None)
    if row is None or not row.any_prompts:
        raise EvalkitError(f"metric {card.name!r} cannot score another prompt set ({spec}): it needs its own "
                           f"set's per-prompt data ({card.prompt_set})", "score it on its own prompt set, without @")
    require_folder_name("prompt set", prompt_set, "name a prompt set after @")
    return replace(card, name=f"{card.name}@{prompt_set}", prompt_set=prompt_set,
                   path=f"{card.path or card.name}@{prompt_set}")


def recreating_spec(recorded_path: str, name: str) -> str:
    """The spec that re-creates a card run.json recorded as `recorded_path` (a card file, maybe with
    @SET), else by its name: a moved or deleted card file falls back to the shipped card of that name."""
    file = recorded_path.rpartition("@")[0] if "@" in recorded_path else recorded_path
    if file and Path(file).expanduser().is_file():
        return recorded_path
    return name  # a retargeted card's name is NAME@SET itself


def _card_of(spec: str) -> MetricCard:
    if spec.endswith((".yaml", ".yml")):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise EvalkitError(f"metric card {spec} does not exist", "give a path to a card YAML or a metric name")
        return read_card(path)
    cards = shipped_cards()
    if spec in cards:
        return cards[spec]
    plugins = plugin_entry_points()
    if spec in plugins:
        return _plugin_row(spec, plugins[spec]).default_card(spec)
    known = list(available())
    suggestion = did_you_mean(spec, known)
    raise EvalkitError(f"unknown metric {spec!r}" + (f"; {suggestion}" if suggestion else ""),
                       "available: " + ", ".join(known) + " (evalkit metrics list)")


def create(spec: str, context: MetricContext = NO_INPUTS) -> Metric:
    """A metric from a shipped card name, a card file (.yaml), or a plugin name."""
    return from_card(card_of(spec), context)


def card_file(metric: Metric) -> str:
    """The card file a metric was made from, as given ("" when made from a shipped name): what
    re-creates the same metric in another process (`evalkit merge`, from the same working folder),
    and what run.json records as the card's path."""
    card = getattr(metric, "card", None)
    return card.path if isinstance(card, MetricCard) else ""


def preflight(specs: str) -> None:
    """Refuse what `create_many(specs)` would refuse for built-in metrics — unknown names, bad card
    params, missing extras — without importing any model library, so a run stops at once."""
    for name in _spec_names(specs):
        card = card_of(name)
        if card.implementation in BUILTINS:
            BUILTINS[card.implementation].check(card)


def create_many(specs: str, context: MetricContext = NO_INPUTS) -> list[Metric]:
    metrics = [create(n, context) for n in _spec_names(specs)]
    seen: set[str] = set()
    for m in metrics:
        if m.info.name in seen:
            raise EvalkitError(f"metric {m.info.name!r} is named twice", "name each metric once")
        seen.add(m.info.name)
    return metrics


def _spec_names(specs: str) -> list[str]:
    names = [s.strip() for s in specs.split(",") if s.strip()]
    if not names:
        raise EvalkitError("--metrics names no metric", "e.g. --metrics clip (evalkit metrics list)")
    return names


def from_card(card: MetricCard, context: MetricContext = NO_INPUTS) -> Metric:
    """The metric `card` configures: a built-in implementation, else the plugin of that name."""
    if card.implementation in BUILTINS:
        return BUILTINS[card.implementation].create(card, context)
    plugins = plugin_entry_points()
    if card.implementation not in plugins:
        known = [*BUILTINS, *plugins]
        suggestion = did_you_mean(card.implementation, known)
        raise EvalkitError(f"metric card {card.name!r} names unknown implementation {card.implementation!r}"
                           + (f"; {suggestion}" if suggestion else ""),
                           "implementations: " + ", ".join(known) + " (plugins register under the "
                           f"{ENTRY_POINT_GROUP!r} entry-point group)")
    return _from_plugin(card, context, plugins[card.implementation])


def _plugin_row(name: str, ep: metadata.EntryPoint) -> Implementation:
    try:
        row = ep.load()
    except Exception as e:  # a broken plugin must not take evalkit down with a traceback
        raise EvalkitError(f"metric plugin {name!r} ({ep.value}) failed to load: {e}", PLUGIN_HINT) from e
    if not isinstance(row, Implementation):
        raise EvalkitError(f"metric plugin {name!r} ({ep.value}) is not an evalkit.metrics.registry.Implementation",
                           "a plugin's entry point names its Implementation row (see README, Scoring)")
    return row


def _from_plugin(card: MetricCard, context: MetricContext, ep: metadata.EntryPoint) -> Metric:
    from evalkit.metrics.api import Metric

    name = card.implementation
    row = _plugin_row(name, ep)
    row.values(card)  # the card's mistakes are the user's, reported as such, not as a broken plugin
    try:
        metric = row.create(card, context)
    except EvalkitError:
        raise
    except Exception as e:
        raise EvalkitError(f"metric plugin {name!r} ({row.factory}) failed to load: {e}", PLUGIN_HINT) from e
    if not isinstance(metric, Metric):
        raise EvalkitError(f"metric plugin {name!r} does not implement the evalkit Metric protocol",
                           "see evalkit/metrics/api.py")
    return metric
