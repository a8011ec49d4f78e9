"""Operator commands: ``python -m shared.cli <command>`` (``--help`` lists them)."""
from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

from .wiring import Wiring, get_wiring

log = logging.getLogger("shared.cli")

INIT_HISTORY_TRANSACTIONS = 60_000
INIT_HISTORY_DAYS = 60


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def ensure_resources(wiring: Wiring) -> None:
    """Tables, the model container and the queues (idempotent)."""
    from .storage.schema import create_schema

    create_schema(wiring.engine)
    wiring.store.ensure_container()
    wiring.queue.ensure_exists()
    wiring.poison_queue.ensure_exists()


def cmd_init(wiring: Wiring, args: argparse.Namespace) -> int:
    from .operations import import_history
    from .simulator import simulate_for_volume

    ensure_resources(wiring)
    print("tables, container and queues are ready")
    current = wiring.store.current_version()
    if current:
        print(f"model {current} is promoted: nothing more to do")
        return 0
    if wiring.labels.labeled_count() < wiring.settings.min_training_rows:
        start = (datetime.now(timezone.utc) - timedelta(days=INIT_HISTORY_DAYS + 1)).date().isoformat()
        history = simulate_for_volume(args.history, seed=args.seed, n_days=INIT_HISTORY_DAYS, start_date=start)
        added, labeled = import_history(wiring, history)
        print(f"simulated history: {added} transactions, {labeled} labels, "
              f"fraud rate {history['label'].mean():.2%}")
    run = wiring.retraining.run(trigger="init", force=True)
    print(f"first training run: {run.status} — {run.reason}")
    if run.status != "promoted":
        print("no model was promoted; see `python -m shared.cli runs`", file=sys.stderr)
        return 1
    print(f"model {run.model_version} is promoted")
    return 0


def _new_transactions(count: int, seed: int):
    from .simulator import simulate_for_volume

    # Today's activity of a fresh slice of the simulated population.
    today = datetime.now(timezone.utc).date().isoformat()
    frame = simulate_for_volume(count, seed=seed, n_days=1, start_date=today)
    latest_allowed = datetime.now(timezone.utc)
    # Keep the simulated day from running ahead of the clock.
    shift = max(frame["timestamp"].max().to_pydatetime() - latest_allowed, timedelta(0))
    frame["timestamp"] = frame["timestamp"] - shift
    return frame


def cmd_simulate(wiring: Wiring, args: argparse.Namespace) -> int:
    from .simulator import SimulationConfig, simulate_for_volume, simulate_transactions, write_csv

    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    if args.out:
        days = args.days or 30
        start = args.start or (datetime.now(timezone.utc) - timedelta(days=days)).date().isoformat()
        if args.count:
            frame = simulate_for_volume(args.count, seed=seed, n_days=days, start_date=start)
        else:
            frame = simulate_transactions(SimulationConfig(n_days=days, start_date=start, seed=seed))
        write_csv(frame, args.out)
        print(f"wrote {len(frame)} transactions ({frame['label'].mean():.2%} fraud) to {args.out} (seed {seed})")
        return 0
    frame = _new_transactions(args.count or 1001, seed)
    if args.url:
        from .client import post_transactions

        summary = post_transactions(args.url, frame, key=args.key)
    else:
        from .operations import enqueue_labeled

        summary = enqueue_labeled(wiring, frame)
    summary["seed"] = seed
    _print(summary)
    return 0 if summary.get("failed", 0) == 0 else 1


def cmd_import(wiring: Wiring, args: argparse.Namespace) -> int:
    from .operations import import_history, read_transactions_csv
    from .storage.schema import create_schema

    create_schema(wiring.engine)
    started = time.perf_counter()
    frame = read_transactions_csv(args.file)
    added, labeled = import_history(wiring, frame)
    elapsed = time.perf_counter() - started
    print(f"imported {added} new transactions ({len(frame) - added} already present) and {labeled} labels "
          f"in {elapsed:.1f}s ({len(frame) / max(elapsed, 1e-9):,.0f} rows/s)")
    return 0


def cmd_retrain(wiring: Wiring, args: argparse.Namespace) -> int:
    run = wiring.retraining.run(trigger="cli", force=args.force)
    _print({"status": run.status, "reason": run.reason, "model_version": run.model_version,
            "labeled_count": run.labeled_count, "new_labels": run.new_labels, "metrics": run.metrics,
            "champion_version": run.champion_version, "champion_metrics": run.champion_metrics,
            "details": run.details})
    return 1 if run.status == "failed" else 0


def cmd_runs(wiring: Wiring, args: argparse.Namespace) -> int:
    _print(wiring.runs.recent(limit=args.limit))
    return 0


def cmd_db_check(wiring: Wiring, args: argparse.Namespace) -> int:
    from .operations import database_status

    status = database_status(wiring)
    _print(status)
    return 0 if status["reachable"] else 2


def cmd_models(wiring: Wiring, args: argparse.Namespace) -> int:
    store = wiring.store
    if args.action == "list":
        current = store.current_version()
        for meta in store.list_versions():
            marker = "*" if meta["version"] == current else " "
            metrics = meta.get("metrics", {})
            print(f"{marker} {meta['version']}  AP {metrics.get('average_precision', float('nan')):.4f}  "
                  f"AUC {metrics.get('auc_roc', float('nan')):.4f}  threshold {meta['threshold']:.4f}  "
                  f"rows {meta['training_rows']}")
        if current is None:
            print("(no promoted model)")
        return 0
    if args.action == "promote":
        store.load(args.version)  # verifies the artifact before it can be served
        store.promote(args.version, reason="promoted by operator")
        print(f"model {args.version} is promoted")
        return 0
    if args.action == "rollback":
        print(f"rolled back to {store.rollback()}")
        return 0
    if args.action == "report":
        out = Path(args.out or f"report-{args.version}")
        names = [n for n in store.list_files(args.version) if n.startswith("report/")]
        if not names:
            print(f"model {args.version} has no report", file=sys.stderr)
            return 1
        for name in names:
            target = out / name[len("report/"):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(store.download_file(args.version, name))
        print(f"report of {args.version} written to {out}/index.html")
        return 0
    raise ValueError(args.action)


def cmd_poison(wiring: Wiring, args: argparse.Namespace) -> int:
    """Inspect the poison queue, or move its messages back for another try (after a fix)."""
    from .usecases.persisting import MalformedMessage, decode_message
    from .storage.clients import queue_client

    settings = wiring.settings
    if args.action == "list":
        for message in wiring.poison_queue.client.peek_messages(max_messages=32):
            try:
                items, problems = decode_message(message.content)
            except MalformedMessage as exc:
                items, problems = [], [str(exc)]
            print(f"{message.id}  dequeued {message.dequeue_count}x  {len(items)} valid item(s)  "
                  f"{'; '.join(problems) or 'no problem found: likely a database error at the time'}")
        return 0
    # Raw clients: the base64 text moves verbatim, whatever bytes it holds.
    poison = queue_client(settings, settings.poison_queue, message_encode_policy=None, message_decode_policy=None)
    target = queue_client(settings, settings.transactions_queue, message_encode_policy=None,
                          message_decode_policy=None)
    moved = 0
    while True:
        batch = list(poison.receive_messages(max_messages=32, visibility_timeout=60))
        if not batch:
            break
        for message in batch:
            target.send_message(message.content)
            poison.delete_message(message)
            moved += 1
    print(f"moved {moved} message(s) from {wiring.settings.poison_queue} back to "
          f"{wiring.settings.transactions_queue}")
    return 0


def cmd_labels(wiring: Wiring, args: argparse.Namespace) -> int:
    """Labels by source: what was received, and revoking a source, key or time range."""
    from .storage.labels import LabelFilter

    which = LabelFilter(source=args.source, key_id=args.key_id, since=args.since, until=args.until)
    if args.action == "summary":
        _print(wiring.labels.summary(which))
    elif args.action == "list":
        _print(wiring.labels.events(which, limit=args.limit))
    elif args.action == "revoke":
        if which == LabelFilter():
            print("labels revoke: name a --source, --key-id or --since/--until range", file=sys.stderr)
            return 2
        revoked = wiring.labels.revoke(which)
        print(f"revoked {revoked} label(s); the transactions they labeled fall back to their earlier labels")
    elif args.action == "expire":
        before = datetime.now(timezone.utc) - timedelta(days=wiring.settings.label_orphan_days)
        print(f"deleted {wiring.labels.expire_orphans(before)} label(s) for transactions never stored")
    return 0


def cmd_rebuild(wiring: Wiring, args: argparse.Namespace) -> int:
    """Recompute the feature buckets from the stored transactions and labels."""
    from .storage.aggregates import rebuild_buckets
    from .storage.engines import write_turn

    with write_turn(wiring.engine), wiring.engine.begin() as conn:
        rebuild_buckets(conn)
    print("feature buckets rebuilt from the stored transactions and labels")
    return 0


def cmd_rules(wiring: Wiring, args: argparse.Namespace) -> int:
    """Operator rules: allow/deny lists and amount limits, applied before the model."""
    from .rules import RuleError, parse_rule
    from .storage.schema import create_schema

    create_schema(wiring.engine)
    if args.action == "add":
        try:
            rule = parse_rule(args.kind, args.value, note=args.note, expires_at=args.expires)
        except RuleError as exc:
            print(f"rules add: {exc.field}: {exc.message}", file=sys.stderr)
            return 2
        rule_id = wiring.rules.add(rule)
        print(f"rule {rule_id} added: {rule.kind} {rule.value}"
              + (f" until {rule.expires_at.isoformat()}" if rule.expires_at else ""))
    elif args.action == "list":
        now = datetime.now(timezone.utc)
        _print([{"id": rule_id, **rule.to_dict(), "active": rule.active(now)} for rule_id, rule in wiring.rules.all()])
    else:
        if args.id is None:
            print("rules remove: give the rule id (see `rules list`)", file=sys.stderr)
            return 2
        if not wiring.rules.remove(args.id):
            print(f"rules remove: no rule {args.id}", file=sys.stderr)
            return 1
        print(f"rule {args.id} removed")
    return 0


def _timestamp(text: str) -> datetime:
    from .schema import parse_timestamp

    if len(text) == 10:  # a date: its midnight
        text += "T00:00:00"
    try:
        return parse_timestamp(text if ("+" in text[10:] or text.endswith("Z")) else text + "+00:00")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def cmd_backtest(wiring: Wiring, args: argparse.Namespace) -> int:
    from .backtest_cli import main as backtest_main

    return backtest_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="create tables/container/queues; train and publish a first model")
    init.add_argument("--history", type=int, default=INIT_HISTORY_TRANSACTIONS,
                      help="simulated labeled transactions to train the first model on")
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(handler=cmd_init)

    simulate = commands.add_parser("simulate", help="labeled transactions: onto the queue, to --url, or to --out CSV")
    simulate.add_argument("--count", type=int, help="transactions (default 1001; with --out: all of --days)")
    simulate.add_argument("--seed", type=int, help="makes the generator deterministic")
    simulate.add_argument("--url", help="POST them to this service base URL (e.g. http://localhost:7071)")
    simulate.add_argument("--key", help="function key for --url (or set FUNCTION_KEY)")
    simulate.add_argument("--days", type=int, help="with --out: days of history")
    simulate.add_argument("--start", help="with --out: first day, YYYY-MM-DD")
    simulate.add_argument("--out", help="write a CSV history instead")
    simulate.set_defaults(handler=cmd_simulate)

    importer = commands.add_parser("import", help="bulk-load a labeled CSV history into the database")
    importer.add_argument("file")
    importer.set_defaults(handler=cmd_import)

    retrain = commands.add_parser("retrain", help="run the retraining job now")
    retrain.add_argument("--force", action="store_true", help="retrain even without enough new labels")
    retrain.set_defaults(handler=cmd_retrain)

    runs = commands.add_parser("runs", help="recent training runs")
    runs.add_argument("--limit", type=int, default=10)
    runs.set_defaults(handler=cmd_runs)

    check = commands.add_parser("db-check", help="connect to the database and report on it")
    check.set_defaults(handler=cmd_db_check)

    models = commands.add_parser("models", help="list, promote, roll back model versions; fetch reports")
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list")
    promote = actions.add_parser("promote")
    promote.add_argument("version")
    actions.add_parser("rollback")
    report = actions.add_parser("report")
    report.add_argument("version")
    report.add_argument("--out")
    models.set_defaults(handler=cmd_models)

    poison = commands.add_parser("poison", help="list the poison queue, or requeue its messages")
    poison.add_argument("action", choices=["list", "requeue"])
    poison.set_defaults(handler=cmd_poison)

    labels = commands.add_parser("labels", help="labels by source: summary, list, revoke, expire orphans")
    labels.add_argument("action", choices=["summary", "list", "revoke", "expire"])
    labels.add_argument("--source", help="only labels from this source (e.g. chargebacks)")
    labels.add_argument("--key-id", help="only labels sent with this key (its fingerprint, see summary)")
    labels.add_argument("--since", type=_timestamp, help="received at or after (ISO-8601, UTC if no offset)")
    labels.add_argument("--until", type=_timestamp, help="received before (ISO-8601, UTC if no offset)")
    labels.add_argument("--limit", type=int, default=100)
    labels.set_defaults(handler=cmd_labels)

    rules = commands.add_parser("rules", help="allow/deny lists and amount limits applied before the model")
    rule_actions = rules.add_subparsers(dest="action", required=True)
    add = rule_actions.add_parser("add", help="add a rule")
    add.add_argument("kind", help="deny_customer | deny_terminal | allow_customer | allow_terminal | "
                                  "max_amount | review_amount")
    add.add_argument("value", help="a customer or terminal id, or an amount")
    add.add_argument("--note", help="why (shown in `rules list`)")
    add.add_argument("--expires", help="when the rule stops applying (ISO-8601 with offset)")
    rule_actions.add_parser("list", help="every rule, with its id and whether it applies now")
    remove = rule_actions.add_parser("remove", help="remove a rule by id")
    remove.add_argument("id", type=int, nargs="?")
    rules.set_defaults(handler=cmd_rules)

    rebuild = commands.add_parser("rebuild-aggregates", help="recompute the feature buckets from stored rows")
    rebuild.set_defaults(handler=cmd_rebuild)

    backtest = commands.add_parser("backtest", help="ULB-handbook style out-of-time backtest on a CSV")
    from .backtest_cli import add_arguments

    add_arguments(backtest)
    backtest.set_defaults(handler=cmd_backtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Wiring connect lazily: commands that need no storage never touch it.
        return args.handler(get_wiring(), args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
