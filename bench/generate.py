"""Plausible rows for any configuration, fast enough for a million.

The benchmark fills its databases with it, and the demo data generator is
meant to reuse it. Values come from each field's type and, for common names
(``name``, ``inn``, ``region``, ``phone`` ...), from word lists, with skewed
distributions like real CRM data: a few managers own most records, old
customers have most orders, amounts are log-normal, records get denser
towards the present. Everything is seeded, so a run is repeatable.

Rows are built a column at a time and inserted with SQLAlchemy Core
``executemany`` in batches; ids are assigned here, so that references can
point at rows generated a moment before without reading them back.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from engine.fieldtypes import INN_WEIGHTS
from engine.models import Models
from engine.registry import USER, DocType, Field

BATCH = 10_000
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SPAN = dt.timedelta(days=3 * 365)

Column = Callable[[random.Random, int, int], list[Any]]

WORDS = (
    "Ромашка", "Вектор", "Гранит", "Альфа", "Сибирь", "Волга", "Восток", "Меридиан",
    "Прогресс", "Спектр", "Орион", "Феникс", "Бета", "Дельта", "Северная", "Южная",
    "Торговый", "Продукт", "Эталон", "Кристалл", "Радуга", "Заря", "Олимп", "Каскад",
    "Nord", "Atlas", "Polar", "Vega", "Terra", "Unity",
)  # fmt: skip
SECOND = (
    "Трейд", "Групп", "Снаб", "Маркет", "Опт", "Сервис", "Логистик", "Холдинг",
    "Плюс", "Центр", "Инвест", "Техно", "Agro", "Food", "Retail",
)  # fmt: skip
FORMS = ("ООО", "ООО", "ООО", "АО", "ИП", "ПАО")
SURNAMES = ("Иванов", "Петров", "Смирнов", "Кузнецов", "Попов", "Соколов", "Лебедев", "Козлов",
            "Новиков", "Морозов", "Волков", "Зайцев")  # fmt: skip
FIRST = ("Анна", "Мария", "Елена", "Ольга", "Иван", "Сергей", "Алексей", "Дмитрий", "Павел")
REGIONS = (
    ("Москва", 30), ("Санкт-Петербург", 14), ("Московская обл.", 10), ("Новосибирск", 5),
    ("Екатеринбург", 5), ("Казань", 4), ("Нижний Новгород", 4), ("Краснодар", 4),
    ("Самара", 3), ("Ростов-на-Дону", 3), ("Уфа", 3), ("Пермь", 2), ("Воронеж", 2),
    ("Красноярск", 2), ("Владивосток", 1), ("Калининград", 1),
)  # fmt: skip
PRODUCTS = ("поставка", "отгрузка", "договор", "заявка", "звонок", "встреча", "счёт", "запрос")


@dataclass
class Generator:
    """Generates and inserts rows, remembering the ids it made for later references.

    ``weights`` fixes an enum's distribution: ``{"CustomerOrder.status":
    {"confirmed": 20, ...}}``; ``null_rate`` how often an optional field is
    empty (default 0.15, never for required fields and enums with a default).
    """

    models: Models
    seed: int = 1
    now: dt.datetime = NOW
    span: dt.timedelta = SPAN
    weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    null_rate: Mapping[str, float] = field(default_factory=dict)
    batch: int = BATCH
    ids: dict[str, range] = field(default_factory=dict)
    user_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # -- users ------------------------------------------------------------------

    def users(self, conn: sa.Connection, count: int, prefix: str = "demo") -> list[int]:
        """Create ``count`` users (or reuse those named ``prefix.NNN``); they own the documents."""
        table = self.models.table(USER)
        names = [f"{prefix}.{i:03d}" for i in range(1, count + 1)]
        existing = set(conn.execute(sa.select(table.c.username).where(table.c.username.in_(names))).scalars())  # fmt: skip
        rows = []
        for i, name in enumerate(names):
            if name in existing:
                continue
            first, last = FIRST[i % len(FIRST)], SURNAMES[i % len(SURNAMES)]
            rows.append({"username": name, "first_name": first, "last_name": last,
                         "email": f"{name}@example.com", "active": True})  # fmt: skip
        if rows:
            conn.execute(table.insert(), rows)
        self.user_ids = list(
            conn.execute(
                sa.select(table.c.id).where(table.c.username.in_(names)).order_by(table.c.id)
            ).scalars()
        )
        return self.user_ids

    # -- documents --------------------------------------------------------------

    def documents(
        self,
        conn: sa.Connection,
        doctype: str,
        count: int,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> range:
        """Insert ``count`` rows of ``doctype``; returns their ids."""
        d = self.models.registry.documents[doctype]
        table = self.models.table(doctype)
        first = (conn.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0) + 1
        ids = range(first, first + count)
        columns = self._columns(d, table, count)
        for start in range(0, count, self.batch):
            n = min(self.batch, count - start)
            names = list(columns)
            values = [columns[c](self.rng, start, n) for c in names]
            rows = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
            for offset, row in enumerate(rows):
                row["id"] = first + start + offset
            conn.execute(table.insert(), rows)
            if progress is not None:
                progress(doctype, start + n, count)
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v)"),
                {"t": table.name, "v": ids[-1] if count else first},
            )
        self.ids[doctype] = ids
        return ids

    def _columns(self, d: DocType, table: sa.Table, count: int) -> dict[str, Column]:
        """One value maker per column: (rng, first row number, how many) → values."""
        moments = self._moments(count)
        out: dict[str, Column] = {
            "version": lambda rng, i, n: [1] * n,
            "created_at": lambda rng, i, n: moments[i : i + n],
        }
        users = self.user_ids
        if users:
            out["created_by_id"] = self._pick(users, skew=1.6)
        skip = {"id", "version", "created_at", "created_by", "updated_at", "updated_by"}
        for f in d.fields.values():
            if f.name in skip or not f.stored or f.column not in table.c:
                continue
            maker = self._field(d, f, moments)
            if maker is not None:
                out[f.column] = maker
        return out

    def _moments(self, count: int) -> list[dt.datetime]:
        """Creation times over the span, in id order, denser towards the present."""
        start = self.now - self.span
        seconds = self.span.total_seconds()
        rng = self.rng
        return [
            start + dt.timedelta(seconds=seconds * ((k + rng.random()) / count) ** 0.7)
            for k in range(count)
        ]

    def _field(self, d: DocType, f: Field, moments: list[dt.datetime]) -> Column | None:
        key = f"{d.name}.{f.name}"
        nulls = 0.0 if f.required else self.null_rate.get(key, 0.15)
        if d.numbering is not None and f.name == d.numbering.field:
            prefix, width = d.numbering.prefix, d.numbering.width
            return lambda rng, i, n: [f"{prefix}{k + 1:0{width}d}" for k in range(i, i + n)]
        if f.type == "enum":
            weights = self.weights.get(key) or {v: 1 / (j + 1) for j, v in enumerate(f.values)}
            keys, cum = _cumulative(weights)
            enum_nulls = 0.0 if f.default is not None else nulls
            return _nullable(lambda rng, i, n: rng.choices(keys, cum_weights=cum, k=n), enum_nulls)
        if f.type == "ref":
            target = f.to or USER
            if target == USER:
                return (
                    _nullable(self._pick(self.user_ids, skew=1.6), nulls) if self.user_ids else None
                )
            if target in self.ids:
                return _nullable(self._pick(self.ids[target], skew=2.0), nulls)
            return None
        if f.type in ("date", "datetime"):
            return _nullable(self._when(f, moments), nulls)
        maker = _by_name(f) or _by_type(f)
        return _nullable(maker, nulls) if maker is not None else None

    def _when(self, f: Field, moments: list[dt.datetime]) -> Column:
        """A date near the row's creation: the document's own date, or a little later."""
        own = f.name in ("date", "planned_at")
        low, high = (0, 0) if own else (1, 60)

        def make(rng: random.Random, i: int, n: int) -> list[Any]:
            out = [m + dt.timedelta(days=rng.randint(low, high)) for m in moments[i : i + n]]
            return [m.date() for m in out] if f.type == "date" else out

        return make

    @staticmethod
    def _pick(ids: Sequence[int], skew: float) -> Column:
        """Ids chosen with a power-law skew: the first ones (old customers, senior
        managers) get most of the rows."""
        size = len(ids)

        def make(rng: random.Random, i: int, n: int) -> list[Any]:
            r = rng.random
            return [ids[int(size * r() ** skew)] for _ in range(n)]

        return make


def _cumulative(weights: Mapping[str, float]) -> tuple[list[str], list[float]]:
    keys = list(weights)
    cum: list[float] = []
    total = 0.0
    for k in keys:
        total += weights[k]
        cum.append(total)
    return keys, cum


def _nullable(make: Column, rate: float) -> Column:
    if rate <= 0:
        return make

    def wrapped(rng: random.Random, i: int, n: int) -> list[Any]:
        r = rng.random
        return [None if r() < rate else v for v in make(rng, i, n)]

    return wrapped


def _digits(rng: random.Random, count: int) -> str:
    return f"{rng.randrange(10**count):0{count}d}"


def _inn(rng: random.Random) -> str:
    """A company's taxpayer number with a correct check digit."""
    digits = [rng.randint(1, 9), *(rng.randint(0, 9) for _ in range(8))]
    for weights in INN_WEIGHTS[10]:
        digits.append(sum(w * d for w, d in zip(weights, digits, strict=False)) % 11 % 10)
    return "".join(map(str, digits))


def _by_name(f: Field) -> Column | None:
    name = f.name
    if name in ("name", "title") and f.type == "string":

        def company(rng: random.Random, i: int, n: int) -> list[Any]:
            c = rng.choice
            return [f"{c(WORDS)} {c(SECOND)} {c(FORMS)}" for _ in range(n)]

        return company
    if name in ("subject", "position"):
        return lambda rng, i, n: [
            f"{rng.choice(PRODUCTS).capitalize()} {rng.randint(1, 999)}" for _ in range(n)
        ]
    if name == "inn" or f.type == "inn":
        return lambda rng, i, n: [_inn(rng) for _ in range(n)]
    if name == "region":
        keys, cum = _cumulative(dict(REGIONS))
        return lambda rng, i, n: rng.choices(keys, cum_weights=cum, k=n)
    if name == "address":
        return lambda rng, i, n: [
            f"г. {rng.choice(REGIONS)[0]}, ул. {rng.choice(WORDS)}, д. {rng.randint(1, 150)}"
            for _ in range(n)
        ]
    return None


def _by_type(f: Field) -> Column | None:
    t = f.type
    if t == "string":
        return lambda rng, i, n: [f"{rng.choice(WORDS)} {rng.randint(1, 9999)}" for _ in range(n)]
    if t == "text":
        return lambda rng, i, n: [f"{rng.choice(PRODUCTS)} {rng.choice(WORDS)}" for _ in range(n)]
    if t == "phone":
        return lambda rng, i, n: [f"+79{_digits(rng, 9)}" for _ in range(n)]
    if t == "email":
        return lambda rng, i, n: [f"info{i + k}@example{rng.randint(1, 99)}.ru" for k in range(n)]
    if t == "url":
        return lambda rng, i, n: [f"https://example{i + k}.ru" for k in range(n)]
    if t == "boolean":
        return lambda rng, i, n: [rng.random() < 0.7 for _ in range(n)]
    if t == "integer":
        low = int(f.min) if f.min is not None else 0
        high = int(f.max) if f.max is not None else max(low, 100)
        return lambda rng, i, n: [rng.randint(low, high) for _ in range(n)]
    if t in ("money", "decimal"):
        places = Decimal("0.01")
        # log-normal: median about 50 000, a long tail of big orders
        return lambda rng, i, n: [
            Decimal(f"{rng.lognormvariate(math.log(50_000), 1.2):.2f}").quantize(places)
            for _ in range(n)
        ]
    return None


def generate(
    models: Models,
    conn: sa.Connection,
    counts: Mapping[str, int] | Iterable[tuple[str, int]],
    *,
    users: int = 40,
    seed: int = 1,
    weights: Mapping[str, Mapping[str, float]] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Generator:
    """Users, then each document type in the order given (targets before the rows that refer to them)."""
    gen = Generator(models, seed=seed, weights=weights or {})
    gen.users(conn, users)
    items = counts.items() if isinstance(counts, Mapping) else counts
    for doctype, count in items:
        gen.documents(conn, doctype, count, progress)
    return gen
