"""``python -m bench [--quick] [--db URL] [--sizes 10000,100000,1000000]``;
``python -m bench --imports [--quick] [--rows N] [--db URL]`` for imports;
``python -m bench --discipline [--quick] [--rows N] [--db URL]`` for the
executive discipline report; ``python -m bench --search [--quick] [--rows N] [--db URL]``
for the search against an equality filter; ``python -m bench --imap [--quick] [--rows N]
[--db URL]`` for the mail plugin's IMAP sync against imapclient alone; ``python -m bench
--mailing [--quick] [--rows N] [--db URL]`` for a mailing against a bare smtplib loop;
``python -m bench --desk [--quick] [--rows N] [--db URL]`` for 20 operators claiming
campaign targets at once on the telephony desk;
``python -m bench --lookup [--quick] [--rows N] [--db URL]`` for the telephony caller lookup
against a raw indexed SELECT;
``python -m bench --reports-history [--quick] [--rows N] [--db URL]`` for the history
reports (conversion, compared funnels, time in stage, plan and fact) against hand-written SQL;
``python -m bench --webhooks [--quick] [--rows N] [--db URL]`` for signed telephony webhook
events under gunicorn on PostgreSQL;
``python -m bench --reports-funnel [--quick] [--rows N] [--db URL]`` for the deal funnel
report against hand-written SQL;
``python -m bench --quality [--quick] [--rows N] [--db URL]`` for the client base quality
check's duplicate search at N and 10 N customers;
``python -m bench --reports-deals [--quick] [--rows N] [--db URL]`` for the deal report kinds
(forecast, won/lost, loss reasons, stale, sources, table) against hand-written SQL;
``python -m bench --abc-xyz [--quick] [--rows N] [--db URL]`` for the nightly ABC/XYZ
classification against the same work in hand-written SQL;
``python -m bench --merge [--quick] [--rows N] [--db URL]`` for merging two customers with
their linked records against hand-written UPDATEs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.suite import SIZES, report, run, save


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="List-page benchmark: the engine against hand-written SQL and ORM, 10 k to 1 M rows.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repetitions, only the targeted scenarios, no extras (CI); "
        "still 10 k, 100 k and 1 M rows",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        help="database URL (default: a temporary SQLite file); on PostgreSQL the "
        "schema crm_bench is created and dropped",
    )
    parser.add_argument(
        "--sizes",
        metavar="N,N,...",
        help="row counts (customers and orders each), default 10000,100000,1000000",
    )
    parser.add_argument(
        "--plans", action="store_true", help="print query plans at the largest size"
    )
    parser.add_argument(
        "--proposed",
        action="store_true",
        help="add the indexes the benchmark proposes for engine/models.py (see bench.suite)",
    )
    parser.add_argument(
        "--analyze", action="store_true", help="run ANALYZE on SQLite after loading"
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also save the figures as JSON")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target is missed"
    )
    parser.add_argument(
        "--imports",
        action="store_true",
        help="instead, the import benchmark (bench.imports): N customers through the full "
        "validation against Core inserts, 100 k rows (10 k with --quick)",
    )
    parser.add_argument(
        "--discipline",
        action="store_true",
        help="instead, the executive discipline report against hand-written SQL "
        "(bench.discipline), 100 k tasks (10 k with --quick)",
    )
    parser.add_argument(
        "--rows",
        type=int,
        metavar="N",
        help="customers for --imports, --html or --search, tasks for --discipline",
    )
    parser.add_argument(
        "--html", action="store_true",
        help="instead, the generated HTML list page against raw SQL (bench.html), 100 k customers",
    )  # fmt: skip
    parser.add_argument(
        "--search",
        action="store_true",
        help="instead, the search (a word anywhere, a phone by its digits) against an "
        "equality filter on the customer list, 1 M customers (10 k with --quick)",
    )
    parser.add_argument(
        "--imap", action="store_true",
        help="instead, the mail plugin's IMAP sync from Dovecot against imapclient alone "
        "(bench.mail_imap), 10 k letters (1 k with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--mailing", action="store_true",
        help="instead, a mailing into a local SMTP sink against a bare smtplib loop, and its "
        "start (bench.mailing), 100 k customers (10 k with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--desk", action="store_true",
        help="instead, 20 operators pressing Next at once on the telephony desk "
        "(bench.telephony_desk), 20 k targets (1 k with --quick); PostgreSQL with --db",
    )  # fmt: skip
    parser.add_argument(
        "--lookup", action="store_true",
        help="instead, the telephony plugin's caller lookup against a raw indexed SELECT "
        "(bench.telephony_lookup), 1 M customers and 1 M contact persons (50 k with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--webhooks", action="store_true",
        help="instead, signed call events of the cloudpbx provider posted to gunicorn (4 workers) "
        "on PostgreSQL (bench.telephony_webhooks): events/s and p99 latency, 3,000 calls "
        "(300 and at most 12 s a phase with --quick; --rows sets the calls)",
    )  # fmt: skip
    parser.add_argument(
        "--reports-funnel", action="store_true",
        help="instead, the deal funnel report from the status history against hand-written SQL "
        "(bench.reports_funnel), 1 M deals (20 k with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--quality", action="store_true",
        help="instead, the quality check's duplicate search (bench.quality) at N and 10 N "
        "customers against hand-written SQL, 100 k and 1 M (2 k and 20 k with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--reports-deals", action="store_true",
        help="instead, the deal report kinds against hand-written SQL (bench.reports_deals), "
        "1 M deals (10 k with --quick; --rows sets the deals)",
    )  # fmt: skip
    parser.add_argument(
        "--abc-xyz", action="store_true",
        help="instead, the nightly ABC/XYZ classification against the same work in hand-written "
        "SQL (bench.abc_xyz), 1 M orders of 100 k customers (50 k orders with --quick; --rows sets "
        "the orders)",
    )  # fmt: skip
    parser.add_argument(
        "--merge", action="store_true",
        help="instead, merging two customers with N linked records of each kind (bench.merge) "
        "and its undo against hand-written UPDATEs, 1,000 (200 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--reports-history", action="store_true",
        help="instead, the history reports (conversion, by manager and department, time in "
        "stage, plan and fact) against hand-written SQL (bench.reports_history), 1 M deals "
        "(20 k with --quick)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.reports_funnel:
        return _reports_funnel(args)
    if args.quality:
        return _quality(args)
    if args.reports_deals:
        return _reports_deals(args)
    if args.abc_xyz:
        return _abc_xyz(args)
    if args.merge:
        return _merge(args)
    if args.reports_history:
        return _reports_history(args)
    if args.desk:
        return _desk(args)
    if args.lookup:
        return _lookup(args)
    if args.webhooks:
        return _webhooks(args)
    if args.imap:
        return _imap(args)
    if args.mailing:
        return _mailing(args)
    if args.search:
        return _search(args)
    if args.html:
        from bench import html

        for line in html.run(args.rows or (10_000 if args.quick else 100_000)):
            print(line)
        return 0
    if args.imports:
        return _imports(args)
    if args.discipline:
        return _discipline(args)
    try:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")] if args.sizes else SIZES
    except ValueError:
        parser.error("--sizes takes whole numbers separated by commas")
    if any(n < 100 for n in sizes):
        parser.error("each size must be at least 100 rows")
    started = time.perf_counter()
    results = run(
        sorted(sizes),
        url=args.db,
        quick=args.quick,
        extras=not args.quick,
        show_plans=args.plans,
        proposed=args.proposed,
        analyze=args.analyze,
    )
    missed = report(results)
    if args.json:
        save(results, args.json)
    return _finish(args, started, missed)


def _finish(args: argparse.Namespace, started: float, missed: list[str]) -> int:
    """The closing lines of every benchmark; the exit status for ``--strict``."""
    print(f"\nTotal {time.perf_counter() - started:.0f} s")
    if missed:
        print("Missed: " + "; ".join(missed), file=sys.stderr)
        return 1 if args.strict else 0
    return 0


def _search(args: argparse.Namespace) -> int:
    from bench import suite

    rows = args.rows or (10_000 if args.quick else 1_000_000)
    started = time.perf_counter()
    database, extras, missed = suite.run_search(rows, url=args.db, quick=args.quick)
    print(f"\nSearch against equality on {database} (medians, ms; page of "
          f"{suite.LIMIT} + count capped at {suite.COUNT_CAP:,}); target ≤ {suite.SEARCH_TARGET}x")  # fmt: skip
    for e in extras:
        print(f"{e.size:>10,}  {e.name:<52}{e.ms:8.2f} ms  {e.note}")
    return _finish(args, started, missed)


def _imports(args: argparse.Namespace) -> int:
    from bench import imports

    rows = args.rows or (imports.QUICK_ROWS if args.quick else imports.ROWS)
    started = time.perf_counter()
    figures = imports.run(rows, url=args.db)
    return _finish(args, started, imports.report(figures))


def _mailing(args: argparse.Namespace) -> int:
    from bench import mailing

    started = time.perf_counter()
    figures = mailing.run(
        args.rows or (mailing.QUICK_ROWS if args.quick else mailing.ROWS), args.db
    )
    return _finish(args, started, mailing.report(figures))


def _quality(args: argparse.Namespace) -> int:
    from bench import quality

    started = time.perf_counter()
    rows = args.rows or (quality.QUICK_ROWS if args.quick else quality.ROWS)
    figures = quality.run(rows, args.db, quick=args.quick)
    return _finish(args, started, quality.report(figures))


def _abc_xyz(args: argparse.Namespace) -> int:
    from bench import abc_xyz

    started = time.perf_counter()
    figures = abc_xyz.run(
        args.rows or (abc_xyz.QUICK_ROWS if args.quick else abc_xyz.ROWS), args.db
    )
    return _finish(args, started, abc_xyz.report(figures))


def _desk(args: argparse.Namespace) -> int:
    from bench import telephony_desk

    started = time.perf_counter()
    rows = args.rows or (telephony_desk.QUICK_ROWS if args.quick else telephony_desk.ROWS)
    results = telephony_desk.run(rows, args.db)
    return _finish(args, started, telephony_desk.report(results))


def _merge(args: argparse.Namespace) -> int:
    from bench import merge

    started = time.perf_counter()
    figures = merge.run(
        args.rows or (merge.QUICK_ROWS if args.quick else merge.ROWS), args.db,
        repeats=merge.QUICK_REPEATS if args.quick else merge.REPEATS,
    )  # fmt: skip
    return _finish(args, started, merge.report(figures))


def _lookup(args: argparse.Namespace) -> int:
    from bench import telephony_lookup as lookup

    started = time.perf_counter()
    figures = lookup.run(args.rows or (lookup.QUICK_ROWS if args.quick else lookup.ROWS), args.db)
    return _finish(args, started, lookup.report(figures))


def _webhooks(args: argparse.Namespace) -> int:
    from bench import telephony_webhooks as webhooks

    started = time.perf_counter()
    figures = webhooks.run(
        args.rows or (webhooks.QUICK_CALLS if args.quick else webhooks.CALLS), args.db,
        limit=webhooks.QUICK_LIMIT if args.quick else webhooks.LIMIT,
    )  # fmt: skip
    return _finish(args, started, webhooks.report(figures))


def _discipline(args: argparse.Namespace) -> int:
    from bench import discipline

    rows = args.rows or (discipline.QUICK_ROWS if args.quick else discipline.ROWS)
    started = time.perf_counter()
    results = discipline.run(rows, url=args.db, quick=args.quick, show_plans=args.plans)
    return _finish(args, started, discipline.report(results))


def _reports_funnel(args: argparse.Namespace) -> int:
    from bench import reports_funnel

    rows = args.rows or (reports_funnel.QUICK_ROWS if args.quick else reports_funnel.ROWS)
    started = time.perf_counter()
    results = reports_funnel.run(rows, url=args.db, quick=args.quick, show_plans=args.plans)
    return _finish(args, started, reports_funnel.report(results))


def _reports_deals(args: argparse.Namespace) -> int:
    from bench import reports_deals

    rows = args.rows or (reports_deals.QUICK_ROWS if args.quick else reports_deals.ROWS)
    started = time.perf_counter()
    database, figures = reports_deals.run(rows, url=args.db, quick=args.quick)
    return _finish(args, started, reports_deals.report(database, rows, figures))


def _reports_history(args: argparse.Namespace) -> int:
    from bench import reports_history

    rows = args.rows or (reports_history.QUICK_ROWS if args.quick else reports_history.ROWS)
    started = time.perf_counter()
    database, figures = reports_history.run(rows, url=args.db, quick=args.quick)
    return _finish(args, started, reports_history.report(database, rows, figures))


def _imap(args: argparse.Namespace) -> int:
    from bench import mail_imap

    rows = args.rows or (mail_imap.QUICK_ROWS if args.quick else mail_imap.ROWS)
    started = time.perf_counter()
    figures = mail_imap.run(rows, url=args.db)
    return _finish(args, started, mail_imap.report(figures))


if __name__ == "__main__":
    sys.exit(main())
