"""Development secrets generated once into the data directory (the vault key, the JWT secret).

Only for the embedded default: production sets SECRET_VAULT_KEY and JWT_SECRET (or JWT_PUBLIC_KEY).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import tempfile

from crm_hub.errors import ConfigurationError

__all__ = ["load_or_create_secret"]


def load_or_create_secret(path: pathlib.Path) -> tuple[str, bool]:
    """Return ``(secret, created)`` for the development secret stored in ``path``.

    Reads the file if it exists; otherwise creates its directory and writes a new random secret, readable
    by the owner only. The file appears complete or not at all, and if another process creates it at
    the same moment, both end up with the same key. Does not log: the caller warns.
    """
    data_dir = path.parent
    existing = _read_key_file(path)
    if existing is not None:
        return existing, False

    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{path.name}.", suffix=".tmp")  # mode 0o600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as tmp:
            tmp.write(key + "\n")
            tmp.flush()
            os.fsync(tmp.fileno())  # losing a vault key means losing every stored credential
        try:
            # A hard link creates `path` only if it does not exist yet, atomically: two processes
            # starting together cannot overwrite each other's key (os.replace would).
            os.link(tmp_name, path)
        except FileExistsError:
            pass
        except OSError:
            # No hard links on this filesystem: fall back to replace-if-still-absent (tiny race).
            if not path.exists():
                os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    _fsync_dir(data_dir)

    # Whoever won, the file now holds the key everyone will use.
    stored = _read_key_file(path)
    if stored is None:
        raise ConfigurationError(f"the secret file {path} disappeared while it was being created")
    return stored, stored == key


def _read_key_file(path: pathlib.Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the secret file {path}: {type(exc).__name__}") from None
    key = text.strip()
    if not key:
        raise ConfigurationError(
            f"the secret file {path} is empty; restore it from a backup, or delete it to start over "
            "(credentials stored under the old key will be lost)"
        )
    return key


def _fsync_dir(directory: pathlib.Path) -> None:
    # Makes the new directory entry durable; not possible on every platform, hence best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
