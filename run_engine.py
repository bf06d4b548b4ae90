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
from engine.store import write_transaction

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
        return Journal(config.store_location, readonly=True)
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
    except (StoreError, ConfigError) as exc:
        typer.echo(str(exc), err=True)
        code = 2
    raise typer.Exit(code)


@app.command("check-config")
def check_config(config: Path = ConfigOption) -> None:
    """Validate the config; print every problem with file, line, key and what is valid."""
    cfg = _config(config)
    problems = []
    from engine.mapping import MappingError, Mappings
    for channel in cfg.channels:
        if channel.transformer is None:
            continue
        folder = channel.transformer.mappings
        if not folder.is_dir():
            problems.append(f"{config}: channels.{channel.name}.transformer.mappings: "
                            f"folder {folder} does not exist")
            continue
        try:
            Mappings.load(folder)
        except MappingError as exc:
            problems += exc.problems
    from engine.delivery import destination_problems
    problems += destination_problems(cfg)
    if cfg.outbound.rules:
        from engine.rules import OutboundPlanner
        from engine.templates import TemplateError, Templates
        try:
            OutboundPlanner(cfg, Templates.load(cfg.outbound.templates))
        except TemplateError as exc:
            problems += exc.problems
        except ValueError as exc:
            problems.append(f"{config}: {exc}")
    if cfg.outreach.sms or cfg.outreach.email:
        from engine.outreach import OutreachError, load_texts
        try:
            texts = load_texts(cfg.outreach.templates)
        except OutreachError as exc:
            problems.append(str(exc))
        else:
            for kind in ("appointment_reminder", "no_show_follow_up"):
                if cfg.outreach.default_language not in (texts.get(kind) or {}):
                    problems.append(f"{cfg.outreach.templates}/messages.yaml: {kind}: no text in the default "
                                    f"language {cfg.outreach.default_language!r} (outreach.default_language)")
    if problems:
        typer.echo("\n".join(problems), err=True)
        raise typer.Exit(2)
    from engine.db import describe       # a PostgreSQL URL without its password
    typer.echo(f"{config}: OK ({len(cfg.channels)} channels; store {describe(cfg.store_location)})")


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
                "charset", "status", "ack_code", "error", "warnings", "duplicate_of", "updated_at",
                "received_by", "claimed_by"):       # the last two: which node, when several share the store
        if row[key] is not None:
            typer.echo(f"{key:13} {row[key]}")
    typer.echo("\n--- raw ---")
    typer.echo(text.replace("\r", "\n").rstrip("\n"))
    typer.echo("\n--- fields ---")
    for seg in breakdown(text, row["version"]):
        typer.echo(seg["segment"])
        for f in seg["fields"]:
            typer.echo(f"  {f['position']:8} {f['name'][:34]:34} {f['value']}")


@app.command("map")
def map_file(path: Path = typer.Argument(..., metavar="FILE", help="one HL7 message (CR or LF between segments)"),
             config: Path = ConfigOption, as_json: bool = JsonOption,
             mappings: Optional[Path] = typer.Option(None, "--mappings", help="mapping folder (default: the "
                                                     "first channel's transformer.mappings)")) -> None:
    """Show the normalized result of one message through the mappings, without storing anything.

    Exit 2 when a mapping file has errors or the output does not validate, 1 when no mapping handles the
    message (or it is not HL7)."""
    from engine.hl7v2 import CharsetError, HeaderError, decode, prepare, read_header
    from engine.hl7v2.parse import ParseError
    from engine.mapping import MappingError, Mappings, NoMapping
    folder = mappings
    if folder is None:
        cfg = _config(config)
        folder = next((c.transformer.mappings for c in cfg.channels if c.transformer is not None), None)
        if folder is None:
            typer.echo(f"{config}: no channel has transformer.mappings; pass --mappings DIR", err=True)
            raise typer.Exit(2)
    try:
        raw = prepare(path.read_bytes())
    except OSError as exc:
        typer.echo(f"{path}: cannot read: {exc.strerror}", err=True)
        raise typer.Exit(1)
    try:
        header = read_header(raw)
        text = decode(raw, header.text(18)).text
        loaded = Mappings.load(folder)
        result = loaded.map(text, header.message_type)
    except MappingError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    except (NoMapping, HeaderError, CharsetError, ParseError) as exc:
        typer.echo(f"{path}: {exc}", err=True)
        raise typer.Exit(1)
    doc = result.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    doc["event"] = result.event
    if as_json:
        typer.echo(json.dumps(doc, indent=1, ensure_ascii=False))
        return

    def show_value(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                show_value(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, inner in enumerate(value):
                show_value(f"{prefix}[{i}]", inner)
        else:
            if isinstance(value, str) and len(value) > 200:
                value = value[:200].replace("\n", " / ") + f"... ({len(value)} characters)"
            elif isinstance(value, str):
                value = value.replace("\n", " / ")
            typer.echo(f"{prefix:36} {value}")
    show_value("", doc)


@app.command()
def extract(path: Path = typer.Argument(..., metavar="FILE", help="a fax: PDF, TIFF, PNG or JPEG"),
            pages_dir: Optional[Path] = typer.Option(None, "--pages-dir", help="also save the cleaned page images here"),
            max_pages: int = typer.Option(200, "--max-pages", help="refuse longer documents")) -> None:
    """Read a fax and print its referral fields as one JSON object (the DESIGN.md contract).

    A file that cannot be read prints {"error": REASON, "message": ...} on stdout, one line on
    stderr, and exits 1 (REASON: encrypted, corrupt, empty, too_many_pages, not_a_document,
    unreadable, timeout)."""
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from ocr import DocumentError, extract_document
    try:
        result = extract_document(path, pages_dir=pages_dir, max_pages=max_pages)
    except DocumentError as exc:
        typer.echo(f"{path}: {exc.reason}: {exc}", err=True)
        typer.echo(json.dumps({"error": exc.reason, "message": str(exc)}))
        raise typer.Exit(1)
    except Exception as exc:         # never a traceback on stdout; the reason on one line
        typer.echo(f"{path}: error: {type(exc).__name__}: {exc}", err=True)
        typer.echo(json.dumps({"error": "internal", "message": f"{type(exc).__name__}: {exc}"}))
        raise typer.Exit(1)
    typer.echo(json.dumps(result, ensure_ascii=False))


# ---- referrals: worklists, timeline, unmatched messages, replay ----------------------------

def _referral_store(config: EngineConfig):
    from engine.referral_store import ReferralStore
    journal = _journal(config)
    from engine.store import SCHEMA_VERSION
    from engine.db import describe, schema_version
    if schema_version(journal.conn) < SCHEMA_VERSION:
        typer.echo(f"{describe(config.store_location)}: the store predates this release's referral tables; "
                   f"start the engine once to upgrade it", err=True)
        raise typer.Exit(2)
    return ReferralStore(journal.conn)


def _writable_journal(config: EngineConfig):
    from engine.store import Journal, StoreError
    try:
        return Journal(config.store_location, config.store.synchronous, referral_rules=config.referrals)
    except StoreError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)


@app.command()
def referrals(config: Path = ConfigOption,
              status: Optional[str] = typer.Option(None, "--status", help="received, incomplete, ready, ..."),
              specialty: Optional[str] = typer.Option(None, "--specialty", help="lowercase, e.g. cardiology"),
              urgency: Optional[str] = typer.Option(None, "--urgency", help="routine, urgent or stat"),
              patient_id: Optional[str] = typer.Option(None, "--patient-id", help="any patient identifier"),
              owner: Optional[str] = typer.Option(None, "--owner"),
              limit: int = typer.Option(100, "--limit"),
              as_json: bool = JsonOption) -> None:
    """List referrals (a worklist), oldest first: {"referrals": [...]} with --json."""
    from engine.lifecycle import ReferralStatus
    if status is not None and status not in set(ReferralStatus):
        typer.echo(f"--status {status!r}: valid values are {', '.join(ReferralStatus)}", err=True)
        raise typer.Exit(2)
    if urgency is not None and urgency not in ("routine", "urgent", "stat"):
        typer.echo(f"--urgency {urgency!r}: valid values are routine, urgent, stat", err=True)
        raise typer.Exit(2)
    rows = _referral_store(_config(config)).search(status=status, specialty=specialty, urgency=urgency,
                                                   patient_id=patient_id, owner=owner, limit=limit)
    if as_json:
        typer.echo(json.dumps({"referrals": rows}, indent=1))
        return
    typer.echo(f"{'ID':>7}  {'CREATED (UTC)':19}  {'STATUS':12} {'URGENCY':8} {'SPECIALTY':16} {'PATIENT':10} "
               f"{'PLACER ORDER':18} MISSING / FLAGS")
    for r in rows:
        flags = ", ".join(r["missing"] or []) + (" LEAKAGE RISK" if r["leakage_risk"] else "")
        typer.echo(f"{r['id']:>7}  {r['created_at'][:19]:19}  {r['status']:12} {(r['urgency'] or '-'):8} "
                   f"{(r['specialty'] or '-')[:16]:16} {(r['patient_mrn'] or '-')[:10]:10} "
                   f"{(r['placer_order_number'] or '-')[:18]:18} {flags}")


@app.command("referral")
def referral_timeline(referral_id: int = typer.Argument(..., metavar="ID"), config: Path = ConfigOption,
                      as_json: bool = JsonOption) -> None:
    """One referral's timeline: messages, status history, appointments, documents, exceptions."""
    timeline = _referral_store(_config(config)).timeline(referral_id)
    if timeline is None:
        typer.echo(f"no referral with id {referral_id}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(timeline, indent=1))
        return
    r = timeline["referral"]
    for key in ("id", "status", "urgency", "specialty", "service_text", "reason", "placer_order_number",
                "filler_order_number", "referral_number", "patient_mrn", "patient_family_name", "patient_given_name",
                "patient_birth_date", "referring_name", "referring_npi", "receiving_department",
                "receiving_destination", "payer", "member_id", "authorization_number", "owner", "next_action",
                "next_action_due", "missing", "leakage_risk", "note_received", "created_at", "updated_at"):
        if r.get(key) not in (None, [], 0):
            typer.echo(f"{key:21} {r[key]}")
    typer.echo("\n--- status history ---")
    for h in timeline["history"]:
        typer.echo(f"{h['at'][:19]}  {h['from_status'] or '(new)':12} -> {h['to_status']:12} "
                   f"{h['cause_kind']} {h['cause_id'] or ''}  {h['detail'] or ''}".rstrip())
    typer.echo("\n--- messages ---")
    for m in timeline["messages"]:
        typer.echo(f"{m['message_id']:>8}  {(m['message_type'] or '-'):9} {m['event']:24} {m['outcome']:10} "
                   f"{m['rule'] or ''}")
    for title, rows, fields in (("appointments", timeline["appointments"], ("start", "status", "placer_id",
                                                                              "filler_id", "location")),
                                ("documents", timeline["documents"], ("kind", "title", "status", "content_type",
                                                                      "received_at")),
                                ("diagnoses", timeline["diagnoses"], ("code", "system", "valid", "description"))):
        if rows:
            typer.echo(f"\n--- {title} ---")
            for row in rows:
                typer.echo("  ".join(str(row[f]) for f in fields if row.get(f) is not None))
    _echo_coordinator_sections(timeline)
    if timeline["outbound"]:
        typer.echo("\n--- outbound ---")
        for o in timeline["outbound"]:
            typer.echo(f"{o['id']:>8}  {o['message_type']:9} -> {o['destination']:16} {o['status']:8} "
                       f"attempts {o['attempts']}  {o['control_id'] or ''}  {o['last_error'] or ''}".rstrip())


@app.command()
def unmatched(config: Path = ConfigOption, include_resolved: bool = typer.Option(False, "--all"),
              limit: int = typer.Option(100, "--limit"), as_json: bool = JsonOption) -> None:
    """Messages that matched no single referral, with their candidate referrals: {"unmatched": [...]}."""
    rows = _referral_store(_config(config)).unmatched(include_resolved, limit)
    if as_json:
        typer.echo(json.dumps({"unmatched": rows}, indent=1))
        return
    typer.echo(f"{'MESSAGE':>8}  {'RECEIVED (UTC)':19}  {'TYPE':9} {'EVENT':24} {'PATIENT':12} CANDIDATES")
    for u in rows:
        typer.echo(f"{u['message_id']:>8}  {(u['received_at'] or '')[:19]:19}  {(u['message_type'] or '-'):9} "
                   f"{u['event']:24} {(u['patient_id'] or '-')[:12]:12} "
                   f"{', '.join(map(str, u['candidates'])) or '-'}"
                   + (f"  (resolved: {u['resolved_referral_id']})" if u["resolved_at"] else ""))


@app.command()
def link(message_id: int = typer.Argument(..., metavar="MESSAGE_ID"),
         referral_id: int = typer.Argument(..., metavar="REFERRAL_ID"), config: Path = ConfigOption) -> None:
    """Link an unmatched message to a referral; the engine then replays the message against it."""
    journal = _writable_journal(_config(config))
    problem = journal.link(message_id, referral_id)
    journal.close()
    if problem:
        typer.echo(problem, err=True)
        raise typer.Exit(1)
    typer.echo(f"message {message_id} linked to referral {referral_id}; the engine replays it "
               f"(now if it is running, else at its next start)")


@app.command()
def replay(since: str = typer.Option(..., "--since", help="2026-11-23[T10:00] or 2h/3d"),
           channel: Optional[str] = typer.Option(None, "--channel"), config: Path = ConfigOption) -> None:
    """Reprocess stored messages through the current mappings (after a mapping fix); idempotent.

    A referral update already applied is not applied again; messages in error, filtered or unmatched
    get another chance."""
    journal = _writable_journal(_config(config))
    count = journal.requeue(since=_since(since), channel=channel)
    journal.close()
    typer.echo(f"{count} messages queued for reprocessing (now if the engine is running, else at its next start)")


# ---- coordinator actions: owner, next action, status by hand, review exceptions ----------------------
# Each is one short BEGIN IMMEDIATE transaction on the CLI's own connection (engine/coordinator.py), like
# `link` and `replay`: safe while the engine runs, whose writer it waits for (busy_timeout) and delays by
# microseconds. Exit 2 with the reason when the action is refused (unknown id, transition not allowed).

ByOption = typer.Option(..., "--by", help="the coordinator's user name (kept in the history)")


def _echo_coordinator_sections(timeline: dict) -> None:
    """The parts of `referral ID` that coordinators act on: review exceptions (with their ids) and user events."""
    if timeline["exceptions"]:
        typer.echo("\n--- review exceptions ---")
        for x in timeline["exceptions"]:
            state = (f"resolved {x['resolved_at'][:19]} by {x['resolved_by'] or '-'}"
                     + (f": {x['resolution_note']}" if x["resolution_note"] else "")) if x["resolved_at"] else "OPEN"
            typer.echo(f"#{x['id']:<5} message {x['message_id'] or '-'}  {x['event']}  {x['reason']}  [{state}]")
    if timeline["events"]:
        typer.echo("\n--- coordinator events ---")
        for ev in timeline["events"]:
            typer.echo(f"{ev['at'][:19]}  {ev['kind']:18} {ev['from_value'] or '-'} -> {ev['to_value'] or '-'}  "
                       f"{ev['cause_kind']} {ev['cause_id'] or ''}  {ev['detail'] or ''}".rstrip())


def _coordinator_action(config: Path, action, *args):
    """Run one engine.coordinator action on a writable connection; exit 2 with the reason if refused."""
    from engine.coordinator import ActionRefused, ManualTransitionRefused
    journal = _writable_journal(_config(config))
    try:
        return action(journal.conn, *args)
    except (ActionRefused, ManualTransitionRefused) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    finally:
        journal.close()


def _echo_referral_state(referral: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"referral": referral}, indent=1))
        return
    due = f" (due {referral['next_action_due']})" if referral.get("next_action_due") else ""
    typer.echo(f"referral {referral['id']}: {referral['status']}; owner {referral['owner'] or '-'}; "
               f"next action {referral['next_action'] or '-'}{due}")


@app.command()
def assign(referral_id: int = typer.Argument(..., metavar="ID"),
           owner: str = typer.Option(..., "--owner", help="who works the referral from now on"),
           by: str = ByOption, config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Make a coordinator the owner of a referral (the `referrals --owner` worklist)."""
    from engine import coordinator
    _echo_referral_state(_coordinator_action(config, coordinator.assign, referral_id, owner, by), as_json)


@app.command("next-action")
def next_action(referral_id: int = typer.Argument(..., metavar="ID"),
                text: str = typer.Option(..., "--text", help='e.g. "call the patient to book"'),
                due: Optional[str] = typer.Option(None, "--due", help="2026-12-01 or 2026-12-01T09:00"),
                by: str = ByOption, config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Set a referral's next action and its due date."""
    from engine import coordinator
    _echo_referral_state(_coordinator_action(config, coordinator.set_next_action, referral_id, text, due, by),
                         as_json)


@app.command("set-status")
def set_status(referral_id: int = typer.Argument(..., metavar="ID"),
               status: str = typer.Argument(..., metavar="STATUS"),
               by: str = ByOption, reason: str = typer.Option(..., "--reason", help="kept in the status history"),
               config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Change a referral's status by hand (e.g. ready, canceled, declined); exit 2 names what is allowed."""
    from engine import coordinator
    _echo_referral_state(_coordinator_action(config, coordinator.set_status, referral_id, status, by, reason),
                         as_json)


@app.command("resolve-exception")
def resolve_exception(exception_id: int = typer.Argument(..., metavar="EXCEPTION_ID"),
                      by: str = ByOption, note: Optional[str] = typer.Option(None, "--note"),
                      config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Mark a review exception (shown by `referral ID`) resolved; the referral's status is not changed."""
    from engine import coordinator
    row = _coordinator_action(config, coordinator.resolve_exception, exception_id, by, note)
    if as_json:
        typer.echo(json.dumps({"exception": row}, indent=1))
        return
    typer.echo(f"review exception {row['id']} on referral {row['referral_id']} resolved by {row['resolved_by']}"
               + (f": {row['resolution_note']}" if row["resolution_note"] else ""))




# ---- outbound queue, schedules, outreach -------------------------------------------------

@app.command()
def queue(config: Path = ConfigOption, dead: bool = typer.Option(False, "--dead", help="list the dead letters"),
          destination: Optional[str] = typer.Option(None, "--destination", "-d"),
          status: Optional[str] = typer.Option(None, "--status", help="queued|sending|sent|error|dead"),
          limit: int = typer.Option(50, "--limit"), as_json: bool = JsonOption) -> None:
    """Outbound queue depth per destination; with --dead or --status, the messages themselves."""
    from engine import outbound
    conn = _referral_store(_config(config)).conn
    if dead or status:
        rows = outbound.listing(conn, status="dead" if dead else status, destination=destination, limit=limit)
        if as_json:
            typer.echo(json.dumps({"messages": rows}, indent=1))
            return
        for r in rows:
            typer.echo(f"{r['id']:>8}  {r['destination']:16} {r['message_type']:9} {r['status']:8} "
                       f"attempts {r['attempts']:<3} referral {r['referral_id'] or '-':<6} {r['control_id'] or ''}  "
                       f"{r['last_error'] or ''}".rstrip())
        return
    depths = outbound.queue_depths(conn)
    if destination:
        depths = [d for d in depths if d["destination"] == destination]
    if as_json:
        typer.echo(json.dumps({"destinations": depths}, indent=1))
        return
    typer.echo(f"{'destination':18} {'queued':>7} {'sending':>7} {'error':>7} {'dead':>7}  oldest owed")
    for d in depths:
        typer.echo(f"{d['destination']:18} {d['queued']:>7} {d['sending']:>7} {d['error']:>7} {d['dead']:>7}  "
                   f"{(d['oldest_owed'] or '-')[:19]}  {d['last_error'] or ''}".rstrip())


@app.command()
def resend(outbound_ids: list[int] = typer.Argument(..., metavar="ID...", help="outbound message ids"),
           config: Path = ConfigOption) -> None:
    """Queue outbound messages again (dead, failed or already sent), with their original MSH-10."""
    from engine import outbound
    journal = _writable_journal(_config(config))
    missing = []
    try:
        with write_transaction(journal.conn):
            for outbound_id in outbound_ids:
                if not outbound.resend(journal.conn, outbound_id):
                    missing.append(outbound_id)
    finally:
        journal.close()
    done = [i for i in outbound_ids if i not in missing]
    if done:
        typer.echo(f"queued again: {', '.join(map(str, done))} (the running engine sends them within "
                   f"schedules.retry_pump_seconds)")
    if missing:
        typer.echo(f"no such outbound message (or it is being sent right now): {', '.join(map(str, missing))}",
                   err=True)
        raise typer.Exit(1)


SWEEPS = ("aging", "note_chase", "reminders", "no_show_follow_up", "auth_overdue", "payer_inbox")


@app.command()
def sweep(name: str = typer.Argument(..., metavar="NAME", help=f"one of: {', '.join(SWEEPS)}"),
          config: Path = ConfigOption,
          at: Optional[str] = typer.Option(None, "--at", help="pretend it is this time (ISO 8601), e.g. for a test")
          ) -> None:
    """Run one scheduled job now (the engine runs them on their schedules by itself)."""
    from engine import schedules
    from engine.outreach import Outreach
    cfg = _config(config)
    if name not in SWEEPS:
        typer.echo(f"unknown sweep {name!r}; valid: {', '.join(SWEEPS)}", err=True)
        raise typer.Exit(2)
    now = datetime.fromisoformat(at) if at else datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    s = cfg.schedules
    if name == "payer_inbox" and cfg.payers.inbox is None:
        typer.echo(f"{cfg.source_file}: payers.inbox is not set (answers come back over HTTP) in this config",
                   err=True)
        raise typer.Exit(2)
    if name not in ("auth_overdue", "payer_inbox") and getattr(s, name) is None:
        typer.echo(f"{cfg.source_file}: schedules.{name} is off (null) in this config", err=True)
        raise typer.Exit(2)
    journal = _writable_journal(cfg)
    if name == "payer_inbox":          # files are moved after the commit, so it runs its own transaction
        from engine import payer_exchange
        from engine.payers import PayerDesk
        try:
            result = payer_exchange.sweep(journal.conn, PayerDesk(cfg).on_response, cfg.payers.inbox)
        finally:
            journal.close()
        typer.echo(json.dumps(result))
        return
    try:
        with write_transaction(journal.conn):
            if name == "aging":
                result = schedules.aging_sweep(journal.conn, s.aging, now)
            elif name == "note_chase":
                result = schedules.note_chase_sweep(journal.conn, s.note_chase, now, cfg.outbound.order)
            elif name == "reminders":
                result = schedules.reminder_sweep(journal.conn, s.reminders, now, Outreach.for_engine(cfg))
            elif name == "auth_overdue":
                from engine.authorization import Authorizations
                result = Authorizations(cfg).sweep(journal.conn, now)
            else:
                outreach = Outreach.for_engine(cfg) if (cfg.outreach.sms or cfg.outreach.email) else None
                result = schedules.no_show_sweep(journal.conn, now, outreach)
    finally:
        journal.close()
    typer.echo(json.dumps(result))


@app.command("outreach-reply")
def outreach_reply(referral_id: int = typer.Argument(..., metavar="REFERRAL_ID"),
                   text: str = typer.Option(..., "--text", help="what the patient answered"),
                   channel: str = typer.Option("sms", "--channel", help="sms|email|phone"),
                   by: str = typer.Option(os.environ.get("USER", "coordinator"), "--by"),
                   config: Path = ConfigOption) -> None:
    """Record a patient's reply to outreach on the referral's timeline."""
    from engine.outreach import record_reply
    journal = _writable_journal(_config(config))
    try:
        if journal.conn.execute("SELECT 1 FROM referrals WHERE id=?", (referral_id,)).fetchone() is None:
            typer.echo(f"no referral with id {referral_id}", err=True)
            raise typer.Exit(1)
        with write_transaction(journal.conn):
            record_reply(journal.conn, referral_id, channel, text, by)
    finally:
        journal.close()
    typer.echo(f"referral {referral_id}: reply recorded")


# ---- eligibility and prior authorization (engine/eligibility.py, engine/authorization.py) -----------

def _payer_read(config: Path, referral_id: int, read):
    """Run a read of the payer tables for one referral; exit 1 when the referral does not exist."""
    journal = _journal(_config(config))
    try:
        if journal.conn.execute("SELECT 1 FROM referrals WHERE id=?", (referral_id,)).fetchone() is None:
            typer.echo(f"no referral with id {referral_id}", err=True)
            raise typer.Exit(1)
        referral = dict(journal.conn.execute("SELECT * FROM referrals WHERE id=?", (referral_id,)).fetchone())
        return referral, read(journal.conn, referral_id)
    finally:
        journal.close()


@app.command()
def eligibility(referral_id: int = typer.Argument(..., metavar="REFERRAL_ID"), config: Path = ConfigOption,
                as_json: bool = JsonOption) -> None:
    """What the payer was asked (270) and answered (271) for a referral, and the coverage recorded."""
    from engine.eligibility import report
    referral, rows = _payer_read(config, referral_id, report)
    coverage = {k: referral.get(k) for k in ("payer", "member_id", "coverage_status", "coverage_plan",
                                             "coverage_checked_at")}
    if as_json:
        typer.echo(json.dumps({"referral_id": referral_id, "coverage": coverage, "inquiries": rows}, indent=1))
        return
    typer.echo(f"referral {referral_id}: {coverage['payer'] or '-'} member {coverage['member_id'] or '-'}: coverage "
               f"{coverage['coverage_status'] or 'not asked'}" + (f", plan {coverage['coverage_plan']}"
                                                                 if coverage["coverage_plan"] else ""))
    for r in rows:
        typer.echo(f"  270 #{r['id']} asked {r['asked_at'][:19]} (outbound #{r['outbound_id']}: {r['delivery']}, "
                   f"{r['attempts']} attempt(s))  ->  {r['summary'] or 'no answer yet'}"
                   + (f"  [{r['last_error']}]" if r["last_error"] else ""))


@app.command()
def auth(referral_id: int = typer.Argument(..., metavar="REFERRAL_ID"), config: Path = ConfigOption,
         as_json: bool = JsonOption) -> None:
    """A referral's prior authorizations: status, number, validity, and every 278 asked and answered."""
    from engine.authorization import report
    referral, doc = _payer_read(config, referral_id, report)
    doc["referral"] = {k: referral.get(k) for k in ("status", "payer", "authorization_required",
                                                    "authorization_status", "authorization_number",
                                                    "authorization_valid_from", "authorization_valid_to")}
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
        return
    r = doc["referral"]
    typer.echo(f"referral {referral_id} ({r['status']}): authorization "
               f"{'required' if r['authorization_required'] else 'not required'}, "
               f"{r['authorization_status'] or '-'} {r['authorization_number'] or ''}".rstrip())
    for a in doc["authorizations"]:
        typer.echo(f"  auth #{a['id']} {a['payer']}: {a['status']} {a['number'] or ''} valid "
                   f"{a['valid_from'] or '-'}..{a['valid_to'] or '-'}; requested {a['requested_at'][:19]}, due "
                   f"{(a['due_at'] or '-')[:19]}, decided {(a['decided_at'] or '-')[:19]} by {a['decided_by'] or '-'}")
        for q in a["requests"]:
            typer.echo(f"    278 #{q['id']} {q['asked_at'][:19]} (outbound #{q['outbound_id']}: {q['delivery']}) -> "
                       f"{q['summary'] or 'no answer yet'}" + (f"  [{q['last_error']}]" if q["last_error"] else ""))


@app.command("auth-set")
def auth_set(referral_id: int = typer.Argument(..., metavar="REFERRAL_ID"),
             status: str = typer.Option(..., "--status", help="approved, denied, pending, more_info, "
                                        "not_required, canceled"),
             number: Optional[str] = typer.Option(None, "--number", help="the authorization number (approvals)"),
             valid_from: Optional[str] = typer.Option(None, "--valid-from", help="2026-12-01"),
             valid_to: Optional[str] = typer.Option(None, "--valid-to", help="2027-03-01"),
             by: str = ByOption, note: Optional[str] = typer.Option(None, "--note"),
             config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Record a payer's decision received by phone or portal; the referral follows (approved -> ready)."""
    from engine.authorization import Authorizations
    cfg = _config(config)
    journal = _writable_journal(cfg)
    conn = journal.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = Authorizations(cfg).decide(conn, referral_id, status, number=number, valid_from=valid_from,
                                             valid_to=valid_to, by=by, note=note)
            referral_status = conn.execute("SELECT status FROM referrals WHERE id=?", (referral_id,)).fetchone()[0]
            conn.execute("COMMIT")
        except ValueError as exc:
            conn.execute("ROLLBACK")
            typer.echo(str(exc), err=True)
            raise typer.Exit(2)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        journal.close()
    if as_json:
        typer.echo(json.dumps({"authorization": row, "referral_status": referral_status}, indent=1))
        return
    typer.echo(f"referral {referral_id}: authorization {row['status']} {row['number'] or ''}; referral is "
               f"{referral_status}".replace("  ", " "))


@app.command("auth-bundle")
def auth_bundle(referral_id: int = typer.Argument(..., metavar="REFERRAL_ID"), config: Path = ConfigOption) -> None:
    """Print the referral's prior-authorization request as a FHIR PAS-shaped Bundle (JSON)."""
    from engine.pas import auth_bundle as build
    cfg = _config(config)
    journal = _journal(cfg)
    try:
        bundle = build(journal.conn, referral_id, cfg)
    except LookupError as exc:
        typer.echo(str(exc.args[0]), err=True)
        raise typer.Exit(1)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    finally:
        journal.close()
    typer.echo(json.dumps(bundle, indent=1))


# ---- dashboard users (engine.web.users) ----------------------------------------------------

user_app = typer.Typer(no_args_is_help=True, help="Dashboard/API users: add, passwd, disable, role, token, list.")
app.add_typer(user_app, name="user")


def _users_conn(config: Path):
    journal = _writable_journal(_config(config))     # opens and migrates the store (users: migration 6)
    return journal


def _read_password() -> str:
    """From the terminal (asked twice), or the first line of stdin when piped."""
    if sys.stdin.isatty():
        import getpass
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            typer.echo("the passwords differ", err=True)
            raise typer.Exit(2)
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _user_command(config: Path, action, *args):
    from engine.web.users import UserError
    journal = _users_conn(config)
    try:
        return action(journal.conn, *args)
    except UserError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    finally:
        journal.close()


@user_app.command("add")
def user_add(name: str = typer.Argument(..., metavar="NAME"),
             role: str = typer.Option(..., "--role", help="admin, analyst, coordinator or viewer"),
             config: Path = ConfigOption) -> None:
    """Create a user; the password is read from stdin (at least 10 characters)."""
    from engine.web import users
    user = _user_command(config, users.add, name, role, _read_password())
    typer.echo(f"user {user.name} added with role {user.role}")


@user_app.command("passwd")
def user_passwd(name: str = typer.Argument(..., metavar="NAME"), config: Path = ConfigOption) -> None:
    """Set a new password (read from stdin); unlocks the account and ends its sessions."""
    from engine.web import users
    _user_command(config, users.set_password, name, _read_password())
    typer.echo(f"password of {name} changed")


@user_app.command("disable")
def user_disable(name: str = typer.Argument(..., metavar="NAME"), config: Path = ConfigOption) -> None:
    """Disable a user: no login, sessions end, API tokens revoked."""
    from engine.web import users
    _user_command(config, users.disable, name)
    typer.echo(f"user {name} disabled")


@user_app.command("role")
def user_role(name: str = typer.Argument(..., metavar="NAME"), role: str = typer.Argument(..., metavar="ROLE"),
              config: Path = ConfigOption) -> None:
    """Change a user's role (their sessions end)."""
    from engine.web import users
    _user_command(config, users.set_role, name, role)
    typer.echo(f"user {name} now has role {role}")


@user_app.command("token")
def user_token(name: str = typer.Argument(..., metavar="NAME"),
               label: Optional[str] = typer.Option(None, "--label", help="what the token is for"),
               config: Path = ConfigOption) -> None:
    """Create an API token acting as the user (printed once on stdout; only its hash is stored)."""
    from engine.web import users
    typer.echo(_user_command(config, users.create_token, name, label))


@user_app.command("list")
def user_list(config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Users with role, state and last login."""
    from engine.web import users
    rows = _user_command(config, users.listing)
    if as_json:
        typer.echo(json.dumps({"users": rows}, indent=1))
        return
    for u in rows:
        state = "disabled" if u["disabled"] else (f"locked until {u['locked_until']}" if u["locked_until"] else "")
        typer.echo(f"{u['name']:24} {u['role']:12} {(u['last_login_at'] or '-')[:19]:19}  {state}")


if __name__ == "__main__":
    app()
