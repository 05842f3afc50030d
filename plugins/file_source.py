"""`csv` and `jsonl` sources: import CSV and JSON-lines files, a file or a glob of them.

Files are read as a stream, line by line from a byte offset, so memory does not grow with the
file and a resumed sync seeks straight to where the last committed batch ended.

A file is known by its fingerprint: its size and the SHA-256 of its first 64 KB, not its path.
So a file already imported is skipped even when renamed or copied elsewhere, and a file whose
content changed (rewritten or appended to) is a new file, imported in full. Export new rows to
new files (e.g. one per day).

The checkpoint is JSON: `done` maps each fingerprint imported in full to the path it had, and
`file` is the file being read, with the byte offset and line number to go on from.
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import os
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from cdp.components import RecordBatch, SourceConnector
from cdp.hookspecs import hookimpl
from cdp.sources.records import RecordError, SourceRecord

HEAD_BYTES = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024
"""A longer line is rejected (and skipped), so one broken file cannot exhaust memory."""


class FileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    """A file, or a glob such as "exports/crm-*.csv" (`**` matches subdirectories); relative
    paths are relative to the working directory."""
    encoding: str = "utf-8"
    batch_size: int = Field(1000, ge=1, le=100_000)
    """Records per transaction: the checkpoint advances by this many."""

    @field_validator("encoding")
    @classmethod
    def _line_based(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        # Lines are split on the newline byte before decoding: only ASCII-compatible encodings.
        if info.name.startswith(("utf-16", "utf-32")) or b"\n".decode(info.name) != "\n":
            raise ValueError(f"{value!r} is not ASCII-compatible; convert the file to UTF-8")
        return value


class CsvOptions(FileOptions):
    delimiter: str = Field(",", min_length=1, max_length=1)
    quotechar: str = Field('"', min_length=1, max_length=1)
    has_header: bool = True
    columns: list[str] | None = Field(None, min_length=1, validate_default=True)
    """The field names, for files without a header row (`has_header = false`)."""

    @field_validator("columns")
    @classmethod
    def _names(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        has_header = info.data.get("has_header", True)
        if has_header and value is not None:
            raise ValueError("columns is for files without a header row (has_header = false)")
        if not has_header and value is None:
            raise ValueError("a file without a header row needs columns = [...] naming its fields")
        return value


@dataclass(frozen=True)
class _File:
    path: str
    size: int
    fingerprint: str


@dataclass
class _Checkpoint:
    done: dict[str, str]
    current: dict[str, Any] | None

    @classmethod
    def load(cls, text: str | None) -> _Checkpoint:
        if not text:
            return cls({}, None)
        data = json.loads(text)
        return cls(dict(data.get("done", {})), data.get("file"))

    def dump(self) -> str:
        return json.dumps({"done": self.done, "file": self.current}, separators=(",", ":"))


class _FileSource(SourceConnector):
    options: FileOptions

    def __init__(self, options: FileOptions) -> None:
        super().__init__(options)
        self._done = 0
        self._total: int | None = None

    def position(self) -> tuple[int, int | None]:
        """Bytes read in this run, of the bytes left to read when it started."""
        return self._done, self._total

    def files(self) -> list[_File]:
        """The matching files, in path order."""
        pattern = os.path.expanduser(self.options.path)
        paths = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not glob.has_magic(pattern) and not os.path.isfile(pattern):
            raise FileNotFoundError(f"{pattern}: no such file")
        return [_fingerprint(path) for path in paths if os.path.isfile(path)]

    def read(self, checkpoint: str | None) -> Iterator[RecordBatch]:
        state = _Checkpoint.load(checkpoint)
        todo = [f for f in self.files() if f.fingerprint not in state.done]
        current = state.current
        resume = {current["fingerprint"]: current} if current else {}
        self._done = 0
        self._total = sum(
            f.size - int(resume.get(f.fingerprint, {}).get("offset", 0)) for f in todo
        )
        for file in todo:
            yield from self._read_file(file, state, resume.get(file.fingerprint))

    def _read_file(
        self, file: _File, state: _Checkpoint, at: dict[str, Any] | None
    ) -> Iterator[RecordBatch]:
        batch: list[SourceRecord] = []
        start = int(at["offset"]) if at else 0
        done_before = self._done
        lines_read = int(at["line"]) if at else 0
        with open(file.path, "rb") as stream:
            for record, offset, line in self.records(file, stream, start, lines_read):
                batch.append(record)
                if len(batch) >= self.options.batch_size:
                    state.current = {
                        "fingerprint": file.fingerprint,
                        "path": file.path,
                        "offset": offset,
                        "line": line,
                    }
                    self._done = done_before + offset - start
                    yield RecordBatch(batch, state.dump())
                    batch = []
        state.current = None
        state.done[file.fingerprint] = file.path
        self._done = done_before + file.size - start
        yield RecordBatch(batch, state.dump())

    @abstractmethod
    def records(
        self, file: _File, stream: BinaryIO, offset: int, line: int
    ) -> Iterator[tuple[SourceRecord, int, int]]:
        """(record, byte offset after it, its last line number) from `offset`, where `line`
        lines have been read already."""

    def _record(
        self, file: _File, lines: _Lines, fields: dict[str, Any] | None, reason: str | None
    ) -> SourceRecord:
        key = f"{file.fingerprint}:{lines.first_line}"
        raw = lines.raw.rstrip("\r\n")
        reason = lines.error or reason
        if reason is not None or fields is None:
            return RecordError(
                reason or "unreadable", key=key, row=lines.first_line, location=file.path, raw=raw
            )
        return SourceRecord(fields, key=key, row=lines.first_line, location=file.path, raw=raw)


class CsvSource(_FileSource):
    """CSV files: one record per row, fields named by the header row or by `columns`."""

    name = "csv"
    Options = CsvOptions
    options: CsvOptions

    def records(
        self, file: _File, stream: BinaryIO, offset: int, line: int
    ) -> Iterator[tuple[SourceRecord, int, int]]:
        options = self.options
        names = options.columns
        if options.has_header:
            header_lines = _Lines(stream, options.encoding, 0, 0)
            header_lines.begin()
            header = next(self._reader(header_lines), None)
            if header is None:
                return
            names = header
            if offset == 0:
                offset, line = header_lines.offset, header_lines.line
        assert names is not None
        stream.seek(offset)
        lines = _Lines(stream, options.encoding, offset, line)
        reader = self._reader(lines)
        while True:
            lines.begin()
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield (
                    self._record(file, lines, None, f"not valid CSV: {exc}"),
                    lines.offset,
                    lines.line,
                )
                continue
            if not fields and lines.error is None:  # a blank line
                continue
            if len(fields) != len(names):
                what = "the header has" if options.has_header else "columns names"
                reason = f"has {len(fields)} fields; {what} {len(names)}"
                yield self._record(file, lines, None, reason), lines.offset, lines.line
                continue
            record = self._record(file, lines, dict(zip(names, fields, strict=True)), None)
            yield record, lines.offset, lines.line

    def _reader(self, lines: _Lines) -> Iterator[list[str]]:
        return csv.reader(lines, delimiter=self.options.delimiter, quotechar=self.options.quotechar)


class JsonLinesSource(_FileSource):
    """JSON-lines files: one JSON object per line."""

    name = "jsonl"
    Options = FileOptions

    def records(
        self, file: _File, stream: BinaryIO, offset: int, line: int
    ) -> Iterator[tuple[SourceRecord, int, int]]:
        stream.seek(offset)
        lines = _Lines(stream, self.options.encoding, offset, line)
        for text in _each(lines):
            if not text.strip() and lines.error is None:
                continue
            fields: dict[str, Any] | None = None
            reason: str | None = None
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as exc:
                reason = f"not valid JSON: {exc}"
            else:
                if isinstance(value, dict):
                    fields = value
                else:
                    reason = f"is a JSON {type(value).__name__}, not an object"
            yield self._record(file, lines, fields, reason), lines.offset, lines.line


class _Lines:
    """Decoded lines from a binary stream, keeping the byte offset after the last line given,
    the line count, and the text and first line number of the current record."""

    def __init__(self, stream: BinaryIO, encoding: str, offset: int, line: int) -> None:
        self.stream = stream
        self.encoding = encoding
        self.offset = offset
        self.line = line
        self.first_line = line + 1
        self.parts: list[str] = []
        self.error: str | None = None

    @property
    def raw(self) -> str:
        return "".join(self.parts)

    def begin(self) -> None:
        """A new record starts with the next line."""
        self.parts = []
        self.error = None
        self.first_line = self.line + 1

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        data = self.stream.readline(MAX_LINE_BYTES)
        if not data:
            raise StopIteration
        if len(data) == MAX_LINE_BYTES and not data.endswith(b"\n"):
            self.error = f"a line is longer than {MAX_LINE_BYTES:,} bytes"
            while (more := self.stream.readline(MAX_LINE_BYTES)) and not more.endswith(b"\n"):
                self.offset += len(more)
            self.offset += len(more)
            data = data[:1000] + b"\n"  # what the reject keeps of it
        self.offset += len(data)
        self.line += 1
        try:
            text = data.decode(self.encoding)
        except UnicodeDecodeError as exc:
            self.error = (
                self.error or f"not valid {self.encoding}: {exc.reason} at byte {exc.start}"
            )
            text = data.decode(self.encoding, "replace")
        self.parts.append(text)
        return text


def _each(lines: _Lines) -> Iterator[str]:
    while True:
        lines.begin()
        try:
            yield next(lines)
        except StopIteration:
            return


def _fingerprint(path: str) -> _File:
    with open(path, "rb") as stream:
        head = stream.read(HEAD_BYTES)
        size = os.fstat(stream.fileno()).st_size
    return _File(path, size, f"{size}-{hashlib.sha256(head).hexdigest()[:32]}")


class _Plugin:
    """One plugin per format, so that `[plugins] enable`/`block` can name each one: the entry
    points `csv` and `jsonl_file` (`jsonl` is the example vendor plugin's name)."""

    def __init__(self, component: type[SourceConnector]) -> None:
        self.component = component

    @hookimpl
    def register_sources(self) -> list[type[SourceConnector]]:
        return [self.component]


csv_plugin = _Plugin(CsvSource)
jsonl_plugin = _Plugin(JsonLinesSource)
