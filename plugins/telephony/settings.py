"""The ``telephony`` plugin's settings in config.yaml.

```yaml
plugins:
  telephony:
    region: RU                # how numbers written without +country are read (default: the config's region)
    extension_field: extension  # the User attribute that holds each user's extension
    match: [Customer, ContactPerson]  # whose phone fields identify a caller (default: every type with a phone field)
    missed_call_task: true    # a missed incoming call becomes a call-back task for the owner
    callback_minutes: 30      # the call-back task is due this many minutes after the call
    webhook_window: 300       # seconds a signed webhook's timestamp may be off the CRM's clock
  simulator: {}               # a provider: see docs/telephony.md for asterisk, cloudpbx, twilio, sms_gateway, smpp
```

Each provider is a plugin of its own with its own settings (providers/);
this schema is the telephony core's. A wrong key or value is one
``file:line:col`` problem at that setting.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields as mf
from marshmallow import validate

from engine.api import SettingsSchema

DEFAULT_EXTENSION_FIELD = "extension"
DEFAULT_CALLBACK_MINUTES = 30
DEFAULT_WEBHOOK_WINDOW = 300


class TelephonySettings(SettingsSchema):
    """``plugins: {telephony: {...}}``."""

    region = mf.String(
        validate=validate.Regexp(r"^[A-Z]{2}$", error="is a two-letter country code such as `RU`")
    )
    extension_field = mf.String(
        load_default=DEFAULT_EXTENSION_FIELD, validate=validate.Length(min=1, max=64)
    )
    match = mf.List(mf.String(validate=validate.Length(min=1, max=64)))
    missed_call_task = mf.Boolean(load_default=True)
    callback_minutes = mf.Integer(
        load_default=DEFAULT_CALLBACK_MINUTES, validate=validate.Range(min=0, max=10_080)
    )
    webhook_window = mf.Integer(
        load_default=DEFAULT_WEBHOOK_WINDOW, validate=validate.Range(min=10, max=86_400)
    )


def of(registry: Any) -> dict[str, Any]:
    """The telephony settings of a configuration, defaults filled in."""
    own = dict(registry.plugins.get("telephony") or {})
    own.setdefault("extension_field", DEFAULT_EXTENSION_FIELD)
    own.setdefault("missed_call_task", True)
    own.setdefault("callback_minutes", DEFAULT_CALLBACK_MINUTES)
    own.setdefault("webhook_window", DEFAULT_WEBHOOK_WINDOW)
    own["region"] = own.get("region") or registry.settings.get("region") or "RU"
    return own
