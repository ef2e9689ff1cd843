"""The ``qasid`` command. Wrong flags or files print one clear line and exit with status 2."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import ssl
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

import yaml

from homeserver.config import Config, ConfigError, Listener, load_config, parse_config, parse_duration, render_template
from homeserver.errors import MatrixError
from homeserver.storage.migrations import SchemaTooNew

EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qasid", description="Qasid: a sovereign, federated Matrix homeserver.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", required=True, metavar="FILE", help="homeserver.yaml")
        return p

    p = sub.add_parser("init", help="write a new homeserver.yaml and signing key")
    p.add_argument("--server-name", required=True)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--http-port", type=int, default=8008)
    p.add_argument("--bind", default="127.0.0.1")

    with_config(sub.add_parser("run", help="serve"))
    with_config(sub.add_parser("check-config", help="validate a configuration file"))
    sub.add_parser("config-reference", help="print the configuration reference (Markdown)")

    user = sub.add_parser("user", help="manage local users").add_subparsers(dest="user_command", metavar="ACTION", parser_class=_Parser)
    user.required = True
    p = with_config(user.add_parser("add", help="create a user"))
    p.add_argument("localpart")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--password")
    g.add_argument("--password-file", type=Path)
    p.add_argument("--admin", action="store_true")
    p.add_argument("--displayname")
    p = with_config(user.add_parser("list", help="list users"))
    p.add_argument("--deactivated", action="store_true", help="include deactivated users")
    p = with_config(user.add_parser("deactivate", help="deactivate a user"))
    p.add_argument("user", help="user ID or localpart")
    p.add_argument("--erase", action="store_true", help="also mark the user's data for erasure")

    tok = sub.add_parser("registration-token", help="manage registration tokens").add_subparsers(dest="token_command", metavar="ACTION", parser_class=_Parser)
    tok.required = True
    p = with_config(tok.add_parser("create", help="create a token and print it"))
    p.add_argument("--uses", type=int, help="how many registrations it allows (default: unlimited)")
    p.add_argument("--expires-in", metavar="DURATION", help="e.g. 7d, 12h")
    p.add_argument("--token", help="use this token instead of a random one")
    with_config(tok.add_parser("list", help="list tokens"))

    keys = sub.add_parser("keys", help="manage the server's signing key").add_subparsers(dest="keys_command", metavar="ACTION", parser_class=_Parser)
    keys.required = True
    with_config(keys.add_parser("rotate", help="start signing with a new key; the old one stays published as an old key"))

    audit = sub.add_parser("audit", help="export a room's signed event log, and verify one offline").add_subparsers(
        dest="audit_command", metavar="ACTION", parser_class=_Parser)
    audit.required = True
    p = with_config(audit.add_parser("export", help="write a room's audit export (JSON Lines)"))
    p.add_argument("--room", required=True, metavar="ROOM_ID")
    p.add_argument("--from", dest="from_ts", metavar="TS", help="start of the audited period: ms since 1970 or ISO 8601")
    p.add_argument("--to", dest="to_ts", metavar="TS", help="end of the audited period: ms since 1970 or ISO 8601")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    p = audit.add_parser("verify", help="verify an audit export offline (no server, no configuration)")
    p.add_argument("export", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--trusted-keys", type=Path, metavar="FILE",
                   help='JSON {"server": {"ed25519:id": "base64 key"}} of keys known independently (e.g. the federation directory)')

    usage = sub.add_parser("usage", help="the signed usage report for billing, and verify one offline").add_subparsers(
        dest="usage_command", metavar="ACTION", parser_class=_Parser)
    usage.required = True
    p = with_config(usage.add_parser("report", help="compute the usage report of a period of UTC days"))
    p.add_argument("--from", dest="from_day", metavar="YYYY-MM-DD", help="first day (default: the first of --to's month)")
    p.add_argument("--to", dest="to_day", metavar="YYYY-MM-DD", help="last day (default: today, UTC)")
    p.add_argument("--format", choices=("json", "csv"), default="json", help="json: the signed report; csv: its daily rows, unsigned")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here instead of standard output")
    p = usage.add_parser("verify", help="verify a usage report's signature offline (no server, no configuration)")
    p.add_argument("report", type=Path, metavar="REPORT.json")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--server-keys", type=Path, metavar="FILE",
                   help="the server's key document, saved from https://SERVER/_matrix/key/v2/server")
    g.add_argument("--key", metavar="BASE64", help="the server's ed25519 public key, known independently (with --key-id)")
    p.add_argument("--key-id", metavar="ed25519:ID", help="the ID of --key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (CliError, ConfigError) as e:
        sys.stderr.write(f"qasid: error: {e}\n")
        return EXIT_USAGE
    except MatrixError as e:
        sys.stderr.write(f"qasid: error: {e.error}\n")
        return EXIT_USAGE
    except SchemaTooNew as e:
        sys.stderr.write(f"qasid: error: {e}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "init":
        return _init(args)
    if args.command == "audit" and args.audit_command == "verify":
        return _audit_verify(args)
    if args.command == "usage" and args.usage_command == "verify":
        return _usage_verify(args)
    if args.command == "config-reference":
        from homeserver.config import config_reference_markdown

        sys.stdout.write(config_reference_markdown())
        return 0
    config = _load(args.config)
    if args.command == "check-config":
        _check_files(config)
        print(f"{args.config}: configuration is valid")
        return 0
    if args.command == "keys":
        return _rotate_key(config)
    if args.command == "run":
        _check_files(config)
        return _run(config)
    return asyncio.run(_offline_command(args, config))


def _timestamp(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    import datetime

    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"{name}: expected milliseconds since 1970 or an ISO 8601 date/time, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return int(parsed.timestamp() * 1000)


def _audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every check passed, 1 when any failed; 2 when the file is not an export at all."""
    import json

    from homeserver.audit.verify import ExportError, human_report, verify_export

    trusted = None
    if args.trusted_keys is not None:
        try:
            trusted = json.loads(args.trusted_keys.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CliError(f"--trusted-keys: {e}") from None
    try:
        with open(args.export, encoding="utf-8") as f:
            report = verify_export(f, trusted)
    except OSError as e:
        raise CliError(f"cannot read {args.export}: {e.strerror}") from None
    except ExportError as e:
        raise CliError(f"{args.export}: {e}") from None
    if args.json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        human_report(report, sys.stdout)
    return 0 if report.ok else 1


def _usage_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the report's signature verifies with the given key, 1 when it does not; 2 when an
    input is unreadable or not what it should be."""
    import datetime
    import json

    from homeserver.services.usage import (
        NotVerified, ReportFormatError, check_report_shape, key_from_base64, keys_from_document, verify_report,
    )

    def read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise CliError(f"cannot read {path}: {e.strerror}") from None
        except ValueError as e:
            raise CliError(f"{path}: not JSON ({e})") from None

    if args.key is not None and args.key_id is None:
        raise CliError("--key needs --key-id (e.g. --key-id ed25519:a_AbCd)")
    if args.key_id is not None and args.key is None:
        raise CliError("--key-id goes with --key")
    try:
        report = check_report_shape(read_json(args.report))
        if args.server_keys is not None:
            keys = keys_from_document(read_json(args.server_keys), report["server_name"])
        else:
            keys = key_from_base64(args.key_id, args.key)
        kid = verify_report(report, keys)
    except ReportFormatError as e:
        raise CliError(str(e)) from None
    except NotVerified as e:
        print(f"NOT VERIFIED: {args.report}: {e}")
        return 1
    period = report["period"]
    generated = datetime.datetime.fromtimestamp(report["generated_ts"] / 1000, datetime.timezone.utc)
    print(f"verified: usage report of {report['server_name']} for {period.get('from')} to {period.get('to')}, "
          f"generated {generated.isoformat(timespec='seconds')}, signed with {kid}")
    return 0


def _rotate_key(config: Config) -> int:
    import time

    from homeserver.signing_key import rotate_signing_key

    _check_files(config)
    old, new = rotate_signing_key(config.resolve_path(config.signing_key_path), int(time.time() * 1000))
    print(f"now signing with {new}; {old} is published as an old key. Restart the server to use the new key.")
    return 0


def _load(path: str) -> Config:
    if not Path(path).is_file():
        raise CliError(f"config file not found: {path}")
    return load_config(path)


def _check_files(config: Config) -> None:
    from homeserver.signing_key import read_signing_keys

    key_path = config.resolve_path(config.signing_key_path)
    if not key_path.is_file():
        raise CliError(f"signing_key_path: file not found: {key_path}")
    try:
        read_signing_keys(key_path)
    except ValueError as e:
        raise CliError(f"signing_key_path: {e}") from None
    for name in ("tls_certificate_path", "tls_private_key_path"):
        value = getattr(config, name)
        if value and not config.resolve_path(value).is_file():
            raise CliError(f"{name}: file not found: {config.resolve_path(value)}")
    from homeserver.appservice.registration import RegistrationError, load_registrations

    try:
        load_registrations([config.resolve_path(p) for p in config.app_service_config_files], config.server_name)
    except RegistrationError as e:
        raise CliError(f"app_service_config_files: {e}") from None


def _init(args: argparse.Namespace) -> int:
    from homeserver.signing_key import write_new_signing_key

    data_dir: Path = args.data_dir
    cfg_path = data_dir / "homeserver.yaml"
    key_path = data_dir / "signing.key"
    for p in (cfg_path, key_path):
        if p.exists():
            raise CliError(f"{p} already exists; refusing to overwrite")
    if not 0 < args.http_port < 65536:
        raise CliError("--http-port must be between 1 and 65535")
    try:
        config = parse_config({
            "server_name": args.server_name,
            "listeners": [{"port": args.http_port, "bind_addresses": [args.bind]}],
            "registration_shared_secret": secrets.token_urlsafe(32),
        }, environ={})
    except ConfigError as e:
        raise CliError(str(e).replace("server_name:", "--server-name:")) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    write_new_signing_key(key_path)
    fd = os.open(cfg_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render_template(config))
    print(f"Wrote {cfg_path} and {key_path} for {config.server_name}.")
    print(f"Start it with: qasid run -c {cfg_path}")
    return 0


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _run(config: Config) -> int:
    _setup_logging(config.log_level)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(_serve(config))
    except OSError as e:
        raise CliError(f"cannot listen: {e.strerror or e}") from None
    return 0


async def _serve(config: Config) -> None:
    from aiohttp import web

    from homeserver.app import start_homeserver

    _, app = await start_homeserver(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    log = logging.getLogger("qasid")
    try:
        for lst in config.listeners:
            ctx = _ssl_context(config) if lst.tls else None
            for addr in lst.bind_addresses:
                await web.TCPSite(runner, addr, lst.port, ssl_context=ctx).start()
                log.info("listening on %s://%s:%d", "https" if ctx else "http", addr, lst.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("Qasid serving %s", config.server_name)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def _ssl_context(config: Config) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert config.tls_certificate_path and config.tls_private_key_path
    ctx.load_cert_chain(config.resolve_path(config.tls_certificate_path), config.resolve_path(config.tls_private_key_path))
    return ctx


async def _usage_report(hs: Any, args: argparse.Namespace) -> None:
    import json

    from homeserver.services.usage import PeriodError, parse_period, report_csv, utc_day

    try:
        first, last = parse_period(args.from_day, args.to_day, utc_day(hs.clock.time_ms()))
    except PeriodError as e:
        raise CliError(f"--{e.param}: {e.why}") from None
    report = await hs.usage.report(first, last)
    text = report_csv(report) if args.format == "csv" else json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return
    try:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            out.write(text)
    except OSError as e:
        raise CliError(f"cannot write {args.output}: {e.strerror}") from None
    print(f"wrote {args.output} ({first.isoformat()} to {last.isoformat()}, {args.format})")


async def _offline_command(args: argparse.Namespace, config: Config) -> int:
    """User and token administration straight against the database (works while the server runs)."""
    from homeserver.app import HomeServer
    from homeserver.storage import Storage
    from homeserver.storage.users import UserListQuery

    storage = await Storage.open(config.database_url, pool_size=2)
    try:
        hs = HomeServer.build(config, storage)
        if args.command == "user":
            if args.user_command == "add":
                password = args.password
                if args.password_file is not None:
                    try:
                        password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
                    except OSError as e:
                        raise CliError(f"cannot read {args.password_file}: {e.strerror}") from None
                password_hash = await hs.accounts.hash_new_password(password)
                async with storage.db.transaction() as conn:
                    user_id = await hs.accounts.create_user(
                        conn, args.localpart, password_hash, admin=args.admin, displayname=args.displayname
                    )
                print(user_id)
            elif args.user_command == "list":
                users, _ = await storage.users.list(UserListQuery(limit=1_000_000, deactivated=args.deactivated))
                for u in users:
                    flags = [f for f, on in (("admin", u.admin), ("deactivated", u.deactivated), ("locked", u.locked)) if on]
                    print(u.user_id + (f"  ({', '.join(flags)})" if flags else ""))
            elif args.user_command == "deactivate":
                user_id = args.user if args.user.startswith("@") else f"@{args.user}:{config.server_name}"
                if not await storage.users.exists(user_id):
                    raise CliError(f"no such user: {user_id}")
                await hs.accounts.deactivate(user_id, erase=args.erase)
                print(f"deactivated {user_id}")
        elif args.command == "audit":
            start, end = _timestamp(args.from_ts, "--from"), _timestamp(args.to_ts, "--to")
            count = 0
            with open(args.output, "w", encoding="utf-8") as out:
                async for line in hs.audit.lines(args.room, start, end):
                    out.write(line)
                    count += 1
            print(f"wrote {args.output} ({count} lines)")
        elif args.command == "usage":
            await _usage_report(hs, args)
        elif args.command == "registration-token":
            if args.token_command == "create":
                expiry = None
                if args.expires_in is not None:
                    try:
                        expiry = hs.clock.time_ms() + parse_duration(args.expires_in)
                    except ValueError as e:
                        raise CliError(f"--expires-in: {e}") from None
                if args.uses is not None and args.uses < 1:
                    raise CliError("--uses must be at least 1")
                tok = await hs.registration_tokens.create(args.token, uses_allowed=args.uses, expiry_time=expiry)
                print(tok.token)
            else:
                for t in await storage.registration_tokens.list():
                    print(f"{t.token}\tuses_allowed={t.uses_allowed}\tcompleted={t.completed}\tpending={t.pending}\texpiry_time={t.expiry_time}")
        return 0
    finally:
        await storage.close()
