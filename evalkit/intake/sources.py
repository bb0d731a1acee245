"""Where images made elsewhere come from, read into one shape: a row per image with its prompt.

Three layouts are read, the ones researchers already have: a folder in Hugging Face's ImageFolder
layout (images beside a metadata.jsonl or metadata.csv whose `file_name` column names them), a
JSONL or CSV list of image paths and prompts (EvalScope's way), and a `datasets` dataset saved
with `save_to_disk` (an image column and a prompt column). A row gives its prompt as text
(`prompt`, `text` or `caption`), as an id into a prompt set (`prompt_id`, with `prompt_set` or
`--prompt-set`), or both (then the text must match the set's), and optionally `k`, the sample's
number when a prompt has several images. Other columns are ignored: metadata files often carry
more. Nothing is decoded here; `evalkit.intake.ingest` checks every image before writing anything.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.runtime.extras import require

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
LIST_SUFFIXES = (".jsonl", ".csv")
DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # what save_to_disk writes
FILE_KEYS = ("file_name", "image", "path", "file")
TEXT_KEYS = ("prompt", "text", "caption")
FORMAT_HINT = ("give a folder with metadata.jsonl/metadata.csv (file_name + prompt or prompt_id), a .jsonl/.csv "
               "list of image paths and prompts, or a folder saved by datasets' save_to_disk")


@dataclass(frozen=True)
class SourceImage:
    """One image as the source lists it; `read` gives its bytes (a file, or a dataset cell)."""

    where: str  # "metadata.jsonl:12", "dataset row 3": what an error line names
    name: str  # the file name as given (or the dataset row), for messages and the manifest's origin
    read: Callable[[], bytes]
    text: str | None
    prompt_id: str | None
    prompt_set: str | None
    k: int | None


@dataclass(frozen=True)
class Source:
    kind: str  # "imagefolder", "list", "datasets"
    path: Path
    images: tuple[SourceImage, ...]


def is_external(path: Path) -> bool:
    """Whether `path` is images made elsewhere (one of the three layouts), not an evalkit --out folder."""
    if path.is_file():
        return path.suffix.lower() in LIST_SUFFIXES
    return path.is_dir() and any((path / name).is_file() for name in (*METADATA_FILES, *DATASET_MARKERS))


def read_source(path: Path) -> Source:
    """The rows of an image folder, list or saved dataset (`is_external` must hold)."""
    if path.is_file():
        return Source("list", path, tuple(_file_rows(path, path.parent)))
    metadata = [path / name for name in METADATA_FILES if (path / name).is_file()]
    if len(metadata) > 1:
        raise EvalkitError(f"{path} has both metadata.jsonl and metadata.csv", "keep one of them")
    if metadata:
        return Source("imagefolder", path, tuple(_file_rows(metadata[0], path)))
    return Source("datasets", path, tuple(_dataset_rows(path)))


def _file_rows(listing: Path, base: Path) -> Iterator[SourceImage]:
    records = _jsonl(listing) if listing.suffix.lower() == ".jsonl" else _csv(listing)
    for where, record in records:
        keys = [k for k in FILE_KEYS if record.get(k) not in (None, "")]
        if not keys:
            raise EvalkitError(f"{where}: no image file (a {' / '.join(FILE_KEYS)} column)",
                               "name each image's file, relative to " + str(base))
        file = record[keys[0]]
        if not isinstance(file, str):
            raise EvalkitError(f"{where}: {keys[0]!r} must be a file name, got {type(file).__name__}",
                               "write the image's path as a string")
        image = (base / file) if not Path(file).is_absolute() else Path(file)
        yield _row(where, file, _file_reader(image, where), record)


def _file_reader(path: Path, where: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise EvalkitError(f"{where}: image {path} does not exist", "fix the file name or add the image") from None
        except OSError as e:
            raise EvalkitError(f"{where}: cannot read image {path} ({e.strerror})",
                               "check the file and its permissions") from None
    return read


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalkitError(f"{where}: malformed JSON ({e.msg} at column {e.colno})",
                               "write one JSON object per line") from None
        if not isinstance(record, dict):
            raise EvalkitError(f"{where}: expected a JSON object, got {type(record).__name__}",
                               'write e.g. {"file_name": "0.png", "prompt": "a dog"}')
        yield where, record


def _csv(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        rows = list(csv.DictReader(io.StringIO(_text(path), newline="")))  # quoted cells may hold line breaks
    except csv.Error as e:
        raise EvalkitError(f"{path}: malformed CSV ({e})", "write a header row and one row per image") from None
    for number, row in enumerate(rows, start=2):
        if None in row:
            raise EvalkitError(f"{path}:{number}: more cells than the header has columns", "quote cells with commas")
        yield f"{path}:{number}", {k: v for k, v in row.items() if v not in (None, "")}


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise EvalkitError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})", "save it as UTF-8") from None
    except OSError as e:
        raise EvalkitError(f"cannot read {path} ({e.strerror})", "check the path and its permissions") from None


def _row(where: str, name: str, read: Callable[[], bytes], record: Mapping[str, Any]) -> SourceImage:
    texts = [k for k in TEXT_KEYS if record.get(k) not in (None, "")]
    if len(texts) > 1:
        raise EvalkitError(f"{where}: more than one prompt column ({', '.join(texts)})", "keep one of them")
    text = record[texts[0]] if texts else None
    prompt_id, prompt_set, k = record.get("prompt_id"), record.get("prompt_set"), record.get("k")
    if text is None and prompt_id in (None, ""):
        raise EvalkitError(f"{where}: no prompt (a {' / '.join(TEXT_KEYS)} or prompt_id column)",
                           "give each image its prompt text, or its prompt_id in a prompt set")
    for key, value in (("prompt", text), ("prompt_set", prompt_set)):
        if value is not None and not isinstance(value, str):
            raise EvalkitError(f"{where}: {key!r} must be a string, got {type(value).__name__}", "quote it")
    return SourceImage(where, name, read, text, _prompt_id(prompt_id, where), prompt_set or None, _k(k, where))


def _prompt_id(value: Any, where: str) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise EvalkitError(f"{where}: 'prompt_id' must be a string, got {type(value).__name__}", "quote the id")
    return value


def _k(value: Any, where: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = -1
    if k < 0 or isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise EvalkitError(f"{where}: 'k' must be a sample number 0, 1, …, got {value!r}",
                           "number the images of one prompt from 0")
    return k


def _dataset_rows(path: Path) -> Iterator[SourceImage]:
    require("datasets", f"reading the saved dataset {path}")
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as e:
        raise EvalkitError(f"{path} could not be read as a saved dataset ({str(e).splitlines()[0]})",
                           FORMAT_HINT) from None
    if isinstance(loaded, datasets.DatasetDict):
        raise EvalkitError(f"{path} holds the splits {', '.join(loaded)}, not one dataset",
                           f"score one split's folder, e.g. {path / next(iter(loaded))}")
    images = [name for name, feature in loaded.features.items() if isinstance(feature, datasets.Image)]
    if len(images) != 1:
        found = "no image column" if not images else f"several image columns ({', '.join(images)})"
        raise EvalkitError(f"{path}: {found}", "save the dataset with exactly one datasets.Image column")
    column = images[0]
    raw = loaded.cast_column(column, datasets.Image(decode=False))
    others = raw.remove_columns([column])  # the prompt columns, without holding every image in memory
    for index, record in enumerate(others):
        cell = raw[index][column] or {}
        where = f"{path} row {index}"
        origin = cell.get("path")
        read = (_cell_reader(raw, index, column) if cell.get("bytes") is not None
                else _file_reader(Path(str(origin)), where))
        yield _row(where, str(origin or f"row {index}"), read, record)


def _cell_reader(dataset: Any, index: int, column: str) -> Callable[[], bytes]:
    """The image bytes of one row, read when needed (the Arrow file is memory-mapped)."""
    return lambda: bytes(dataset[index][column]["bytes"])
