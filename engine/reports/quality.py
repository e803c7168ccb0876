"""The quality check of the client base: the report kind ``quality``
(docs/reports.md, "The quality check of the client base").

Each problem is a *group* of records of the report's type (customers):

- duplicates: the same taxpayer number, the same phone across the phone
  fields (and the contact persons' phones), the same email in any case
  (and the contact persons' emails), similar names;
- invalid taxpayer numbers (wrong length or check digits), missing and
  malformed phones and emails, addresses that bounced (when the mail
  plugin keeps ``BouncedAddress``), no manager (or a disabled one), no
  activity for ``days`` days.

Every group but similar names is one SQL statement under the report's
narrowing (the principal's read rule, the report's filter, manager,
department, segment): duplicates are ``GROUP BY key HAVING count(DISTINCT
id) > 1`` over the indexed columns. Similar names are one streamed read of
(id, name) and a blocked comparison in memory (:func:`similar_clusters`):
names are normalized (case, ё, Latin look-alike letters in Cyrillic words,
quotes and punctuation, legal forms such as ООО/ИП/LLC dropped), each name
goes into the blocks of the first four letters of its two longest words,
and only names of one block are compared (rapidfuzz ``ratio`` of the sorted
words, at least ``similarity``; names with different numbers in them never
match). A block larger than ``block`` is compared in windows of its sorted
names instead of pair by pair, so the work grows linearly with the base.

The drill-down of a group's cell is exactly its records' ids, the same
select its count is taken from.
"""

from __future__ import annotations

import datetime as dt
import gc
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa
from rapidfuzz import fuzz, process

from engine import access
from engine.errors import Loc, Problem
from engine.i18n import gettext, lazy_gettext
from engine.registry import USER, DocType, Registry, Report
from engine.reports import Chart, Column, Context, Kind, Params, ReportError, Result, Series, kind
from engine.reports.common import narrowing

#: the mail plugin's type of addresses that bounced (``address``, ``hard_bounces``, ``invalid``)
BOUNCES = "BouncedAddress"
DEFAULT_DAYS = 180
DEFAULT_SIMILARITY = 85
DEFAULT_BLOCK = 100
#: the most records one bulk assignment changes (each through the documents service)
ASSIGN_CAP = 500

LEGAL_PHRASES = (
    "общество с ограниченной ответственностью",
    "публичное акционерное общество",
    "открытое акционерное общество",
    "закрытое акционерное общество",
    "непубличное акционерное общество",
    "акционерное общество",
    "индивидуальный предприниматель",
    "limited liability company",
)
LEGAL_FORMS = frozenset((
    "ооо", "оао", "зао", "пао", "ао", "нао", "ип", "чп", "тоо", "нко", "ано", "гуп", "муп",
    "фгуп", "пбоюл", "llc", "ltd", "inc", "corp", "co", "gmbh", "ag", "plc", "llp", "lp", "sa",
    "srl", "bv", "oy", "ab",
))  # fmt: skip
#: Latin letters that look like Cyrillic ones, in a word that has Cyrillic letters
LOOKALIKES = str.maketrans("aceopxykmthb", "асеорхукмтнв")
_WORD = re.compile(r"[^\W_]+")
_CYRILLIC = re.compile(r"[а-я]")


@dataclass(frozen=True)
class Group:
    key: str
    label: Any  # a lazy string
    duplicates: bool = False


GROUPS: tuple[Group, ...] = (
    Group("dup_inn", lazy_gettext("Duplicates: the same INN"), True),
    Group("dup_phone", lazy_gettext("Duplicates: the same phone"), True),
    Group("dup_email", lazy_gettext("Duplicates: the same email"), True),
    Group("dup_name", lazy_gettext("Duplicates: similar names"), True),
    Group("bad_inn", lazy_gettext("Invalid INN")),
    Group("no_phone", lazy_gettext("No phone")),
    Group("bad_phone", lazy_gettext("Invalid phone")),
    Group("no_email", lazy_gettext("No email")),
    Group("bad_email", lazy_gettext("Invalid email")),
    Group("bounced", lazy_gettext("Email bounced")),
    Group("no_manager", lazy_gettext("No manager")),
    Group("inactive", lazy_gettext("No activity")),
)
BY_KEY = {g.key: g for g in GROUPS}


@dataclass(frozen=True)
class Contacts:
    """A type whose records belong to the customer, with their own phones and emails."""

    document: str
    ref: str
    phones: tuple[str, ...]
    emails: tuple[str, ...]


@dataclass(frozen=True)
class Setup:
    """A report's options, resolved for one principal: the fields hidden from
    them are left out (a group by a field they may not read is not shown)."""

    d: DocType
    name: str | None
    inn: str | None
    phones: tuple[str, ...]
    emails: tuple[str, ...]
    contacts: Contacts | None
    owner: str | None
    days: int
    activity: tuple[tuple[str, tuple[str, ...]], ...]  # type, its refs to the customer
    similarity: int
    block: int
    bounces: bool

    def fields(self, group: str) -> tuple[str, ...]:
        """The fields a user fixes in place for a group."""
        return {
            "dup_inn": (self.inn,), "bad_inn": (self.inn,), "dup_name": (self.name,),
            "dup_phone": self.phones, "no_phone": self.phones, "bad_phone": self.phones,
            "dup_email": self.emails, "no_email": self.emails, "bad_email": self.emails,
            "bounced": self.emails,
        }.get(group, ())  # type: ignore[return-value]  # fmt: skip


# --- options --------------------------------------------------------------------------


def _of_type(d: DocType, kinds: Sequence[str]) -> list[str]:
    return [n for n, f in d.fields.items() if f.type in kinds and f.stored]


def _int(raw: Any, what: str, low: int, high: int) -> int:
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        raise ReportError(gettext("%(what)s must be a whole number", what=what)) from None
    if not low <= value <= high:
        raise ReportError(
            gettext("%(what)s must be from %(low)s to %(high)s", what=what, low=low, high=high)
        )
    return value


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def referring(
    registry: Registry, d: DocType, skip: str | None = None
) -> list[tuple[str, tuple[str, ...]]]:
    """Every type with a ref to ``d``, with those refs (``skip``: not this type)."""
    out = []
    for other in registry.documents.values():
        if other.builtin or other.name == skip:
            continue
        refs = tuple(n for n, f in other.fields.items() if f.type == "ref" and f.to == d.name)
        if refs:
            out.append((other.name, refs))
    return out


def setup(ctx: Context, report: Report, params: Params) -> Setup:
    """The report's options with the request's overrides (``days``,
    ``similarity``, ``block``); ReportError for a value it cannot take."""
    registry = ctx.registry
    d = registry.documents[report.document]
    o = report.options
    extra = params.extra
    rights = access.field_rights(registry, ctx.principal, d.name)

    def seen(names: Sequence[str | None]) -> tuple[str, ...]:
        return tuple(n for n in names if n and n in d.fields and rights.readable(n))

    name = o.get("name", "name" if "name" in d.fields else None)
    inn = o.get("inn", next(iter(_of_type(d, ("inn",))), None))
    phones = _names(o["phones"]) if "phones" in o else _of_type(d, ("phone",))
    emails = _names(o["emails"]) if "emails" in o else _of_type(d, ("email",))
    contacts = None
    spec = o.get("contacts")
    if isinstance(spec, Mapping) and spec.get("document") in registry.documents:
        cd = registry.documents[spec["document"]]
        if access.allowed(registry, ctx.principal, cd.name, "read") if ctx.principal else True:
            crights = access.field_rights(registry, ctx.principal, cd.name)
            cseen = [n for n in (_names(spec.get("phones")) + _names(spec.get("emails")))
                     if crights.readable(n)]  # fmt: skip
            contacts = Contacts(
                cd.name,
                str(spec.get("ref")),
                tuple(n for n in _names(spec.get("phones")) if n in cseen),
                tuple(n for n in _names(spec.get("emails")) if n in cseen),
            )
    days = _int(extra.get("days", o.get("days", DEFAULT_DAYS)), "days", 0, 36_500)
    if "activity" in o:
        activity = [
            (t, tuple(n for n, f in registry.documents[t].fields.items()
                      if f.type == "ref" and f.to == d.name))
            for t in _names(o["activity"]) if t in registry.documents
        ]  # fmt: skip
    else:
        activity = referring(registry, d)
    if ctx.principal is not None:
        activity = [(t, refs) for t, refs in activity
                    if access.allowed(registry, ctx.principal, t, "read")]  # fmt: skip
    similarity = _int(
        extra.get("similarity", o.get("similarity", DEFAULT_SIMILARITY)), "similarity", 50, 100
    )
    block = _int(extra.get("block", o.get("block", DEFAULT_BLOCK)), "block", 10, 10_000)
    bounces = BOUNCES in registry.documents and (
        ctx.principal is None or access.allowed(registry, ctx.principal, BOUNCES, "read")
    )
    owner = d.owner if d.owner and rights.readable(d.owner) else None
    return Setup(
        d, (seen([name]) or (None,))[0], (seen([inn]) or (None,))[0], seen(phones), seen(emails),
        contacts, owner, days, tuple((t, r) for t, r in activity if r), similarity, block,
        bounces and bool(seen(emails)),
    )  # fmt: skip


def available(s: Setup) -> list[Group]:
    """The groups the report checks for this principal."""
    has = {
        "dup_inn": s.inn, "bad_inn": s.inn, "dup_name": s.name,
        "dup_phone": s.phones, "no_phone": s.phones, "bad_phone": s.phones,
        "dup_email": s.emails, "no_email": s.emails, "bad_email": s.emails,
        "bounced": s.bounces, "no_manager": s.owner, "inactive": s.days and s.activity,
    }  # fmt: skip
    return [g for g in GROUPS if has[g.key]]


# --- SQL ----------------------------------------------------------------------------------


def _filled(col: Any) -> sa.ColumnElement[bool]:
    return sa.and_(col.isnot(None), col != "")


def _digits(col: Any, dialect: str) -> sa.ColumnElement[bool]:
    """``col`` holds digits only (and at least one)."""
    if dialect == "postgresql":
        return col.op("~")("^[0-9]+$")
    return sa.and_(col != "", sa.not_(col.op("GLOB")("*[^0-9]*")))


def bad_inn(col: Any, dialect: str) -> sa.ColumnElement[bool]:
    """A taxpayer number of the wrong length or with wrong check digits, in
    SQL (the same rule as the ``inn`` field type). CASE keeps PostgreSQL from
    casting a letter to a number."""

    def digit(i: int) -> Any:
        return sa.cast(sa.func.substr(col, i + 1, 1), sa.Integer)

    def check(weights: Sequence[int]) -> sa.ColumnElement[bool]:
        total = sum((w * digit(i) for i, w in enumerate(weights)), sa.literal(0))
        return total % 11 % 10 == digit(len(weights))

    w10 = (2, 4, 10, 3, 5, 9, 4, 6, 8)
    w11 = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
    w12 = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
    length = sa.func.length(col)
    wrong = sa.case(
        (sa.not_(_digits(col, dialect)), 1),
        (length == 10, sa.case((check(w10), 0), else_=1)),
        (length == 12, sa.case((sa.and_(check(w11), check(w12)), 0), else_=1)),
        else_=1,
    )
    return sa.and_(_filled(col), wrong == 1)


def bad_phone(col: Any, dialect: str) -> sa.ColumnElement[bool]:
    """Not in E.164 form (``+`` and 7 to 15 digits, the first not 0): what
    the phone field type stores; anything else came in around it."""
    if dialect == "postgresql":
        good: Any = col.op("~")(r"^\+[1-9][0-9]{6,14}$")
    else:
        good = sa.and_(
            col.op("GLOB")("+[1-9]*"),
            sa.not_(sa.func.substr(col, 2).op("GLOB")("*[^0-9]*")),
            sa.func.length(col).between(8, 16),
        )
    return sa.and_(_filled(col), sa.not_(good))


def bad_email(col: Any) -> sa.ColumnElement[bool]:
    """Not shaped like an address: one ``@``, a dot after it, no spaces."""
    return sa.and_(
        _filled(col),
        sa.or_(
            sa.not_(col.like("%_@_%._%")),
            col.like("%@%@%"),
            col.like("% %"),
        ),
    )


class Queries:
    """The groups' selects of ids for one report, principal and request."""

    def __init__(self, ctx: Context, report: Report, params: Params, s: Setup | None = None):
        self.ctx, self.report, self.params = ctx, report, params
        self.s = s or setup(ctx, report, params)
        self.table = ctx.models.table(self.s.d.name)
        self.where = narrowing(ctx, report, params)
        self._similar: list[list[int]] | None = None

    def _col(self, name: str) -> Any:
        return self.table.c[self.s.d.fields[name].column]

    # -- (id, key) pairs of the duplicates' keys

    def keyed(self, what: str) -> sa.Subquery | None:
        """(id, key) of every filled value: ``inn``, ``phone`` (each phone
        field and the contacts' phones) or ``email`` (lower case)."""
        t, s = self.table, self.s
        names = {"inn": (s.inn,) if s.inn else (), "phone": s.phones, "email": s.emails}[what]
        lower = what == "email"
        parts: list[sa.Select[Any]] = []
        for n in names:
            col = self._col(n)
            key = sa.func.lower(col) if lower else col
            parts.append(sa.select(t.c.id.label("id"), key.label("key"))
                         .where(self.where, _filled(col)))  # fmt: skip
        c = s.contacts
        if c is not None and what != "inn":
            ct = self.ctx.models.table(c.document)
            cd = self.ctx.registry.documents[c.document]
            ref = ct.c[cd.fields[c.ref].column]
            for n in c.phones if what == "phone" else c.emails:
                col = ct.c[cd.fields[n].column]
                key = sa.func.lower(col) if lower else col
                parts.append(
                    sa.select(ref.label("id"), key.label("key"))
                    .select_from(ct.join(t, t.c.id == ref))
                    .where(self.where, self.ctx.readable(c.document), _filled(col))
                )
        if not parts:
            return None
        return (parts[0] if len(parts) == 1 else sa.union_all(*parts)).subquery(f"keyed_{what}")

    def dup_keys(self, what: str) -> sa.Select[Any] | None:
        k = self.keyed(what)
        if k is None:
            return None
        return sa.select(k.c.key).group_by(k.c.key).having(sa.func.count(sa.distinct(k.c.id)) > 1)

    # -- the groups

    def ids(self, group: str) -> sa.Select[Any]:
        """The ids of the group's records: what its count counts and its drill-down lists."""
        t, s, dialect = self.table, self.s, self.ctx.dialect
        if group not in {g.key for g in available(s)}:
            raise ReportError(gettext("there is no such group here: %(group)s", group=group))
        base = sa.select(t.c.id)
        if group in ("dup_inn", "dup_phone", "dup_email"):
            what = group[4:]
            k, keys = self.keyed(what), self.dup_keys(what)
            assert k is not None and keys is not None
            return sa.select(k.c.id).where(k.c.key.in_(keys)).distinct()
        if group == "dup_name":
            ids = sorted(i for c in self.similar() for i in c)
            if not ids:
                return base.where(sa.false())
            return base.where(
                t.c.id.in_(sa.bindparam("ids", ids, expanding=True, literal_execute=True))
            )
        if group == "bad_inn":
            assert s.inn
            return base.where(self.where, bad_inn(self._col(s.inn), dialect))
        if group in ("no_phone", "no_email"):
            k = self.keyed(group[3:])
            assert k is not None
            return base.where(
                self.where, t.c.id.not_in(sa.select(k.c.id).where(k.c.id.isnot(None)))
            )
        if group == "bad_phone":
            return base.where(
                self.where, sa.or_(*(bad_phone(self._col(n), dialect) for n in s.phones))
            )
        if group == "bad_email":
            return base.where(self.where, sa.or_(*(bad_email(self._col(n)) for n in s.emails)))
        if group == "bounced":
            b = self.ctx.models.table(BOUNCES)
            k = self.keyed("email")
            assert k is not None
            bounced = sa.select(b.c.address).where(
                self.ctx.readable(BOUNCES),
                sa.or_(b.c.hard_bounces > 0, b.c.invalid.is_(True)),
            )
            return sa.select(k.c.id).where(k.c.key.in_(bounced)).distinct()
        if group == "no_manager":
            assert s.owner
            owner = self._col(s.owner)
            users = self.ctx.models.table(USER)
            disabled = sa.select(users.c.id).where(
                sa.or_(users.c.active.is_(False), users.c.active.is_(None))
            )
            return base.where(self.where, sa.or_(owner.is_(None), owner.in_(disabled)))
        if group == "inactive":
            since = self.ctx.now - _days(s.days)
            parts: list[sa.ColumnElement[bool]] = [self.where, t.c.created_at < since]
            for name, refs in s.activity:
                other = self.ctx.models.table(name)
                od = self.ctx.registry.documents[name]
                at = sa.func.coalesce(other.c.updated_at, other.c.created_at)
                for r in refs:
                    ref = other.c[od.fields[r].column]
                    parts.append(
                        ~sa.exists().where(ref == t.c.id, at >= since, self.ctx.readable(name))
                    )
            return base.where(*parts)
        raise ReportError(gettext("there is no such group here: %(group)s", group=group))

    def count(self, group: str) -> int:
        if group == "dup_name":
            return sum(len(c) for c in self.similar())
        sub = self.ids(group).subquery()
        return int(
            self.ctx.session.execute(sa.select(sa.func.count()).select_from(sub)).scalar_one()
        )

    def cluster_count(self, group: str) -> int:
        if group == "dup_name":
            return len(self.similar())
        keys = self.dup_keys(group[4:])
        assert keys is not None
        return int(
            self.ctx.session.execute(
                sa.select(sa.func.count()).select_from(keys.subquery())
            ).scalar_one()
        )

    def clusters(self, group: str, offset: int = 0, limit: int = 20) -> list[tuple[str, list[int]]]:
        """A page of a duplicates group's clusters: (the shared value, the ids)."""
        if group == "dup_name":
            return [("", c) for c in self.similar()[offset : offset + limit]]
        what = group[4:]
        k, keys = self.keyed(what), self.dup_keys(what)
        assert k is not None and keys is not None
        page = [r[0] for r in self.ctx.session.execute(
            keys.order_by(k.c.key).offset(offset).limit(limit)
        )]  # fmt: skip
        if not page:
            return []
        rows = self.ctx.session.execute(
            sa.select(k.c.key, k.c.id).where(k.c.key.in_(page)).distinct().order_by(k.c.key, k.c.id)
        ).all()
        out: dict[str, list[int]] = {key: [] for key in page}
        for key, ident in rows:
            out[key].append(ident)
        return list(out.items())

    def similar(self) -> list[list[int]]:
        """Clusters of records with similar names (see the module's doc), each
        sorted, ordered by their first id; computed once per Queries."""
        if self._similar is None:
            if not self.s.name:
                self._similar = []
            else:
                col = self._col(self.s.name)
                rows = self.ctx.session.execute(
                    sa.select(self.table.c.id, col).where(self.where, _filled(col))
                    .execution_options(yield_per=20_000)
                )  # fmt: skip
                self._similar = similar_clusters(rows, self.s.similarity, self.s.block)
        return self._similar


def _days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


# --- similar names ------------------------------------------------------------------------


def normalize(name: str) -> list[str]:
    """A name's words for comparing: lower case, ё as е, Latin look-alikes
    in Cyrillic words as Cyrillic, without quotes, punctuation and legal
    forms (ООО, ИП, LLC, "общество с ограниченной ответственностью")."""
    text = unicodedata.normalize("NFKC", name).casefold().replace("ё", "е")
    for phrase in LEGAL_PHRASES:
        text = text.replace(phrase, " ")
    words = []
    for w in _WORD.findall(text):
        if w in LEGAL_FORMS:
            continue
        if _CYRILLIC.search(w):
            w = w.translate(LOOKALIKES)
        words.append(w)
    return words


def blocks_of(words: Sequence[str]) -> set[str]:
    """The blocks a name goes into: the first four letters of its two
    longest words (of three letters or more); a name of short words only
    goes by all of them."""
    long = sorted((w for w in words if len(w) >= 3 and not w.isdigit()), key=lambda w: (-len(w), w))
    if not long:
        return {" ".join(sorted(words))} if words else set()
    return {w[:4] for w in long[:2]}


def similar_clusters(rows: Any, similarity: int, block: int) -> list[list[int]]:
    """Clusters (sorted ids, ordered by the first) of the (id, name) rows
    whose names are similar, comparing within blocks only. The garbage
    collector is paused meanwhile: the pass makes millions of small objects
    that live until it ends, and each collection would walk them all again."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return _similar_clusters(rows, similarity, block)
    finally:
        if paused:
            gc.enable()


def _similar_clusters(rows: Any, similarity: int, block: int) -> list[list[int]]:
    ids: list[int] = []
    texts: list[str] = []
    digits: list[str] = []
    blocks: dict[str, list[int]] = {}
    for ident, name in rows:
        words = normalize(str(name))
        if not words:
            continue
        i = len(ids)
        ids.append(ident)
        texts.append(" ".join(sorted(words)))
        digits.append(" ".join(sorted(w for w in words if w.isdigit())))
        for b in blocks_of(words):
            blocks.setdefault(b, []).append(i)
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for members in blocks.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda i: texts[i])
        window = len(members) if len(members) <= block else block
        choices = [texts[i] for i in members]
        for pos, i in enumerate(members):
            upto = min(len(members), pos + window)
            if upto <= pos + 1:
                continue
            found = process.extract(
                texts[i], choices[pos + 1 : upto], scorer=fuzz.ratio, processor=None,
                score_cutoff=similarity, limit=None,
            )  # fmt: skip
            for hit in found:
                j = members[pos + 1 + int(hit[2])]
                if digits[i] == digits[j]:
                    ri, rj = root(i), root(j)
                    if ri != rj:
                        parent[max(ri, rj)] = min(ri, rj)
    clusters: dict[int, list[int]] = {}
    for i in range(len(ids)):
        clusters.setdefault(root(i), []).append(ids[i])
    out = [sorted(c) for c in clusters.values() if len(c) > 1]
    return sorted(out, key=lambda c: c[0])


# --- the kind -----------------------------------------------------------------------------


def _loc(report: Report, *keys: str) -> Loc:
    from engine.yamlload import LMap

    node: Any = report.options
    loc = report.loc
    for key in keys:
        if not isinstance(node, LMap) or key not in node.value_locs:
            return loc
        loc, node = node.value_loc(key), node.get(key)
    return loc


def _field_problems(
    registry: Registry, report: Report, d: DocType, key: str, value: Any, kinds: Sequence[str],
    path: tuple[str, ...] = (),
) -> Iterator[Problem]:  # fmt: skip
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    where = _loc(report, *(path or (key,)))
    if names is None:
        yield Problem(where, f"the report `{report.name}`, `{key}`: it must name a field or fields")
        return
    for n in names:
        f = d.fields.get(str(n))
        if f is None or not f.stored:
            yield Problem(
                where, f"the report `{report.name}`, `{key}`: {d.name} has no field `{n}`"
            )
        elif f.type not in kinds:
            yield Problem(
                where,
                f"the report `{report.name}`, `{key}`: `{n}` is of type {f.type}, "
                f"not {' or '.join(kinds)}",
            )


@kind
class Quality(Kind):
    """``type: quality``: the client base's problems, a row per group."""

    name = "quality"
    parameters: ClassVar[Mapping[str, Any]] = {
        "days": lazy_gettext("No activity for, days"),
        "similarity": lazy_gettext("Name similarity"),
    }
    options: ClassVar[Mapping[str, str]] = {
        "name": "the field of names compared for similar names (default `name`)",
        "inn": "the taxpayer-number field: duplicates and check digits (default: the `inn` field)",
        "phones": "the phone fields compared across for duplicates and checked (default: all)",
        "emails": "the email fields compared (in any case) and checked (default: all)",
        "contacts": "{document, ref, phones, emails}: the contact persons' phones and emails "
        "count as the customer's",
        "days": "no activity for this many days (default 180; 0: not checked)",
        "activity": "the types whose records about the customer are activity "
        "(default: every type with a ref to it)",
        "similarity": "the least rapidfuzz ratio (50-100) of two similar names (default 85)",
        "block": "the largest block of names compared pair by pair (default 100)",
    }

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        d = registry.documents.get(report.document)
        if d is None:
            return
        o = report.options
        for key, kinds in (("name", ("string", "text")), ("inn", ("inn", "string")),
                           ("phones", ("phone",)), ("emails", ("email",))):  # fmt: skip
            if key in o:
                yield from _field_problems(registry, report, d, key, o[key], kinds)
        spec = o.get("contacts")
        if spec is not None:
            cd = (
                registry.documents.get(str(spec.get("document")))
                if isinstance(spec, Mapping)
                else None
            )
            if cd is None:
                yield Problem(
                    _loc(report, "contacts"),
                    f"the report `{report.name}`, `contacts`: it must name a `document` "
                    f"with a `ref` to {d.name}",
                )
            else:
                ref = cd.fields.get(str(spec.get("ref")))
                if ref is None or ref.type != "ref" or ref.to != d.name:
                    yield Problem(
                        _loc(report, "contacts", "ref"),
                        f"the report `{report.name}`, `contacts`: `ref` must name a ref of "
                        f"{cd.name} to {d.name}",
                    )
                for key, kinds in (("phones", ("phone",)), ("emails", ("email",))):
                    if key in spec:
                        yield from _field_problems(
                            registry, report, cd, f"contacts.{key}", spec[key], kinds,
                            ("contacts", key),
                        )  # fmt: skip
                for key in spec:
                    if key not in ("document", "ref", "phones", "emails"):
                        yield Problem(
                            _loc(report, "contacts", key),
                            f"the report `{report.name}`, `contacts`: unknown key `{key}`; "
                            "keys are document, ref, phones, emails",
                        )
        for key in _names(o.get("activity")):
            a = registry.documents.get(key)
            if a is None or not any(f.type == "ref" and f.to == d.name for f in a.fields.values()):
                yield Problem(
                    _loc(report, "activity"),
                    f"the report `{report.name}`, `activity`: `{key}` is no type with a ref "
                    f"to {d.name}",
                )
        for key, low, high in (("days", 0, 36_500), ("similarity", 50, 100), ("block", 10, 10_000)):
            if key in o:
                value = o[key]
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int)
                    or not low <= value <= high
                ):
                    yield Problem(
                        _loc(report, key),
                        f"the report `{report.name}`, `{key}`: it must be a whole number "
                        f"from {low} to {high}",
                    )

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        q = Queries(ctx, report, params)
        rows: list[dict[str, Any]] = []
        drill: dict[tuple[int, str], str] = {}
        for i, g in enumerate(available(q.s)):
            rows.append({
                "problem": str(g.label),
                "records": q.count(g.key),
                "clusters": q.cluster_count(g.key) if g.duplicates else None,
            })  # fmt: skip
            drill[(i, "records")] = g.key
        notes = []
        if BOUNCES not in ctx.registry.documents:
            notes.append(gettext("Bounced addresses are not checked: the mail plugin is off."))
        chart = Chart(
            "bar",
            [r["problem"] for r in rows],
            [Series(gettext("Records"), [float(r["records"]) for r in rows])],
            links=[drill[(i, "records")] for i in range(len(rows))],
        )
        return Result(
            [
                Column("problem", gettext("Problem found")),
                Column("records", ctx.registry.documents[report.document].label.get(ctx.registry.locale), "count"),
                Column("clusters", gettext("Groups of duplicates"), "count"),
            ],
            rows, None, chart, drill, notes,
        )  # fmt: skip

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        return report.document, Queries(ctx, report, params).ids(cell)
