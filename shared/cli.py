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

from .app import Services, get_services

log = logging.getLogger("shared.cli")

INIT_HISTORY_TRANSACTIONS = 60_000
INIT_HISTORY_DAYS = 60


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def ensure_resources(services: Services) -> None:
    """Tables, the model container and the queues (idempotent)."""
    from .storage import db

    db.create_schema(services.engine)
    services.store.ensure_container()
    services.queue.ensure_exists()
    services.poison_queue.ensure_exists()


def cmd_init(services: Services, args: argparse.Namespace) -> int:
    from .reporting import build_report
    from .retraining import run_retraining
    from .services import import_history
    from .simulator import simulate_for_volume
    from .storage import db

    ensure_resources(services)
    print("tables, container and queues are ready")
    current = services.store.current_version()
    if current:
        print(f"model {current} is promoted: nothing more to do")
        return 0
    if db.count_labeled_transactions(services.engine) < services.settings.min_training_rows:
        start = (datetime.now(timezone.utc) - timedelta(days=INIT_HISTORY_DAYS + 1)).date().isoformat()
        history = simulate_for_volume(args.history, seed=args.seed, n_days=INIT_HISTORY_DAYS, start_date=start)
        added, labeled = import_history(services, history)
        print(f"simulated history: {added} transactions, {labeled} labels, "
              f"fraud rate {history['label'].mean():.2%}")
    run = run_retraining(services, trigger="init", force=True, report_builder=build_report)
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


def cmd_simulate(services: Services, args: argparse.Namespace) -> int:
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
        from .services import enqueue_labeled

        summary = enqueue_labeled(services, frame)
    summary["seed"] = seed
    _print(summary)
    return 0 if summary.get("failed", 0) == 0 else 1


def cmd_import(services: Services, args: argparse.Namespace) -> int:
    from .services import import_history, read_transactions_csv
    from .storage import db

    db.create_schema(services.engine)
    started = time.perf_counter()
    frame = read_transactions_csv(args.file)
    added, labeled = import_history(services, frame)
    elapsed = time.perf_counter() - started
    print(f"imported {added} new transactions ({len(frame) - added} already present) and {labeled} labels "
          f"in {elapsed:.1f}s ({len(frame) / max(elapsed, 1e-9):,.0f} rows/s)")
    return 0


def cmd_retrain(services: Services, args: argparse.Namespace) -> int:
    from .reporting import build_report
    from .retraining import run_retraining

    run = run_retraining(services, trigger="cli", force=args.force, report_builder=build_report)
    _print({"status": run.status, "reason": run.reason, "model_version": run.model_version,
            "labeled_count": run.labeled_count, "new_labels": run.new_labels, "metrics": run.metrics,
            "champion_version": run.champion_version, "champion_metrics": run.champion_metrics})
    return 1 if run.status == "failed" else 0


def cmd_runs(services: Services, args: argparse.Namespace) -> int:
    from .storage import db

    _print(db.list_training_runs(services.engine, limit=args.limit))
    return 0


def cmd_db_check(services: Services, args: argparse.Namespace) -> int:
    from .services import database_status

    status = database_status(services)
    _print(status)
    return 0 if status["reachable"] else 2


def cmd_models(services: Services, args: argparse.Namespace) -> int:
    store = services.store
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


def cmd_poison(services: Services, args: argparse.Namespace) -> int:
    """Inspect the poison queue, or move its messages back for another try (after a fix)."""
    from .services import MalformedMessage, decode_message
    from .storage.clients import queue_client

    settings = services.settings
    if args.action == "list":
        for message in services.poison_queue.client.peek_messages(max_messages=32):
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
    print(f"moved {moved} message(s) from {services.settings.poison_queue} back to "
          f"{services.settings.transactions_queue}")
    return 0


def cmd_backtest(services: Services, args: argparse.Namespace) -> int:
    from .backtest import main as backtest_main

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

    backtest = commands.add_parser("backtest", help="ULB-handbook style out-of-time backtest on a CSV")
    from .backtest import add_arguments

    add_arguments(backtest)
    backtest.set_defaults(handler=cmd_backtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Services connect lazily: commands that need no storage never touch it.
        return args.handler(get_services(), args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
