"""The admin web console's REST API (issue 19): :func:`synchub.web.api.create_app`."""
