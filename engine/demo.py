"""A demo company with realistic Russian-language data, for `crm demo`.

Everything goes through the documents service, so the demo data obeys the
same rules as data entered by hand (valid INNs and phones, computed totals,
numbering, history rows, ref constraints). It is seeded: every run builds the
same company, counted from the engine clock's today on the company's calendar:
a year of history (won and lost deals, done interactions, tasks done on time
and late, orders) and the next weeks' plans, in working hours.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from engine import clock
from engine.documents import Documents
from engine.fieldtypes import INN_WEIGHTS

COMPANY_WORDS = (
    "Ромашка", "Вектор", "Гранит", "Альфа", "Сибирь", "Волга", "Восток", "Меридиан", "Прогресс",
    "Спектр", "Орион", "Феникс", "Дельта", "Эталон", "Кристалл", "Радуга", "Заря", "Олимп", "Каскад",
    "Северстрой", "Агрокомплекс", "Техносфера", "Промснаб", "Стройресурс", "Интерторг",
)  # fmt: skip
COMPANY_SUFFIX = (
    "Трейд",
    "Групп",
    "Снаб",
    "Маркет",
    "Опт",
    "Сервис",
    "Логистик",
    "Холдинг",
    "Плюс",
    "Центр",
)
LEGAL_FORMS = ("ООО", "ООО", "ООО", "АО", "ПАО")
SURNAMES_M = ("Иванов", "Петров", "Смирнов", "Кузнецов", "Попов", "Соколов", "Лебедев", "Козлов", "Новиков",
              "Морозов", "Волков", "Зайцев", "Павлов", "Семёнов", "Голубев")  # fmt: skip
NAMES_M = ("Иван", "Сергей", "Алексей", "Дмитрий", "Павел", "Андрей", "Михаил", "Николай")
NAMES_F = ("Анна", "Мария", "Елена", "Ольга", "Татьяна", "Наталья", "Ирина", "Светлана")
POSITIONS = ("Генеральный директор", "Коммерческий директор", "Менеджер по закупкам", "Главный бухгалтер",
             "Руководитель отдела снабжения", "Директор по развитию")  # fmt: skip
CITIES = (("Москва", "495"), ("Москва", "499"), ("Санкт-Петербург", "812"), ("Новосибирск", "383"),
          ("Екатеринбург", "343"), ("Казань", "843"), ("Нижний Новгород", "831"), ("Краснодар", "861"))  # fmt: skip
STREETS = (
    "ул. Ленина",
    "пр. Мира",
    "ул. Садовая",
    "Невский пр.",
    "ул. Гагарина",
    "ул. Промышленная",
)
PRODUCTS = (("Бумага офисная А4", 320), ("Картридж лазерный", 4500), ("Кресло офисное", 8900),
            ("Стол письменный", 12500), ("Ноутбук 15\"", 68000), ("Монитор 27\"", 23000),
            ("Чай чёрный, ящик", 2100), ("Кофе в зёрнах, 1 кг", 1800), ("Вода питьевая, 19 л", 350),
            ("Шкаф архивный", 15400))  # fmt: skip
#: a customer's needs: the subject of an Interest, and what its orders are made of
NEEDS = (
    ("Офисная мебель для нового офиса", ("Кресло офисное", "Стол письменный", "Шкаф архивный")),
    ("Компьютеры для отдела", ("Ноутбук 15\"", "Монитор 27\"")),
    ("Расходные материалы на год", ("Бумага офисная А4", "Картридж лазерный")),
    ("Кофе-поинт для офиса", ("Чай чёрный, ящик", "Кофе в зёрнах, 1 кг", "Вода питьевая, 19 л")),
    ("Замена оргтехники", ("Картридж лазерный", "Монитор 27\"")),
    ("Оснащение переговорной", ("Стол письменный", "Кресло офисное", "Монитор 27\"")),
)  # fmt: skip
#: what people do of each kind: (subject, results when done, minutes)
KINDS = {
    "call": (("Уточнить потребность", "Договориться о встрече", "Звонок по оплате счёта",
              "Напомнить о коммерческом предложении", "Обсудить условия поставки"),
             ("Клиент подтвердил интерес, ждёт КП", "Договорились о встрече", "Оплату обещали до пятницы",
              "Не дозвонились, перезвонить", "Согласовали сроки поставки"), (15, 15, 30)),
    "meeting": (("Встреча в офисе клиента", "Презентация каталога", "Переговоры о скидке",
                 "Подписание договора"),
                ("Показали образцы, клиент выбирает", "Согласовали объём и скидку 5%",
                 "Договор подписан", "Нужна повторная встреча с директором"), (60, 90)),
    "email": (("Отправить коммерческое предложение", "Выслать договор на согласование",
               "Отправить счёт на оплату", "Выслать прайс-лист"),
              ("КП отправлено", "Договор отправлен, ждём правки", "Счёт отправлен", "Прайс-лист отправлен"),
              (15,)),
    "sms": (("Напомнить о встрече", "Уведомить об отгрузке"),
            ("Доставлено", "Клиент подтвердил"), (5,)),
}  # fmt: skip
KIND_WEIGHTS = {"call": 5, "meeting": 2, "email": 3, "sms": 1}
TASKS = ("Подготовить КП для {customer}", "Перезвонить {customer}", "Выставить счёт {customer}",
         "Согласовать договор с {customer}", "Собрать требования {customer}")  # fmt: skip
LOSS_REASONS = (
    "Дорого",
    "Выбрали конкурента",
    "Нет бюджета",
    "Проект отложен",
    "Не устроили сроки",
)
TRANSLIT = str.maketrans(
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюя", "abvgdeejziiklmnoprstufhccss_y_eua"
)  # fmt: skip

DEMO_USERS = (
    # username, first, last, role, department index
    ("manager", "Анна", "Соколова", "manager", 0),
    ("ivanov", "Иван", "Иванов", "manager", 0),
    ("petrova", "Мария", "Петрова", "manager", 1),
    ("head", "Олег", "Смирнов", "sales_head", 0),
    ("operator", "Елена", "Кузнецова", "operator", 1),
    ("marketer", "Ольга", "Морозова", "marketer", 0),
    ("crmadmin", "Павел", "Волков", "administrator", 0),
)
DEPARTMENTS = ("Отдел продаж Москва", "Отдел продаж Санкт-Петербург")
PASSWORD = "demo"  # noqa: S105 - the demo's published password, printed at start


def valid_inn(rng: random.Random, length: int = 10) -> str:
    """A taxpayer number with correct check digits."""
    digits = [rng.randint(1, 9)] + [
        rng.randint(0, 9) for _ in range(length - 1 - len(INN_WEIGHTS[length]))
    ]
    for weights in INN_WEIGHTS[length]:
        digits.append(sum(w * d for w, d in zip(weights, digits, strict=False)) % 11 % 10)
    return "".join(map(str, digits))


def phone(rng: random.Random, code: str) -> str:
    return f"+7 ({code}) {rng.randint(200, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"


def mobile(rng: random.Random) -> str:
    return f"+7 9{rng.randint(10, 99)} {rng.randint(200, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"


def latin(text: str) -> str:
    return "".join(ch for ch in text.lower().translate(TRANSLIT) if ch.isalnum())


@dataclass
class Sizes:
    customers: int = 200
    deals: int = 500
    interests: int = 150
    orders: int = 200
    past_interactions: int = 300
    planned_interactions: int = 250
    tasks: int = 240


@dataclass
class Demo:
    """Fills a migrated, empty database of the base configuration."""

    models: Any
    session: Any
    users: dict[str, int]
    now: dt.datetime = field(default_factory=lambda: clock.now().replace(microsecond=0))
    rng: random.Random = field(default_factory=lambda: random.Random(2026))
    #: the plugin manager: with it, saves run the plugins' hooks as in the app
    #: (a plugin may react to the typical deals and give their managers tasks)
    pm: Any = None

    def docs(self, user: str, at: dt.datetime | None = None) -> Documents:
        """The documents service of ``user`` at the moment ``at``, for one
        call right away: one service per user, whose clock the demo sets (its
        per-type caches then serve the whole build)."""
        self._moment = at or self.now
        service = self._services.get(user)
        if service is None:
            service = self._services[user] = Documents(
                self.models, self.session, self.users[user], ["Admin"], self.pm,
                now=lambda: self._moment, username=user, trusted=True,
            )  # fmt: skip
        return service

    def managers(self) -> list[str]:
        return [u[0] for u in DEMO_USERS if u[3] == "manager"]

    def __post_init__(self) -> None:
        self._services: dict[str, Documents] = {}
        self._moment = self.now
        try:
            self.tz: dt.tzinfo = ZoneInfo(
                str(self.models.registry.settings.get("timezone") or "UTC")
            )
        except (ZoneInfoNotFoundError, ValueError):
            self.tz = dt.UTC
        #: the company's today: every date of the demo is counted from it
        self.today = clock.today(self.tz)

    # -- the company's calendar ------------------------------------------------------

    def day(self, offset: int) -> dt.date:
        """The working day ``offset`` days from today: a Saturday is the Friday
        before, a Sunday the Monday after."""
        day = self.today + dt.timedelta(days=offset)
        return day + dt.timedelta(days={5: -1, 6: 1}.get(day.weekday(), 0))

    def at(self, day: dt.date, hour: int | None = None) -> dt.datetime:
        """A moment of the working day (9:00–18:00 on the company's clock), in UTC."""
        hour = self.rng.randint(9, 17) if hour is None else hour
        local = dt.datetime.combine(day, dt.time(hour, self.rng.choice([0, 15, 30, 45])), self.tz)
        return local.astimezone(dt.UTC)

    def ago(self, days_max: int, days_min: int = 1) -> dt.datetime:
        """A working moment between ``days_min`` and ``days_max`` days back."""
        return min(self.now, self.at(self.day(-self.rng.randint(days_min, days_max))))

    def later(self, start: dt.datetime, days_min: int, days_max: int) -> dt.datetime:
        """A working moment some days after ``start``, never after now."""
        local = start.astimezone(self.tz).date()
        offset = (local - self.today).days + self.rng.randint(days_min, days_max)
        return min(self.now, max(start, self.at(self.day(offset))))

    # -- the company ----------------------------------------------------------------

    def fill(self, sizes: Sizes | None = None) -> dict[str, int]:
        # every save flushes its record; the moves of states made since are
        # flushed with the next one, not before each query of the next plan
        with self.session.no_autoflush:
            counts = self._fill(sizes or Sizes())
        self.session.flush()
        return counts

    def _fill(self, sizes: Sizes) -> dict[str, int]:
        rng = self.rng
        counts: dict[str, int] = {}
        departments = [
            self.docs("crmadmin").create("Department", {"name": name}) for name in DEPARTMENTS
        ]
        users = self.models.table("User")
        for username, _first, _last, _role, dep in DEMO_USERS:
            self.session.execute(
                users.update().where(users.c.id == self.users[username])
                .values(department_id=departments[dep].id, extension=str(100 + self.users[username]))
            )  # fmt: skip
        customers = []
        names = rng.sample(
            [
                f"{form} «{w} {s}»"
                for form in LEGAL_FORMS[2:]
                for w in COMPANY_WORDS
                for s in COMPANY_SUFFIX
            ],
            sizes.customers,
        )
        for i in range(sizes.customers):
            city, code = rng.choice(CITIES)
            person = i % 10 == 9
            if person:
                name = f"ИП {rng.choice(SURNAMES_M)} {rng.choice(NAMES_M)[0]}.{rng.choice(NAMES_M)[0]}."
            else:
                name = names[i]
            manager = rng.choice(self.managers())
            values = {
                "name": name,
                "kind": "person" if person else "company",
                "inn": valid_inn(rng, 12 if person else 10),
                "phone": phone(rng, code),
                "email": f"info{i}@{latin(rng.choice(COMPANY_WORDS))}.example.ru",
                "address": f"г. {city}, {rng.choice(STREETS)}, д. {rng.randint(1, 120)}",
                "segment": rng.choice(["A", "B", "B", "C", "C", "C"]),
                "source": rng.choice(["website", "referral", "exhibition", "cold_call", "other"]),
                "manager": self.users[manager],
            }
            # most clients are a year old or more; a few came this quarter
            since = self.ago(90) if i % 8 == 7 else self.ago(720, 380)
            customers.append(self.docs(manager, since).create("Customer", values))
        counts["Customer"] = len(customers)
        contacts: dict[int, list[int]] = {}
        for c in customers:
            for _ in range(rng.choice((1, 1, 2))):
                female = rng.random() < 0.5
                surname = rng.choice(SURNAMES_M) + ("а" if female else "")
                first = rng.choice(NAMES_F if female else NAMES_M)
                person = self.docs("crmadmin", c.created_at).create("ContactPerson", {
                    "customer": c.id, "name": f"{surname} {first}", "position": rng.choice(POSITIONS),
                    "phone": mobile(rng), "email": f"{latin(first)}.{latin(surname)}{c.id}@example.ru",
                })  # fmt: skip
                contacts.setdefault(c.id, []).append(person.id)
        counts["ContactPerson"] = sum(len(v) for v in contacts.values())
        interests: dict[int, list[Any]] = {}
        for _ in range(sizes.interests):
            c = rng.choice(customers)
            owner = self._username(c.manager_id)
            taken = {x.subject for x in interests.get(c.id, [])}
            subject = rng.choice([n for n, _ in NEEDS if n not in taken] or [NEEDS[0][0]])
            interest = self.docs(owner, max(c.created_at, self.ago(365, 20))).create("Interest", {
                "subject": subject, "customer": c.id,
                "amount": Decimal(rng.randint(5, 500) * 1000), "manager": c.manager_id,
            })  # fmt: skip
            interests.setdefault(c.id, []).append(interest)
        counts["Interest"] = sum(len(v) for v in interests.values())
        deals = self._deals(customers, interests, sizes.deals)
        counts["Deal"] = len(deals)
        self._interests(interests, deals)
        self._interactions(customers, interests, contacts, sizes)
        counts["Interaction"] = sizes.past_interactions + sizes.planned_interactions
        self._orders(customers, interests, deals, sizes.orders)
        counts["CustomerOrder"] = sizes.orders + self._regular_orders(customers)
        if "Task" in self.models.registry.documents:
            counts["Task"] = self._tasks(deals, sizes.tasks)
        self._plans(departments)
        if "EmailMessage" in self.models.registry.documents:
            counts |= DemoMail(self).fill(customers, contacts, interests, deals)
        if "Call" in self.models.registry.documents:
            counts |= DemoTelephony(self).fill(customers, contacts)
        counts |= self._classify()
        counts["Customer"] += self._twins(customers[1:3])
        return counts

    def _twins(self, originals: list[Any]) -> int:
        """Clients entered a second time by another manager, as happens: the
        same phone and email under a name written another way, without the
        INN. The quality check of the base finds them (same phone, same email,
        similar names), ready to merge. Made last, with no random draw, so the
        rest of the demo is as without them."""
        for original in originals:
            other = next(u for u in self.managers() if self.users[u] != original.manager_id)
            name = original.name.replace("«", "").replace("»", "")
            self.docs(other, self.now - dt.timedelta(days=20)).create("Customer", {
                "name": name, "kind": original.kind, "phone": original.phone,
                "email": original.email, "source": "cold_call", "manager": self.users[other],
            })  # fmt: skip
        return len(originals)

    def _classify(self) -> dict[str, int]:
        """The night's ABC/XYZ classification, run once now: the customers
        have their classes, the matrix report its numbers, the `vip` segment
        its members and each customer card its first history row."""
        from engine.reports.abc_xyz import HISTORY, classify, storing

        self.session.flush()
        changed = 0
        for p in storing(self.models.registry):
            changed += classify(self.session, self.models, p, self.now)["changed"]
        return {HISTORY: changed} if changed else {}

    def _username(self, user_id: int) -> str:
        return next(name for name, uid in self.users.items() if uid == user_id)

    def _walk(
        self,
        obj: Any,
        doctype: str,
        status_field: str,
        path: list[str],
        user: str,
        until: dt.datetime | None = None,
    ) -> None:
        """Move a record along states as if over the past weeks, with history
        rows; the last move at ``until`` when given."""
        d = self.models.registry.documents[doctype]
        moves = [t for t in path if t != getattr(obj, status_field)]
        at = obj.created_at
        for n, target in enumerate(moves):
            source = getattr(obj, status_field)
            if until is not None and n == len(moves) - 1:
                at = max(at, min(self.now, until))
            else:
                at = self.later(at, 1, 10)
            setattr(obj, status_field, target)
            obj.updated_at, obj.updated_by_id = at, self.users[user]
            self.docs(user, at).add_history(d, obj, source, target)

    def _deals(
        self, customers: list[Any], interests: dict[int, list[Any]], count: int
    ) -> list[Any]:
        """A year of deals: the old ones mostly won or lost, the recent ones on their way."""
        rng = self.rng
        order = ["qualification", "proposal", "contract"]
        probability = {"new": 10, "qualification": 25, "proposal": 50, "contract": 75}
        deals = []
        for _ in range(count):
            c = rng.choice(customers)
            owner = self._username(c.manager_id)
            kind = rng.choices(["typical", "manual", "simple"], weights=[3, 9, 5])[0]
            # a typical sale's stages may be moved by a plugin (a route map
            # with its task open): those deals are recent, so that they stay
            # where the plugin put them
            mine = interests.get(c.id) or []
            interest = rng.choice(mine) if mine and rng.random() < 0.8 else None
            created = max(c.created_at, self.ago(4 if kind == "typical" else 365))
            if interest is not None:  # the need came first
                created = max(created, self.later(interest.created_at, 0, 5))
            age = (self.now - created).days
            closing = age > 45 and rng.random() < 0.8
            if closing:
                fate = "won" if rng.random() < 0.55 else "lost"
                depth = 3 if fate == "won" else rng.randint(0, 3)
                path = [*order[:depth], fate]
                closed = self.later(created, 10, 45)
                planned = closed.astimezone(self.tz).date()
            else:
                fate = ""
                path = order[: rng.choices(range(4), weights=[20, 30, 30, 20])[0]]
                closed = None
                planned = self.day(rng.randint(5, 90))
            stage = path[-1] if path else "new"
            amount = (
                interest.amount if interest is not None else Decimal(rng.randint(10, 3000) * 1000)
            )
            deal = self.docs(owner, created).create("Deal", {
                "customer": c.id, "kind": kind, "amount": amount,
                "probability": 100 if fate == "won" else 0 if fate == "lost" else probability[stage],
                "manager": c.manager_id,
                "source": rng.choice(["website", "referral", "exhibition", "cold_call", "other"]),
                "planned_close": planned, "interest": interest.id if interest is not None else None,
            })  # fmt: skip
            if fate == "lost":
                deal.loss_reason = rng.choice(LOSS_REASONS)
            if kind != "typical":
                self._walk(deal, "Deal", "stage", path, owner, until=closed)
            deals.append(deal)
        return deals

    def _interests(self, interests: dict[int, list[Any]], deals: list[Any]) -> None:
        """An Interest's stage follows its deals: won with a won deal, lost
        when all were lost, in progress while one is open."""
        stages: dict[int, list[str]] = {}
        for deal in deals:
            if deal.interest_id is not None:
                stages.setdefault(deal.interest_id, []).append(deal.stage)
        for mine in interests.values():
            for interest in mine:
                seen = stages.get(interest.id, [])
                if "won" in seen:
                    path = ["in_progress", "won"]
                elif seen and all(s == "lost" for s in seen):
                    path = ["in_progress", "lost"]
                elif seen or self.rng.random() < 0.5:
                    path = ["in_progress"]
                else:
                    path = []
                self._walk(interest, "Interest", "stage", path, self._username(interest.manager_id))

    def _interaction(
        self, c: Any, interests: dict[int, list[Any]], contacts: dict[int, list[int]]
    ) -> tuple[str, dict[str, Any], tuple[str, ...]]:
        """What a manager does with a client: a kind, a subject of that kind,
        the client's contact and one of the client's Interests."""
        rng = self.rng
        kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
        subjects, results, minutes = KINDS[kind]
        mine = interests.get(c.id) or []
        values = {
            "kind": kind, "subject": rng.choice(subjects), "duration": rng.choice(minutes),
            "customer": c.id, "contact": rng.choice(contacts[c.id]) if c.id in contacts else None,
            "interest": rng.choice(mine).id if mine and rng.random() < 0.7 else None,
            "manager": c.manager_id,
        }  # fmt: skip
        return kind, values, results

    def _interactions(
        self,
        customers: list[Any],
        interests: dict[int, list[Any]],
        contacts: dict[int, list[int]],
        sizes: Sizes,
    ) -> None:
        rng = self.rng
        by_id = {x.id: x for mine in interests.values() for x in mine}
        for i in range(sizes.past_interactions + sizes.planned_interactions):
            planned = i >= sizes.past_interactions
            c = rng.choice(customers)
            owner = self._username(c.manager_id)
            _kind, values, results = self._interaction(c, interests, contacts)
            if planned:  # the next four weeks, in working hours
                when = self.at(self.day(rng.randint(0, 28)))
                if when <= self.now:
                    when = self.at(self.day(rng.randint(1, 28)))
                created = max(c.created_at, self.ago(10))
            else:  # a year back, the last month busiest
                when = max(c.created_at, self.ago(30) if i % 5 < 2 else self.ago(365, 31))
                created = max(c.created_at, when - dt.timedelta(days=rng.randint(0, 7)))
            need = by_id.get(values["interest"])
            if need is not None:  # planned after the need was known
                when = max(when, self.later(need.created_at, 0, 10)) if not planned else when
                created = max(created, need.created_at)
            obj = self.docs(owner, created).create("Interaction", {**values, "planned_at": when})
            if planned:
                continue
            if i % 25 == 0:
                continue  # a few left planned past their time: what a head of sales chases
            done = rng.random() < 0.88
            if done:
                obj.result = rng.choice(results)
            finished = when + dt.timedelta(minutes=int(values["duration"] or 0))
            self._walk(obj, "Interaction", "status", ["done" if done else "cancelled"], owner,
                       until=finished)  # fmt: skip

    def _orders(
        self,
        customers: list[Any],
        interests: dict[int, list[Any]],
        deals: list[Any],
        count: int,
    ) -> None:
        """Orders of the year: most close a won deal (its customer, Interest,
        the products of that need), the rest are repeat orders."""
        rng = self.rng
        won = [d for d in deals if d.stage == "won"]
        rng.shuffle(won)
        by_name = dict(PRODUCTS)
        for i in range(count):
            deal = won[i] if i < len(won) and i % 4 != 3 else None
            if deal is not None:
                c = next(x for x in customers if x.id == deal.customer_id)
                interest = next(
                    (x for x in interests.get(c.id, []) if x.id == deal.interest_id), None
                )
                start = deal.updated_at or deal.created_at
            else:
                c = rng.choice(customers)
                mine = interests.get(c.id) or []
                interest = rng.choice(mine) if mine and rng.random() < 0.5 else None
                start = max(c.created_at, self.ago(365))
                if interest is not None:
                    start = max(start, interest.created_at)
            owner = self._username(c.manager_id)
            at = self.later(start, 0, 5)
            need = next(
                (n for n in NEEDS if interest is not None and n[0] == interest.subject), None
            )
            names = list(need[1]) if need else [name for name, _ in PRODUCTS]
            lines = [
                {
                    "product": name,
                    "qty": Decimal(rng.randint(1, 40)),
                    "price": Decimal(by_name[name]),
                }
                for name in rng.sample(names, rng.randint(1, min(3, len(names))))
            ]
            order = self.docs(owner, at).create("CustomerOrder", {
                "date": at.astimezone(self.tz).date(), "customer": c.id, "manager": c.manager_id,
                "lines": lines, "deal": deal.id if deal is not None else None,
                "interest": interest.id if interest is not None else None,
            })  # fmt: skip
            age = (self.now - at).days
            if age > 30:
                path = rng.choice([["confirmed", "shipped", "closed"]] * 5 + [["cancelled"]])
            elif age > 7:
                path = rng.choice(
                    [["confirmed"], ["confirmed", "shipped"], ["confirmed", "shipped", "closed"]]
                )
            else:
                path = rng.choice([[], ["confirmed"]])
            self._walk(order, "CustomerOrder", "status", path, owner)

    def _regular_orders(self, customers: list[Any]) -> int:
        """Regular clients: one customer in fifteen orders office supplies every
        month of the year, some in steady amounts, some less so, so that the
        ABC/XYZ matrix has its X and Y besides the one-off Z orders."""
        rng = self.rng
        year_ago = self.at(self.day(-370))
        regulars = [c for c in customers if c.created_at < year_ago][3::15]
        made = 0
        supplies = ["Бумага офисная А4", "Картридж лазерный", "Кофе в зёрнах, 1 кг",
                    "Вода питьевая, 19 л", "Чай чёрный, ящик"]  # fmt: skip
        by_name = dict(PRODUCTS)
        for n, c in enumerate(regulars):
            owner = self._username(c.manager_id)
            spread = (0.04, 0.2, 0.45)[n % 3]  # steady, variable, irregular
            base = rng.randint(60, 160)
            for month in range(12, 0, -1):
                day = self.day(-30 * month + rng.randint(1, 20))
                if day >= self.today or day < c.created_at.astimezone(self.tz).date():
                    continue
                qty = max(1, round(base * (1 + rng.uniform(-spread, spread))))
                at = self.at(day)
                order = self.docs(owner, at).create("CustomerOrder", {
                    "date": day, "customer": c.id, "manager": c.manager_id,
                    "lines": [{"product": name, "qty": Decimal(qty), "price": Decimal(by_name[name])}
                              for name in supplies[n % 3 : n % 3 + 2]],
                })  # fmt: skip
                self._walk(
                    order, "CustomerOrder", "status", ["confirmed", "shipped", "closed"], owner
                )
                made += 1
        return made

    def _tasks(self, deals: list[Any], count: int) -> int:
        """A year of the managers' own tasks on their deals: most done on
        time, some late, a few still open past their due time, and the next
        two weeks' work."""
        rng = self.rng
        own = [d for d in deals if d.kind != "typical"]
        customers = self.models.cls("Customer")
        names = dict(self.session.execute(sa.select(customers.id, customers.name)).all())
        made = 0
        for i in range(count):
            deal = rng.choice(own)
            owner = self._username(deal.manager_id)
            upcoming = i % 6 == 5
            if upcoming:
                due = self.at(self.day(rng.randint(1, 14)), 18)
                created = min(self.now, due - dt.timedelta(days=rng.randint(1, 5)))
            else:
                # the last month is busier: its report shows a month's work
                back = self.ago(30, 2) if i % 5 < 2 else self.ago(360, 31)
                due = max(deal.created_at + dt.timedelta(days=2), back)
                due = self.at(due.astimezone(self.tz).date(), 18)
                created = min(self.now, due - dt.timedelta(days=rng.randint(1, 5)))
            task = self.docs(owner, created).create("Task", {
                "title": rng.choice(TASKS).format(customer=names.get(deal.customer_id, "")),
                "assignee": deal.manager_id, "due": due, "doctype": "Deal", "doc_id": deal.id,
                "interest": deal.interest_id,
            })  # fmt: skip
            made += 1
            if upcoming:
                continue
            fate = rng.random()
            if fate < 0.08 and due < self.now:
                task.overdue = True  # still open: the overdue job has marked it
                continue
            late = fate < 0.3
            done_at = (
                due + dt.timedelta(hours=rng.randint(2, 72))
                if late
                else due - dt.timedelta(hours=rng.randint(1, 30))
            )
            done_at = max(created + dt.timedelta(minutes=30), min(self.now, done_at))
            task.done_at = done_at
            self._walk(task, "Task", "status", ["done"], owner, until=done_at)
        return made

    def _plans(self, departments: list[Any]) -> None:
        first = self.now.date().replace(day=1)
        for back in range(-1, 6):
            year, month = first.year, first.month - back
            while month <= 0:
                month, year = month + 12, year - 1
            while month > 12:
                month, year = month - 12, year + 1
            start = dt.date(year, month, 1)
            end = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
            for name in self.managers():
                self.docs("head").create("SalesPlan", {
                    "period_start": start, "period_end": end, "manager": self.users[name],
                    "amount": Decimal(self.rng.randint(20, 60) * 100_000), "count": self.rng.randint(5, 20),
                })  # fmt: skip
            for dep in departments:
                self.docs("head").create("SalesPlan", {
                    "period_start": start, "period_end": end, "department": dep.id,
                    "amount": Decimal(self.rng.randint(80, 200) * 100_000), "count": self.rng.randint(20, 60),
                })  # fmt: skip


# --- mail (when the config turns the mail plugin on) ------------------------------------------

MAIL_DOMAIN = "demo-trade.example.ru"
#: email templates: (name, locale, for type, subject, text)
MAIL_TEMPLATES = (
    ("Коммерческое предложение", "ru", "Customer", "Коммерческое предложение для {{ doc.name }}",
     "Добрый день!\n\nНаправляем коммерческое предложение для {{ doc.name }}. Цены действуют "
     "до конца месяца, доставка по городу бесплатная.\n\nС уважением,\n{{ user.first_name }} "
     "{{ user.last_name }}\nООО «Демо Трейд»"),
    ("Commercial offer", "en", "Customer", "Our offer for {{ doc.name }}",
     "Good afternoon,\n\nplease find our offer for {{ doc.name }} attached. The prices hold until "
     "the end of the month; delivery within the city is free.\n\nKind regards,\n"
     "{{ user.first_name }} {{ user.last_name }}\nDemo Trade LLC"),
    ("Счёт на оплату", "ru", "Deal", "Счёт по сделке {{ doc.number }}",
     "Добрый день!\n\nВо вложении счёт по сделке {{ doc.number }} на сумму {{ doc.amount }} ₽. "
     "Просим оплатить в течение пяти банковских дней.\n\nС уважением,\n{{ user.first_name }} "
     "{{ user.last_name }}"),
    ("Спасибо за заказ", "ru", "Customer", "Спасибо за заказ, {{ doc.name }}!",
     "Добрый день!\n\nБлагодарим за заказ. Менеджер свяжется с вами, чтобы согласовать время "
     "доставки.\n\nООО «Демо Трейд»"),
    ("Приглашение на выставку", "ru", "", "Приглашаем на выставку «Офис-2026»",
     "Добрый день!\n\nПриглашаем {{ doc.name }} на наш стенд на выставке «Офис-2026»: новинки "
     "мебели и оргтехники, специальные цены для участников.\n\nООО «Демо Трейд»"),
    ("Exhibition invitation", "en", "", "Meet us at the Office-2026 fair",
     "Good afternoon,\n\nwe invite {{ doc.name }} to our stand at the Office-2026 fair: new "
     "furniture and office equipment, special prices for visitors.\n\nDemo Trade LLC"),
)  # fmt: skip
#: correspondence with a client: each letter as (out or in, text); the first
#: letter's subject is the thread's, the replies say "Re:"
MAIL_THREADS = (
    ("Коммерческое предложение на офисную мебель", (
        ("out", "Добрый день!\n\nНаправляем коммерческое предложение на кресла и столы для "
                "нового офиса. Цены действуют до конца месяца."),
        ("in", "Спасибо! Есть ли скидка при заказе от 20 рабочих мест?"),
        ("out", "Да: при заказе от 20 мест скидка 5%, доставка и сборка бесплатно."),
        ("in", "Договорились, пришлите, пожалуйста, счёт."),
    )),
    ("Сроки поставки картриджей", (
        ("in", "Добрый день! Когда ждать картриджи по нашему заказу?"),
        ("out", "Добрый день! Отгрузка в четверг, доставка в пятницу до 14:00."),
        ("in", "Отлично, спасибо."),
    )),
    ("Договор поставки на согласование", (
        ("out", "Добрый день!\n\nВысылаем договор поставки на согласование. Ждём ваши правки."),
        ("in", "Юристы просят изменить срок оплаты на 30 дней, остальное согласовано."),
        ("out", "Согласны на 30 дней, высылаем исправленный договор на подпись."),
    )),
    ("Прайс-лист на расходные материалы", (
        ("out", "Добрый день!\n\nВысылаем актуальный прайс-лист на бумагу и картриджи."),
        ("in", "Спасибо, изучим и вернёмся с заявкой на следующей неделе."),
    )),
    ("Кофе-поинт для офиса", (
        ("in", "Здравствуйте! Интересует поставка чая, кофе и воды в офис на 40 человек."),
        ("out", "Добрый день! Подготовим предложение с ежемесячной доставкой, завтра пришлём."),
    )),
    ("Оснащение переговорной", (
        ("out", "Добрый день!\n\nПредлагаем комплект для переговорной: стол, 10 кресел и "
                "монитор 27\"."),
    )),
)  # fmt: skip
#: letters that match no client: the "unsorted" mail a user files by hand
MAIL_UNSORTED = (
    ("Олег Белов <o.belov@mail.example.ru>", "Запрос цены на шкафы",
     "Добрый день! Сколько стоят архивные шкафы при заказе 15 штук? Олег"),
    ("tender@zakupki-center.example.ru", "Приглашение к участию в закупке",
     "Приглашаем принять участие в запросе котировок на поставку канцтоваров."),
)  # fmt: skip


@dataclass
class DemoMail:
    """The demo's mail: mailboxes, templates, correspondence with clients
    in threads (each letter also a done interaction of kind email on the
    client's timeline), two unsorted letters and a finished mailing with its
    recipients and counts. Written as records, as the mail plugin keeps them;
    seeded apart from the rest of the demo, which stays the same with or
    without mail."""

    demo: Demo
    rng: random.Random = field(default_factory=lambda: random.Random(1202))

    def fill(
        self,
        customers: list[Any],
        contacts: dict[int, list[int]],
        interests: dict[int, list[Any]],
        deals: list[Any],
    ) -> dict[str, int]:
        demo = self.demo
        admin = demo.docs("crmadmin")
        settings = demo.models.registry.plugins.get("mail") or {}
        smtp = settings.get("smtp") or {}
        shared = admin.create("EmailAccount", {
            "name": "Отдел продаж", "address": f"sales@{MAIL_DOMAIN}",
            "sender_name": "ООО «Демо Трейд»", "from_config": bool(smtp),
            "smtp_host": smtp.get("host") or "127.0.0.1", "smtp_port": smtp.get("port") or 2525,
            "smtp_security": "none",
        })  # fmt: skip
        admin.create("EmailAccount", {
            "name": "Анна Соколова", "address": f"a.sokolova@{MAIL_DOMAIN}",
            "sender_name": "Анна Соколова", "owner": demo.users["manager"],
            "smtp_host": smtp.get("host") or "127.0.0.1", "smtp_port": smtp.get("port") or 2525,
            "smtp_security": "none",
        })  # fmt: skip
        for name, lang, doctype, subject, body in MAIL_TEMPLATES:
            demo.docs("marketer").create("EmailTemplate", {
                "name": name, "locale": lang, "doctype": doctype or None, "subject": subject,
                "body": body,
            })  # fmt: skip
        people = self._people(contacts)
        letters = self._threads(shared.id, customers, contacts, people, interests, deals)
        letters += self._unsorted(shared.id)
        mailing, recipients = self._mailing(shared.id, customers)
        return {"EmailMessage": letters, "Mailing": mailing, "MailingRecipient": recipients}

    def _people(self, contacts: dict[int, list[int]]) -> dict[int, tuple[str, str]]:
        """Each contact person's (name, address), read in one query."""
        table = self.demo.models.table("ContactPerson")
        ids = [i for mine in contacts.values() for i in mine]
        rows = self.demo.session.execute(
            sa.select(table.c.id, table.c.name, table.c.email).where(table.c.id.in_(ids))
        ).all()
        return {r.id: (r.name, r.email) for r in rows}

    def _threads(
        self,
        account: int,
        customers: list[Any],
        contacts: dict[int, list[int]],
        people: dict[int, tuple[str, str]],
        interests: dict[int, list[Any]],
        deals: list[Any],
    ) -> int:
        demo, rng = self.demo, self.rng
        # Anna's clients first: the `manager` login opens them
        mine = [c for c in customers if c.manager_id == demo.users["manager"] and c.email]
        others = [c for c in customers if c.manager_id != demo.users["manager"] and c.email]
        chosen = rng.sample(mine, min(4, len(mine))) + rng.sample(others, 2)
        made = 0
        for n, (c, (subject, letters)) in enumerate(zip(chosen, MAIL_THREADS, strict=False)):
            owner = demo._username(c.manager_id)
            person_id = next(iter(contacts.get(c.id) or ()), None)
            name, address = people.get(person_id or 0) or (c.name, c.email)
            need = (interests.get(c.id) or [None])[0]
            deal = next((d for d in deals if d.customer_id == c.id), None)
            first_id: int | None = None
            chain: list[str] = []
            at = demo.ago(40, 10)  # a reply a working day or two later: all in the past
            links = {
                "customer": c.id, "doctype": "Customer", "doc_id": c.id,
                "contact": person_id,
                "interest": need.id if need is not None else None,
                "deal": deal.id if deal is not None else None,
            }  # fmt: skip
            domain = address.rpartition("@")[2]
            for k, (direction, text) in enumerate(letters):
                out = direction == "out"
                message_id = (
                    f"<demo.{n}.{k}.{rng.randint(10**6, 10**7)}@{MAIL_DOMAIN if out else domain}>"
                )
                values = {
                    "direction": direction, "status": "sent" if out else "received",
                    "account": account, "user": c.manager_id,
                    "from_address": f"ООО «Демо Трейд» <sales@{MAIL_DOMAIN}>" if out else f"{name} <{address}>",
                    "to": address if out else f"sales@{MAIL_DOMAIN}",
                    "subject": subject if k == 0 else f"Re: {subject}",
                    "text": text, "sent_at": at, "message_id": message_id,
                    "in_reply_to": chain[-1] if chain else None,
                    "references": " ".join(chain) or None,
                    "size": len(text.encode()) + 900, **links,
                }  # fmt: skip
                letter = demo.docs(owner, at).create("EmailMessage", values)
                letter.thread = first_id or letter.id
                first_id = first_id or letter.id
                chain.append(message_id)
                letter.interaction_id = self._interaction(owner, letter, at).id
                letter.updated_at = at
                made += 1
                at = demo.later(at, 1, 2)
        # one letter the client's server refused: its answer shows on the letter
        c = chosen[-1]
        at = demo.ago(5, 2)
        failed = demo.docs(demo._username(c.manager_id), at).create("EmailMessage", {
            "direction": "out", "status": "failed", "account": account, "user": c.manager_id,
            "from_address": f"ООО «Демо Трейд» <sales@{MAIL_DOMAIN}>",
            "to": f"zakupki@{c.email.rpartition('@')[2]}", "subject": "Счёт на оплату",
            "text": "Добрый день! Во вложении счёт на оплату.", "attempts": 1,
            "error": "550 5.1.1 <zakupki@...>: Recipient address rejected: User unknown",
            "message_id": f"<demo.failed.{rng.randint(10**6, 10**7)}@{MAIL_DOMAIN}>",
            "customer": c.id, "doctype": "Customer", "doc_id": c.id,
        })  # fmt: skip
        failed.thread, failed.updated_at = failed.id, at
        return made + 1

    def _interaction(self, owner: str, letter: Any, at: dt.datetime) -> Any:
        """The letter on the client's timeline: a done interaction of kind email."""
        demo = self.demo
        arrow = "→" if letter.direction == "out" else "←"
        who = letter.to if letter.direction == "out" else letter.from_address
        obj = demo.docs(owner, at).create("Interaction", {
            "kind": "email", "subject": letter.subject[:255], "planned_at": at, "duration": 0,
            "customer": letter.customer_id, "contact": letter.contact_id,
            "interest": letter.interest_id, "manager": letter.user_id,
            "result": f"{arrow} {who}: {' '.join(letter.text.split())[:500]}",
        })  # fmt: skip
        demo._walk(obj, "Interaction", "status", ["done"], owner, until=at)
        return obj

    def _unsorted(self, account: int) -> int:
        demo = self.demo
        for n, (sender, subject, text) in enumerate(MAIL_UNSORTED):
            at = demo.ago(3, 1)
            letter = demo.docs("crmadmin", at).create("EmailMessage", {
                "direction": "in", "status": "received", "account": account,
                "from_address": sender, "to": f"sales@{MAIL_DOMAIN}", "subject": subject,
                "text": text, "sent_at": at, "size": len(text.encode()) + 700,
                "message_id": f"<unsorted.{n}.{self.rng.randint(10**6, 10**7)}@mail.example.ru>",
            })  # fmt: skip
            letter.thread, letter.updated_at = letter.id, at
        return len(MAIL_UNSORTED)

    def _mailing(self, account: int, customers: list[Any]) -> tuple[int, int]:
        """A finished mailing to segment A: most letters sent, a few failed,
        bounced or unsubscribed, one address skipped (unsubscribed before)."""
        demo = self.demo
        template = demo.session.execute(
            sa.select(demo.models.table("EmailTemplate").c.id).where(
                demo.models.table("EmailTemplate").c.name == "Приглашение на выставку",
                demo.models.table("EmailTemplate").c.locale == "ru",
            )
        ).scalar_one()
        started = demo.at(demo.day(-12), 10)
        mailing = demo.docs("marketer", started - dt.timedelta(days=2)).create("Mailing", {
            "name": "Приглашение на выставку «Офис-2026»", "account": account,
            "template": template, "doctype": "Customer", "filter": "{segment: A}",
            "address_field": "email", "scheduled_at": started, "owner": demo.users["marketer"],
        })  # fmt: skip
        audience = [c for c in customers if c.segment == "A" and c.email]
        skipped = audience[0].email
        demo.docs("marketer", started - dt.timedelta(days=30)).create(
            "Unsubscribe", {"address": skipped, "reason": "manual"}
        )
        counts = dict.fromkeys(("sent", "failed", "bounced", "unsubscribed", "skipped"), 0)
        for i, c in enumerate(audience):
            at = started + dt.timedelta(seconds=2 * i)
            status = (
                "skipped" if i == 0 else "failed" if i % 13 == 5 else "bounced" if i % 11 == 7
                else "unsubscribed" if i == 9 else "sent"
            )  # fmt: skip
            error = {
                "failed": "421 4.7.0 Too many connections, try again later (8 attempts)",
                "bounced": "550 5.1.1 The email account that you tried to reach does not exist",
            }.get(status)  # fmt: skip
            counts[status] += 1
            demo.docs("marketer", at).create("MailingRecipient", {
                "mailing": mailing.id, "address": c.email, "doctype": "Customer", "doc_id": c.id,
                "status": status, "error": error,
                "sent_at": at if status in ("sent", "bounced", "unsubscribed") else None,
                "message_id": None if status in ("skipped", "failed")
                else f"<mailing.{mailing.id}.{c.id}@{MAIL_DOMAIN}>",
            })  # fmt: skip
            if status == "unsubscribed":
                demo.docs("marketer", at + dt.timedelta(hours=3)).create("Unsubscribe", {
                    "address": c.email, "reason": "one_click", "mailing": mailing.id,
                })  # fmt: skip
            if status == "bounced":
                demo.docs("marketer", at).create("BouncedAddress", {
                    "address": c.email, "hard_bounces": 1, "last_error": error,
                    "last_at": at + dt.timedelta(minutes=5),
                })  # fmt: skip
        finished = started + dt.timedelta(minutes=3)
        mailing.started_at, mailing.finished_at = started, finished
        mailing.total = len(audience)
        for name, value in counts.items():
            setattr(mailing, name, value)
        # scheduled the day it was written, sent at its time, done three minutes later
        d = demo.models.registry.documents["Mailing"]
        moves = (("scheduled", mailing.created_at + dt.timedelta(hours=1)), ("sending", started),
                 ("done", finished))  # fmt: skip
        for target, at in moves:
            source, mailing.status = mailing.status, target
            mailing.updated_at, mailing.updated_by_id = at, demo.users["marketer"]
            demo.docs("marketer", at).add_history(d, mailing, source, target)
        return 1, len(audience)


#: SMS templates: (name, text over the record)
SMS_TEMPLATES = (
    ("Напоминание о встрече", "{{ doc.name }}, напоминаем о встрече завтра. ООО «Демо Трейд», +7 495 120-00-00"),
    ("Заказ отгружен", "Ваш заказ отгружен, доставка завтра до 14:00. ООО «Демо Трейд»"),
    ("Счёт выставлен", "Счёт на оплату отправлен на вашу почту. Вопросы: +7 495 120-00-00. ООО «Демо Трейд»"),
    ("Приглашение на выставку", "Приглашаем на выставку «Офис-2026»: стенд B12, скидки до 15%. ООО «Демо Трейд»"),
)  # fmt: skip
CAMPAIGN_SCRIPT = (
    "Здравствуйте, {{ doc.name }}! Меня зовут {{ user.first_name }}, компания «Демо Трейд».\n"
    "Приглашаем вас на выставку «Офис-2026»: покажем новую офисную мебель и технику, "
    "для участников — скидка до 15%.\nСможете прийти? Сколько человек от вашей компании?"
)
CAMPAIGN_QUESTIONS = (
    {"key": "visit", "question": "Придёте на выставку?", "choices": "Да, Нет, Пока не знаю"},
    {"key": "people", "question": "Сколько человек придёт?", "choices": "1, 2, 3 и больше"},
    {"key": "interest", "question": "Что интересует больше всего?",
     "choices": "Мебель, Компьютеры, Расходные материалы"},
)  # fmt: skip
CAMPAIGN_RESULTS = (
    {"code": "coming", "label": "Придёт", "success": True, "retry": False},
    {"code": "thinking", "label": "Думает, перезвонить", "success": False, "retry": True},
    {"code": "declined", "label": "Отказ", "success": False, "retry": False},
    {"code": "no_answer", "label": "Не ответил", "success": False, "retry": True},
)  # fmt: skip
CAMPAIGN_COMMENTS = ("Попросил прислать приглашение на почту", "Придут с главным инженером",
                     "Интересует мебель для переговорной", "")  # fmt: skip


@dataclass
class DemoTelephony:
    """The demo's telephony: a call log of the last weeks (answered, missed
    and busy; incoming and outgoing; on today's calendar too), made of the
    events an exchange reports (plugins.telephony.api.report), so that calls,
    interactions and call-back tasks come out as in real use; a running
    call campaign with its script, questionnaire, result codes, two
    operators and targets in every state; SMS templates and messages.
    Seeded apart from the rest of the demo."""

    demo: Demo
    rng: random.Random = field(default_factory=lambda: random.Random(1313))
    provider: str = "simulator"

    def __post_init__(self) -> None:
        from plugins.telephony import api

        self.api = api
        demo = self.demo
        # what the exchange reports is written as the engine itself, as a provider's events are
        self.system = Documents(
            demo.models, demo.session, None, ["Admin"], demo.pm,
            now=lambda: demo._moment, username="system", trusted=True,
        )  # fmt: skip
        self.calls = 0

    def fill(self, customers: list[Any], contacts: dict[int, list[int]]) -> dict[str, int]:
        demo = self.demo
        phones = self._phones(customers, contacts)
        extensions = self._extensions()
        self._log(customers, contacts, phones, extensions)
        campaign, targets = self._campaign(customers, phones, extensions)
        templates, messages = self._sms(customers, contacts, phones)
        call = demo.models.table("Call")
        made = demo.session.execute(sa.select(sa.func.count()).select_from(call)).scalar_one()
        return {"Call": made, "Campaign": campaign, "CampaignCall": targets,
                "SmsTemplate": templates, "SmsMessage": messages}  # fmt: skip

    def _phones(self, customers: list[Any], contacts: dict[int, list[int]]) -> dict[Any, str]:
        """("Customer"|"ContactPerson", id) → its phone, read in one query per type."""
        out: dict[Any, str] = {("Customer", c.id): c.phone for c in customers if c.phone}
        table = self.demo.models.table("ContactPerson")
        ids = [i for mine in contacts.values() for i in mine]
        for r in self.demo.session.execute(
            sa.select(table.c.id, table.c.phone).where(table.c.id.in_(ids))
        ):
            if r.phone:
                out[("ContactPerson", r.id)] = r.phone
        return out

    def _extensions(self) -> dict[int, str]:
        users = self.demo.models.table("User")
        rows = self.demo.session.execute(sa.select(users.c.id, users.c.extension)).all()
        return {r.id: r.extension for r in rows if r.extension}

    @staticmethod
    def dialed(e164: str) -> str:
        """A Russian number as an exchange writes it: 84951234567."""
        return "8" + e164[2:] if e164.startswith("+7") else e164

    def call(
        self,
        direction: str,
        number: str,
        extension: str | None,
        start: dt.datetime,
        outcome: str,
        talk: int = 0,
        recording: bool = False,
    ) -> Any:
        """One call as its events: ringing, answered (when it was), hung up."""
        self.calls += 1
        call_id = f"demo-{self.calls:04d}"
        ring = self.rng.randint(4, 25)
        report = self.api.report
        base: dict[str, Any] = {"provider": self.provider, "call_id": call_id}
        first = self.api.Event(**base, kind="ringing", direction=direction, number=self.dialed(number),
                               extension=extension, at=start, event_id=f"{call_id}.1")  # fmt: skip
        self.demo._moment = start
        call = report(first, docs=self.system)
        end = start + dt.timedelta(seconds=ring)
        if outcome == "answered":
            answered = end
            self.demo._moment = answered
            report(self.api.Event(**base, kind="answered", at=answered, event_id=f"{call_id}.2"),
                   docs=self.system)  # fmt: skip
            end = answered + dt.timedelta(seconds=talk)
        self.demo._moment = end
        link = f"https://pbx.demo-trade.example.ru/records/{call_id}.mp3" if recording else None
        report(self.api.Event(**base, kind="hangup", at=end, status=outcome, event_id=f"{call_id}.3",
                              duration=talk if outcome == "answered" else None, recording=link),
               docs=self.system)  # fmt: skip
        return call

    def workday(self, back: int) -> dt.date:
        """The working day ``back`` working days before today (always past)."""
        day = self.demo.today
        while back > 0:
            day -= dt.timedelta(days=1)
            back -= day.weekday() < 5
        return day

    def _moments(self) -> list[dt.datetime]:
        """When the log's calls began: the last three weeks' working days,
        and today's working hours so far."""
        demo, rng = self.demo, self.rng
        moments = []
        for back in range(21, 0, -1):
            day = demo.today - dt.timedelta(days=back)
            if day.weekday() >= 5:
                continue
            for _ in range(rng.choice((1, 2, 2, 3))):
                start = demo.at(day, rng.randint(9, 16)) + dt.timedelta(minutes=rng.randint(0, 12))
                moments.append(start)
        local = demo.now.astimezone(demo.tz)
        if demo.today.weekday() < 5 and local.hour >= 10:
            opening = dt.datetime.combine(demo.today, dt.time(9, 5), demo.tz).astimezone(dt.UTC)
            closing = min(demo.now, dt.datetime.combine(demo.today, dt.time(17, 30), demo.tz))
            span = int((closing - opening).total_seconds()) - 600
            for k in range(4):
                moments.append(opening + dt.timedelta(seconds=span * (k + 1) // 5))
        return sorted(moments)

    def _log(
        self,
        customers: list[Any],
        contacts: dict[int, list[int]],
        phones: dict[Any, str],
        extensions: dict[int, str],
    ) -> None:
        demo, rng = self.demo, self.rng
        # Anna's clients most often: the `manager` login sees its own calls
        mine = [c for c in customers if c.manager_id == demo.users["manager"] and c.phone]
        others = [c for c in customers if c.manager_id != demo.users["manager"] and c.phone]
        operator = extensions.get(demo.users["operator"])
        for n, start in enumerate(self._moments()):
            c = rng.choice(mine if n % 3 else others)
            people = contacts.get(c.id) or []
            if n % 11 == 10:  # a number no client has: the caller card offers to create one
                number = f"+7916{rng.randint(1000000, 9999999)}"
            elif people and n % 2:
                number = phones.get(("ContactPerson", people[0])) or c.phone
            else:
                number = c.phone
            extension = extensions.get(c.manager_id) if n % 5 else operator
            incoming = n % 5 in (0, 2, 3)
            roll = rng.random()
            if incoming:
                outcome = "answered" if roll < 0.7 else "missed"
            else:
                outcome = "answered" if roll < 0.7 else "busy" if roll < 0.85 else "missed"
            talk = rng.randint(40, 600) if outcome == "answered" else 0
            self.call("in" if incoming else "out", number, extension, start, outcome, talk,
                      recording=outcome == "answered")  # fmt: skip

    def _campaign(
        self, customers: list[Any], phones: dict[Any, str], extensions: dict[int, str]
    ) -> tuple[int, int]:
        """A running campaign inviting segment B to the exhibition, with
        targets queued, in work, done (results, answers), to call back and
        not reached."""
        demo, rng = self.demo, self.rng
        operators = (demo.users["operator"], demo.users["manager"])
        created = demo.at(self.workday(7), 10)
        campaign = demo.docs("head", created).create("Campaign", {
            "name": "Обзвон: приглашение на выставку «Офис-2026»", "doctype": "Customer",
            "filter": "{segment: B, phone: {set: true}}", "phone_field": "phone",
            "script": CAMPAIGN_SCRIPT, "questions": [dict(q) for q in CAMPAIGN_QUESTIONS],
            "results": [dict(r) for r in CAMPAIGN_RESULTS],
            "operators": [{"user": u} for u in operators], "max_attempts": 3, "retry_minutes": 120,
            "owner": demo.users["head"],
        })  # fmt: skip
        started = demo.at(self.workday(5), 9)
        audience = [c for c in customers if c.segment == "B" and c.phone][:40]
        counts = dict.fromkeys(("done", "failed", "skipped"), 0)
        for i, c in enumerate(audience):
            status = ("done", "done", "queued", "done", "callback", "queued", "failed", "claimed",
                      "done", "queued")[i % 10]  # fmt: skip
            if status == "claimed" and i > 10:
                status = "queued"  # one in work per operator at a time
            user = operators[i % 2]
            values: dict[str, Any] = {
                "campaign": campaign.id, "doctype": "Customer", "doc_id": c.id, "name": c.name,
                "number": c.phone, "status": status, "customer": c.id,
            }  # fmt: skip
            # five working days of calls, eight an hour-slot apart each day
            at = demo.at(self.workday(5 - i // 8), 9 + i % 8) + dt.timedelta(minutes=i % 7)
            if status != "queued":
                values |= {
                    "operator": user,
                    "claimed_at": at,
                    "attempts": 0 if status == "claimed" else 1,
                }
            if status in ("done", "callback", "failed"):
                outcome = {"done": "answered", "callback": "answered", "failed": "busy"}[status]
                talk = rng.randint(60, 240) if outcome == "answered" else 0
                call = self.call(
                    "out", c.phone, extensions.get(user), at, outcome, talk, recording=talk > 0
                )
                values |= {"call": call.id, "interaction": call.interaction_id}
                ended = at + dt.timedelta(seconds=talk + 30)
                if status == "done":
                    visit = rng.choice(("Да", "Да", "Нет"))
                    code = "coming" if visit == "Да" else "declined"
                    answers = {
                        "visit": visit,
                        "people": rng.choice(("1", "2", "3 и больше")) if visit == "Да" else "",
                        "interest": rng.choice(("Мебель", "Компьютеры")),
                    }
                    values |= {"result": code, "done_at": ended, "comment": rng.choice(CAMPAIGN_COMMENTS) or None,
                               "answers": json.dumps(answers, ensure_ascii=False)}  # fmt: skip
                    counts["done"] += 1
                elif status == "callback":
                    back = demo.at(demo.day(1 + i % 3), 11)
                    values |= {"result": "thinking", "callback_at": back,
                               "comment": "Просили перезвонить после совещания",
                               "answers": json.dumps({"visit": "Пока не знаю"}, ensure_ascii=False)}  # fmt: skip
                else:
                    values |= {"result": "no_answer", "attempts": 3, "done_at": ended}
                    counts["failed"] += 1
            demo.docs(demo._username(user), at).create("CampaignCall", values)
        campaign.started_at, campaign.total = started, len(audience)
        for name, value in counts.items():
            setattr(campaign, name, value)
        demo._walk(campaign, "Campaign", "status", ["running"], "head", until=started)
        return 1, len(audience)

    def _sms(
        self, customers: list[Any], contacts: dict[int, list[int]], phones: dict[Any, str]
    ) -> tuple[int, int]:
        demo = self.demo
        for name, text in SMS_TEMPLATES:
            demo.docs("marketer").create(
                "SmsTemplate", {"name": name, "doctype": "Customer", "text": text}
            )
        mine = [c for c in customers if c.manager_id == demo.users["manager"] and c.phone]
        statuses = ("delivered", "delivered", "sent", "delivered", "failed", "delivered", "sent")
        for n, (c, status) in enumerate(zip(mine, statuses, strict=False)):
            person = next(iter(contacts.get(c.id) or ()), None)
            number = phones.get(("ContactPerson", person)) if person and n % 2 else None
            template = SMS_TEMPLATES[n % len(SMS_TEMPLATES)][1]
            at = demo.ago(10, 1)
            values = {
                "direction": "out", "number": number or c.phone, "status": status,
                "text": template.replace("{{ doc.name }}", c.name), "user": c.manager_id,
                "provider": self.provider, "provider_id": f"demo-sms-{n + 1:03d}",
                "sent_at": at, "attempts": 1, "doctype": "Customer", "doc_id": c.id,
                "customer": c.id, "contact": person if number else None,
                "delivered_at": at + dt.timedelta(seconds=7) if status == "delivered" else None,
                "error": "Абонент недоступен (код 27)" if status == "failed" else None,
            }  # fmt: skip
            demo.docs("manager", at).create("SmsMessage", values)
        return len(SMS_TEMPLATES), min(len(mine), len(statuses))


def mail_sink(registry: Any) -> Any | None:
    """For the demo: a local SMTP server that takes every letter and keeps
    none (the last hundred envelopes in memory), on the host and port of the
    config's mailbox when that is this machine; None when the config sends
    elsewhere or the port is taken. A real server: see the README."""
    smtp = (registry.plugins.get("mail") or {}).get("smtp") or {}
    if str(smtp.get("host")) not in ("127.0.0.1", "localhost") or not smtp.get("port"):
        return None
    from collections import deque

    from aiosmtpd.controller import Controller

    class Sink:
        def __init__(self) -> None:
            self.received: deque[tuple[str, list[str], int]] = deque(maxlen=100)

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            size = len(envelope.content or b"")
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), size))
            return "250 OK: taken by the demo's sink, not delivered"

    controller = Controller(Sink(), hostname=str(smtp["host"]), port=int(smtp["port"]))
    try:
        controller.start()
    except Exception:  # the port is taken: letters wait in the queue
        return None
    return controller


def has_data(models: Any, session: Any) -> bool:
    table = models.table("Customer")
    return session.execute(sa.select(table.c.id).limit(1)).first() is not None
