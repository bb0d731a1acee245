"""Prompt sets: the versioned, fingerprinted lists of prompts that every run is keyed on.

A score is only comparable with another if both were computed on the same prompts, so a
prompt set carries a content fingerprint (sha256 over its name, version and every prompt's
id, text, tags and data). Resume, merge and the leaderboard compare fingerprints, never
names: a renamed, edited or truncated set can therefore never pass for the original.

Built-in sets live in `prompts/<name>/` (found through `datafiles.shipped_dir`), each a
`manifest.json` that pins the sha256 of its files next to `prompts.jsonl`; they are
regenerated from the upstream data by `prompts/build_prompt_sets.py`. Users may also pass
a `.txt`, `.jsonl`, `.csv` or `.tsv` file, or a folder laid out like a built-in set.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from evalkit.errors import EvalkitError, did_you_mean
from evalkit.fileio.hashing import sha256_bytes, sha256_file, sha256_json
from evalkit.fileio.safenames import require_folder_name
from evalkit.runtime.datafiles import shipped_dir

MANIFEST_NAME = "manifest.json"
DATA_FILE_NAME = "prompts.jsonl"
USER_VERSION = "user"
USER_LICENCE = "unknown (user file)"
TEXT_KEYS = ("text", "prompt", "caption")
USER_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv")
MANIFEST_KEYS = ("name", "version", "description", "source", "licence", "n", "files", "fingerprint")
# Ids end up in file names of generated images and caches, so keep them path-safe.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
GENERATED_ID_HEX = 12
REINSTALL_HINT = (
    "reinstall evalkit (pip install --force-reinstall evalkit), or in a source checkout rerun "
    "python prompts/build_prompt_sets.py --shared ../shared/data"
)


class FrozenData(Mapping[str, Any]):
    """A read-only mapping for `Prompt.data`.

    Not `types.MappingProxyType`, because prompts must pickle (they travel to data-loader
    workers and distributed ranks) and a mapping proxy cannot.
    """

    __slots__ = ("_items",)
    _items: dict[str, Any]

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        object.__setattr__(self, "_items", dict(items))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenData is read-only")

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"FrozenData({self._items!r})"

    def __reduce__(self) -> tuple[type[FrozenData], tuple[dict[str, Any]]]:
        return (FrozenData, (dict(self._items),))


@dataclass(frozen=True)
class Prompt:
    """One prompt; `data` holds per-prompt facts metrics need (e.g. the COCO image id)."""

    id: str
    text: str
    tags: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=FrozenData, hash=False)

    def __post_init__(self) -> None:
        # Accept lists and dicts from callers but store immutable forms, so a prompt set's
        # fingerprint cannot go stale after it was computed.
        object.__setattr__(self, "tags", tuple(self.tags))
        if not isinstance(self.data, FrozenData):
            object.__setattr__(self, "data", FrozenData(self.data))

    def to_record(self) -> dict[str, Any]:
        """The JSON form used both in prompts.jsonl and in the fingerprint."""
        return {"id": self.id, "text": self.text, "tags": list(self.tags), "data": dict(self.data)}


def prompt_set_fingerprint(name: str, version: str, prompts: Iterable[Prompt]) -> str:
    """sha256 of the canonical JSON of name, version and the ordered prompts.

    Source and licence are left out on purpose: moving a file or fixing a licence note
    does not change what gets generated, so it must not make results incomparable.
    """
    rows = [[p.id, p.text, list(p.tags), dict(p.data)] for p in prompts]
    return sha256_json({"name": name, "version": version, "prompts": rows})


@dataclass(frozen=True)
class PartOf:
    """The whole set a subset was taken from: a `--limit N` or `--subset` run records the subset's own
    fingerprint (so it is never compared with the whole set) and this, so readers can tell which
    whole set it is part of and how it was chosen."""

    fingerprint: str  # the whole set's, as `evalkit prompts list` shows it
    n: int
    selection: str  # "first 8", "smoke subset (160 prompts)"

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PartOf:
        return cls(doc["fingerprint"], doc["n"], doc["selection"])

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "n": self.n, "selection": self.selection}

    def describe(self, name: str) -> str:
        return f"{self.selection} of {name} ({self.n} prompts, fingerprint {self.fingerprint[:12]})"


@dataclass(frozen=True)
class PromptSet:
    """An ordered, immutable prompt list whose fingerprint is derived from its content.

    `fingerprint` is computed on construction rather than passed in, so it can never
    disagree with the prompts it describes.
    """

    name: str
    version: str
    source: str
    licence: str
    prompts: tuple[Prompt, ...]
    # What each position of a prompt's tags means ("source"; "category", "challenge"); labels
    # per-category results only, so it is not part of the fingerprint.
    tag_kinds: tuple[str, ...] = field(default=(), compare=False)
    part_of: PartOf | None = field(default=None, compare=False)  # set on a subset (head, select)
    fingerprint: str = field(init=False)
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prompts = tuple(self.prompts)
        index: dict[str, int] = {}
        for i, prompt in enumerate(prompts):
            if prompt.id in index:
                raise ValueError(f"prompt set {self.name!r} has duplicate prompt id {prompt.id!r}")
            index[prompt.id] = i
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "_index", FrozenData(index))
        object.__setattr__(self, "fingerprint", prompt_set_fingerprint(self.name, self.version, prompts))

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts)

    def position(self, prompt_id: str) -> int:
        """Where the prompt is in the set (one past the end for an id it does not hold, which `by_id` refuses)."""
        return self._index.get(prompt_id, len(self.prompts))

    def by_id(self, prompt_id: str) -> Prompt:
        """The prompt with this id; an unknown id is a user error (e.g. a stale id list)."""
        if prompt_id not in self._index:
            raise EvalkitError(
                f"prompt set {self.name!r} has no prompt with id {prompt_id!r}",
                did_you_mean(prompt_id, self._index, n=3, cutoff=0.5) or "list its ids with: evalkit prompts show",
            )
        return self.prompts[self._index[prompt_id]]

    def head(self, n: int) -> PromptSet:
        """The first n prompts (all of them if n >= len), for smoke tests and quick runs.

        The name is kept but the fingerprint is recomputed from the smaller content, so
        results on a subset can never be merged with or compared against the full set.
        """
        if n < 0:
            raise EvalkitError(f"cannot take the first {n} prompts", "give a limit of 0 or more")
        return self._subset(self.prompts[:n], f"first {n}")

    def select(self, ids: Iterable[str], selection: str = "") -> PromptSet:
        """The prompts with these ids, in the order given (the caller's order is the intent).

        Like `head`, the result keeps the name and gets its own fingerprint; `selection` says how
        the ids were chosen (default: "N selected prompts").
        """
        wanted = list(ids)
        unknown = [i for i in wanted if i not in self._index]
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5]) + (" …" if len(unknown) > 5 else "")
            raise EvalkitError(
                f"prompt set {self.name!r} has no prompt(s) with id {shown}",
                "select only ids listed by: evalkit prompts show " + self.name,
            )
        repeated = sorted(i for i, count in Counter(wanted).items() if count > 1)
        if repeated:
            raise EvalkitError(
                f"ids selected more than once from prompt set {self.name!r}: {', '.join(repeated[:5])}",
                "pass each prompt id once",
            )
        return self._subset(tuple(self.prompts[self._index[i]] for i in wanted),
                            selection or f"{len(wanted)} selected prompts")

    def _subset(self, prompts: tuple[Prompt, ...], selection: str) -> PromptSet:
        """A part of this set, recorded as part of the whole one (a subset of a subset: of the first whole)."""
        whole = self.part_of or PartOf(self.fingerprint, len(self.prompts), "")
        part = PromptSet(self.name, self.version, self.source, self.licence, prompts, self.tag_kinds)
        if part.fingerprint == whole.fingerprint:  # all of it: not a subset
            return part
        shown = f"{selection} of the {whole.selection}" if whole.selection else selection
        return PromptSet(self.name, self.version, self.source, self.licence, prompts, self.tag_kinds,
                         PartOf(whole.fingerprint, whole.n, shown))


@dataclass(frozen=True)
class PromptSetInfo:
    """What `list_prompt_sets` reports, read from manifests without loading the prompts."""

    name: str
    version: str
    n: int
    source: str
    licence: str
    fingerprint: str
    description: str


# ---------------------------------------------------------------------------------------
# Built-in sets (and user folders in the same layout)


def builtin_names() -> list[str]:
    """Names of the shipped sets: every folder of prompts/ that holds a manifest."""
    root = shipped_dir("prompts")
    return sorted(p.parent.name for p in root.glob(f"*/{MANIFEST_NAME}"))


def list_prompt_sets() -> list[PromptSetInfo]:
    """The built-in sets, from their manifests (cheap: no prompt file is read)."""
    root = shipped_dir("prompts")
    infos = []
    for name in builtin_names():
        m = read_manifest(root / name)
        infos.append(
            PromptSetInfo(
                m["name"], m["version"], m["n"], m["source"], m["licence"], m["fingerprint"], m["description"]
            )
        )
    return infos


def read_manifest(folder: Path) -> dict[str, Any]:
    """Parse and sanity-check a set folder's manifest; a broken one means a broken install."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        _fail(f"prompt set folder {folder} has no {MANIFEST_NAME}", REINSTALL_HINT)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        _fail(f"{path} is not valid JSON ({e})", REINSTALL_HINT)
    missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        _fail(f"{path} lacks the field(s) {', '.join(missing)}", REINSTALL_HINT)
    if DATA_FILE_NAME not in manifest["files"]:
        _fail(f"{path} does not list {DATA_FILE_NAME} under files", REINSTALL_HINT)
    require_folder_name(f"{path}: prompt set", str(manifest["name"]), "give the set a plain name in its manifest")
    return manifest


def verified_file(folder: Path, filename: str) -> Path:
    """A file of a set folder after checking its sha256 against the manifest.

    An edited or truncated data file would silently change every score computed on it,
    so it is refused rather than read.
    """
    manifest = read_manifest(folder)
    expected = manifest["files"].get(filename)
    path = folder / filename
    if expected is None:
        _fail(f"{filename} is not listed in {folder / MANIFEST_NAME}", REINSTALL_HINT)
    if not path.is_file():
        _fail(f"prompt set {manifest['name']!r} is missing its file {path}", REINSTALL_HINT)
    actual = sha256_file(path)
    if actual != expected:
        _fail(
            f"prompt set {manifest['name']!r} is corrupted: {path} has sha256 {actual[:12]}…, "
            f"its manifest says {expected[:12]}…",
            REINSTALL_HINT,
        )
    return path


def load_set_folder(folder: Path) -> PromptSet:
    """Load a folder in the built-in layout, verifying file hash, count and fingerprint."""
    manifest = read_manifest(folder)
    data_path = verified_file(folder, DATA_FILE_NAME)
    prompts = [
        _prompt_from_record(record, f"{data_path}:{line}") for line, record in _jsonl_records(data_path)
    ]
    _check_unique_ids(prompts, [f"{data_path}:{i + 1}" for i in range(len(prompts))])
    pset = PromptSet(
        manifest["name"], manifest["version"], manifest["source"], manifest["licence"], tuple(prompts),
        tuple(str(kind) for kind in manifest.get("tag_kinds", ())),
    )
    if len(pset) != manifest["n"] or pset.fingerprint != manifest["fingerprint"]:
        _fail(
            f"prompt set {manifest['name']!r} in {folder} does not match its manifest "
            f"({len(pset)} prompts, fingerprint {pset.fingerprint[:12]}…; manifest: {manifest['n']}, "
            f"{manifest['fingerprint'][:12]}…)",
            REINSTALL_HINT,
        )
    return pset


def load_prompt_set(name_or_path: str | Path) -> PromptSet:
    """A built-in set by name, or a user prompt file or set folder by path."""
    text = str(name_or_path)
    names = builtin_names()
    if text in names:
        return _builtin_set(text)
    path = Path(text).expanduser()
    if path.exists():
        return _load_path(path)
    if _looks_like_path(text):
        _fail(
            f"prompt file {path} not found",
            f"check the path, or use a built-in prompt set: {', '.join(names)}",
        )
    suggestion = did_you_mean(text, names, n=3, cutoff=0.5)
    _fail(
        f"unknown prompt set {text!r}",
        (suggestion + "; " if suggestion else "")
        + f"built-in sets: {', '.join(names)}; or pass a path to a .txt, .jsonl or .csv file",
    )


@functools.lru_cache(maxsize=8)
def _builtin_set(name: str) -> PromptSet:
    """Shipped sets are immutable and verified on first load; scoring asks for them per step and
    metric, and re-parsing coco-10k each time (~75 ms plus GC churn) was the fixed cost of a call."""
    return load_set_folder(shipped_dir("prompts") / name)


def _looks_like_path(text: str) -> bool:
    # "tifa-v1.0" has a Path suffix (".0"), so only alphabetic extensions count as paths.
    return "/" in text or "\\" in text or re.search(r"\.[A-Za-z]+$", text) is not None


def _load_path(path: Path) -> PromptSet:
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            return load_set_folder(path)
        _fail(
            f"{path} is a folder without a {MANIFEST_NAME}",
            "pass a .txt, .jsonl or .csv prompt file, or a folder laid out like prompts/<name>/",
        )
    readers = {".txt": _read_txt, ".jsonl": _read_jsonl, ".csv": _read_csv, ".tsv": _read_csv}
    suffix = path.suffix.lower()
    if suffix not in readers:
        _fail(
            f"{path}: unsupported prompt file type {path.suffix or '(none)'!r}",
            "use .txt (one prompt per line), .jsonl (objects with a 'text' key) or .csv (a 'text' column)",
        )
    raws = readers[suffix](path)
    return _assemble_user_set(path, raws)


# ---------------------------------------------------------------------------------------
# User prompt files


@dataclass(frozen=True)
class _RawPrompt:
    """A prompt as read from a user file, before ids are generated and checked."""

    where: str
    id: str | None
    text: str
    tags: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)


def _read_lines(path: Path) -> list[str]:
    try:
        # utf-8-sig: spreadsheet tools and Windows editors prepend a BOM.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        _fail(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})", "save the file as UTF-8")
    except OSError as e:
        _fail(f"cannot read prompt file {path} ({e.strerror})", "check the path and its permissions")
    # Not str.splitlines(): it also splits on U+2028, form feeds etc., which may sit inside a prompt.
    return [line.removesuffix("\r") for line in text.split("\n")]


def _content_lines(path: Path) -> list[tuple[int, str]]:
    """Numbered lines without trailing blank lines; a blank line earlier is an error.

    A blank line in the middle is most likely a lost prompt, and silently skipping it
    would shift what the user thinks line N is.
    """
    lines = _read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            _fail(f"{path}:{number}: empty prompt", "write a prompt on that line or delete the line")
    return list(enumerate(lines, start=1))


def _read_txt(path: Path) -> list[_RawPrompt]:
    return [_RawPrompt(f"{path}:{n}", None, line) for n, line in _content_lines(path)]


def _read_jsonl(path: Path) -> list[_RawPrompt]:
    raws = []
    for number, line in _content_lines(path):
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            _fail(f"{where}: malformed JSON ({e.msg} at column {e.colno})", "write one JSON object per line")
        if not isinstance(obj, dict):
            got = type(obj).__name__
            _fail(f"{where}: expected a JSON object, got {got}", 'write e.g. {"text": "a dog"}')
        raws.append(_raw_from_mapping(obj, where))
    return raws


def _read_csv(path: Path) -> list[_RawPrompt]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for row in reader:
                rows.append((reader.line_num, row))
    except UnicodeDecodeError as e:
        _fail(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})", "save the file as UTF-8")
    except csv.Error as e:
        _fail(f"{path}: malformed CSV ({e})", "check the quoting of that file")
    while rows and not rows[-1][1]:  # [] is a blank line; [""] is a row with an empty cell
        rows.pop()
    if not rows:
        _fail(f"{path} contains no prompts", "add a header row with a 'text' column and one row per prompt")
    header = [cell.strip().lower() for cell in rows[0][1]]
    raws = []
    for line, row in rows[1:]:
        where = f"{path}:{line}"
        if not row:
            _fail(f"{where}: empty line", "delete the blank line or write a prompt row there")
        if len(row) != len(header):
            _fail(f"{where}: row has {len(row)} fields, the header {len(header)}", "fix the row's quoting")
        raws.append(_raw_from_mapping(dict(zip(header, row, strict=True)), where, from_csv=True))
    if not raws:
        _fail(f"{path} contains no prompts", "add one row per prompt below the header")
    return raws


def _raw_from_mapping(obj: Mapping[str, Any], where: str, from_csv: bool = False) -> _RawPrompt:
    keys = [k for k in TEXT_KEYS if k in obj]
    if len(keys) != 1:
        problem = "has no" if not keys else "has more than one"
        kind = "column" if from_csv else "key"
        _fail(f"{where}: {problem} text {kind} (one of {', '.join(TEXT_KEYS)})", f"give exactly one {kind}")
    text = obj[keys[0]]
    if not isinstance(text, str):
        _fail(f"{where}: {keys[0]!r} must be a string, got {type(text).__name__}", "quote the prompt text")
    raw_id = obj.get("id")
    if raw_id in (None, ""):
        raw_id = None
    elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    elif not isinstance(raw_id, str):
        _fail(f"{where}: 'id' must be a string, got {type(raw_id).__name__}", "quote the id")
    tags = () if from_csv else _tags_of(obj.get("tags", []), where)
    reserved = {keys[0], "id"} | (set() if from_csv else {"tags"})
    data = {k: v for k, v in obj.items() if k not in reserved}
    return _RawPrompt(where, raw_id, text, tags, data)


def _tags_of(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        _fail(f"{where}: 'tags' must be a list of strings", 'write e.g. "tags": ["animals"]')
    return tuple(value)


# Far beyond any text encoder's context (CLIP reads 77 tokens, T5 in SD3/PixArt 512 at most): a longer
# "prompt" is a file whose line breaks were lost, and would only make every record huge.
MAX_PROMPT_CHARS = 20_000


def generated_id(text: str) -> str:
    """An id derived from the text, so inserting or reordering lines renumbers nothing."""
    return "p" + sha256_bytes(text.encode("utf-8"))[:GENERATED_ID_HEX]


def _assemble_user_set(path: Path, raws: list[_RawPrompt]) -> PromptSet:
    if not raws:
        _fail(f"{path} contains no prompts", "add at least one prompt")
    prompts = []
    for raw in raws:
        if not raw.text.strip():
            _fail(f"{raw.where}: empty prompt", "write the prompt text or delete the entry")
        if len(raw.text) > MAX_PROMPT_CHARS:
            _fail(f"{raw.where}: prompt is {len(raw.text):,} characters long (at most {MAX_PROMPT_CHARS:,})",
                  "a prompt is one caption; check that the file's lines are not run together")
        prompt_id = raw.id if raw.id is not None else generated_id(raw.text)
        if raw.id is not None and not ID_PATTERN.fullmatch(prompt_id):
            _fail(
                f"{raw.where}: prompt id {prompt_id!r} is not allowed",
                "use at most 128 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        prompts.append(Prompt(prompt_id, raw.text, raw.tags, raw.data))
    _check_unique_ids(prompts, [raw.where for raw in raws], generated=[raw.id is None for raw in raws])
    resolved = path.resolve()
    return PromptSet(resolved.stem, USER_VERSION, str(resolved), USER_LICENCE, tuple(prompts))


def _check_unique_ids(prompts: list[Prompt], wheres: list[str], generated: list[bool] | None = None) -> None:
    first: dict[str, str] = {}
    for i, (prompt, where) in enumerate(zip(prompts, wheres, strict=True)):
        if prompt.id in first:
            hint = (
                "the same prompt text appears twice; delete one or give both an explicit id"
                if generated and generated[i]
                else "give every prompt a distinct id"
            )
            _fail(f"{where}: duplicate prompt id {prompt.id!r} (first at {first[prompt.id]})", hint)
        first[prompt.id] = where


# ---------------------------------------------------------------------------------------
# The shipped JSONL format


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                _fail(f"{path}:{number}: malformed JSON ({e.msg})", REINSTALL_HINT)
            yield number, record


def _prompt_from_record(record: Any, where: str) -> Prompt:
    ok = (
        isinstance(record, dict)
        and set(record) == {"id", "text", "tags", "data"}
        and isinstance(record["id"], str)
        and isinstance(record["text"], str)
        and isinstance(record["tags"], list)
        and all(isinstance(t, str) for t in record["tags"])
        and isinstance(record["data"], dict)
    )
    if not ok:
        _fail(f"{where}: expected an object with id, text, tags (list) and data (object)", REINSTALL_HINT)
    return Prompt(record["id"], record["text"], tuple(record["tags"]), record["data"])


def _fail(problem: str, hint: str) -> NoReturn:
    raise EvalkitError(problem, hint)
