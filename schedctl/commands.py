"""schedctl: manage the scheduler's schedules and runs from a terminal (argparse wiring, one function per command)."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from schedctl import output
from schedctl.client import ApiError, Client
from schedctl.config import Profile, load, save

Handler = Callable[[Client, argparse.Namespace], Any]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    profile = load(os.environ, args.url, args.token, args.tenant)
    try:
        if args.handler is login:
            return login(profile, args)
        if not profile.token:
            raise ApiError(0, "No token", "run `schedctl login --token …` or set SCHEDCTL_TOKEN")
        result = args.handler(Client(profile), args)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        _show(result, args)
    return 0


class UsageError(Exception):
    """The command line or an input file is wrong (exit code 2)."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="API base URL (env SCHEDCTL_URL, default http://127.0.0.1:3080)")
    common.add_argument("--token", help="bearer token (env SCHEDCTL_TOKEN or TOKEN)")
    common.add_argument("--tenant", help="tenant id sent as X-Tenant-Id (env SCHEDCTL_TENANT)")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")

    parser = argparse.ArgumentParser(prog="schedctl", description=__doc__, parents=[common])
    groups = parser.add_subparsers(title="commands", metavar="{login,schedules,runs}")

    p = groups.add_parser("login", parents=[common], help="store URL, token and tenant for later commands")
    p.set_defaults(handler=login)

    schedules = groups.add_parser("schedules", help="list, read, create, apply, pause, resume, run, delete")
    s = schedules.add_subparsers(title="schedules commands", metavar="COMMAND")
    p = s.add_parser("list", parents=[common], help="list schedules")
    p.add_argument("--name", help="name prefix")
    p.add_argument("--label", action="append", default=[], help="key:value (repeatable)")
    p.add_argument("--status", choices=["ACTIVE", "PAUSED", "COMPLETED"])
    p.add_argument("--limit", type=int, default=100, help="most schedules to show (default 100)")
    p.set_defaults(handler=schedules_list, view="schedules")
    p = s.add_parser("get", parents=[common], help="show one schedule (by id or exact name)")
    p.add_argument("ref")
    p.set_defaults(handler=schedules_get, view="record")
    for name, handler, text in (
        ("create", schedules_create, "create the schedules in a YAML/JSON file"),
        ("apply", schedules_apply, "create or update the schedules in a file, matched by name"),
    ):
        p = s.add_parser(name, parents=[common], help=text)
        p.add_argument("-f", "--file", required=True, help="YAML or JSON: one schedule, a list, or several documents")
        p.set_defaults(handler=handler, view="schedules")
    p = s.add_parser("pause", parents=[common], help="pause a schedule")
    p.add_argument("ref")
    p.add_argument("--reason", default="", help="why (shown on the schedule)")
    p.set_defaults(handler=schedules_pause, view="record")
    p = s.add_parser("resume", parents=[common], help="resume a paused schedule")
    p.add_argument("ref")
    p.set_defaults(handler=schedules_resume, view="record")
    p = s.add_parser("run", parents=[common], help="fire a schedule now")
    p.add_argument("ref")
    p.set_defaults(handler=schedules_run, view="record")
    p = s.add_parser("delete", parents=[common], help="delete a schedule")
    p.add_argument("ref")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=schedules_delete, view="none")
    p = s.add_parser("preview", parents=[common], help="next fire times of a schedule, or of a trigger file")
    p.add_argument("ref", nargs="?", help="schedule id or name (omit with -f)")
    p.add_argument("-f", "--file", help="a trigger to try: {tz, trigger} in YAML/JSON, not stored")
    p.add_argument("--count", type=int, default=10)
    p.set_defaults(handler=schedules_preview, view="times")

    runs = groups.add_parser("runs", help="run history")
    r = runs.add_subparsers(title="runs commands", metavar="COMMAND")
    p = r.add_parser("list", parents=[common], help="a schedule's runs, newest first")
    p.add_argument("ref", help="schedule id or name")
    p.add_argument("--status", choices=["PENDING", "RETRYING", "SUCCEEDED", "FAILED", "CANCELLED"])
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(handler=runs_list, view="runs")
    p = r.add_parser("get", parents=[common], help="one run")
    p.add_argument("run_id")
    p.set_defaults(handler=runs_get, view="record")
    return parser


# --- commands ---------------------------------------------------------------------------------------------


def login(profile: Profile, args: argparse.Namespace) -> int:
    if not profile.token:
        print("error: give --token (or set SCHEDCTL_TOKEN)", file=sys.stderr)
        return 2
    if profile.tenant:
        try:
            Client(profile).request("GET", "/schedules", query=[("pageSize", "1")])
        except ApiError as exc:
            print(f"error: the API refused this token: {exc}", file=sys.stderr)
            return 1
    path = save(os.environ, profile)
    print(f"saved to {path} (url {profile.url}, tenant {profile.tenant or '-'})")
    return 0


def schedules_list(client: Client, args: argparse.Namespace) -> list[dict[str, Any]]:
    query: list[tuple[str, str]] = [("label", label) for label in args.label]
    if args.name:
        query.append(("name", args.name))
    if args.status:
        query.append(("status", args.status))
    return _collect(client, "/schedules", query, args.limit)


def schedules_get(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    return client.request("GET", f"/schedules/{resolve(client, args.ref)}").body


def schedules_create(client: Client, args: argparse.Namespace) -> list[dict[str, Any]]:
    return [client.request("POST", "/schedules", body=doc).body for doc in read_documents(args.file)]


def schedules_apply(client: Client, args: argparse.Namespace) -> list[dict[str, Any]]:
    applied = []
    for doc in read_documents(args.file):
        name = doc.get("name")
        if not isinstance(name, str) or not name:
            raise UsageError(f"{args.file}: every schedule needs a name to be applied by name")
        answer = client.request("PUT", f"/schedules/by-name/{_quote(name)}", body=doc)
        print(f"{name}: {'created' if answer.status == 201 else 'updated'}", file=sys.stderr)
        applied.append(answer.body)
    return applied


def schedules_pause(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    body = {"reason": args.reason} if args.reason else {}
    return client.request("POST", f"/schedules/{resolve(client, args.ref)}/pause", body=body).body


def schedules_resume(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    return client.request("POST", f"/schedules/{resolve(client, args.ref)}/resume", body={}).body


def schedules_run(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    return client.request("POST", f"/schedules/{resolve(client, args.ref)}/run").body


def schedules_delete(client: Client, args: argparse.Namespace) -> None:
    schedule_id = resolve(client, args.ref)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to delete without --yes when not run from a terminal")
        if input(f"delete schedule {schedule_id}? [y/N] ").strip().lower() not in ("y", "yes"):
            raise UsageError("not deleted")
    client.request("DELETE", f"/schedules/{schedule_id}")
    print(f"deleted {schedule_id}", file=sys.stderr)


def schedules_preview(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    if args.file:
        docs = read_documents(args.file)
        if len(docs) != 1:
            raise UsageError(f"{args.file}: preview takes exactly one {{tz, trigger}} document")
        body = {"count": args.count, **{k: v for k, v in docs[0].items() if k in ("tz", "trigger", "after")}}
        return client.request("POST", "/triggers/preview", body=body).body
    if not args.ref:
        raise UsageError("give a schedule id or name, or -f with a trigger")
    path = f"/schedules/{resolve(client, args.ref)}/preview"
    return client.request("GET", path, query=[("count", str(args.count))]).body


def runs_list(client: Client, args: argparse.Namespace) -> list[dict[str, Any]]:
    query = [("status", args.status)] if args.status else []
    return _collect(client, f"/schedules/{resolve(client, args.ref)}/runs", query, args.limit)


def runs_get(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    return client.request("GET", f"/runs/{_quote(args.run_id)}").body


# --- helpers ----------------------------------------------------------------------------------------------


def resolve(client: Client, ref: str) -> str:
    """A schedule id, given its id or its exact name."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    matches = [s for s in _collect(client, "/schedules", [("name", ref)], 200) if s.get("name") == ref]
    if not matches:
        raise ApiError(404, "Not found", f"no schedule named {ref!r}")
    return str(matches[0]["id"])


def _collect(client: Client, path: str, query: list[tuple[str, str]], limit: int) -> list[dict[str, Any]]:
    """Follow the API's pages (cursor or page number) until ``limit`` items."""
    items: list[dict[str, Any]] = []
    page, cursor = 1, None
    while len(items) < limit:
        size = min(200, limit - len(items))
        paging = [("cursor", cursor)] if cursor else [("page", str(page))]
        body = client.request("GET", path, query=[*query, ("pageSize", str(size)), *paging]).body
        batch = body.get("items", []) if isinstance(body, dict) else []
        items.extend(batch)
        cursor = body.get("nextCursor") if isinstance(body, dict) else None
        total = body.get("total") if isinstance(body, dict) else None
        if not batch or (cursor is None and (total is None or page * size >= total)):
            break
        page += 1
    return items[:limit]


def read_documents(path: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        docs: list[Any] = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML/JSON: {exc}") from None
    flat = [item for doc in docs for item in (doc if isinstance(doc, list) else [doc])]
    for index, item in enumerate(flat):
        if not isinstance(item, dict):
            raise UsageError(f"{path}: document {index + 1} is not a mapping")
    if not flat:
        raise UsageError(f"{path}: no schedules in the file")
    return flat


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _show(result: Any, args: argparse.Namespace) -> None:
    if args.json:
        output.as_json(result)
        return
    view = getattr(args, "view", "record")
    if view == "schedules":
        output.table(result, output.SCHEDULE_COLUMNS)
    elif view == "runs":
        output.table(result, output.RUN_COLUMNS)
    elif view == "times":
        for instant in result.get("fireTimes", []):
            print(instant)
    elif view == "record" and isinstance(result, dict):
        output.record(result)
