"""Pseudonymisation: the only place patient-linked values are turned into hashes.

Patient ID, Study Instance UID and SOP Instance UID are replaced by a salted HMAC-SHA256
(16 hex chars); derived DICOMs get UIDs derived from the old ones by a salted HMAC
(:func:`derived_uid`). The salt comes from ``--salt`` / ``$MAMMOPREP_SALT``; otherwise a
random salt is created once in ``~/.config/mammoprep/salt`` (mode 0600) so that hashes are
stable for one user but cannot be reversed by anyone who does not hold the salt. Names,
birth dates and accession numbers are never read into a record at all.

A salt is never weak: an explicit salt shorter than :data:`MIN_SALT_CHARS` characters, and a
salt file shorter than :data:`MIN_FILE_SALT_CHARS` (e.g. left empty by a disk-full), are
refused with a :class:`SaltError` that says how to fix it. The salt file is created
atomically (exclusive temporary file, 32 random bytes as hex, fsync, hard link to the final
name), so concurrent first runs agree on one salt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from pathlib import Path

from .atomic import fsync_dir
from .errors import MammoprepError
from .inputs import MAX_SALT_BYTES, read_input

SALT_ENV = "MAMMOPREP_SALT"
#: Shortest explicit salt (``--salt`` / ``$MAMMOPREP_SALT``) accepted, in characters.
MIN_SALT_CHARS = 16
#: Shortest salt file content accepted (the created file holds 64 hex characters).
MIN_FILE_SALT_CHARS = 32
_SALT_BYTES = 32
_FIX = "python -c 'import secrets; print(secrets.token_hex(32))'"


class SaltError(MammoprepError):
    """A salt that would make the pseudonyms guessable, or a salt file we cannot create."""

    kind = "bad_salt"


def salt_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mammoprep" / "salt"


def check_salt(text: str, source: str) -> bytes:
    """``text`` as salt bytes, or :class:`SaltError` if it is shorter than
    :data:`MIN_SALT_CHARS` (``source`` names where it came from, for the message)."""
    if len(text.strip()) < MIN_SALT_CHARS:
        text = text.strip()
        raise SaltError(None, f"the pseudonymisation salt from {source} is "
                        f"{'empty' if not text else f'{len(text)} characters long'}; a short "
                        "salt lets anyone who knows one Patient ID recover it",
                        hint=f"use at least {MIN_SALT_CHARS} random characters, e.g. `{_FIX}`, "
                             "and keep it secret; use the same salt for every run over one "
                             "archive")
    return text.encode()  # as given (unstripped), so existing pseudonyms stay valid


def resolve_salt(salt: str | None = None) -> bytes:
    """The salt to use: explicit > $MAMMOPREP_SALT > the per-user salt file (created once).

    Raises :class:`SaltError` for an empty or short salt (never falls back silently)."""
    if salt is not None:
        return check_salt(salt, "--salt")
    env = os.environ.get(SALT_ENV)
    if env is not None:
        return check_salt(env, f"${SALT_ENV}")
    return _file_salt(salt_file())


def _file_salt(path: Path) -> bytes:
    """Read the salt file, creating it atomically first if it does not exist."""
    if not os.path.lexists(path):
        _create_salt_file(path)
    try:  # a FIFO, a device or a /proc file is refused, never read (it could block)
        text = read_input(path, "salt file", MAX_SALT_BYTES).decode("ascii").strip()
    except MammoprepError as exc:
        raise SaltError(path, f"cannot read the salt file ({exc.problem})",
                        hint="make it a regular file holding the salt: restore it from your "
                             f"backup, or pass --salt / ${SALT_ENV}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SaltError(path, f"cannot read the salt file ({exc})",
                        hint="fix its permissions, or restore it from your backup") from None
    if len(text) < MIN_FILE_SALT_CHARS:
        raise SaltError(path, f"the salt file is {'empty' if not text else 'too short'} "
                        f"({len(text)} characters, at least {MIN_FILE_SALT_CHARS} needed; "
                        "an interrupted or disk-full first run?)",
                        hint="restore it from your backup if pseudonyms were already made with "
                             "it; otherwise delete it and rerun to create a new one (or pass "
                             f"--salt / ${SALT_ENV})")
    return text.encode()


def _create_salt_file(path: Path) -> None:
    """Exclusive temporary file -> 32 random bytes as hex -> fsync -> hard link to ``path``.

    The link fails if another process linked first; then its salt is the salt. A failure
    (disk full, permissions) leaves no salt file behind and raises :class:`SaltError`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            data = (secrets.token_hex(_SALT_BYTES) + "\n").encode()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # a concurrent first run won; use its salt
        except OSError:  # no hard links here: rename, unless someone else was first
            if not path.exists():
                os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise SaltError(path, f"cannot create the salt file ({exc.strerror or exc})",
                        hint="free disk space or fix permissions of the folder, or pass "
                             f"--salt / ${SALT_ENV}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def pseudonym(value: object, salt: bytes) -> str | None:
    """Salted HMAC-SHA256 of ``value`` as 16 hex chars; None for an empty value."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    return hmac.new(salt, text.encode(), hashlib.sha256).hexdigest()[:16]


def derived_uid(salt: bytes, *parts: object) -> str:
    """A ``2.25.<int>`` UID (at most 44 characters) from a salted HMAC-SHA256 of ``parts``.

    The same salt and parts always give the same UID (reruns agree, study/series structure
    survives); without the salt the original UIDs cannot be recovered or confirmed."""
    msg = "\x1f".join(str(p).strip() for p in parts).encode()
    digest = hmac.new(salt, b"mammoprep-uid\x1f" + msg, hashlib.sha256).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"


def salt_fingerprint(salt: bytes) -> str:
    """Which salt was used, for configs: HMAC-SHA256 keyed by the salt of a fixed string,
    32 hex chars (128 bits). It identifies the salt without revealing it, and is no easier
    to attack than any pseudonym made with the salt."""
    return hmac.new(salt, b"mammoprep salt fingerprint v2", hashlib.sha256).hexdigest()[:32]
