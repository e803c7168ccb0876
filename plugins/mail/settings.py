"""The ``mail`` plugin's settings in config.yaml: the configuration's own
mailbox and the limits of sending.

```yaml
plugins:
  mail:
    smtp: {host: smtp.example.org, port: 587, starttls: true, username: crm, password: ${SMTP_PASSWORD}}
    imap: {host: imap.example.org, port: 993, ssl: true, username: crm, password: ${IMAP_PASSWORD}}
    from: "Romashka <crm@romashka.example>"   # the default mailbox; more are EmailAccount records
    rate_limit: 600          # messages per minute from the default mailbox (empty: no limit)
    batch: 200               # a mailing's messages per batch (one transaction, one connection)
    bounce_limit: 3          # hard bounces before an address counts as invalid
    max_attachments: 10485760  # bytes of attachments per letter (10 MB)
    attachments: instance/mail # where attachment files are kept (beside the database by default)
    public_url: https://crm.romashka.example  # the site's address, for unsubscribe links
    sync_every: 60           # seconds between two IMAP syncs of a mailbox
```

The engine validates them with this schema (``crm_settings_schema``): a
wrong key or value is one ``file:line:col`` problem at that setting.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any

from marshmallow import ValidationError, validate
from marshmallow import fields as mf

from engine.api import SettingsSchema

DEFAULT_BATCH = 200
DEFAULT_BOUNCE_LIMIT = 3
DEFAULT_MAX_ATTACHMENTS = 10 * 1024 * 1024
DEFAULT_SYNC_EVERY = 60


def _address(value: Any) -> None:
    _name, address = parseaddr(str(value))
    if "@" not in address or "\n" in str(value) or "\r" in str(value):
        raise ValidationError('is an address such as `"Romashka <crm@romashka.example>"`')


class ServerSettings(SettingsSchema):
    """One mail server: where it is, how it is encrypted and who signs in."""

    host = mf.String(required=True, validate=validate.Length(min=1, max=255))
    port = mf.Integer(validate=validate.Range(min=1, max=65535))
    ssl = mf.Boolean(load_default=False)
    starttls = mf.Boolean(load_default=False)
    username = mf.String(validate=validate.Length(max=255))
    password = mf.String(validate=validate.Length(max=1000))
    timeout = mf.Float(load_default=30.0, validate=validate.Range(min=1, max=600))


class ImapSettings(ServerSettings):
    folders = mf.List(mf.String(validate=validate.Length(min=1, max=255)), load_default=["INBOX"])


class MailSettings(SettingsSchema):
    """``plugins: {mail: {smtp: ..., imap: ..., from: ...}}``."""

    smtp = mf.Nested(ServerSettings)
    imap = mf.Nested(ImapSettings)
    sender = mf.String(data_key="from", validate=_address)
    rate_limit = mf.Integer(validate=validate.Range(min=1, max=1_000_000))
    batch = mf.Integer(load_default=DEFAULT_BATCH, validate=validate.Range(min=1, max=10_000))
    bounce_limit = mf.Integer(
        load_default=DEFAULT_BOUNCE_LIMIT, validate=validate.Range(min=1, max=100)
    )
    max_attachments = mf.Integer(
        load_default=DEFAULT_MAX_ATTACHMENTS, validate=validate.Range(min=0, max=1024**3)
    )
    attachments = mf.String(validate=validate.Length(min=1, max=1000))
    public_url = mf.Url(
        require_tld=False,
        schemes={"http", "https"},
        error_messages={"invalid": "is the site's address, such as `https://crm.example.org`"},
    )
    sync_every = mf.Integer(
        load_default=DEFAULT_SYNC_EVERY, validate=validate.Range(min=5, max=86_400)
    )
