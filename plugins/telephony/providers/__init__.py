"""The providers shipped with the CRM, each a plugin of its own (entry points
in setup.cfg), turned on beside ``telephony`` under ``plugins`` in
config.yaml:

- ``simulator``: calls and SMS that happen on their own, for the demo and tests;
- ``asterisk``: Asterisk through its Manager Interface (AMI);
- ``cloudpbx``: a cloud PBX over HTTP with signed webhooks;
- ``twilio``: Twilio's voice API and status callbacks;
- ``sms_gateway``: an HTTP SMS gateway with signed delivery receipts;
- ``smpp``: an SMSC over SMPP 3.4.

Each stands on ``engine.api`` and ``plugins.telephony.api`` only, as an
outside provider would (docs/telephony.md, "Writing a provider").
"""
