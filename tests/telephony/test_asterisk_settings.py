"""The asterisk plugin's settings: typed, each mistake one ``file:line:col``
problem, and the manager's password only as an environment variable
(``engine.api.Secret``)."""

from __future__ import annotations

from typing import Any

CONFIG = (
    "name: Test\nlayers: [base]\nplugins:\n  telephony: {}\n"
    "  asterisk:\n    host: pbx.example.lan\n    username: crm\n"
)


def test_a_secret_written_out_is_refused_at_its_place(problems_of: Any) -> None:
    got = problems_of({}, config=CONFIG + "    secret: abc\n")
    assert got == [
        "config.yaml:8:13: the settings of the `asterisk` plugin: `secret` is a secret: write it "
        "as `${NAME}`, an environment variable that holds it, not the value itself"
    ]


def test_a_secret_from_the_environment_is_accepted(problems_of: Any) -> None:
    assert problems_of({}, config=CONFIG + "    secret: ${AMI_SECRET}\n",
                       env={"AMI_SECRET": "TopSecret"}) == []  # fmt: skip


def test_a_missing_secret_and_a_wrong_template_are_named(problems_of: Any) -> None:
    got = problems_of({}, config=CONFIG + "    channel: PJSIP/101\n    port: 70000\n")
    assert len(got) == 3, got
    assert any("`secret`" in p for p in got)
    assert any(p.startswith("config.yaml:8:14:") and "`{extension}`" in p for p in got)
    assert any(p.startswith("config.yaml:9:11:") and "`port`" in p for p in got)
