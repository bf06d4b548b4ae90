"""File writer: drops each outbound message as one file in a folder, for a system that collects files.

A file appears whole or not at all: the payload goes to a hidden temp file in the
same folder, is fsynced, then linked under its final name (link fails instead of
overwriting), and the folder is fsynced so the name survives a crash.

The name comes from `name_pattern`, with `{control_id}`, `{id}` (queue row id),
`{destination}`, `{message_type}` (`^` -> `_`) and `{attempt}`; a row without a
control id uses `outbound-<id>`. Characters that are unsafe in a file name become `_`.

Outcomes:
- the file is written -> sent;
- a file of that name already holds exactly this payload -> sent (a resend after a
  crash or a lost confirmation is idempotent);
- a file of that name holds something else -> retry (nothing is overwritten; the
  collector usually takes files away, after which the row goes through);
- a disk error (full, read-only, no permission, folder missing and not creatable)
  -> retry with the error.
"""
from __future__ import annotations

import asyncio
import errno
import os
import re
import uuid
from pathlib import Path

from channels.outbound import Delivery, DeliveryResult, retry, sent

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(text: str) -> str:
    """A file name part with only letters, digits, '.', '_' and '-' (no path, no leading dot)."""
    return _UNSAFE.sub("_", text).lstrip(".") or "_"


def write_atomic(path: Path, data: bytes) -> bool:
    """Write `data` as `path` atomically and durably. False when `path` already exists (it is left alone).

    Raises OSError for disk problems. Falls back to an exists-check + rename on
    file systems without hard links (the writer is the only one naming files here).
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            if path.exists():
                return False
            os.replace(tmp, path)
        fsync_dir(path.parent)
        return True
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def replace_atomic(path: Path, data: bytes) -> None:
    """Write `path` through a temp file + fsync + rename, replacing any file of that name. Raises OSError."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def same_content(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


class FileWriter:
    """A connector (channels.outbound.Connector) writing one file per message into `directory`."""

    def __init__(self, directory: str | Path, name_pattern: str = "{control_id}.hl7"):
        self.directory = Path(directory)
        self.name_pattern = name_pattern
        self.file_name(Delivery(0, "check", "ADT^A01", "check", b"", 1))   # a bad pattern fails here, not per row

    def file_name(self, delivery: Delivery) -> str:
        try:
            name = self.name_pattern.format(
                control_id=delivery.control_id or f"outbound-{delivery.id}", id=delivery.id,
                destination=delivery.destination, message_type=delivery.message_type.replace("^", "_"),
                attempt=delivery.attempt)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"file name pattern {self.name_pattern!r} is not valid: {exc!r}; use "
                             "{control_id}, {id}, {destination}, {message_type}") from None
        return safe_name(name)

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        path = self.directory / self.file_name(delivery)
        return await asyncio.to_thread(self._write, path, delivery.payload)

    def _write(self, path: Path, data: bytes) -> DeliveryResult:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if write_atomic(path, data):
                return sent(ack=f"wrote {path.name} ({len(data):,} bytes)")
            if same_content(path, data):
                return sent(detail="already written (same content)", ack=f"{path.name} exists")
            return retry(f"{path} already exists with different content; not overwritten "
                         "(waiting for it to be collected)")
        except OSError as exc:
            return retry(f"cannot write {path}: {exc.strerror or exc}")

    async def close(self) -> None:
        pass

