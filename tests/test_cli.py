"""The `crm` command, run as a user would run it: a real process, real files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

CRM = str(Path(sys.executable).with_name("crm"))
ROOT = Path(__file__).resolve().parent.parent


def crm(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [CRM, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=120,
        check=False,
    )


def test_help_lists_every_command() -> None:
    result = crm("--help")
    assert result.returncode == 0
    for command in ("check", "migrate", "run", "users"):
        assert f"  {command}" in result.stdout


def test_check_passes_every_example_config() -> None:
    configs = sorted(p for p in (ROOT / "configs").iterdir() if (p / "config.yaml").exists())
    assert len(configs) >= 1
    for folder in configs:
        result = crm("check", str(folder), env={"CRM_DATABASE_URL": "sqlite://"})
        assert result.returncode == 0, result.stdout + result.stderr
        assert "OK" in result.stdout


def test_check_prints_each_problem_on_its_own_line(make_config: Callable[..., Path]) -> None:
    folder = make_config(
        {
            "deal.yaml": """\
            documents:
              Deal:
                fields:
                  amount: {type: moeny}
                  customer: {type: ref, to: Custmer}
            """
        }
    )
    result = crm("check", ".", cwd=folder)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "deal.yaml:4:22: unknown field type `moeny` (did you mean `money`?)",
    ]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "1 problem found"


def test_check_refuses_a_python_tag_quickly_without_a_traceback(
    make_config: Callable[..., Path],
) -> None:
    folder = make_config(
        {"evil.yaml": "documents: !!python/object/apply:os.system ['touch pwned']\n"}
    )
    started = time.monotonic()
    result = crm("check", ".", cwd=folder)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "evil.yaml:1:12: the tag `!!python/object/apply:os.system` is not allowed in metadata"
    ]
    assert not (folder / "pwned").exists()
    assert "Traceback" not in result.stderr
    assert (
        time.monotonic() - started < 10
    )  # the process start dominates; the refusal itself is instant


def test_check_of_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = crm("check", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stdout.strip().endswith("nope:0:0: no such config folder")


def test_migrate_dry_run_then_apply_then_nothing_to_do(
    make_config: Callable[..., Path], db_url: str
) -> None:
    folder = make_config(
        {"customer.yaml": "documents:\n  Customer:\n    fields:\n      name: {type: string}\n"},
        "name: CLI Ltd\nlayers: []\n",
    )
    env = {"CRM_DATABASE_URL": db_url}
    dry = crm("migrate", str(folder), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "  + add table customer" in dry.stdout
    assert "dry run: nothing was changed" in dry.stdout
    engine = sa.create_engine(db_url)
    try:
        assert "customer" not in sa.inspect(engine).get_table_names()
        applied = crm("migrate", str(folder), env=env)
        assert applied.returncode == 0, applied.stderr
        assert "customer" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    again = crm("migrate", str(folder), env=env)
    assert again.returncode == 0
    assert "the schema is up to date" in again.stdout


def test_migrate_syncs_roles_and_users_create_uses_them(
    make_config: Callable[..., Path], db_url: str
) -> None:
    folder = make_config(
        {
            "crm.yaml": """\
            roles:
              manager: {label: Manager}
            documents:
              Customer:
                owner: manager
                fields:
                  name: {type: string}
                  manager: {type: ref, to: User, default: current_user}
                access:
                  manager: {read: own, create: true, update: own}
            """
        }
    )
    env = {"CRM_DATABASE_URL": db_url}
    result = crm("migrate", str(folder), env=env)
    assert result.returncode == 0, result.stderr
    assert "  * add role manager" in result.stdout
    assert "  * grant manager: can_read on Customer" in result.stdout
    assert "  * grant manager: can_write on Customer" in result.stdout
    assert "can_delete on Customer" not in result.stdout
    created = crm(
        "users",
        "create",
        str(folder),
        "--username",
        "anna",
        "--password",
        "a-long-s3cret!",
        "--role",
        "manager",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "created anna (manager)"
    twice = crm(
        "users",
        "create",
        str(folder),
        "--username",
        "anna",
        "--password",
        "x",
        "--role",
        "manager",
        env=env,
    )
    assert twice.returncode == 1
    assert twice.stderr.strip() == "error: a user `anna` exists already"
    bad_role = crm(
        "users",
        "create",
        str(folder),
        "--username",
        "bob",
        "--password",
        "x",
        "--role",
        "manger",
        env=env,
    )
    assert bad_role.stderr.strip() == "error: unknown role `manger` (did you mean `manager`?)"
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            password = conn.execute(
                sa.text("SELECT password FROM ab_user WHERE username = 'anna'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert "a-long-s3cret!" not in password  # stored hashed
    for username, weak, message in (
        ("boris", "short", "The password must be at least 10 characters long"),
        ("boris", "QwertyUiop", "This password is one of the most common; choose another"),
        ("boris-boris", "Boris-Boris", "The password must not be the username"),
    ):
        result = crm("users", "create", str(folder), "--username", username,
                     "--password", weak, "--role", "manager", env=env)  # fmt: skip
        assert result.returncode == 1, result.stdout
        assert result.stderr.strip() == f"error: {message}"

    # list, set-password (the policy holds), roles, disable
    listed = crm("users", "list", str(folder), env=env)
    assert listed.returncode == 0, listed.stderr
    assert "anna\tanna\tactive\tmanager" in listed.stdout.splitlines()
    weak = crm("users", "set-password", str(folder), "anna", "--password", "x", env=env)
    assert weak.returncode == 1 and "at least 10 characters" in weak.stderr
    changed = crm("users", "set-password", str(folder), "anna", "--password", "an0ther-long-one", env=env)  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            again = conn.execute(
                sa.text("SELECT password FROM ab_user WHERE username = 'anna'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert again != password
    nobody = crm("users", "disable", str(folder), "nobody", env=env)
    assert nobody.stderr.strip() == "error: there is no user `nobody` (see `crm users list`)"
    made_admin = crm("users", "roles", str(folder), "anna", "--role", "manager", "--admin", env=env)
    assert made_admin.stdout.strip() == "anna: Admin, manager", made_admin.stderr
    assert crm("users", "disable", str(folder), "anna", env=env).returncode == 0
    listed = crm("users", "list", str(folder), env=env)
    assert "anna\tanna\tdisabled\tAdmin, manager" in listed.stdout.splitlines()


def test_an_unreachable_database_is_one_line_without_the_password(
    make_config: Callable[..., Path],
) -> None:
    folder = make_config({"a.yaml": "documents:\n  Note:\n    fields:\n      text: {type: text}\n"})
    result = crm(
        "migrate",
        str(folder),
        env={"CRM_DATABASE_URL": "postgresql+psycopg://crm:TopSecret@127.0.0.1:1/nope"},
    )
    assert result.returncode == 1
    assert "TopSecret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: the database is not reachable")
