"""A demo company with realistic Russian-language data, for `crm demo`.

Everything goes through the documents service, so the demo data obeys the
same rules as data entered by hand (valid INNs and phones, computed totals,
numbering, history rows). It is seeded: every run builds the same company.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

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
SUBJECTS = ("Обсудить условия поставки", "Презентация каталога", "Согласовать скидку", "Уточнить потребность",
            "Отправить коммерческое предложение", "Встреча в офисе клиента", "Звонок по оплате",
            "Обсудить новый заказ", "Подписание договора")  # fmt: skip
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
        return Documents(self.models, self.session, self.users[user], ["Admin"], self.pm,
                         now=at or self.now, username=user, trusted=True)  # fmt: skip

    def managers(self) -> list[str]:
        return [u[0] for u in DEMO_USERS if u[3] == "manager"]

    def ago(self, days_max: int) -> dt.datetime:
        return self.now - dt.timedelta(
            days=self.rng.randint(1, days_max), minutes=self.rng.randint(0, 600)
        )

    def fill(self, sizes: Sizes | None = None) -> dict[str, int]:
        sizes = sizes or Sizes()
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
            customers.append(self.docs(manager, self.ago(720)).create("Customer", values))
        counts["Customer"] = len(customers)
        contacts = 0
        for c in customers:
            for _ in range(rng.choice((1, 1, 2))):
                female = rng.random() < 0.5
                surname = rng.choice(SURNAMES_M) + ("а" if female else "")
                first = rng.choice(NAMES_F if female else NAMES_M)
                self.docs("crmadmin").create("ContactPerson", {
                    "customer": c.id, "name": f"{surname} {first}", "position": rng.choice(POSITIONS),
                    "phone": mobile(rng), "email": f"{latin(first)}.{latin(surname)}{c.id}@example.ru",
                })  # fmt: skip
                contacts += 1
        counts["ContactPerson"] = contacts
        interests = []
        for _ in range(sizes.interests):
            c = rng.choice(customers)
            owner = self._username(c.manager_id)
            interest = self.docs(owner, self.ago(180)).create("Interest", {
                "subject": rng.choice(SUBJECTS), "customer": c.id,
                "amount": Decimal(rng.randint(5, 500) * 1000), "manager": c.manager_id,
            })  # fmt: skip
            self._walk(interest, "Interest", "stage", ["in_progress", rng.choice(["in_progress", "won", "lost"])],
                       owner)  # fmt: skip
            interests.append(interest)
        counts["Interest"] = len(interests)
        self._deals(customers, interests, sizes.deals)
        counts["Deal"] = sizes.deals
        self._interactions(customers, interests, sizes)
        counts["Interaction"] = sizes.past_interactions + sizes.planned_interactions
        self._orders(customers, sizes.orders)
        counts["CustomerOrder"] = sizes.orders
        self._plans(departments)
        return counts

    def _username(self, user_id: int) -> str:
        return next(name for name, uid in self.users.items() if uid == user_id)

    def _walk(self, obj: Any, doctype: str, status_field: str, path: list[str], user: str) -> None:
        """Move a record along states as if over the past weeks, with history rows."""
        d = self.models.registry.documents[doctype]
        at = obj.created_at
        for target in path:
            source = getattr(obj, status_field)
            if target == source:
                continue
            at = min(self.now, at + dt.timedelta(days=self.rng.randint(1, 14)))
            setattr(obj, status_field, target)
            self.docs(user, at).add_history(d, obj, source, target)

    def _deals(self, customers: list[Any], interests: list[Any], count: int) -> None:
        rng = self.rng
        order = ["qualification", "proposal", "contract", "won"]
        for i in range(count):
            c = rng.choice(customers)
            owner = self._username(c.manager_id)
            kind = rng.choice(["typical", "manual", "manual", "simple"])
            # a typical sale's stages may be moved by a plugin (a route map
            # with its task open): those deals are recent, so that they stay
            # where the plugin put them
            created = self.ago(4 if kind == "typical" else 365)
            deal = self.docs(owner, created).create("Deal", {
                "customer": c.id, "kind": kind, "amount": Decimal(rng.randint(10, 3000) * 1000),
                "probability": rng.choice([10, 25, 50, 75, 90]), "manager": c.manager_id,
                "source": rng.choice(["website", "referral", "exhibition", "cold_call", "other"]),
                "planned_close": (self.now + dt.timedelta(days=rng.randint(-60, 90))).date(),
                "interest": rng.choice(interests).id if i % 3 == 0 else None,
            })  # fmt: skip
            depth = rng.choices(range(5), weights=[20, 25, 25, 15, 15])[0]
            path = order[:depth]
            if rng.random() < 0.2:
                deal.loss_reason = rng.choice(LOSS_REASONS)
                path.append("lost")
            if kind != "typical":
                self._walk(deal, "Deal", "stage", path, owner)

    def _interactions(self, customers: list[Any], interests: list[Any], sizes: Sizes) -> None:
        rng = self.rng
        for i in range(sizes.past_interactions + sizes.planned_interactions):
            planned = i >= sizes.past_interactions
            c = rng.choice(customers)
            owner = self._username(c.manager_id)
            when = (self.now + dt.timedelta(days=rng.randint(0, 28), hours=rng.randint(1, 9)) if planned
                    else self.ago(120))  # fmt: skip
            when = when.replace(minute=rng.choice([0, 15, 30, 45]), second=0)
            obj = self.docs(owner, min(self.now, when - dt.timedelta(days=3)) if planned else when).create("Interaction", {
                "kind": rng.choice(["call", "call", "meeting", "email", "sms"]), "subject": rng.choice(SUBJECTS),
                "planned_at": when, "duration": rng.choice([15, 30, 60, 90]), "customer": c.id,
                "interest": rng.choice(interests).id if rng.random() < 0.3 else None, "manager": c.manager_id,
            })  # fmt: skip
            if not planned:
                obj.result = rng.choice(
                    ["Договорились о встрече", "Клиент думает", "Отправлено КП", "Нет ответа"]
                )
                self._walk(
                    obj,
                    "Interaction",
                    "status",
                    [rng.choice(["done", "done", "done", "cancelled"])],
                    owner,
                )

    def _orders(self, customers: list[Any], count: int) -> None:
        rng = self.rng
        for _ in range(count):
            c = rng.choice(customers)
            owner = self._username(c.manager_id)
            at = self.ago(365)
            lines = [
                {"product": name, "qty": Decimal(rng.randint(1, 40)), "price": Decimal(price)}
                for name, price in rng.sample(PRODUCTS, rng.randint(1, 4))
            ]
            order = self.docs(owner, at).create("CustomerOrder", {
                "date": at.date(), "customer": c.id, "manager": c.manager_id, "lines": lines,
            })  # fmt: skip
            path = rng.choice([[], ["confirmed"], ["confirmed", "shipped"], ["confirmed", "shipped", "closed"],
                               ["confirmed", "shipped", "closed"], ["cancelled"]])  # fmt: skip
            self._walk(order, "CustomerOrder", "status", path, owner)

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


def has_data(models: Any, session: Any) -> bool:
    table = models.table("Customer")
    return session.execute(sa.select(table.c.id).limit(1)).first() is not None
