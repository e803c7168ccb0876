"""REST APIs generated per document type, under Flask-AppBuilder's
conventions: ``/api/v1/<resource>/`` with list, get, post, put and delete,
plus ``/transition``, ``/history`` and ``/_lookup``; OpenAPI at
``/api/v1/_openapi``.

Every answer is JSON; bad input is a 4xx with a message (and, for field
errors, ``errors`` by field path), never a 500. Another user's record is a
404. Writes go through the documents service and the status engine, so the
API enforces exactly what the forms enforce.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

import sqlalchemy as sa
from flask import Response, current_app, g, jsonify, request
from flask_appbuilder.api import BaseApi, expose
from flask_jwt_extended import current_user as jwt_user
from flask_jwt_extended import verify_jwt_in_request
from flask_login import current_user
from marshmallow import Schema, validate
from marshmallow import fields as mf

from engine import access, lists
from engine import merge as merging
from engine.access import Principal
from engine.documents import ValidationFailed, jsonable
from engine.errors import HandledError
from engine.fieldtypes import MAX_ID
from engine.filters import FilterError
from engine.i18n import gettext
from engine.registry import DocType, Field, State
from engine.web import fetch, formatting, lookup, writes
from engine.web.base import crm, db_session, json_error

MAX_PAGE_SIZE = 100


def api_principal() -> Principal | None:
    """The caller: a browser session, or a JWT from /api/v1/security/login.
    Becomes the request's principal (engine.web.base.principal) for the services."""
    if request.headers.get("Authorization"):
        # a token client is who its token says, never the session beside it:
        # engine.web.base skips the CSRF check for requests that carry one
        try:
            verify_jwt_in_request()
            user = jwt_user
        except sa.exc.OperationalError:
            raise  # the database is down: a 503 (engine.web.base), not "log in first"
        except Exception:  # an invalid, expired or non-JWT token is just "not logged in"
            user = None
    else:
        user = current_user if current_user.is_authenticated else None
    if user is None or not getattr(user, "is_active", False):
        return None
    g.crm_principal = Principal(user.id, user.username, frozenset(r.name for r in user.roles))
    return g.crm_principal


def authorized(action: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """401 without a user, 403 when no role of the user may ``action`` this type at all."""

    def decorate(fn: Callable[..., Response]) -> Callable[..., Response]:
        @wraps(fn)
        def wrapper(self: DocumentApi, *args: Any, **kwargs: Any) -> Response:
            who = api_principal()
            if who is None:
                return json_error(
                    401, gettext("Log in first: a session cookie or an Authorization: Bearer token")
                )
            if not access.allowed(crm().registry, who, self.doctype, action):
                return json_error(
                    403,
                    gettext(
                        "Your roles may not %(action)s %(document)s records",
                        action=action,
                        document=self.doctype,
                    ),
                )
            return fn(self, *args, **kwargs)

        return wrapper

    return decorate


def json_body() -> dict[str, Any] | Response:
    """The request's JSON object, or the 4xx that says what is wrong with it."""
    if not request.is_json:
        return json_error(415, gettext("Send a JSON object with Content-Type: application/json"))
    body = _parse(request.get_data(cache=True) or b"")
    if body is _NOT_JSON:
        return json_error(400, gettext("The body is not valid JSON"))
    if not isinstance(body, dict):
        return json_error(400, gettext("The body is not a JSON object"))
    bad = bad_text(body)
    if bad:
        return json_error(422, gettext("The record was not saved"), errors=bad)
    return body


_NOT_JSON = object()


def _duplicates() -> dict[str, Any]:
    """``duplicates``: the records holding the values a ``unique`` field refused."""
    found = g.get("crm_duplicates") or {}
    return {"duplicates": {n: dup.as_json() for n, dup in found.items()}} if found else {}


def _warnings() -> list[dict[str, Any]]:
    """The ``unique: warn`` values of the saved record that other records hold."""
    return [dup.as_json() for dup in fetch.documents().warnings.values()]


def _parse(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # also bytes that are not UTF-8, nesting too deep
        return _NOT_JSON


def bad_text(value: Any) -> dict[str, str]:
    """Strings no database stores, by field path: a NUL character (PostgreSQL
    refuses it) or half of a surrogate pair (a JSON ``\\ud800`` escape, which is
    no character at all and cannot be encoded)."""
    out: dict[str, str] = {}
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                stack.append((f"{path}.{key}" if path else str(key), sub))
                if not _storable(str(key)):
                    out[path or "(body)"] = "holds a key that is not valid text"
        elif isinstance(item, list):
            stack.extend((f"{path}.{i}" if path else str(i), sub) for i, sub in enumerate(item))
        elif isinstance(item, str) and not _storable(item):
            out[path or "(body)"] = "must not contain NUL characters or unpaired surrogates"
    return {k: out[k] for k in sorted(out)}


def bad_row_ids(d: DocType, values: dict[str, Any]) -> dict[str, str]:
    """Table rows whose ``id`` is not even a number, by path. (The access
    check of engine.web.writes.rule_errors looks rows up by it and failed with a 500
    on an object or a list.)"""
    out = {}
    for f in d.fields.values():
        rows = values.get(f.name) if f.type == "table" else None
        for i, row in enumerate(rows if isinstance(rows, list) else ()):
            ident = row.get("id") if isinstance(row, dict) else None
            if isinstance(ident, (bool, float, dict, list)):
                out[f"{f.name}.{i}.id"] = "is not a row of this record"
    return out


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _jsonable_row(row: dict[str, Any]) -> dict[str, Any]:
    """A list row for JSON: a ref stays its id, its label comes beside it."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, lists.Ref):
            out[key] = value.id
            out[f"{key}_label"] = value.label
        else:
            out[key] = jsonable(value)
    return out


def _field_schema(
    f: Field, rows: type[Schema] | None = None, read: bool = False, required: bool = False
) -> mf.Field:
    """The OpenAPI shape of a field (validation itself is the documents
    service's). Decimals are read as strings, so that no digit is lost to a
    float; they may be written as numbers or strings."""
    kw: dict[str, Any] = {
        "required": required,
        "allow_none": not required,
        "metadata": {"description": str(f.label)},
    }
    if f.type == "ref":
        return mf.Integer(**kw) if read else mf.Integer(validate=validate.Range(1, MAX_ID), **kw)
    if f.type in ("decimal", "money") and read:
        return mf.String(**{**kw, "metadata": {**kw["metadata"], "format": "decimal"}})
    if f.type in ("integer", "decimal", "money"):
        bounds = [b if isinstance(b, (int, float)) else None for b in (f.min, f.max)]
        kind = mf.Integer if f.type == "integer" else mf.Float  # decimals: JSON numbers
        if read or bounds == [None, None]:
            return kind(**kw)
        return kind(validate=validate.Range(*bounds), **kw)
    if f.type == "boolean":
        return mf.Boolean(**kw)
    if f.type == "date":
        return mf.Date(**kw)
    if f.type == "datetime":
        return mf.DateTime(**kw)
    if f.type == "enum":
        values = [*f.values] if required else [*f.values, None]
        return mf.String(**{**kw, "metadata": {**kw["metadata"], "enum": values}})
    if f.type == "table":
        assert rows is not None
        return mf.List(mf.Nested(rows), **kw)
    if read:
        return mf.String(**kw)
    if f.type == "email":
        return mf.Email(**kw)
    if f.type == "url":
        return mf.String(**{**kw, "metadata": {**kw["metadata"], "format": "uri"}})
    if f.type == "string":
        checks: list[Any] = [validate.Length(min=1 if required else None, max=f.max_length or 255)]
        if f.pattern:  # the service matches it in full
            checks.append(validate.Regexp(f"^(?:{f.pattern})$"))
        return mf.String(validate=checks, **kw)
    return mf.String(**kw)


def _writable(d: DocType, f: Field) -> bool:
    """What a client may send: never audit, status, computed or read-only fields."""
    return not (f.system or f.readonly or f.compute) and not (
        d.statuses is not None and f.name == d.statuses.field
    )


def _schema(name: str, fields: dict[str, mf.Field]) -> type[Schema]:
    # marshmallow's metaclass takes the fields out of the dict it is given:
    # every schema gets a dict (and field objects) of its own
    return type(name, (Schema,), dict(fields))


def _schemas(api_name: str, d: DocType) -> tuple[type[Schema], ...]:
    """``<Api>.get`` (a record), ``.row`` (a list row: refs with their labels),
    ``.post`` and ``.put`` (what may be written; ``put`` needs the ``version``),
    with statuses ``.transition`` (and ``.fields``, what a move may set)."""
    tables = [f for f in d.fields.values() if f.type == "table"]
    read_rows = {
        f.name: _schema(
            f"{api_name}_{f.name}",
            {
                "id": mf.Integer(),
                **{c.name: _field_schema(c, read=True) for c in f.fields.values()},
            },
        )
        for f in tables
    }
    write_rows = {
        f.name: _schema(
            f"{api_name}_{f.name}_write",
            {
                "id": mf.Integer(allow_none=True, metadata={"description": "a row to keep"}),
                **{c.name: _field_schema(c) for c in f.fields.values() if _writable(d, c)},
            },
        )
        for f in tables
    }
    row: dict[str, mf.Field] = {}
    for f in d.fields.values():
        if f.type != "table":
            row[f.name] = _field_schema(f, read=True)
        if f.type == "ref":
            row[f"{f.name}_label"] = mf.String(allow_none=True)
    schemas = [
        _schema(
            f"{api_name}.get",
            {f.name: _field_schema(f, read_rows.get(f.name), read=True) for f in d.fields.values()},
        ),
        _schema(f"{api_name}.row", row),
    ]

    def needed(f: Field) -> bool:
        """A new record needs its required fields, unless they have a default."""
        return f.required and f.default is None and f.type != "boolean"

    for method in ("post", "put"):
        fields: dict[str, mf.Field] = {
            f.name: _field_schema(
                f, write_rows.get(f.name), required=method == "post" and needed(f)
            )
            for f in d.fields.values()
            if _writable(d, f)
        }
        if method == "put":
            fields["version"] = mf.Integer(
                required=True, metadata={"description": "the version you read"}
            )
        schemas.append(_schema(f"{api_name}.{method}", fields))
    if d.statuses is not None:
        changes = _schema(
            f"{api_name}.fields",
            {
                f.name: _field_schema(f, write_rows.get(f.name))
                for f in d.fields.values()
                if _writable(d, f)
            },
        )
        schemas += [changes, _schema(f"{api_name}.transition", {
            "to": mf.String(required=True, metadata={"enum": list(d.statuses.states)}),
            "version": mf.Integer(metadata={"description": "the version you read"}),
            "fields": mf.Nested(changes, metadata={"description": "fields set with the move"}),
            "next": mf.List(mf.Dict(), metadata={"description": "new records a state requires"}),
        })]  # fmt: skip
    return (*read_rows.values(), *write_rows.values(), *schemas)


class DocumentApi(BaseApi):
    """One per document type; ``doctype`` says which."""

    doctype: str = ""
    csrf_exempt = True  # token clients; browser sessions are checked in engine.web.base

    @property
    def d(self) -> DocType:
        return crm().registry.documents[self.doctype]

    def _obj(self, pk: int, action: str) -> Any:
        """The record if the caller may ``action`` it, else None: a 404 either way."""
        return fetch.fetch(self.doctype, pk, action)

    def _doc(self, obj: Any) -> dict[str, Any]:
        """The record as JSON, without the fields hidden from the caller."""
        out = fetch.documents().to_dict(self.doctype, obj, json=True)
        rights = access.field_rights(crm().registry, g.crm_principal, self.doctype)
        if rights.everything:
            return out
        return {
            k: [{c: x for c, x in row.items() if rights.readable(f"{k}.{c}")} for row in v]
            if isinstance(v, list)
            else v
            for k, v in out.items()
            if rights.readable(k)
        }

    @expose("/", methods=["GET"])
    @authorized("read")
    def get_list(self) -> Response:
        """Records the caller may read, a page at a time.
        ---
        get:
          summary: List records
          parameters:
          - in: query
            name: filter
            schema: {type: string}
            description: 'A JSON filter such as {"stage": "new", "amount": {"gte": 1000}}'
          - in: query
            name: segment
            schema: {type: string}
            description: A segment of this type; `filter` narrows it further
          - in: query
            name: search
            schema: {type: string}
          - in: query
            name: drill
            schema: {type: string}
            description: A report cell's drill-down token (from /api/v1/reports/NAME)
          - in: query
            name: order
            schema: {type: string}
            description: A field name; a leading minus sorts descending
          - in: query
            name: page
            schema: {type: integer, minimum: 0}
          - in: query
            name: page_size
            schema: {type: integer, minimum: 1, maximum: 100}
          - in: query
            name: after
            schema: {type: string}
            description: The next cursor of the previous page
          responses:
            200:
              description: A page of records
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      count: {type: integer}
                      count_capped: {type: boolean}
                      ids: {type: array, items: {type: integer}}
                      next: {type: string, nullable: true}
                      result: {type: array, items: {$ref: '#/components/schemas/{{self.__class__.__name__}}.row'}}
            400: {$ref: '#/components/responses/400'}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
        """
        d = self.d
        spec: Any = None
        if request.args.get("filter"):
            spec = _parse(request.args["filter"])
            if spec is _NOT_JSON:
                return json_error(400, gettext("`filter` is not valid JSON"))
            if not isinstance(spec, dict):
                return json_error(
                    400, gettext('`filter` must be a JSON object such as {"stage": "new"}')
                )
            if bad_text(spec):
                return json_error(
                    400, gettext("`filter` must not hold NUL characters or unpaired surrogates")
                )
        if request.args.get("segment"):
            # the list page's ?segment=: the segment's filter, the `filter` given over it;
            # a consultant's, or a saved one the caller may use (own or shared)
            from engine.segments import find

            segment = find(
                crm().models, db_session(), request.args["segment"], g.crm_principal, d.name
            )
            if segment is None:
                name = fetch.clean(request.args["segment"], 50)
                return json_error(
                    400,
                    gettext(
                        "`segment`: %(document)s has no segment `%(name)s`",
                        document=d.name,
                        name=name,
                    ),
                )
            spec = {**segment.filter, **(spec or {})}
        try:
            page_no = int(request.args.get("page", 0))
            size = int(request.args.get("page_size", 25))
        except ValueError:
            return json_error(400, gettext("`page` and `page_size` must be whole numbers"))
        if not 1 <= size <= MAX_PAGE_SIZE:
            return json_error(400, gettext("`page_size` must be 1 to %(n)s", n=MAX_PAGE_SIZE))
        if not 0 <= page_no * size <= fetch.MAX_OFFSET:
            return json_error(
                400,
                gettext(
                    "`page` must be 0 or more, and at most %(n)s records deep: "
                    "page further with the `after` cursor",
                    n=fetch.MAX_OFFSET,
                ),
            )
        order = request.args.get("order") or None
        if order and (order[1:] if order[0] in "+-" else order) not in d.fields:
            return json_error(
                400,
                gettext(
                    "cannot order by `%(order)s`: %(document)s has no such field",
                    order=order,
                    document=d.name,
                ),
            )
        state = crm()
        rights = access.field_rights(state.registry, g.crm_principal, d.name)
        columns = [n for n, f in d.fields.items() if f.type != "table" and rights.readable(n)]
        base_where = access.where(state.models, g.crm_principal, d.name, "read")
        from engine.reports.views import Refused, drilled

        try:
            drill, _banner = drilled(d.name, g.crm_principal)
        except Refused as exc:
            return json_error(exc.status, exc.message)
        if drill is not None:
            base_where = sa.and_(base_where, drill)
        try:
            page = lists.page(
                state.models, db_session(), d.name, filter=spec, search=fetch.clean(request.args.get("search")) or None,
                order=order, offset=page_no * size, limit=size, after=request.args.get("after") or None,
                columns=columns, user_id=g.crm_principal.user_id,
                base_where=base_where, principal=g.crm_principal,
            )  # fmt: skip
        except FilterError as exc:
            return json_error(400, str(exc))
        result = [_jsonable_row(row) for row in page.rows]
        return jsonify(
            count=page.count, count_capped=page.count_capped, ids=[r["id"] for r in result],
            next=page.next_cursor, result=result,
        )  # fmt: skip

    @expose("/<int:pk>", methods=["GET"])
    @authorized("read")
    def get(self, pk: int) -> Response:
        """One record.
        ---
        get:
          summary: Get a record
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200:
              description: The record
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      version: {type: integer}
                      result: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}
            404: {$ref: '#/components/responses/404'}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
        """
        obj = self._obj(pk, "read")
        if obj is None:
            return json_error(404, gettext("Not found"))
        return jsonify(id=obj.id, version=obj.version, result=self._doc(obj))

    @expose("/", methods=["POST"])
    @authorized("create")
    def post(self) -> Response:
        """Create a record.
        ---
        post:
          summary: Create a record
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: '#/components/schemas/{{self.__class__.__name__}}.post'}
          responses:
            201:
              description: Created
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      version: {type: integer}
                      result: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}
                      warnings: {type: array, items: {type: object}}
            400: {$ref: '#/components/responses/400'}
            422: {$ref: '#/components/responses/422'}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
            415: {description: The body is not JSON}
        """
        body = json_body()
        if isinstance(body, Response):
            return body
        obj, errors = None, bad_row_ids(self.d, body)
        if not errors:
            obj, errors = writes.create(self.d, body)
        if errors or obj is None:
            return json_error(
                422, gettext("The record was not saved"), errors=errors, **_duplicates()
            )
        response = jsonify(
            id=obj.id, version=obj.version, result=self._doc(obj), warnings=_warnings()
        )
        response.status_code = 201
        return response

    @expose("/<int:pk>", methods=["PUT"])
    @authorized("update")
    def put(self, pk: int) -> Response:
        """Change a record; send the `version` you read: a newer one is a 409.
        ---
        put:
          summary: Update a record
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: '#/components/schemas/{{self.__class__.__name__}}.put'}
          responses:
            200:
              description: Updated
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      version: {type: integer}
                      result: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}
                      warnings: {type: array, items: {type: object}}
            404: {$ref: '#/components/responses/404'}
            409: {description: Changed by someone else since it was read}
            422: {$ref: '#/components/responses/422'}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
            400: {$ref: '#/components/responses/400'}
            415: {description: The body is not JSON}
        """
        body = json_body()
        if isinstance(body, Response):
            return body
        obj = self._obj(pk, "update")
        if obj is None:
            return json_error(404, gettext("Not found"))
        version = body.pop("version", None)
        if isinstance(version, bool) or not isinstance(version, int):
            return json_error(
                422,
                gettext("Send the `version` of the record you edited"),
                errors={"version": "required"},
            )
        saved, errors = None, bad_row_ids(self.d, body)
        if not errors:
            saved, errors = writes.update(self.d, obj, body, version)
        if "_version" in errors:
            return json_error(409, errors["_version"])
        if errors or saved is None:
            return json_error(
                422,
                errors.pop("_form", gettext("The record was not saved")),
                errors=errors,
                **_duplicates(),
            )
        return jsonify(
            id=saved.id, version=saved.version, result=self._doc(saved), warnings=_warnings()
        )

    @expose("/merge", methods=["POST"])
    @authorized("update")
    def merge(self) -> Response:
        """Merge duplicates into one record; every reference moves to it, the
        others are archived (see docs/reports.md, "Merging duplicates").
        ---
        post:
          summary: Merge duplicate records
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [survivor, others]
                  properties:
                    survivor: {type: integer, description: the record to keep}
                    others: {type: array, items: {type: integer}, description: the records merged into it}
                    fields: {type: object, additionalProperties: {type: integer}, description: "field → the id of the record whose value the survivor takes"}
          responses:
            200:
              description: Merged
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer, description: the merge's id (to undo it)}
                      survivor: {type: integer}
                      merged: {type: array, items: {type: integer}}
            400: {$ref: '#/components/responses/400'}
            404: {$ref: '#/components/responses/404'}
            422: {$ref: '#/components/responses/422'}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
            415: {description: The body is not JSON}
        """
        body = json_body()
        if isinstance(body, Response):
            return body
        survivor, others, fields = body.get("survivor"), body.get("others"), body.get("fields")
        fields = {} if fields is None else fields
        if (
            isinstance(survivor, bool) or not isinstance(survivor, int)
            or not isinstance(others, list) or not isinstance(fields, dict)
        ):  # fmt: skip
            return json_error(
                422,
                gettext('Send {"survivor": id, "others": [ids], "fields": {field: id}}'),
            )
        session = db_session()
        try:
            merge_id = merging.merge(fetch.documents(), self.doctype, survivor, others, fields)
            session.commit()
        except merging.MergeError as exc:
            session.rollback()
            return json_error(exc.status, str(exc))
        except ValidationFailed as exc:
            session.rollback()
            return json_error(422, gettext("The record was not saved"), errors=exc.errors)
        except HandledError as exc:
            session.rollback()
            return json_error(422, str(exc))
        return jsonify(id=merge_id, survivor=survivor, merged=[int(o) for o in others])

    @expose("/merge/<int:merge_id>/undo", methods=["POST"])
    @authorized("update")
    def undo_merge(self, merge_id: int) -> Response:
        """Undo a merge: the references go back, the archived records return.
        ---
        post:
          summary: Undo a merge
          parameters:
          - {in: path, name: merge_id, required: true, schema: {type: integer}}
          responses:
            200: {description: Undone}
            404: {$ref: '#/components/responses/404'}
            409: {description: Undone already, or merged again since}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
        """
        state = crm()
        found = merging.get(state.models, db_session(), merge_id)
        if found is None or found.doctype != self.doctype:
            return json_error(404, gettext("there is no merge #%(id)s", id=merge_id))
        session = db_session()
        try:
            m = merging.undo(fetch.documents(), merge_id)
            session.commit()
        except merging.MergeError as exc:
            session.rollback()
            return json_error(exc.status, str(exc))
        except ValidationFailed as exc:
            session.rollback()
            return json_error(409, gettext("The merge was not undone"), errors=exc.errors)
        except HandledError as exc:
            session.rollback()
            return json_error(409, str(exc))
        return jsonify(id=m.id, survivor=m.survivor_id, restored=list(m.merged_ids))

    @expose("/<int:pk>", methods=["DELETE"])
    @authorized("delete")
    def delete(self, pk: int) -> Response:
        """Delete a record.
        ---
        delete:
          summary: Delete a record
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: Deleted}
            404: {$ref: '#/components/responses/404'}
            409: {description: Other records refer to it}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
        """
        obj = self._obj(pk, "delete")
        if obj is None:
            return json_error(404, gettext("Not found"))
        error = writes.delete(self.d, obj)
        if error:
            return json_error(409, error)
        return jsonify(message="Deleted")

    @expose("/<int:pk>/transition", methods=["POST"])
    @authorized("update")
    def transition(self, pk: int) -> Response:
        """Move a record to another state.
        ---
        post:
          summary: Change the state
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          - in: query
            name: columns
            description: States (comma-separated) whose kanban count and sum to return after the move
            schema: {type: string}
          - {in: query, name: owner, description: The kanban's owner filter, schema: {type: integer}}
          - {in: query, name: department, description: The kanban's department filter, schema: {type: integer}}
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: '#/components/schemas/{{self.__class__.__name__}}.transition'}
          responses:
            200:
              description: The new state
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      state: {type: string}
                      version: {type: integer}
                      result: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}
                      columns:
                        type: object
                        description: With `columns`, each one's count and sum as the kanban shows them
                        additionalProperties:
                          type: object
                          properties:
                            count: {type: integer}
                            sum: {type: string}
            400: {$ref: '#/components/responses/400'}
            404: {$ref: '#/components/responses/404'}
            409: {description: Changed by someone else since it was read}
            422:
              description: Refused, with the reasons
              content:
                application/json:
                  schema:
                    type: object
                    required: [message]
                    properties:
                      message: {type: string}
                      reasons: {type: array, items: {type: string}}
                      errors: {type: object, additionalProperties: {type: string}}
                      needs:
                        type: array
                        items: {type: string}
                        description: >-
                          When the only objection is required fields left empty: those the
                          caller may fill in; posting again with them in `fields` may succeed
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
            415: {description: The body is not JSON}
        """
        d = self.d
        statuses = d.statuses
        assert statuses is not None  # the route exists only for types with statuses
        body = json_body()
        if isinstance(body, Response):
            return body
        obj = self._obj(pk, "update")
        if obj is None:
            return json_error(404, gettext("Not found"))
        target, version = body.get("to"), body.get("version")
        fields = {} if body.get("fields") is None else body["fields"]
        nexts = [] if body.get("next") is None else body["next"]
        if not isinstance(target, str) or target not in statuses.states:
            return json_error(
                422,
                gettext("`to` must name a state"),
                errors={"to": f"one of {', '.join(statuses.states)}"},
            )
        if not isinstance(fields, dict):
            return json_error(400, gettext("`fields` must be an object of field → value"))
        if not isinstance(nexts, list) or not all(isinstance(n, dict) for n in nexts):
            return json_error(400, gettext("`next` must be a list of objects, one per new record"))
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            return json_error(400, gettext("`version` must be a whole number"))
        board = self._board_args(d)
        if isinstance(board, Response):
            return board
        errors = {**bad_row_ids(d, fields), **self._next_errors(statuses.states[target], nexts)}
        reasons = list(errors.values())
        if not errors:
            reasons, errors = writes.transition(d, obj, target, fields, nexts, version)
        if "_version" in errors:
            return json_error(409, errors["_version"])
        if reasons or errors:
            return json_error(422, gettext("The transition was refused"), reasons=reasons, errors=errors,
                              **writes.needed_fields(d, statuses.states[target], reasons, errors))  # fmt: skip
        obj = self._obj(pk, "read")
        state = getattr(obj, statuses.field) if obj is not None else target
        extra = {}
        if board is not None:
            from engine.web.boards import board_where, column_totals

            where = board_where(d, board[1], board[2], board[3])
            extra["columns"] = column_totals(d, where, board[0])
        return jsonify(id=pk, state=state, version=obj.version if obj else None,
                       result=self._doc(obj) if obj is not None else None, **extra)  # fmt: skip

    @staticmethod
    def _board_args(
        d: DocType,
    ) -> tuple[list[str], int | None, int | None, str | None] | Response | None:
        """``?columns=a,b`` (with the board's ``owner``/``department``/``kind``):
        the kanban columns whose count and sum the answer carries; checked before
        the move, so a bad one refuses the request rather than half-answers it."""
        from engine.fieldtypes import valid_id

        raw = request.args.get("columns")
        if raw is None:
            return None
        kanban = d.views.get("kanban")
        if not kanban:
            return json_error(400, gettext("`columns`: this type has no kanban"))
        states = list(d.fields[kanban["by"]].values)
        names = [n for n in raw.split(",") if n][:10]
        unknown = [n for n in names if n not in states]
        if unknown:
            return json_error(
                400, gettext("`columns`: one of %(states)s", states=", ".join(states))
            )
        ids: list[int | None] = []
        for key in ("owner", "department"):
            value = request.args.get(key)
            ids.append(valid_id(value) if value not in (None, "") else None)
            if value not in (None, "") and ids[-1] is None:
                return json_error(400, gettext("`%(key)s` must be the id of a record", key=key))
        from engine.web.boards import board_kinds

        kind = request.args.get("kind") or None
        kinds = [v for v, _ in board_kinds(d)]
        if kind is not None and kind not in kinds:
            return json_error(
                400, gettext("`kind`: one of %(kinds)s", kinds=", ".join(kinds) or "—")
            )
        return names, ids[0], ids[1], kind

    @staticmethod
    def _next_errors(state: State, nexts: list[dict[str, Any]]) -> dict[str, str]:
        """The access rules over the new records a state requires, as over any
        new record: their refs may only name records the caller may read.
        (engine.web.writes.transition checks ``fields`` only.)"""
        if state.require_next is None:
            return {}
        nd = crm().registry.documents[state.require_next.document]
        out: dict[str, str] = {}
        for i, values in enumerate(nexts):
            found = {**bad_row_ids(nd, values), **writes.rule_errors(nd, values, None)}
            out.update({f"next.{i}.{path}": message for path, message in found.items()})
        return out

    @expose("/<int:pk>/history", methods=["GET"])
    @authorized("read")
    def history(self, pk: int) -> Response:
        """Every change of state, newest first.
        ---
        get:
          summary: State history
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          responses:
            200: {description: The history}
            404: {$ref: '#/components/responses/404'}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
        """
        obj = self._obj(pk, "read")
        if obj is None:
            return json_error(404, gettext("Not found"))
        rows = formatting.history(self.d, obj)
        keep = ("at", "by", "by_id", "field", "from", "to")
        return jsonify(
            result=[
                {
                    k: (v.isoformat() if hasattr(v, "isoformat") else v)
                    for k, v in h.items()
                    if k in keep
                }
                for h in rows
            ]
        )

    @expose("/_lookup", methods=["GET"])
    @authorized("read")
    def lookup(self) -> Response:
        """Records whose name starts with `q`, for pickers.
        ---
        get:
          summary: Search by name
          parameters:
          - {in: query, name: q, schema: {type: string}}
          responses:
            200: {description: Matches}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
        """
        return jsonify(result=lookup.lookup(self.d, request.args.get("q", "")[:100], limit=20))


def register_apis(appbuilder: Any, state: Any) -> None:
    for d in state.registry.documents.values():
        if d.builtin:
            continue
        name = f"{d.name}Api"
        api = type(
            name, (DocumentApi,),
            {"doctype": d.name, "resource_name": d.resource, "openapi_spec_tag": d.name,
             "openapi_spec_component_schemas": _schemas(name, d),
             # no statuses: no transition and no history, in the routes and the OpenAPI
             "exclude_route_methods": set() if d.statuses else {"transition", "history"}},
        )  # fmt: skip
        appbuilder.add_api(api)
    # Flask-AppBuilder exempts an API from CSRF only if CSRFProtect exists when
    # the API is added; its own (/api/v1/security/login) came first, so a JWT
    # login failed with "The CSRF token is missing". Browser sessions calling
    # any API still send X-CSRFToken (checked in engine.web.base).
    csrf = current_app.extensions["csrf"]
    for view in appbuilder.baseviews:
        if isinstance(view, BaseApi) and view.csrf_exempt and view.blueprint is not None:
            csrf.exempt(view.blueprint)
