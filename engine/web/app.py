"""The dashboard as Starlette routes: pages, the changes an operator makes, sign-in.

Pages are rendered on the server (Jinja2, autoescaped) from the page models of views.py;
htmx (vendored in static/) swaps the row a change touched. Every change goes through the store
command the CLI uses (`complete_task`, `postpone_task`, `resolve`; an application's decision,
opening and closing an incident through the engine functions `sop applications` and
`sop incident` call), with the actor, so it lands in the audit log. Store calls and rendering
run in the thread pool: the store's calls block.

`create_dashboard_app()` is the dashboard on its own; `dashboard_routes()` mounts it into
another app (the events endpoint of `sop serve`) after that app's own routes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..program import Program
from ..run.ports import Clock
from ..run.runner import RunError
from ..run.store.base import Resolution, StateStore, StoreError
from . import views
from .auth import (
    BEARER_ACTOR,
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    LOCAL_ACTOR,
    SESSION_SECONDS,
    TOKEN_ENV,
    Session,
    SessionCodec,
    Throttle,
    bearer,
    clean_name,
    csrf_ok,
    host_is_loopback,
    same_origin,
    token_matches,
)
from .i18n import CATALOGS, Translator, negotiate
from .i18n import COOKIE as LANG_COOKIE

HERE = Path(__file__).resolve().parent
MAX_FORM = 16 * 1024  # bytes of a form body
log = logging.getLogger("sop.web")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


@dataclass(frozen=True)
class DashboardSettings:
    """How the dashboard is served: its token, clock and the extra host names it answers to."""

    token: str | None = None  # SOP_TOKEN; None: loopback only, no sign-in
    clock: Clock | None = None  # None: the wall clock
    allowed_hosts: tuple[str, ...] = ()  # names a reverse proxy serves it under (Origin check)
    session_seconds: int = SESSION_SECONDS
    throttle: Throttle = field(default_factory=Throttle)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **more: Any) -> DashboardSettings:
        """Settings with the token from `SOP_TOKEN` (empty counts as none)."""
        env = os.environ if env is None else env
        return cls(token=env.get(TOKEN_ENV) or None, **more)


@dataclass(frozen=True)
class Who:
    """Who sent a request: the actor for the audit log, and the session (None for Bearer)."""

    actor: str
    session: Session | None
    fresh: bool = False  # a new local session: its cookie is set on the answer


class _Refused(Exception):
    def __init__(self, status: int, key: str, **args: Any) -> None:
        super().__init__(key)
        self.status = status
        self.key = key
        self.args_ = args


def _dom_id(prefix: str, key: str) -> str:
    return prefix + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def _local_path(value: str | None, default: str = "/") -> str:
    """A path on this site only (never `//host` or a scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


class Dashboard:
    """The dashboard of one run: its routes and what they share."""

    def __init__(
        self, program: Program, store: StateStore, run_id: str, settings: DashboardSettings
    ) -> None:
        self.program = program
        self.store = store
        self.run_id = run_id
        self.settings = settings
        self.codec = SessionCodec(settings.token, settings.session_seconds)
        self.env = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # -- plumbing --------------------------------------------------------------------------

    def now(self) -> datetime:
        """The dashboard's present: its clock, but never before the run's own daily checks (a
        run driven by a virtual clock may be ahead of the wall clock; its days must not count
        backwards)."""
        return self.run_ahead() or self._clock_now()

    def _clock_now(self) -> datetime:
        clock = self.settings.clock
        t = clock.now() if clock is not None else datetime.now(UTC)
        return t.astimezone(self.program.tz)

    def run_ahead(self) -> datetime | None:
        """The run's checked time when it is ahead of the dashboard's clock, else None."""
        run = self.store.get_run(self.run_id)
        if run is not None and run.checked_until > self._clock_now():
            return run.checked_until.astimezone(self.program.tz)
        return None

    def who(self, request: Request) -> Who | None:
        """Who the request is from, or None when it must sign in."""
        cookie = self.codec.loads(request.cookies.get(COOKIE))
        if not self.settings.token:
            return (
                Who(LOCAL_ACTOR, cookie)
                if cookie
                else Who(LOCAL_ACTOR, Session.new(LOCAL_ACTOR), True)
            )
        given = bearer(request.headers.get("authorization"))
        if given is not None:
            return Who(BEARER_ACTOR, None) if token_matches(self.settings.token, given) else None
        return Who(cookie.name, cookie) if cookie else None

    def translator(self, request: Request) -> Translator:
        return Translator(
            negotiate(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))
        )

    def set_session(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            COOKIE, self.codec.dumps(session), max_age=self.settings.session_seconds,
            httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/",
        )  # fmt: skip

    def render(
        self,
        request: Request,
        template: str,
        who: Who | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        t = self.translator(request)
        tz = self.program.tz

        def local(x: datetime) -> datetime:
            return x.astimezone(tz)

        def dt(x: datetime | None) -> str:
            return "—" if x is None else local(x).strftime("%Y-%m-%d %H:%M")

        def short(x: datetime | None) -> str:
            return "—" if x is None else local(x).strftime("%m-%d %H:%M")

        def hm(x: datetime) -> str:
            return local(x).strftime("%H:%M")

        def say(words: tuple[str, Mapping[str, Any]] | None) -> str:
            if words is None:
                return ""
            key, args = words
            shown: dict[str, Any] = {}
            for k, v in args.items():
                if isinstance(v, datetime):
                    v = dt(v)
                elif isinstance(v, date):
                    v = v.isoformat()
                elif isinstance(v, str) and v in CATALOGS["en"] and "." in v:
                    v = t(v)
                shown[k] = v
            return t(key, **shown)

        def weekday(d: date) -> str:
            return t(f"wd.{d.weekday()}")

        def kind(k: str) -> str:
            return t(f"kind.{k}") if f"kind.{k}" in CATALOGS["en"] else k

        tiers = self.program.playbook.tiers
        levels = sorted(tiers.levels, key=lambda x: x.rank) if tiers else []

        def tier(k: str | None) -> str:
            """A tier's title; a member not yet reviewed is in the lowest tier."""
            level = next((x for x in levels if x.id == k), levels[0] if levels else None)
            return level.title if level is not None else (k or "—")

        ahead = self.run_ahead()
        now = ahead or self._clock_now()
        html = self.env.get_template(template).render(
            t=t, say=say, dt=dt, short=short, hm=hm, weekday=weekday, kind=kind, tier=tier,
            now=now, tz=str(tz), run_ahead=ahead,
            who=who, csrf=who.session.csrf if who and who.session else "",
            path=request.url.path, query=request.url.query,
            token_required=bool(self.settings.token), playbook=self.program.playbook,
            dom_id=_dom_id, quote=quote,
            postpone_default=(now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            **context,
        )  # fmt: skip
        response = HTMLResponse(html, status_code=status)
        response.headers["cache-control"] = "no-store"
        response.headers["vary"] = "Cookie, Accept-Language"
        if who is not None and who.fresh and who.session is not None:
            self.set_session(response, request, who.session)
        return response

    def refuse(
        self, request: Request, who: Who | None, status: int, key: str, **args: Any
    ) -> Response:
        """An error as a page, or (htmx) as a message for the flash area."""
        if request.headers.get("hx-request"):
            t = self.translator(request)
            return HTMLResponse(
                f'<p class="flash bad">{Markup.escape(t(key, **args))}</p>', status_code=status
            )
        return self.render(request, "error.html", who, status, message_key=key, message_args=args)

    def must_sign_in(self, request: Request) -> Response:
        target = "/login?next=" + quote(
            request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe=""
        )
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": target})
        if request.method != "GET" or request.headers.get("authorization"):
            return PlainTextResponse(
                "sign in first (or send Authorization: Bearer <SOP_TOKEN>)",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="sop"'},
            )
        return RedirectResponse(target, status_code=303)

    # -- pages -----------------------------------------------------------------------------

    def page(
        self, template: str, build: Callable[[views.Reader, Request], Any]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            who = self.who(request)
            if who is None:
                return self.must_sign_in(request)
            reader = views.Reader(self.program, self.store, self.run_id, self.now())
            try:
                data = await run_in_threadpool(build, reader, request)
            except RunError:
                return self.refuse(request, who, 409, "error.no_run", run=self.run_id)
            except StoreError as e:
                log.warning("the state store is unavailable: %s", e)
                return self.refuse(request, who, 503, "error.store")
            except _Refused as r:
                return self.refuse(request, who, r.status, r.key, **r.args_)
            return await run_in_threadpool(lambda: self.render(request, template, who, data=data))

        return endpoint

    @staticmethod
    def _overview(r: views.Reader, request: Request) -> Any:
        return views.overview(r)

    def _forecast(self, r: views.Reader, request: Request) -> Any:
        t = self.translator(request)
        extra = [m for m in request.query_params.getlist("m") if m][:10]
        keys = ("band", "median", "actual", "threshold")
        legend = [t(f"forecast.legend_{k}") for k in keys]
        return views.forecast(r, extra, legend)

    @staticmethod
    def _calendar(r: views.Reader, request: Request) -> Any:
        start = None
        given = request.query_params.get("from")
        if given:
            try:
                start = date.fromisoformat(given)
            except ValueError:
                start = None
        return views.calendar(r, start)

    @staticmethod
    def _tasks(r: views.Reader, request: Request) -> Any:
        try:
            limit = min(500, max(1, int(request.query_params.get("limit", views.TASK_LIMIT))))
        except ValueError:
            limit = views.TASK_LIMIT
        if "role" not in request.query_params:
            return views.tasks(r, limit=limit)
        role = request.query_params["role"]
        return views.tasks(r, role or None, every=False, limit=limit)

    @staticmethod
    def _deliveries(r: views.Reader, request: Request) -> Any:
        return views.deliveries(r)

    def _members(self, r: views.Reader, request: Request) -> Any:
        return views.members(r, self.translator(request)("members.total"))

    @staticmethod
    def _applications(r: views.Reader, request: Request) -> Any:
        return views.applications(r)

    @staticmethod
    def _incidents(r: views.Reader, request: Request) -> Any:
        return views.incidents(r)

    # -- changes ---------------------------------------------------------------------------

    async def _form(self, request: Request) -> dict[str, str]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            raise _Refused(415, "error.forbidden")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise _Refused(413, "error.forbidden")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise _Refused(400, "error.forbidden") from None
        return {k: v[-1] for k, v in fields.items()}

    def change(
        self, act: Callable[[Request, Who, dict[str, str]], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A state-changing endpoint: same origin, signed in, CSRF token, then `act`."""

        async def endpoint(request: Request) -> Response:
            allowed = self.settings.allowed_hosts
            if not same_origin(request.headers, request.url.scheme, allowed):
                log.info("refused a cross-site %s %s", request.method, request.url.path)
                return self.refuse(request, None, 403, "error.forbidden")
            who = self.who(request)
            if who is None or who.fresh:  # a fresh local session has no page that knows it
                if who is not None:
                    return self.refuse(request, who, 403, "error.forbidden")
                return self.must_sign_in(request)
            try:
                form = await self._form(request)
                if who.session is not None:
                    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
                    if not csrf_ok(who.session, given):
                        log.info("refused %s %s: CSRF token", request.method, request.url.path)
                        raise _Refused(403, "error.forbidden")
                return await act(request, who, form)
            except _Refused as r:
                return self.refuse(request, who, r.status, r.key, **r.args_)
            except StoreError as e:
                log.warning("the state store is unavailable: %s", e)
                return self.refuse(request, who, 503, "error.store")
            except RunError:
                return self.refuse(request, who, 409, "error.no_run", run=self.run_id)

        return endpoint

    def _answer(
        self,
        request: Request,
        who: Who,
        form: Mapping[str, str],
        template: str,
        flash: str,
        back: str,
        **context: Any,
    ) -> Response:
        """htmx: the changed item, and the message as an `sop-flash` event; a plain form: back
        to the page it was sent from."""
        if not request.headers.get("hx-request"):
            return RedirectResponse(_local_path(form.get("back"), back), status_code=303)
        response = self.render(request, template, who, **context)
        # JSON escaped to ASCII: a header carries no Chinese as such
        response.headers["HX-Trigger"] = json.dumps({"sop-flash": flash})
        return response

    async def task_done(self, request: Request, who: Who, form: dict[str, str]) -> Response:
        task_id = form.get("id", "")
        now = self.now()
        ok = await run_in_threadpool(self.store.complete_task, self.run_id, task_id, now, who.actor)
        if not ok:
            raise _Refused(409, "tasks.gone")
        log.info("task %s done by %s", task_id, who.actor)
        task = await run_in_threadpool(self._task, task_id)
        t = self.translator(request)
        return self._answer(request, who, form, "_task_row.html", t("tasks.marked_done"),
                            "/tasks", task=task)  # fmt: skip

    async def task_postpone(self, request: Request, who: Who, form: dict[str, str]) -> Response:
        task_id = form.get("id", "")
        now = self.now()
        preset = form.get("preset", "")
        if preset == "hour":
            to = now + timedelta(hours=1)
        elif preset == "tomorrow":
            to = datetime.combine(now.date() + timedelta(days=1), datetime.min.time()).replace(
                hour=9, tzinfo=self.program.tz
            )
        else:
            parsed = views.parse_local(form.get("to", ""), self.program)
            if parsed is None or parsed <= now:
                raise _Refused(400, "tasks.bad_time")
            to = parsed
        to = to.replace(second=0, microsecond=0)
        ok = await run_in_threadpool(self.store.postpone_task, self.run_id, task_id, to, who.actor)
        if not ok:
            raise _Refused(409, "tasks.gone")
        task = await run_in_threadpool(self._task, task_id)
        t = self.translator(request)
        flash = t(
            "tasks.postponed_to", at=to.astimezone(self.program.tz).strftime("%Y-%m-%d %H:%M")
        )
        return self._answer(request, who, form, "_task_row.html", flash, "/tasks", task=task)

    def _task(self, task_id: str) -> views.TaskView | None:
        task = self.store.get_task(self.run_id, task_id)
        reader = views.Reader(self.program, self.store, self.run_id, self.now())
        return views.task_view(reader, task) if task is not None else None

    async def resolve(self, request: Request, who: Who, form: dict[str, str]) -> Response:
        key = form.get("key", "")
        try:
            decision = Resolution(form.get("decision", ""))
        except ValueError:
            raise _Refused(400, "error.forbidden") from None
        done = await run_in_threadpool(
            self.store.resolve, self.run_id, key, decision, self.now(), who.actor
        )
        t = self.translator(request)
        if done is None:
            current = await run_in_threadpool(self.store.get_occurrence, self.run_id, key)
            state = t(f"state.{current.state}") if current else "—"
            raise _Refused(409, "resolve.gone", state=state)
        log.info("%s resolved %s: %s", who.actor, key, decision)
        flash = t("resolve.done", state=t(f"state.{done.state}"))
        return self._answer(request, who, form, "_delivery_row.html", flash, "/deliveries",
                            o=done, decided=True)  # fmt: skip

    async def decide(self, request: Request, who: Who, form: dict[str, str]) -> Response:
        """Approve or reject a pending application (`sop applications approve|reject`)."""
        from ..run.service import decide_application

        member = form.get("member", "")
        decision = form.get("decision", "")
        if decision not in ("approve", "reject") or not member:
            raise _Refused(400, "error.forbidden")
        note = form.get("note", "")[:500]
        try:
            done = await run_in_threadpool(
                decide_application, self.program, self.store, self.run_id, member,
                decision == "approve", self.now(), who.actor, note,
            )  # fmt: skip
        except RunError as e:
            raise _Refused(409, "applications.refused", why=str(e)) from None
        if done.refused:
            raise _Refused(409, "applications.refused", why=next(iter(done.refused.values())))
        log.info("%s %sd the application of %s", who.actor, decision, member)
        t = self.translator(request)
        flash = t("applications.approved" if decision == "approve" else "applications.rejected",
                  member=member)  # fmt: skip
        return self._answer(request, who, form, "_flash.html", flash, "/applications",
                            message=flash)  # fmt: skip

    async def incident_open(self, request: Request, who: Who, form: dict[str, str]) -> Response:
        """Start an incident of the playbook (`sop incident open NAME`)."""
        from ..run import incidents

        name = form.get("name", "")
        if name not in self.program.playbook.incidents:
            raise _Refused(400, "error.forbidden")
        return await self._incident_change(request, who, form, incidents.open_incident, name,
                                           "incidents.opened")  # fmt: skip

    async def incident_close(self, request: Request, who: Who, form: dict[str, str]) -> Response:
        """Close an open incident (`sop incident close ID`)."""
        from ..run import incidents

        return await self._incident_change(request, who, form, incidents.close_incident,
                                           form.get("id", ""), "incidents.closed")  # fmt: skip

    async def _incident_change(
        self, request: Request, who: Who, form: dict[str, str], change: Callable[..., Any],
        ref: str, flash_key: str,
    ) -> Response:  # fmt: skip
        """Open or close an incident as `who`; `flash_key` (incidents.opened|closed) says so."""
        note = form.get("note", "")[:500]
        try:
            rec = await run_in_threadpool(
                change, self.program, self.store, self.run_id, ref, self.now(), who.actor, note
            )
        except RunError as e:
            raise _Refused(409, "incidents.refused", why=str(e)) from None
        log.info("%s %s incident %s", who.actor, flash_key.rpartition(".")[2], rec.id)
        flash = self.translator(request)(flash_key, id=rec.id)
        return self._answer(request, who, form, "_flash.html", flash, "/incidents",
                            message=flash)  # fmt: skip

    # -- sign-in and language --------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        if not self.settings.token:
            return RedirectResponse("/", status_code=303)
        nxt = _local_path(request.query_params.get("next"))
        return self.render(request, "login.html", None, next=nxt, error=None, name="")

    async def login(self, request: Request) -> Response:
        if not self.settings.token:
            return RedirectResponse("/", status_code=303)
        if not same_origin(request.headers, request.url.scheme, self.settings.allowed_hosts):
            return self.refuse(request, None, 403, "error.forbidden")
        client = request.client.host if request.client else "?"
        try:
            form = await self._form(request)
        except _Refused as r:
            return self.refuse(request, None, r.status, r.key)
        nxt = _local_path(form.get("next"))
        name = clean_name(form.get("name", ""))
        if self.settings.throttle.blocked(client):
            return self.render(request, "login.html", None, 429, next=nxt,
                               error="login.throttled", name=form.get("name", ""))  # fmt: skip
        if not token_matches(self.settings.token, form.get("token", "")):
            self.settings.throttle.failed(client)
            log.info("a failed sign-in from %s", client)
            return self.render(request, "login.html", None, 401, next=nxt, error="login.bad",
                               name=form.get("name", ""))  # fmt: skip
        if name is None:
            return self.render(request, "login.html", None, 400, next=nxt,
                               error="login.bad_name", name="")  # fmt: skip
        response = RedirectResponse(nxt, status_code=303)
        self.set_session(response, request, Session.new(name))
        log.info("%s signed in from %s", name, client)
        return response

    async def logout(self, request: Request, who: Who, form: dict[str, str]) -> Response:
        response = RedirectResponse("/login" if self.settings.token else "/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def language(self, request: Request) -> Response:
        code = request.path_params["code"]
        response = RedirectResponse(_local_path(request.query_params.get("next")), 303)
        if code in CATALOGS:
            response.set_cookie(LANG_COOKIE, code, max_age=365 * 86_400, samesite="lax", path="/")
        return response

    async def not_found(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return self.render(request, "error.html", None, 404, message_key="error.not_found",
                               message_args={})  # fmt: skip
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code)

    # -- the app ---------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page("overview.html", self._overview), methods=["GET"]),
            Route("/forecast", self.page("forecast.html", self._forecast), methods=["GET"]),
            Route("/calendar", self.page("calendar.html", self._calendar), methods=["GET"]),
            Route("/tasks", self.page("tasks.html", self._tasks), methods=["GET"]),
            Route("/deliveries", self.page("deliveries.html", self._deliveries), methods=["GET"]),
            Route("/members", self.page("members.html", self._members), methods=["GET"]),
            Route(
                "/applications",
                self.page("applications.html", self._applications),
                methods=["GET"],
            ),
            Route("/incidents", self.page("incidents.html", self._incidents), methods=["GET"]),
            Route("/applications/decide", self.change(self.decide), methods=["POST"]),
            Route("/incidents/open", self.change(self.incident_open), methods=["POST"]),
            Route("/incidents/close", self.change(self.incident_close), methods=["POST"]),
            Route("/tasks/done", self.change(self.task_done), methods=["POST"]),
            Route("/tasks/postpone", self.change(self.task_postpone), methods=["POST"]),
            Route("/deliveries/resolve", self.change(self.resolve), methods=["POST"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.change(self.logout), methods=["POST"]),
            Route("/lang/{code}", self.language, methods=["GET"]),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]


class Guard:
    """ASGI middleware: security headers on every answer; without a token, loopback hosts only
    (a page on another site that rebinds its name to 127.0.0.1 gets nothing)."""

    def __init__(self, app: ASGIApp, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.loopback_only:
            host = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1")
            if not host_is_loopback(host):
                response = PlainTextResponse(
                    "this dashboard answers to 127.0.0.1 / localhost only (set SOP_TOKEN to"
                    " serve it under another name)",
                    status_code=421,
                )
                await response(scope, receive, send)
                return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def create_dashboard_app(
    program: Program,
    store: StateStore,
    run_id: str,
    settings: DashboardSettings | None = None,
) -> ASGIApp:
    """The dashboard as an ASGI app (Starlette behind the security `Guard`)."""
    settings = settings or DashboardSettings()
    board = Dashboard(program, store, run_id, settings)
    app = Starlette(routes=board.routes(), exception_handlers={HTTPException: board.not_found})
    app.state.dashboard = board
    return Guard(app, loopback_only=not settings.token)


def dashboard_routes(
    program: Program,
    store: StateStore,
    run_id: str,
    settings: DashboardSettings | None = None,
) -> list[BaseRoute]:
    """The dashboard mounted at `/`: add these after another app's routes (`/events` first)."""
    return [Mount("", app=create_dashboard_app(program, store, run_id, settings))]
