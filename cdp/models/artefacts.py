"""Model artefacts: written in skops' format, verified by SHA-256 before they are read.

Why skops and not pickle/joblib: unpickling runs whatever code the file names, so a model file
swapped in the database (or a backup) would run code in the server. skops stores an estimator as
a schema of its attributes and rebuilds it from an allow-list of types; a type outside the
allow-list (skops' defaults plus what the enricher declares in `trusted_types`) is refused,
never constructed. On top of that the artefact's SHA-256 is recorded when the server writes it
and compared before anything is parsed, so an artefact changed since is refused outright.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import skops.io as sio

from cdp.errors import CDPError

FORMAT = "skops"


class ArtefactRefused(CDPError):
    """An artefact failed its hash check or holds a type that is not trusted: it was not loaded."""


def dump(model: Any) -> tuple[bytes, str]:
    """The artefact's bytes and their SHA-256 (hex)."""
    data = sio.dumps(model)
    return data, sha256(data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(data: bytes, expected_sha256: str, trusted: Sequence[str], what: str) -> Any:
    """Rebuild the estimator in `data`, after checking its hash and its types; `what` names it in
    errors ("model 'churn' version 3")."""
    if artefact_format(data) != FORMAT:
        raise ArtefactRefused(f"{what}: the artefact is not in the {FORMAT} format; refused")
    actual = sha256(data)
    if actual != expected_sha256:
        raise ArtefactRefused(
            f"{what}: the artefact's SHA-256 is {actual[:12]}…, not the {expected_sha256[:12]}… "
            "recorded when it was trained: it was changed since, and is refused (retrain the "
            "model, or roll back to another version)"
        )
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # not a skops file after all: refuse, whatever the parser says
        raise ArtefactRefused(f"{what}: the artefact cannot be read ({exc}); refused") from None
    unknown = sorted(set(untrusted) - set(trusted))
    if unknown:
        raise ArtefactRefused(
            f"{what}: the artefact holds types that are not trusted ({', '.join(unknown)}); refused"
        )
    return sio.loads(data, trusted=list(untrusted))


def artefact_format(data: bytes) -> str | None:
    """skops files are zip archives."""
    return FORMAT if data[:4] == b"PK\x03\x04" else None
