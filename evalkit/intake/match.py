"""Which prompt each image made elsewhere answers: a built-in set's prompt by id (so TIFA finds its
questions and FID its COCO images), or a free prompt that only text metrics can score.

A row's set is its `prompt_set` column, else `--prompt-set`, else the free set `external`. In a
built-in set a row is matched by `prompt_id` (its text, when given too, must be the set's text for
that id: a caption that drifted would be scored against the wrong questions) or, without an id, by
its exact text. Rows of any other set name are free prompts: the texts become a prompt set of their
own, with ids derived from the text as in a user prompt file (or named by `prompt_id`). Every problem is one line
naming the row; the first one found stops the intake before anything is written.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from evalkit.errors import EvalkitError
from evalkit.intake.sources import SourceImage
from evalkit.prompts.sets import Prompt, PromptSet, builtin_names, generated_id, load_prompt_set

FREE_SET = "external"
FREE_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Matched:
    image: SourceImage
    prompt_set: str
    prompt: Prompt
    k: int


@dataclass(frozen=True)
class Matching:
    images: tuple[Matched, ...]
    builtin: dict[str, PromptSet]  # built-in sets, cut to the prompts that have images (in set order)
    free: dict[str, tuple[Prompt, ...]]  # free sets' prompts, in order of first appearance


def match(images: Sequence[SourceImage], default_set: str) -> Matching:
    if not images:
        raise EvalkitError("the source lists no images", "add rows, one per image")
    builtins = set(builtin_names())
    by_set: dict[str, list[SourceImage]] = defaultdict(list)
    for image in images:
        by_set[image.prompt_set or default_set or FREE_SET].append(image)
    matched: list[Matched] = []
    builtin: dict[str, PromptSet] = {}
    free: dict[str, tuple[Prompt, ...]] = {}
    for name, rows in by_set.items():
        if name in builtins:
            whole = load_prompt_set(name)
            by_text: dict[str, list[Prompt]] = defaultdict(list)
            for prompt in whole:
                by_text[prompt.text.strip()].append(prompt)
            pairs = [(row, _builtin_prompt(whole, by_text, row)) for row in rows]
            ids = sorted({p.id for _, p in pairs}, key=whole.position)
            builtin[name] = whole.select(ids, f"{len(ids)} prompts with images made elsewhere")
        else:
            pairs = _free_prompts(name, rows)
            free[name] = tuple(dict.fromkeys(p for _, p in pairs))
        numbers = _numbers(name, pairs)
        matched += [Matched(row, name, prompt, k) for (row, prompt), k in zip(pairs, numbers, strict=True)]
    return Matching(tuple(matched), builtin, free)


def _builtin_prompt(prompts: PromptSet, by_text: dict[str, list[Prompt]], row: SourceImage) -> Prompt:
    if row.prompt_id is not None:
        if prompts.position(row.prompt_id) >= len(prompts):
            raise EvalkitError(f"{row.where}: prompt set {prompts.name!r} has no prompt with id {row.prompt_id!r}",
                               f"use the ids listed by: evalkit prompts show {prompts.name}")
        prompt = prompts.by_id(row.prompt_id)
        if row.text is not None and row.text.strip() != prompt.text.strip():
            raise EvalkitError(f"{row.where}: the prompt given for {prompts.name} {row.prompt_id!r} is not the set's "
                               f"text ({row.text[:60]!r} vs {prompt.text[:60]!r})",
                               "fix the prompt_id, or leave the text out and let the id name the prompt")
        return prompt
    assert row.text is not None  # a row has a text or an id (sources._row)
    found = by_text.get(row.text.strip(), [])
    if len(found) != 1:
        why = "no prompt" if not found else f"{len(found)} prompts"
        raise EvalkitError(f"{row.where}: {why} of {prompts.name!r} has the text {row.text[:60]!r}",
                           "give the prompt_id, or name another prompt_set for free prompts")
    return found[0]


def _free_prompts(name: str, rows: Sequence[SourceImage]) -> list[tuple[SourceImage, Prompt]]:
    if not FREE_SET_NAME.fullmatch(name):
        raise EvalkitError(f"prompt set name {name!r} of images made elsewhere is not a plain name",
                           "use letters, digits, '.', '_' and '-' (e.g. --prompt-set my-prompts)")
    by_id: dict[str, str] = {}
    pairs = []
    for row in rows:
        if row.text is None:
            raise EvalkitError(f"{row.where}: prompt id {row.prompt_id!r} names no built-in prompt set and the row "
                               "has no prompt text",
                               f"give the prompt_set it belongs to (built in: {', '.join(builtin_names())}) "
                               "or the prompt text")
        prompt_id = row.prompt_id or generated_id(row.text)  # a user prompt file's rule: ids from the text
        if by_id.setdefault(prompt_id, row.text) != row.text:
            raise EvalkitError(f"{row.where}: prompt id {prompt_id!r} of set {name!r} is given two texts",
                               "give each prompt id one text")
        pairs.append((row, Prompt(prompt_id, row.text)))
    return pairs


def _numbers(name: str, pairs: Sequence[tuple[SourceImage, Prompt]]) -> list[int]:
    """Each image's sample number: its `k`, else 0; two images of one prompt and number are refused."""
    seen: dict[tuple[str, int], SourceImage] = {}
    numbers = []
    for row, prompt in pairs:
        k = row.k if row.k is not None else 0
        first = seen.setdefault((prompt.id, k), row)
        if first is not row:
            raise EvalkitError(f"{row.where}: a second image for prompt {prompt.id!r} of {name!r} "
                               f"(first: {first.where})",
                               "give each prompt one image, or number a prompt's images with a 'k' column (0, 1, …)")
        numbers.append(k)
    return numbers
