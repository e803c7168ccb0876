"""``engine.wsgi:app`` for gunicorn: the configuration from CRM_CONFIG, and a
clear line instead of a traceback when it is missing or broken."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # the wholesale configuration's own type and one of its telephony plugin's
    code = (
        "import engine.wsgi as w; docs = w.app.extensions['crm'].registry.documents; "
        "print(w.app.name, [n for n in ('Call', 'CustomerOrder') if n in docs])"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )  # fmt: skip


def test_the_app_of_the_configuration(tmp_path: Path) -> None:
    done = run(
        {"CRM_CONFIG": "configs/wholesale", "CRM_DATABASE_URL": f"sqlite:///{tmp_path}/w.db"}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "engine ['Call', 'CustomerOrder']"


def test_without_a_configuration_it_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CRM_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-c", "import engine.wsgi"], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "set CRM_CONFIG to the configuration folder, e.g. CRM_CONFIG=configs/wholesale"
    )


def test_a_broken_configuration_prints_its_problems(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("name: X\nlayers: [base]\nlocal: en\n", encoding="utf-8")
    done = run({"CRM_CONFIG": str(tmp_path)})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith(f"{tmp_path}/config.yaml:3:1: unknown key `local`")
