"""Known gaps: cases an engine is known to fail, kept as data files, not code.

One entry per line: ``<pattern> [<dtype>] [<check>]  # reason``. ``pattern`` is a shell-style
glob over case ids (``LSTM(*mask=arbitrary*)``); ``dtype`` (float32/float64) and ``check``
(forward, gradients, stateful, pairwise) narrow it. Blank lines and ``#`` comments are
ignored. A failing result matched by an entry is reported as a known gap (xfail); an entry
that matches no case of the run is reported, so the lists cannot silently rot.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from multirnn.conformance.cases import ALL_DTYPES, Case, CaseError

CHECKS = ("forward", "gradients", "stateful", "pairwise")
DTYPES = ALL_DTYPES


class KnownGapsError(ValueError):
    """A known-gap file that is missing, unreadable or malformed (the message names the
    file, and the line for a malformed entry)."""


@dataclass(frozen=True)
class Gap:
    pattern: str
    dtype: str | None
    check: str | None
    reason: str
    source: str

    def matches(self, case_id: str, dtype: str, check: str) -> bool:
        if self.dtype and self.dtype != dtype:
            return False
        if self.check and not check.startswith(self.check):
            return False
        return fnmatch.fnmatchcase(case_id, self.pattern)


def parse(text: str, source: str = "<string>") -> list[Gap]:
    gaps = []
    for number, raw in enumerate(text.splitlines(), 1):
        line, _, reason = raw.partition("#")
        fields = line.split()
        if not fields:
            continue
        pattern, rest = fields[0], fields[1:]
        _check_pattern(pattern, f"{source}:{number}")
        dtype = check = None
        for item in rest:
            if item in DTYPES and dtype is None:
                dtype = item
            elif item in CHECKS and check is None:
                check = item
            else:
                raise KnownGapsError(
                    f"{source}:{number}: unexpected {item!r}; an entry is "
                    f"'<pattern> [{'|'.join(DTYPES)}] [{'|'.join(CHECKS)}]  # reason'"
                )
        gaps.append(Gap(pattern, dtype, check, reason.strip(), f"{source}:{number}"))
    return gaps


def _check_pattern(pattern: str, where: str) -> None:
    """A pattern without glob characters names one case: it must be that case's id."""
    if any(c in pattern for c in "*?["):
        return
    try:
        case = Case.from_id(pattern)
    except CaseError as exc:
        raise KnownGapsError(
            f"{where}: {pattern!r} is neither a glob (*, ?, [...]) nor a case id: {exc}"
        ) from None
    if case.id != pattern:
        raise KnownGapsError(
            f"{where}: {pattern!r} would match nothing: that case's id is {case.id!r}"
        )


def load(path: str | Path | None) -> list[Gap]:
    if path is None:
        return []
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KnownGapsError(f"known-gap file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise KnownGapsError(f"known-gap file {str(path)!r} is a directory") from None
    except UnicodeDecodeError as exc:
        raise KnownGapsError(
            f"known-gap file {str(path)!r} is not UTF-8 text (byte {exc.start})"
        ) from None
    except OSError as exc:
        raise KnownGapsError(
            f"known-gap file {str(path)!r} cannot be read: {exc.strerror or exc}"
        ) from None
    return parse(text, str(path))


def builtin_path(engine: str) -> Path | None:
    """The known-gap file shipped here for a built-in engine, if any."""
    path = Path(__file__).with_name("gaps") / f"{engine}.txt"
    return path if path.exists() else None
