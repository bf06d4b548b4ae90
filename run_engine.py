#!/usr/bin/env python3
"""Command line of the referral integration engine. `python run_engine.py --help` lists the commands."""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from engine.config import ConfigError, EngineConfig, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="HL7 v2 / fax integration engine for closed-loop referral management.")

ConfigOption = typer.Option(Path(os.environ.get("ENGINE_CONFIG", "config.yaml")), "--config", "-c",
                            help="config file (env ENGINE_CONFIG)")
JsonOption = typer.Option(False, "--json", help="one JSON document on stdout")


def _config(path: Path) -> EngineConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)


def _journal(config: EngineConfig):
    from engine.store import Journal, StoreError
    try:
        return Journal(config.sqlite_path, readonly=True)
    except StoreError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)


@app.command()
def run(config: Path = ConfigOption) -> None:
    """Start the engine in the foreground; SIGTERM/SIGINT drain and stop it."""
    from engine import daemon
    from engine.store import StoreError
    try:
        code = daemon.run(_config(config))
    except StoreError as exc:
        typer.echo(str(exc), err=True)
        code = 2
    raise typer.Exit(code)


@app.command("check-config")
def check_config(config: Path = ConfigOption) -> None:
    """Validate the config; print every problem with file, line, key and what is valid."""
    cfg = _config(config)
    problems = []
    for channel in cfg.channels:
        if channel.transformer is not None and not channel.transformer.mapping.exists():
            problems.append(f"{config}: channels.{channel.name}.transformer.mapping: "
                            f"file {channel.transformer.mapping} does not exist")
    if problems:
        typer.echo("\n".join(problems), err=True)
        raise typer.Exit(2)
    typer.echo(f"{config}: OK ({len(cfg.channels)} channels; store {cfg.store.url})")


@app.command()
def send(paths: list[Path] = typer.Argument(..., help="HL7 files or folders of .hl7 files"),
         host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(2575, "--port"),
         unbatch: bool = typer.Option(False, "--unbatch", help="send a batch file's messages one by one"),
         timeout: float = typer.Option(30.0, "--timeout")) -> None:
    """Send messages over MLLP and print each ACK (MSA-1, MSA-2, text). Exit 1 if any is not AA/CA."""
    from channels.mllp.client import MLLPClient, msa
    from engine.hl7v2 import prepare, split_frame
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in (".hl7", ".txt", ".er7"))
        elif p.is_file():
            files.append(p)
        else:
            typer.echo(f"{p}: no such file or folder", err=True)
            raise typer.Exit(2)
    failures = 0
    try:
        client = MLLPClient(host, port, timeout)
    except OSError as exc:
        typer.echo(f"cannot connect to {host}:{port}: {exc}", err=True)
        raise typer.Exit(2)
    with client:
        for f in files:
            prepared = prepare(f.read_bytes())
            messages, envelope = split_frame(prepared)
            payloads = [prepared] if envelope is not None and not unbatch else messages
            for payload in payloads:
                ack = client.send(payload)
                if envelope is not None and not unbatch:
                    codes = [msa(s + b"\r")[0] for s in ack.split(b"\r") if s.startswith(b"MSA")]
                    ok = len(codes) == len(messages) and all(c in ("AA", "CA") for c in codes)
                    typer.echo(f"{f.name}\tbatch of {len(messages)}\t{','.join(codes)}")
                else:
                    code, control_id, text = msa(ack)
                    ok = code in ("AA", "CA")
                    typer.echo(f"{f.name}\t{control_id}\t{code}\t{text}".rstrip())
                failures += not ok
    raise typer.Exit(1 if failures else 0)


def _row_dict(row) -> dict:
    return {k: row[k] for k in row.keys() if k != "raw"}


def _since(value: Optional[str]) -> Optional[str]:
    """Accept 2026-11-23, 2026-11-23T10:00, or a relative '2h' / '3d' / '30m'."""
    if not value:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        from datetime import timedelta
        moment = datetime.now(timezone.utc) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            typer.echo(f"bad time {value!r}: use 2026-11-23, 2026-11-23T10:00 or 2h / 3d / 30m", err=True)
            raise typer.Exit(2)
        if moment.tzinfo is None:
            moment = moment.astimezone()
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


@app.command()
def messages(config: Path = ConfigOption,
             control_id: Optional[str] = typer.Option(None, "--control-id", help="MSH-10"),
             patient_id: Optional[str] = typer.Option(None, "--patient-id", help="first PID-3 identifier"),
             message_type: Optional[str] = typer.Option(None, "--type", help="ORM or ORM^O01"),
             status: Optional[str] = typer.Option(None, "--status"),
             channel: Optional[str] = typer.Option(None, "--channel"),
             since: Optional[str] = typer.Option(None, "--since", help="2026-11-23[T10:00] or 2h/3d"),
             until: Optional[str] = typer.Option(None, "--until"),
             limit: int = typer.Option(50, "--limit"),
             as_json: bool = JsonOption) -> None:
    """Search the message journal, newest first."""
    from engine.store import STATUSES
    if status is not None and status not in STATUSES:
        typer.echo(f"--status {status!r}: valid values are {', '.join(STATUSES)}", err=True)
        raise typer.Exit(2)
    journal = _journal(_config(config))
    rows = journal.search(control_id=control_id, patient_id=patient_id, message_type=message_type, status=status,
                          channel=channel, since=_since(since), until=_since(until), limit=limit)
    if as_json:
        typer.echo(json.dumps({"messages": [_row_dict(r) for r in rows]}, indent=1))
        return
    typer.echo(f"{'ID':>8}  {'RECEIVED (UTC)':19}  {'CHANNEL':14} {'TYPE':9} {'CONTROL ID':22} {'STATUS':11} "
               f"{'ACK':3}  NOTE")
    for r in rows:
        note = r["error"] or (f"duplicate of {r['duplicate_of']}" if r["duplicate_of"] else "") or r["warnings"] or ""
        typer.echo(f"{r['id']:>8}  {r['received_at'][:19]:19}  {r['channel'][:14]:14} {(r['message_type'] or '-')[:9]:9} "
                   f"{(r['control_id'] or '-')[:22]:22} {r['status']:11} {r['ack_code'] or '':3}  {note[:60]}")


@app.command()
def show(message_id: int = typer.Argument(..., metavar="ID"), config: Path = ConfigOption,
         as_json: bool = JsonOption) -> None:
    """One journaled message: what happened to it, the raw message, and a segment/field breakdown."""
    from engine.describe import breakdown, readable
    journal = _journal(_config(config))
    row = journal.get(message_id)
    if row is None:
        typer.echo(f"no message with id {message_id}", err=True)
        raise typer.Exit(1)
    text = readable(row["raw"], row["charset"])
    if as_json:
        doc = _row_dict(row)
        doc["raw"] = text
        doc["segments"] = breakdown(text, row["version"])
        typer.echo(json.dumps(doc, indent=1))
        return
    for key in ("id", "channel", "received_at", "peer", "sender", "control_id", "message_type", "version",
                "charset", "status", "ack_code", "error", "warnings", "duplicate_of", "updated_at"):
        if row[key] is not None:
            typer.echo(f"{key:13} {row[key]}")
    typer.echo("\n--- raw ---")
    typer.echo(text.replace("\r", "\n").rstrip("\n"))
    typer.echo("\n--- fields ---")
    for seg in breakdown(text, row["version"]):
        typer.echo(seg["segment"])
        for f in seg["fields"]:
            typer.echo(f"  {f['position']:8} {f['name'][:34]:34} {f['value']}")


if __name__ == "__main__":
    app()
