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

from flask import Response, g, jsonify, request
from flask_appbuilder.api import BaseApi, expose
from flask_jwt_extended import current_user as jwt_user
from flask_jwt_extended import verify_jwt_in_request
from flask_login import current_user
from marshmallow import Schema
from marshmallow import fields as mf

from engine import access, lists
from engine.access import Principal
from engine.documents import _jsonable as jsonable
from engine.filters import FilterError
from engine.registry import DocType, Field
from engine.web import service
from engine.web.base import crm, db_session, json_error

MAX_PAGE_SIZE = 100


def api_principal() -> Principal | None:
    """The caller: a browser session, or a JWT from /api/v1/security/login."""
    if "crm_principal" in g:
        return g.crm_principal  # type: ignore[no-any-return]
    user = current_user if current_user.is_authenticated else None
    if user is None and request.headers.get("Authorization", "").startswith("Bearer "):
        try:
            verify_jwt_in_request()
            user = jwt_user
        except Exception:  # an invalid or expired token is just "not logged in"
            user = None
    if user is None or not getattr(user, "is_active", False):
        return None
    g.crm_principal = Principal(user.id, user.username, frozenset(r.name for r in user.roles))
    return g.crm_principal  # type: ignore[no-any-return]


def authorized(action: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """401 without a user, 403 when no role of the user may ``action`` this type at all."""

    def decorate(fn: Callable[..., Response]) -> Callable[..., Response]:
        @wraps(fn)
        def wrapper(self: DocumentApi, *args: Any, **kwargs: Any) -> Response:
            who = api_principal()
            if who is None:
                return json_error(
                    401, "Log in first: a session cookie or an Authorization: Bearer token"
                )
            if not access.allowed(crm().registry, who, self.doctype, action):
                return json_error(403, f"Your roles may not {action} {self.doctype} records")
            return fn(self, *args, **kwargs)

        return wrapper

    return decorate


def _json_body() -> dict[str, Any] | Response:
    if not request.is_json:
        return json_error(415, "Send a JSON object with Content-Type: application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return json_error(400, "The body is not a JSON object")
    return body


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


def _field_schema(f: Field, rows: dict[str, type[Schema]] | None = None) -> mf.Field:
    """The OpenAPI shape of a field (validation itself is the documents service's)."""
    kw: dict[str, Any] = {"allow_none": not f.required, "metadata": {"description": str(f.label)}}
    if f.type in ("integer", "ref"):
        return mf.Integer(**kw)
    if f.type in ("decimal", "money"):
        return mf.Decimal(as_string=True, **kw)
    if f.type == "boolean":
        return mf.Boolean(**kw)
    if f.type == "date":
        return mf.Date(**kw)
    if f.type == "datetime":
        return mf.DateTime(**kw)
    if f.type == "enum":
        return mf.String(
            metadata={**kw["metadata"], "enum": list(f.values)}, allow_none=kw["allow_none"]
        )
    if f.type == "table":
        return mf.List(mf.Nested((rows or {})[f.name]), **kw)
    return mf.String(**kw)


def _schemas(api_name: str, d: DocType) -> tuple[type[Schema], ...]:
    rows = {
        f.name: type(
            f"{api_name}_{f.name}", (Schema,), {c.name: _field_schema(c) for c in f.fields.values()}
        )
        for f in d.fields.values()
        if f.type == "table"
    }
    writable = {
        f.name: _field_schema(f, rows)
        for f in d.fields.values()
        if not (f.system or f.readonly or f.compute)
        and not (d.statuses and f.name == d.statuses.field)
    }
    readable = {f.name: _field_schema(f, rows) for f in d.fields.values()}
    get = type(f"{api_name}.get", (Schema,), readable)
    post = type(f"{api_name}.post", (Schema,), writable)
    put = type(f"{api_name}.put", (Schema,), {**writable, "version": mf.Integer(required=True)})
    return get, post, put


class DocumentApi(BaseApi):
    """One per document type; ``doctype`` says which."""

    doctype: str = ""
    csrf_exempt = True  # token clients; browser sessions are checked in engine.web.base

    @property
    def d(self) -> DocType:
        return crm().registry.documents[self.doctype]  # type: ignore[no-any-return]

    def _obj(self, pk: int, action: str) -> Any:
        if pk <= 0 or pk >= 2**31:
            return None
        return service.fetch(self.doctype, pk, action)

    def _doc(self, obj: Any) -> dict[str, Any]:
        return service.documents().to_dict(self.doctype, obj, json=True)

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
            name: search
            schema: {type: string}
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
                      result: {type: array, items: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}}
            400: {$ref: '#/components/responses/400'}
            401: {$ref: '#/components/responses/401'}
        """
        d = self.d
        spec: Any = None
        if request.args.get("filter"):
            try:
                spec = json.loads(request.args["filter"])
            except ValueError:
                return json_error(400, "`filter` is not valid JSON")
            if not isinstance(spec, dict):
                return json_error(400, '`filter` must be a JSON object such as {"stage": "new"}')
        try:
            page_no = int(request.args.get("page", 0))
            size = int(request.args.get("page_size", 25))
        except ValueError:
            return json_error(400, "`page` and `page_size` must be whole numbers")
        if page_no < 0 or not 1 <= size <= MAX_PAGE_SIZE:
            return json_error(400, f"`page` must be 0 or more and `page_size` 1 to {MAX_PAGE_SIZE}")
        order = request.args.get("order") or None
        if order and order.lstrip("-") not in d.fields:
            return json_error(400, f"cannot order by `{order}`: {d.name} has no such field")
        state = crm()
        columns = [n for n, f in d.fields.items() if f.type != "table"]
        try:
            page = lists.page(
                state.models, db_session(), d.name, filter=spec, search=request.args.get("search") or None,
                order=order, offset=page_no * size, limit=size, after=request.args.get("after") or None,
                columns=columns, user_id=g.crm_principal.user_id,
                base_where=access.where(state.models, g.crm_principal, d.name, "read"),
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
        """
        obj = self._obj(pk, "read")
        if obj is None:
            return json_error(404, "Not found")
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
            400: {$ref: '#/components/responses/400'}
            422: {$ref: '#/components/responses/422'}
        """
        body = _json_body()
        if isinstance(body, Response):
            return body
        obj, errors = service.create(self.d, body)
        if errors:
            return json_error(422, "The record was not saved", errors=errors)
        response = jsonify(id=obj.id, version=obj.version, result=self._doc(obj))
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
            404: {$ref: '#/components/responses/404'}
            409: {description: Changed by someone else since it was read}
            422: {$ref: '#/components/responses/422'}
        """
        body = _json_body()
        if isinstance(body, Response):
            return body
        obj = self._obj(pk, "update")
        if obj is None:
            return json_error(404, "Not found")
        version = body.pop("version", None)
        if isinstance(version, bool) or not isinstance(version, int):
            return json_error(
                422, "Send the `version` of the record you edited", errors={"version": "required"}
            )
        saved, errors = service.update(self.d, obj, body, version)
        if "_version" in errors:
            return json_error(409, errors["_version"])
        if errors:
            return json_error(422, errors.pop("_form", "The record was not saved"), errors=errors)
        return jsonify(id=saved.id, version=saved.version, result=self._doc(saved))

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
        """
        obj = self._obj(pk, "delete")
        if obj is None:
            return json_error(404, "Not found")
        error = service.delete(self.d, obj)
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
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [to]
                  properties:
                    to: {type: string}
                    version: {type: integer}
                    fields: {type: object}
                    next: {type: array, items: {type: object}}
          responses:
            200: {description: The new state}
            404: {$ref: '#/components/responses/404'}
            422: {description: Refused, with the reasons}
        """
        d = self.d
        body = _json_body()
        if isinstance(body, Response):
            return body
        if d.statuses is None:
            return json_error(404, f"{d.name} has no statuses")
        obj = self._obj(pk, "update")
        if obj is None:
            return json_error(404, "Not found")
        target, fields, nexts = body.get("to"), body.get("fields") or {}, body.get("next") or []
        version = body.get("version")
        if not isinstance(target, str) or target not in d.statuses.states:
            return json_error(
                422,
                "`to` must name a state",
                errors={"to": f"one of {', '.join(d.statuses.states)}"},
            )
        if (
            not isinstance(fields, dict)
            or not isinstance(nexts, list)
            or not all(isinstance(n, dict) for n in nexts)
        ):
            return json_error(400, "`fields` must be an object and `next` a list of objects")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            return json_error(400, "`version` must be a whole number")
        reasons, errors = service.transition(d, obj, target, fields, nexts, version)
        if reasons or errors:
            return json_error(422, "The transition was refused", reasons=reasons, errors=errors)
        obj = self._obj(pk, "read")
        state = getattr(obj, d.statuses.field) if obj is not None else target
        return jsonify(id=pk, state=state, version=obj.version if obj else None,
                       result=self._doc(obj) if obj is not None else None)  # fmt: skip

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
        """
        obj = self._obj(pk, "read")
        if obj is None:
            return json_error(404, "Not found")
        rows = service.history(self.d, obj)
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
        """
        return jsonify(result=service.lookup(self.d, request.args.get("q", "")[:100], limit=20))


def register_apis(appbuilder: Any, state: Any) -> None:
    for d in state.registry.documents.values():
        if d.builtin:
            continue
        name = f"{d.name}Api"
        api = type(
            name, (DocumentApi,),
            {"doctype": d.name, "resource_name": d.resource, "openapi_spec_tag": d.name,
             "openapi_spec_component_schemas": _schemas(name, d)},
        )  # fmt: skip
        appbuilder.add_api(api)
