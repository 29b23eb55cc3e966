"""The operator's dashboard: a run's stage, gates, forecast, calendar, tasks, deliveries and
members as web pages, served by `sop serve` beside the events endpoint.

Imported only by `sop serve` (it brings Starlette and Jinja2): `sop --help` and `sop validate`
never load it. `dashboard_routes()` mounts it into another Starlette app after that app's own
routes; `create_dashboard_app()` serves it alone; `check_access()` refuses to serve it beyond
loopback without a token (`SOP_TOKEN`).
"""

from .app import DashboardSettings, create_dashboard_app, dashboard_routes
from .auth import TOKEN_ENV, AccessError, check_access

__all__ = [
    "TOKEN_ENV",
    "AccessError",
    "DashboardSettings",
    "check_access",
    "create_dashboard_app",
    "dashboard_routes",
]
