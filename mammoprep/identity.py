"""Pseudonymisation: the only place patient-linked values are turned into hashes.

Patient ID and Study Instance UID are replaced by a salted HMAC-SHA256 (16 hex chars). The
salt comes from ``--salt`` / ``$MAMMOPREP_SALT``; otherwise a random salt is created once in
``~/.config/mammoprep/salt`` (mode 0600) so that hashes are stable for one user but cannot be
reversed by anyone who does not hold the salt. Names, birth dates and accession numbers are
never read into a record at all.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import lru_cache
from pathlib import Path

SALT_ENV = "MAMMOPREP_SALT"


def salt_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mammoprep" / "salt"


@lru_cache(maxsize=8)
def resolve_salt(salt: str | None = None) -> bytes:
    """The salt to use: explicit > $MAMMOPREP_SALT > the per-user salt file (created once)."""
    if salt:
        return salt.encode()
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode()
    path = salt_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def pseudonym(value: object, salt: bytes) -> str | None:
    """Salted HMAC-SHA256 of ``value`` as 16 hex chars; None for an empty value."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    return hmac.new(salt, text.encode(), hashlib.sha256).hexdigest()[:16]


def uid_hash(value: object) -> str | None:
    """Unsalted sha256 of a UID (16 hex chars): dot-free, and lets users find their file."""
    text = "" if value is None else str(value).strip()
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else None


def salt_fingerprint(salt: bytes) -> str:
    """A short, non-reversible fingerprint of the salt, for recording which salt was used."""
    return hashlib.sha256(b"mammoprep-salt:" + salt).hexdigest()[:8]
