"""Every curl example of docs/rest-api.md, run against a real server.

The server is the app on a free local port (werkzeug's server in a thread),
over the small company the doc describes. Each ```bash block that calls
curl is run by bash, in order, with ``$CRM`` (the server's address),
``$TOKEN`` and ``$REFRESH`` (taken from the answer of the doc's own login
example) and ``$MANAGER_TOKEN`` (a manager's token) set. The ```http block
that follows an example is its documented answer: the status line must
match, and the JSON under it must be a part of the real answer (objects may
have more keys, a list ending in "..." more items, and "..." stands for any
value).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.web.conftest import SALES

DOC = Path(__file__).resolve().parents[2] / "docs" / "rest-api.md"
ANY = "..."

#: the doc's company: the sales config of the web tests, with a segment and
#: interactions whose `done` demands the next one
METADATA = (
    SALES
    + """
  Interaction:
    title: "{{ subject }}"
    owner: manager
    fields:
      customer:   {type: ref, to: Customer, required: true}
      subject:    {type: string, required: true}
      planned_at: {type: datetime, required: true}
      manager:    {type: ref, to: User, default: current_user}
    statuses:
      initial: planned
      states:
        planned: {label: Planned}
        done:
          label: Done
          final: true
          outcome: done
          require_next: {document: Interaction, link: customer}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
segments:
  key_accounts: {document: Customer, label: Key accounts, filter: {segment: A}}
reports:
  deal_funnel: {type: funnel, document: Deal, amount: amount, label: Deal funnel}
"""
)

#: the customers the doc's examples find: name, segment
CUSTOMERS = [
    ("Romashka", "A"),
    ("Vasilek", "B"),
    ("Berezka", "A"),
    ("Lutik", "C"),
    ("Oduvanchik", "A"),
]


@dataclass
class Example:
    line: int
    script: str
    status: int | None
    body: Any


def examples(text: str) -> list[Example]:
    """The bash blocks that call curl, each with the http block right after it."""
    blocks = [
        (m.group(1), m.group(2), text[: m.start()].count("\n") + 1, m.end())
        for m in re.finditer(r"^```(\w*)\n(.*?)^```\n", text, re.M | re.S)
    ]
    out = []
    for i, (lang, body, line, end) in enumerate(blocks):
        if lang != "bash" or "curl " not in body:
            continue
        status, expected = None, None
        if i + 1 < len(blocks):
            next_lang, next_body, _, _ = blocks[i + 1]
            between = text[end : text.index("```" + next_lang + "\n" + next_body, end)]
            if next_lang == "http" and not between.strip():
                head, _, rest = next_body.partition("\n")
                status = int(head.split()[1])
                expected = json.loads(rest) if rest.strip() else None
        out.append(Example(line, body, status, expected))
    return out


def fits(expected: Any, got: Any) -> bool:
    if expected == ANY:
        return True
    if isinstance(expected, dict):
        return isinstance(got, dict) and all(
            k in got and fits(v, got[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        if not isinstance(got, list):
            return False
        if expected and expected[-1] == ANY:
            expected = expected[:-1]
            got = got[: len(expected)]
        return len(expected) == len(got) and all(map(fits, expected, got))
    return bool(expected == got)


def parse_answer(output: str) -> tuple[int, Any]:
    """curl -i's output: the status line, headers, then the body."""
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    status = int(head.split()[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


@pytest.fixture
def server(crm_app: Callable[..., Flask]) -> Iterator[str]:
    app = crm_app(METADATA)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(5)


def _call(url: str, body: Any = None, token: str | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _token(crm: str, username: str) -> str:
    body = {"username": username, "password": "secret", "provider": "db"}
    return str(_call(f"{crm}/api/v1/security/login", body)["access_token"])


def test_the_doc_has_examples_with_answers() -> None:
    found = examples(DOC.read_text(encoding="utf-8"))
    assert len(found) >= 20
    assert all(e.status is not None for e in found), [e.line for e in found if e.status is None]
    statuses = {e.status for e in found}
    assert {200, 201, 400, 401, 403, 404, 409, 415, 422} <= statuses


def test_fits_is_strict_where_the_doc_is() -> None:
    assert fits({"a": 1}, {"a": 1, "b": 2})
    assert not fits({"a": 1}, {"a": 2})
    assert not fits([1, 2], [1, 2, 3])
    assert fits([1, ANY], [1, 2, 3])
    assert fits({"a": ANY}, {"a": [1]}) and not fits({"a": ANY}, {})


def test_every_curl_example_answers_as_documented(server: str, tmp_path: Path) -> None:
    if shutil.which("curl") is None:  # .ci/run installs it
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)("needs the curl binary")
    admin = _token(server, "admin")
    anna_id = 2
    for name, segment in CUSTOMERS:
        _call(
            f"{server}/api/v1/customer/",
            {"name": name, "segment": segment, "manager": anna_id},
            admin,
        )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CRM": server,
        "TOKEN": "",
        "REFRESH": "",
        "MANAGER_TOKEN": _token(server, "anna"),
    }
    failures = []
    for example in examples(DOC.read_text(encoding="utf-8")):
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", example.script],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        where = f"docs/rest-api.md:{example.line}"
        if result.returncode != 0:
            failures.append(f"{where}: exit {result.returncode}: {result.stderr.strip()}")
            continue
        if example.status is None:
            continue
        status, body = parse_answer(result.stdout)
        if status != example.status or not fits(example.body, body):
            failures.append(f"{where}: got {status} {json.dumps(body, ensure_ascii=False)[:2000]}")
        if isinstance(body, dict):
            env["TOKEN"] = body.get("access_token", env["TOKEN"])
            env["REFRESH"] = body.get("refresh_token", env["REFRESH"])
    assert not failures, "\n".join(failures)
