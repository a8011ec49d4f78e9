"""Operator commands: ``python -m shared.cli <command>`` (``--help`` lists them).

Settings come from the environment, and from the project's ``local.settings.json`` for those
not set there (as the Functions host reads it; ``--settings FILE`` or ``$LOCAL_SETTINGS_FILE``
names another). A failure is one line on stderr, secrets redacted, and an exit code:
1 the operation failed, 2 bad arguments or settings, 3 storage unreachable or refusing,
4 database unreachable or failing, 130 interrupted.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import re
import secrets
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .config import ConfigurationError, Settings, load_local_settings
from .redaction import one_line, safe_text
from .wiring import Wiring, get_wiring

log = logging.getLogger("shared.cli")

INIT_HISTORY_TRANSACTIONS = 60_000
INIT_HISTORY_DAYS = 60
POISON_LIST_LIMIT = 1000
POISON_LIST_VISIBILITY_SECONDS = 30
EXIT_FAILED, EXIT_USAGE, EXIT_STORAGE, EXIT_DATABASE = 1, 2, 3, 4


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def ensure_resources(wiring: Wiring) -> None:
    """Tables, the model container and the queues (idempotent)."""
    from .storage.schema import create_schema

    create_schema(wiring.engine)
    wiring.store.ensure_container()
    wiring.queue.ensure_exists()
    wiring.poison_queue.ensure_exists()


def _now() -> datetime:
    """The clock of init and simulate (tests move it)."""
    return datetime.now(timezone.utc)


def _progress(desc: str, total: int | None = None, unit: str = " rows") -> Any:
    """A progress bar on stderr, drawn only when stderr is a terminal (``disable=None``):
    piped or captured output gets no progress noise."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=None, file=sys.stderr,
                dynamic_ncols=True)


class _LazyBar:
    """A progress bar opened when the amount of work becomes known (``start``)."""

    def __init__(self, desc: str, unit: str = " rows"):
        self.desc, self.unit = desc, unit
        self.bar: Any = None

    def start(self, total: int | None) -> None:
        self.bar = _progress(self.desc, total, self.unit)

    def update(self, n: int) -> None:
        if self.bar is None:
            self.start(None)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def _training_progress(wiring: Wiring) -> Iterator[None]:
    """While in the block, the retraining use case's ``on_progress(label, rows)`` feeds a bar."""
    bar = _LazyBar("reading training rows")
    retraining = wiring.retraining
    before = retraining.on_progress
    retraining.on_progress = lambda label, rows: bar.update(rows)
    try:
        yield
    finally:
        retraining.on_progress = before
        bar.close()


def cmd_init(wiring: Wiring, args: argparse.Namespace) -> int:
    from .operations import import_history, record_population
    from .simulator import history_for_volume

    ensure_resources(wiring)
    print("tables, container and queues are ready")
    current = wiring.store.current_version()
    if current:
        print(f"model {current} is promoted: nothing more to do")
        return 0
    if wiring.labels.labeled_count() < wiring.settings.min_training_rows:
        start = (_now() - timedelta(days=INIT_HISTORY_DAYS + 1)).date().isoformat()
        history, population = history_for_volume(args.history, seed=args.seed, n_days=INIT_HISTORY_DAYS,
                                                 start_date=start)
        with _progress("importing history", len(history)) as bar:
            added, labeled = import_history(wiring, history, on_chunk=bar.update)
        # What `simulate` continues: the same customers and terminals, on from this history.
        record_population(wiring, population, history)
        print(f"simulated history: {added} transactions, {labeled} labels, "
              f"fraud rate {history['label'].mean():.2%}, {population.config.n_customers} customers "
              f"(population recorded for `simulate`)")
    with _training_progress(wiring):
        run = wiring.retraining.run(trigger="init", force=True)
    print(f"first training run: {run.status} — {run.reason}")
    if run.status != "promoted":
        print("no model was promoted; see `python -m shared.cli runs`", file=sys.stderr)
        return 1
    print(f"model {run.model_version} is promoted")
    return 0


def _predict_key(args: argparse.Namespace) -> str | None:
    # FUNCTION_KEY: the one key of releases before predict and labels had separate keys.
    return args.key or os.environ.get("PREDICT_KEY") or os.environ.get("FUNCTION_KEY")


def _labels_key(args: argparse.Namespace) -> str | None:
    return args.labels_key or os.environ.get("LABELS_KEY") or _predict_key(args)


def cmd_simulate(wiring: Wiring, args: argparse.Namespace) -> int:
    if args.out:
        return _simulate_csv(args)
    if args.seed is not None or args.days or args.start:
        print("simulate: --seed, --days and --start apply to --out only: the live batch continues the "
              "population `init` simulated", file=sys.stderr)
        return EXIT_USAGE
    from .operations import SIMULATE_LOCK_BLOB, NotSimulated
    from .storage.blob import LockHeld

    try:
        with wiring.store.exclusive(SIMULATE_LOCK_BLOB):
            return _simulate_live(wiring, args)
    except LockHeld:
        print("error: another `simulate` is running against this deployment; try again when it ends",
              file=sys.stderr)
        return EXIT_FAILED
    except NotSimulated as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _simulate_csv(args: argparse.Namespace) -> int:
    from .simulator import SimulationConfig, simulate_for_volume, simulate_transactions, write_csv

    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    days = args.days or 30
    start = args.start or (_now() - timedelta(days=days)).date().isoformat()
    with _progress("simulating", total=1, unit=" step") as bar:
        if args.count:
            frame = simulate_for_volume(args.count, seed=seed, n_days=days, start_date=start)
        else:
            frame = simulate_transactions(SimulationConfig(n_days=days, start_date=start, seed=seed))
        bar.update(1)
    with _progress(f"writing {args.out}", len(frame)) as bar:
        write_csv(frame, args.out, on_rows=bar.update)
    print(f"wrote {len(frame)} transactions ({frame['label'].mean():.2%} fraud) to {args.out} (seed {seed})")
    return 0


def _simulate_live(wiring: Wiring, args: argparse.Namespace) -> int:
    """Continue init's population from where the stored history (or the last run) stopped up to
    now: import the gap as history, score the latest --count transactions, record their labels,
    and compare the decisions with the truth and with the model's holdout."""
    from collections import Counter

    from .operations import (
        StoredWaiter,
        holdout_rates,
        live_summary,
        load_population,
        prepare_live_batch,
        record_simulated_labels,
        save_population,
        score_and_store,
    )

    record = load_population(wiring)
    count = args.count or 1001
    now = _now()
    importing = _LazyBar("importing history since the last run")
    try:
        batch = prepare_live_batch(wiring, record, count, now, on_import=importing.update,
                                   on_import_total=importing.start)
    finally:
        importing.close()
    live = batch.live
    waiter = None
    with _progress("scoring" if not args.url else f"sending to {args.url}", len(live), " tx") as bar:
        if args.url:
            from .client import post_labels, post_transactions

            waiter = StoredWaiter(wiring)
            answers = post_transactions(args.url, live, key=_predict_key(args), before_send=waiter,
                                        on_sent=bar.update)
        else:
            answers = score_and_store(wiring, live, on_sent=bar.update)
    if args.url:
        labels = post_labels(args.url, [{"transaction_id": row.transaction_id, "is_fraud": bool(row.label)}
                                        for row, answer in zip(live.itertuples(index=False), answers) if answer],
                             key=_labels_key(args), source="simulator")
    else:
        labels = record_simulated_labels(wiring, live, answers)
    assert batch.record is not None
    save_population(wiring, batch.record)

    summary = live_summary(live, answers)
    versions = Counter(a["model_version"] for a in answers if a and a.get("model_version"))
    version = versions.most_common(1)[0][0] if versions else wiring.store.current_version()
    summary["holdout"] = (holdout_rates(wiring.store.metadata(version), wiring.settings.decision_policy)
                          if version else None)
    summary["labels"] = labels
    summary["window"] = {"from": live["timestamp"].min().isoformat() if len(live) else None,
                         "to": now.isoformat()}
    summary["history_imported"] = {"from": batch.start.isoformat(), "transactions": batch.imported,
                                   "labels": batch.imported_labels, "labels_come_due": batch.matured_labels}
    population = record.population.config
    summary["population"] = {"seed": population.seed, "customers": population.n_customers,
                             "terminals": population.n_terminals, "batch": batch.record.batches}
    notes = []
    if len(live) < count:
        since = max(batch.start, batch.earliest)
        notes.append(f"{len(live)} of the {count} transactions asked for: that is all the population made since "
                     f"{since.isoformat()} (the last run, or the oldest time predict accepts: timestamps up to "
                     f"{wiring.settings.predict_max_age_hours} h old); run again later for more")
    if waiter is not None and waiter.gave_up:
        notes.append("the service's stored transactions were not visible to this command (another database?): "
                     "features of the batch may miss the card's earlier transactions in it")
    if notes:
        summary["notes"] = notes
    _print(summary)
    return 0 if summary["failed"] == 0 else 1


def cmd_import(wiring: Wiring, args: argparse.Namespace) -> int:
    from .operations import import_history, read_transactions_csv
    from .storage.schema import create_schema

    create_schema(wiring.engine)
    started = time.perf_counter()
    frame = read_transactions_csv(args.file)
    with _progress(f"importing {args.file}", len(frame)) as bar:
        added, labeled = import_history(wiring, frame, on_chunk=bar.update)
    elapsed = time.perf_counter() - started
    print(f"imported {added} new transactions ({len(frame) - added} already present) and {labeled} labels "
          f"in {elapsed:.1f}s ({len(frame) / max(elapsed, 1e-9):,.0f} rows/s)")
    return 0


def cmd_retrain(wiring: Wiring, args: argparse.Namespace) -> int:
    with _training_progress(wiring):
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
    if "error" in status:
        status["error"] = one_line(safe_text(status["error"]), 500)
    _print(status)
    if not status["reachable"]:
        print(f"error: database {status['url']} unreachable: {status.get('error', '')}", file=sys.stderr)
        return 2
    return 0


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


def _operator_queue(settings: Settings, name: str):
    """A queue client for operator commands: raw base64 text (moved verbatim, whatever bytes it
    holds) and fail fast when storage is unreachable (the SDK default retries for about a minute):
    refused at once, silent within 3 × 10 + 2 × 0.5 = 31 s."""
    from .storage.clients import fail_fast_retry, queue_client

    return queue_client(settings, name, message_encode_policy=None, message_decode_policy=None,
                        retry_policy=fail_fast_retry("queue", 0.5),
                        connection_timeout=5, read_timeout=10)


def describe_poison_message(content: Any) -> tuple[int, str]:
    """(valid items, one bounded line saying what is wrong) for a poison message's raw text."""
    from .usecases.persisting import MalformedMessage, decode_message, summarize_problems

    text = content if isinstance(content, str) else bytes(content or b"").decode("latin-1")
    try:
        body = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return 0, "not base64: the queue trigger cannot decode it"
    try:
        items, problems = decode_message(body)
    except MalformedMessage as exc:
        return 0, one_line(str(exc), 300)
    except Exception as exc:  # whatever it holds, the listing goes on
        return 0, f"cannot be read ({type(exc).__name__})"
    summary = summarize_problems(problems, shown=3, limit=300) if problems else ""
    return len(items), summary or "no problem found: likely a database error at the time"


def cmd_poison(wiring: Wiring, args: argparse.Namespace) -> int:
    """Inspect the poison queue, or move its messages back for another try (after a fix)."""
    settings = wiring.settings
    poison = _operator_queue(settings, settings.poison_queue)
    if args.action == "list":
        return _list_poison(poison, args.limit, args.visibility_timeout)
    target = _operator_queue(settings, settings.transactions_queue)
    moved = 0
    while True:
        batch = list(poison.receive_messages(max_messages=32, visibility_timeout=60))
        if not batch:
            break
        for message in batch:
            target.send_message(message.content)
            poison.delete_message(message)
            moved += 1
    print(f"moved {moved} message(s) from {settings.poison_queue} back to {settings.transactions_queue}")
    return 0


def _list_poison(poison, limit: int, visibility_timeout: int) -> int:
    """Every message (up to ``limit``): received, not deleted, so the listing is not capped at
    peek's 32; each is hidden while listed (at most ``visibility_timeout`` s) and made visible
    again at the end. Receiving counts as a dequeue: each listing adds 1 to the counts shown."""
    listed = []
    try:
        for message in poison.receive_messages(messages_per_page=min(32, limit), max_messages=limit,
                                               visibility_timeout=visibility_timeout):
            listed.append(message)
            valid, problem = describe_poison_message(message.content)
            inserted = message.inserted_on.isoformat() if message.inserted_on else "?"
            size = len(message.content or "")
            print(f"{message.id}  dequeued {message.dequeue_count}x  inserted {inserted}  {size} B  "
                  f"{valid} valid item(s)  {problem}")
    finally:
        for message in listed:
            try:
                poison.update_message(message, pop_receipt=message.pop_receipt, visibility_timeout=0)
            except Exception:  # it reappears after visibility_timeout anyway
                pass
    more = f"; the --limit of {limit} was reached, more may remain" if len(listed) >= limit else ""
    print(f"{len(listed)} message(s) listed{more}")
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line. The backtest's options (which import the training libraries, seconds
    of start-up) are added only when the command is ``backtest``."""
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level; tracebacks (redacted)")
    parser.add_argument("--settings", metavar="FILE",
                        help="local.settings.json to read settings from (default: $LOCAL_SETTINGS_FILE, else the "
                             "project root's); the environment wins over it")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="create tables/container/queues; train and publish a first model")
    init.add_argument("--history", type=int, default=INIT_HISTORY_TRANSACTIONS,
                      help="simulated labeled transactions to train the first model on")
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(handler=cmd_init)

    simulate = commands.add_parser(
        "simulate", help="continue init's simulated population up to now: the latest --count transactions "
                         "scored onto the queue (or POSTed to --url), their labels recorded; or --out CSV")
    simulate.add_argument("--count", type=_positive_int,
                          help="transactions (default 1001: the latest of the population up to now; "
                               "with --out: all of --days)")
    simulate.add_argument("--seed", type=int, help="with --out: makes the generator deterministic")
    simulate.add_argument("--url", help="POST them to this service base URL (e.g. http://localhost:7071)")
    simulate.add_argument("--key", help="predict_function's key for --url (or set PREDICT_KEY)")
    simulate.add_argument("--labels-key", help="label_function's key for --url (or set LABELS_KEY; "
                                               "default: the predict key, enough locally without keys)")
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
    poison.add_argument("--limit", type=_positive_int, default=POISON_LIST_LIMIT,
                        help=f"list: at most this many messages (default {POISON_LIST_LIMIT})")
    poison.add_argument("--visibility-timeout", type=_positive_int, default=POISON_LIST_VISIBILITY_SECONDS,
                        help="list: messages are received (not deleted) to be listed, hidden for at most this "
                             f"many seconds, and made visible again at the end (default "
                             f"{POISON_LIST_VISIBILITY_SECONDS})")
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
    if "backtest" in (sys.argv[1:] if argv is None else argv):
        from .backtest_cli import add_arguments

        add_arguments(backtest)
    backtest.set_defaults(handler=cmd_backtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        load_local_settings(args.settings)  # before any setting is read, as the host does
        # The wiring connects lazily: commands that need no storage never touch it.
        return args.handler(get_wiring(), args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, never a traceback: operators need the reason
        code, message = describe_failure(exc)
        if args.verbose:
            print(safe_text(traceback.format_exc()), file=sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        return code


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """(exit code, one line naming what failed and what to do) for an exception; secrets redacted."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from sqlalchemy import exc as sa_exc

    reason = _reason(exc)
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code) or ""
    if isinstance(exc, ClientAuthenticationError) or getattr(exc, "status_code", None) == 403:
        return EXIT_STORAGE, (f"storage refused the credentials (HTTP 403 {code}): check the account key or SAS "
                              "in AzureWebJobsStorage (or the identity's role assignments)")
    if isinstance(exc, ResourceNotFoundError):
        return EXIT_STORAGE, (f"storage: not found ({code or reason}); "
                              "create container and queues with `python -m shared.cli init`")
    if isinstance(exc, ServiceRequestError):
        return EXIT_STORAGE, f"storage unreachable: {reason}"
    if isinstance(exc, ServiceResponseError):
        return EXIT_STORAGE, f"storage did not answer: {reason}"
    if isinstance(exc, HttpResponseError):
        return EXIT_STORAGE, f"storage error (HTTP {exc.status_code} {code}): {reason}"
    if isinstance(exc, AzureError):
        return EXIT_STORAGE, f"storage: {reason}"
    if isinstance(exc, (sa_exc.ArgumentError, sa_exc.NoSuchModuleError)):
        return EXIT_USAGE, f"database setting not usable (DATABASE_URL / SQL_CONNECTION_STRING): {reason}"
    if isinstance(exc, sa_exc.SQLAlchemyError):
        hint = ""
        if re.search(r"no such table|does not exist|invalid object name", reason, re.IGNORECASE):
            hint = "; create the tables with `python -m shared.cli db-check` or `init`"
        return EXIT_DATABASE, f"database {_database_label()} unreachable or failing: {reason}{hint}"
    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE, f"configuration: {reason}"
    if isinstance(exc, ValueError):
        return EXIT_USAGE, reason
    if isinstance(exc, OSError):
        return EXIT_FAILED, reason
    return EXIT_FAILED, f"{type(exc).__name__}: {reason}"


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message (a driver's own error when wrapped), redacted."""
    original = getattr(exc, "orig", None) or exc
    text = str(getattr(original, "message", None) or original).strip()
    if isinstance(original, OSError) and original.strerror:
        text = f"{original.strerror}: {original.filename}" if original.filename else original.strerror
    # urllib3 prefixes its object's repr: "<urllib3.connection.HTTPConnection object at 0x...>: Failed..."
    text = re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>:\s*", "", text)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return one_line(safe_text(first), 400)


def _database_label() -> str:
    from .storage.engines import database_url, redact_url

    try:
        settings = Settings.from_env()
        return redact_url(database_url(settings.database_url, settings.sql_connection_string))
    except Exception:
        return "(unreadable setting)"


if __name__ == "__main__":
    sys.exit(main())
