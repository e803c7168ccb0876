"""The app for a WSGI server: ``CRM_CONFIG=configs/wholesale gunicorn 'engine.wsgi:app'``.

Several workers may serve one configuration (the app keeps no state another
worker needs). Background jobs then run in ``crm worker PATH``, one or more
processes beside them: a web worker never starts the in-process runner.
"""

from __future__ import annotations

import os
import sys

from engine.app import create_app
from engine.errors import MetadataError

_path = os.environ.get("CRM_CONFIG")
if not _path:
    sys.exit("set CRM_CONFIG to the configuration folder, e.g. CRM_CONFIG=configs/wholesale")
try:
    app = create_app(_path)
except MetadataError as exc:  # the consultant's file:line:col lines, not a traceback
    sys.exit("\n".join(str(p) for p in exc.problems))
