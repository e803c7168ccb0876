"""The mail plugin's settings are checked like any part of config.yaml: a
wrong key or value is one `config.yaml:LINE:COL` line of `crm check`."""

from __future__ import annotations

from typing import Any

CONFIG = """\
name: Shop
locale: en
layers: []
plugins:
  mail:
    smtp: {host: smtp.example.org, prot: 587}
    imap: {port: 993}
    from: "not an address"
    batch: 0
    public_url: "ftp://crm.example"
"""


def test_every_wrong_mail_setting_is_one_line_at_its_place(problems_of: Any) -> None:
    assert problems_of({}, config=CONFIG) == [
        "config.yaml:6:36: unknown key `prot` in `smtp` of the settings of the `mail` plugin "
        "(did you mean `port`?)",
        "config.yaml:7:11: `imap` of the settings of the `mail` plugin needs `host`",
        "config.yaml:8:11: the settings of the `mail` plugin: `from` is an address such as "
        '`"Romashka <crm@romashka.example>"`',
        "config.yaml:9:12: the settings of the `mail` plugin: `batch` must be greater than or "
        "equal to 1 and less than or equal to 10000",
        "config.yaml:10:17: the settings of the `mail` plugin: `public_url` is the site's "
        "address, such as `https://crm.example.org`",
    ]


def test_a_config_with_mail_and_no_base_layer_checks_clean(problems_of: Any) -> None:
    assert (
        problems_of({}, config="name: Shop\nlocale: en\nlayers: []\nplugins:\n  mail: {}\n") == []
    )
