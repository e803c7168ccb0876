#!/usr/bin/env bash
# Install the project and its test tools into .venv, then run the whole suite:
# once on SQLite, once on PostgreSQL (when a server answers, always in CI),
# then the quick benchmark. Usage: bash tests/run.sh [pytest args]
# The suite runs on every core, at most four (CRM_TEST_WORKERS overrides:
# 0 runs it in this one process).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PG_URL=${CRM_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
if [ -n "${CRM_TEST_WORKERS:-}" ]; then
  PARALLEL=(-n "$CRM_TEST_WORKERS")
else
  PARALLEL=(-n auto --maxprocesses 4)
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== mypy"
.venv/bin/mypy

summary=$(mktemp)
tally() {  # keep pytest's closing counts, to repeat them at the very end
  grep -E "^=+ .*(passed|failed).* in [0-9.]+s" "$1" | tail -n 1 >> "$summary" || true
}

echo "== tests on SQLite"
log=$(mktemp)
.venv/bin/pytest "${PARALLEL[@]}" "$@" | tee "$log"
tally "$log"

if .venv/bin/python -c "import sqlalchemy as sa, sys; sa.create_engine(sys.argv[1]).connect().close()" "$PG_URL" 2>/dev/null; then
  echo "== tests on PostgreSQL"
  # a year ahead: a test that passes only before some date cannot hide
  CRM_TEST_CLOCK_DAYS=${CRM_TEST_CLOCK_DAYS:-366} CRM_TEST_DATABASE_URL=$PG_URL .venv/bin/pytest "${PARALLEL[@]}" "$@" | tee "$log"
  tally "$log"
elif [ "${CI:-}" = "true" ]; then
  echo "PostgreSQL at $PG_URL does not answer; CI needs it" >&2
  exit 1
else
  echo "== PostgreSQL not reachable at $PG_URL: skipped that run (CI runs it)"
fi

if [ -d bench ] && [ -f bench/__main__.py ]; then
  echo "== benchmark (quick)"
  .venv/bin/python -m bench --quick
  echo "== import benchmark (quick)"
  .venv/bin/python -m bench --imports --quick
  echo "== executive discipline benchmark (quick)"
  .venv/bin/python -m bench --discipline --quick
  echo "== deal funnel benchmark (quick)"
  .venv/bin/python -m bench --reports-funnel --quick
  echo "== mailing benchmark (quick)"
  .venv/bin/python -m bench --mailing --quick
  echo "== telephony desk benchmark (quick)"
  if .venv/bin/python -c "import sqlalchemy as sa, sys; sa.create_engine(sys.argv[1]).connect().close()" "$PG_URL" 2>/dev/null; then
    .venv/bin/python -m bench --desk --quick --db "$PG_URL"
  else
    .venv/bin/python -m bench --desk --quick
  fi
  echo "== telephony caller lookup benchmark (quick)"
  .venv/bin/python -m bench --lookup --quick
  if .venv/bin/python -c "import sqlalchemy as sa, sys; sa.create_engine(sys.argv[1]).connect().close()" "$PG_URL" 2>/dev/null; then
    echo "== telephony webhook benchmark (quick, gunicorn on PostgreSQL)"
    .venv/bin/python -m bench --webhooks --quick --db "$PG_URL"
  fi
  if [ -x /usr/sbin/dovecot ]; then
    echo "== IMAP sync benchmark (quick)"
    .venv/bin/python -m bench --imap --quick
  fi
fi

# the closing counts of both runs, added up, on one plain line
.venv/bin/python - "$summary" <<'PY'
import re, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
for line in open(sys.argv[1], encoding="utf-8"):
    for n, word in re.findall(r"(\d+) (passed|failed|skipped)", line):
        counts[word] += int(n)
print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
PY
