"""Documents -> Playbook: parameters, fragment includes, and the typed model with spans."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any, NamedTuple

from ..core.diagnostics import Collector, Span
from ..core.expr import ExprSyntaxError, parse
from ..core.files import FileRefused, default_root, resolve_include
from ..core.suggest import did_you_mean
from ..core.timeutil import Window, parse_clock, parse_duration
from .loader import Document, KeyPath, LoadError, load_file
from .model import (
    Action,
    Admission,
    Attribute,
    AttributeType,
    Audience,
    Channel,
    Community,
    Count,
    CountOf,
    Cron,
    DayOffset,
    Deadline,
    Effect,
    Exit,
    Expectation,
    Expression,
    Incident,
    IncidentStep,
    Leaderboard,
    Metric,
    Moderation,
    OnEvent,
    Playbook,
    Points,
    Redemption,
    Relative,
    Role,
    Schedule,
    Segment,
    Stage,
    Target,
    TeamAssignment,
    Teams,
    Template,
    Tier,
    Tiers,
)
from .schema import json_path, validator

_PARAM = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")
DEFAULT_TIME = time(9, 0)


@dataclass
class Fragment:
    """A loaded fragment and the stage that includes it."""

    stage: str
    doc: Document


@dataclass
class Sources:
    """Every document a playbook is made of."""

    main: Document
    fragments: list[Fragment] = field(default_factory=list)
    # fragments read within limits that did not parse: kept so a report can quote their lines
    unparsed: list[Document] = field(default_factory=list)

    def documents(self) -> list[Document]:
        """Main document first, then fragments."""
        return [self.main, *(f.doc for f in self.fragments)]


# -- parameters ------------------------------------------------------------------------------


def substitute(doc: Document, values: dict[str, Any], out: Collector) -> None:
    """Replace `${name}` in every string of `doc` (a whole-string reference keeps its type)."""
    if "${" not in doc.text:
        return

    def one(v: str, path: KeyPath) -> Any:
        whole = _PARAM.fullmatch(v)
        if whole:
            name = whole.group(1)
            if name in values:
                return values[name]
            _unknown_param(name, doc, path, out, values)
            return v

        def repl(m: re.Match[str]) -> str:
            if m.group(1) in values:
                return str(values[m.group(1)])
            _unknown_param(m.group(1), doc, path, out, values)
            return m.group(0)

        return _PARAM.sub(repl, v)

    # in place: only strings that mention `${` change, containers stay as they are
    stack: list[tuple[Any, KeyPath]] = [(doc.data, ())]
    while stack:
        node, path = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in list(items):
            if isinstance(v, str):
                if "${" in v:
                    node[k] = one(v, (*path, k))
            elif isinstance(v, (dict, list)):
                stack.append((v, (*path, k)))


def _unknown_param(name: str, doc: Document, path: KeyPath, out: Collector, values: dict) -> None:
    known = ", ".join(sorted(values)) or "none declared"
    out.add(
        "SOP008",
        doc.span(path),
        f"unknown parameter `${{{name}}}` (known: {known})",
        json_path=json_path(path),
    )


def param_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """`params:` defaults of a document (schema-checked later)."""
    params = data.get("params")
    if not isinstance(params, dict):
        return {}
    return {k: v.get("default") for k, v in params.items() if isinstance(v, dict)}


def load_sources(
    path: str,
    out: Collector,
    overrides: dict[str, Any] | None = None,
    main: Document | None = None,
    *,
    root: str | None = None,
) -> Sources:
    """Load a playbook and its fragments, substitute parameters, and check both schemas.

    Every file is read confined to `root` (default: the playbook's folder): an include that
    leaves it, an absolute path, or a symlink out is a located SOP007 and is never opened.
    """
    if root is None:
        root = default_root(path)
    main = main or load_file(path, root=root)
    values = {**param_defaults(main.data), **(overrides or {})}
    substitute(main, values, out)
    validator("playbook.schema.json").validate(main, out)
    sources = Sources(main)
    stages = main.data.get("stages")
    if not isinstance(stages, dict):
        return sources
    for sid, stage in stages.items():
        if not isinstance(stage, dict):
            continue
        for inc in _includes(stage, sid):
            span = main.span(inc.path)
            frag = _include(path, inc.fragment, root, span, json_path(inc.path), sources, out)
            if frag is None:
                continue
            _unknown_with(main, inc, frag, out)
            fvalues = {**param_defaults(frag.data), **values, **inc.values}
            substitute(frag, fvalues, out)
            validator("fragment.schema.json").validate(frag, out)
            sources.fragments.append(Fragment(sid, frag))
    return sources


def _include(
    path: str, rel: str, root: str, span: Span, jpath: str, sources: Sources, out: Collector
) -> Document | None:
    """Load one fragment inside `root`; a refusal or an unreadable file is SOP007 at the include."""
    try:
        target = resolve_include(os.path.dirname(path), rel, root)
        return load_file(target, root=root)
    except FileRefused as e:
        message = e.message
    except LoadError as e:
        d = e.diagnostic
        if d.code != "SOP006":
            out.items.append(d)  # located in the fragment, which was read within limits
            if e.document is not None:
                sources.unparsed.append(e.document)
            return None
        message = d.message
    # The message names the path as written in the playbook, never the file's content.
    out.add("SOP007", span, f"cannot include {rel!r}: {message}", json_path=jpath)
    return None


class _Include(NamedTuple):
    """One `include:` entry: where it is written, the fragment path, its `with:` values."""

    path: KeyPath  # of the fragment path in the playbook
    fragment: str
    values: dict[str, Any]
    with_path: KeyPath  # of the `with:` mapping


def _includes(stage: dict[str, Any], sid: str) -> list[_Include]:
    inc = stage.get("include")
    base: KeyPath = ("stages", sid, "include")
    if isinstance(inc, str):
        w = stage.get("with")
        return [_Include(base, inc, w if isinstance(w, dict) else {}, ("stages", sid, "with"))]
    out: list[_Include] = []
    if isinstance(inc, list):
        for i, item in enumerate(inc):
            if isinstance(item, str):
                out.append(_Include((*base, i), item, {}, (*base, i, "with")))
            elif isinstance(item, dict) and isinstance(item.get("fragment"), str):
                w = item.get("with")
                values = w if isinstance(w, dict) else {}
                out.append(
                    _Include((*base, i, "fragment"), item["fragment"], values, (*base, i, "with"))
                )
    return out


def _unknown_with(main: Document, inc: _Include, frag: Document, out: Collector) -> None:
    """`with:` keys the fragment neither declares nor uses: their value would be ignored."""
    declared = set(param_defaults(frag.data)) | set(_PARAM.findall(frag.text))
    for name in inc.values:
        if name in declared:
            continue
        known = ", ".join(sorted(param_defaults(frag.data))) or "none declared"
        out.add(
            "SOP290",
            main.key_span((*inc.with_path, name)),
            f"`with:` gives `{name}`, which fragment {inc.fragment!r} does not declare"
            f" (its params: {known}); the value would be ignored",
            hint=did_you_mean(name, declared) or None,
            json_path=json_path((*inc.with_path, name)),
        )


# -- model -----------------------------------------------------------------------------------


class LazySpans(Mapping[str, Span]):
    """Field spans of one object, made on first use (most are never asked for)."""

    __slots__ = ("_doc", "_extra", "_keys", "_path")

    def __init__(self, doc: Document, path: KeyPath, keys: Iterable[str]) -> None:
        self._doc, self._path, self._keys = doc, path, frozenset(keys)
        self._extra: dict[str, Span] = {}

    def __getitem__(self, key: str) -> Span:
        if key in self._extra:
            return self._extra[key]
        if key == "":
            return self._doc.key_span(self._path)
        if key in self._keys:
            return self._doc.span((*self._path, key))
        raise KeyError(key)

    def __setitem__(self, key: str, span: Span) -> None:
        self._extra[key] = span

    def update(self, other: Mapping[str, Span]) -> None:
        """Add explicit spans (nested fields)."""
        self._extra.update(other)

    def __iter__(self) -> Iterator[str]:
        return iter({"", *self._keys, *self._extra})

    def __len__(self) -> int:
        return len({"", *self._keys, *self._extra})


def _spans(doc: Document, path: KeyPath, data: dict[str, Any]) -> LazySpans:
    return LazySpans(doc, path, data)


def expression(doc: Document, path: KeyPath, text: str, out: Collector | None) -> Expression:
    """A located expression; syntax errors are reported to `out`."""
    span, exact = _text_start(doc, path, text)
    try:
        node = parse(text)
    except ExprSyntaxError as e:
        node = None
        if out is not None:
            pr = e.problem
            expr = Expression(text, None, span, exact)
            out.add(
                pr.code,
                expr.span_of(pr.start, pr.end),
                f"in `{text}`: {pr.message}",
                json_path=json_path(path),
            )
    return Expression(text, node, span, exact)


def _text_start(doc: Document, path: KeyPath, text: str) -> tuple[Span, bool]:
    """The span of the first character of a scalar's text, and whether columns map exactly."""
    span = doc.span(path)
    style = doc.styles.get(tuple(path))
    if style is None and span.line == span.end_line:
        return span, True
    if style in ("'", '"') and span.line == span.end_line:
        raw = doc.line(span.line)[span.column : span.end_column - 2]
        return Span(span.file, span.line, span.column + 1, span.line, span.end_column - 1), (
            raw == text
        )
    if style in ("|", ">") and "\n" not in text.strip():
        for n in range(span.line + 1, span.end_line + 1):
            col = doc.line(n).find(text.strip())
            if col >= 0:
                return Span(span.file, n, col + 1, n, col + 1 + len(text.strip())), True
    return span, False


def template(doc: Document, path: KeyPath, tid: str, text: str) -> Template:
    """A template with the file position of its first character."""
    span = doc.span(path)
    style = doc.styles.get(tuple(path))
    if style in ("|", ">") and span.end_line > span.line:
        src = doc.line(span.line + 1)
        indent = len(src) - len(src.lstrip(" "))
        return Template(tid, text, span, span.line + 1, indent + 1)
    start, _ = _text_start(doc, path, text)
    return Template(tid, text, span, start.line, start.column)


def _dur(v: Any) -> timedelta | None:
    return parse_duration(v) if isinstance(v, str) else None


def fraction(v: Any) -> float | None:
    """A number, or a percentage string such as `30%` as 0.3 (schema-checked before)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.endswith("%"):
        try:
            return float(v[:-1]) / 100
        except ValueError:
            return None
    return None


def _schedule(a: dict[str, Any]) -> Schedule:
    if "cron" in a:
        return Cron(str(a["cron"]))
    if "day" in a:
        return DayOffset(int(a["day"]), parse_clock(a["time"]) if "time" in a else DEFAULT_TIME)
    if "after" in a:
        return Relative(a["after"], _dur(a.get("delay")) or timedelta(0))
    if "before" in a:
        return Relative(a["before"], -(_dur(a.get("by")) or timedelta(0)))
    return OnEvent(
        event=a["on"],
        within=_dur(a.get("within")),
        silent_for=_dur(a.get("for")),
        count=a.get("count"),
        at=tuple(parse_duration(x) for x in a.get("at", [])),
        tier=a.get("tier"),
        streak=a.get("streak"),
        counter=a.get("counter"),
        reaches=float(a["reaches"]) if "reaches" in a else None,
        # `item` narrows `member.redeemed`; on `do: redeem` it is the item handed out
        item=a.get("item") if a.get("do") != "redeem" else None,
    )


def _action(
    doc: Document,
    path: KeyPath,
    aid: str,
    sid: str | None,
    a: dict[str, Any],
    defaults: dict[str, Any],
    out: Collector,
) -> Action:
    qh = a.get("quiet_hours", defaults.get("quiet_hours"))
    is_task = a["do"] == "task"
    reward = a.get("reward") or {}
    effect = Effect(**{k: float(v) for k, v in (a.get("effect") or {}).items()})
    to = a.get(
        "to", Audience.STAFF.value if is_task else defaults.get("to", Audience.EVERYONE.value)
    )
    top = None
    if isinstance(to, dict):
        top = Leaderboard(
            n=int(to["top"]),
            by=to["by"],
            teams=bool(to.get("teams")),
            among=to.get("among"),
            spans=_spans(doc, (*path, "to"), to),
        )
        to = Audience.TOP.value
    return Action(
        id=aid,
        stage=sid,
        kind=a["do"],
        schedule=_schedule(a),
        owner=a.get("owner", defaults.get("owner")),
        audience=to,
        backend=a.get("backend", defaults.get("staff_backend" if is_task else "backend")),
        template=a.get("template"),
        text=template(doc, (*path, "text"), aid, a["text"]) if "text" in a else None,
        quiet_hours=Window.parse(qh) if qh else None,
        retries=int(a.get("retries", defaults.get("retries", 3))),
        effect=effect,
        guard=expression(doc, (*path, "if"), a["if"], out) if "if" in a else None,
        reward_item=reward.get("item"),
        reward_streak=reward.get("streak") or a.get("streak"),
        reward_points=reward.get("points"),
        title=a.get("title") or aid,
        spans=_spans(doc, path, a),
        where=expression(doc, (*path, "where"), a["where"], out) if "where" in a else None,
        for_each=a.get("for_each"),
        top=top,
        redeem_item=a.get("item") if a["do"] == "redeem" else None,
    )


def build(sources: Sources, out: Collector) -> Playbook:
    """The Playbook model of schema-valid sources; expression syntax errors go to `out`."""
    doc = sources.main
    d: dict[str, Any] = doc.data
    defaults = d.get("defaults") or {}
    actions: dict[str, Action] = {}
    templates: dict[str, Template] = {}
    stages: dict[str, Stage] = {}
    for tid, text in (d.get("templates") or {}).items():
        templates[tid] = template(doc, ("templates", tid), tid, text)
    frag_actions: dict[str, list[tuple[Document, str, dict[str, Any]]]] = {}
    for frag in sources.fragments:
        fd = frag.doc.data
        for aid, a in (fd.get("actions") or {}).items():
            frag_actions.setdefault(frag.stage, []).append((frag.doc, aid, a))
        for tid, text in (fd.get("templates") or {}).items():
            if tid in templates:
                out.add(
                    "SOP201",
                    frag.doc.key_span(("templates", tid)),
                    f"template `{tid}` is already defined at line {templates[tid].span.line}"
                    f" of {templates[tid].span.file}",
                )
                continue
            templates[tid] = template(frag.doc, ("templates", tid), tid, text)

    for aid, a in (d.get("routines") or {}).items():
        actions[aid] = _action(doc, ("routines", aid), aid, None, a, defaults, out)
    for sid, s in (d.get("stages") or {}).items():
        s = s or {}
        spath: KeyPath = ("stages", sid)
        ids: list[str] = []
        entries = [
            (doc, (*spath, "actions", aid), aid, a) for aid, a in (s.get("actions") or {}).items()
        ]
        entries += [(fdoc, ("actions", aid), aid, a) for fdoc, aid, a in frag_actions.get(sid, [])]
        for adoc, apath, aid, a in entries:
            if aid in actions:
                first = actions[aid].spans[""]
                where = actions[aid].stage or "routines"
                out.add(
                    "SOP201",
                    adoc.key_span(apath),
                    f"action id `{aid}` is already used in `{where}` ({first.file}:{first.line})",
                    json_path=json_path(apath),
                )
                continue
            actions[aid] = _action(adoc, apath, aid, sid, a, defaults, out)
            ids.append(aid)
        stages[sid] = _stage(doc, spath, sid, s, tuple(ids), out)

    spans = _spans(doc, (), d)
    for k in d.get("limits") or {}:
        spans[f"limits.{k}"] = doc.span(("limits", k))
    for k in d.get("metrics") or {}:  # where each custom metric is named (SOP270)
        spans[f"metrics.{k}"] = doc.key_span(("metrics", k))
    return Playbook(
        id=d["playbook"],
        title=d.get("title") or d["playbook"],
        version=str(d.get("version", "1")),
        timezone=d["timezone"],
        community=Community(
            **{
                k: (d.get("community") or {}).get(k)
                for k in ("type", "platform", "capacity", "start")
            }
        ),
        roles={
            rid: Role(
                rid,
                r.get("title") or rid,
                r["headcount"],
                r.get("capacity"),
                _spans(doc, ("roles", rid), r),
            )
            for rid, r in (d.get("roles") or {}).items()
        },
        backends=_backends(doc, d.get("backends") or {}),
        default_backend=defaults.get("backend"),
        default_owner=defaults.get("owner"),
        default_quiet_hours=Window.parse(defaults["quiet_hours"])
        if defaults.get("quiet_hours")
        else None,
        member_messages_per_day=(d.get("limits") or {}).get("member_messages_per_day"),
        staff_tasks_per_day=(d.get("limits") or {}).get("staff_tasks_per_day", 8),
        metrics={
            mid: _metric(doc, mid, m or {}, out) for mid, m in (d.get("metrics") or {}).items()
        },
        tiers=_tiers(doc, d.get("tiers"), out),
        moderation=_moderation(doc, d.get("moderation")),
        incidents=_incidents(doc, d.get("incidents") or {}, out),
        stages=stages,
        actions=actions,
        templates=templates,
        expect=tuple(
            Expectation(
                e.get("every"),
                e.get("gets"),
                _dur(e.get("within")),
                e.get("max_messages_per_member_per_day"),
                _spans(doc, ("expect", i), e),
            )
            for i, e in enumerate(d.get("expect") or [])
        ),
        params=param_defaults(d),
        file=doc.file,
        spans=spans,
        attributes=_attributes(doc, (d.get("members") or {}).get("attributes") or {}),
        segments={
            gid: Segment(
                gid,
                g.get("title") or gid,
                expression(doc, ("segments", gid, "when"), g["when"], out),
                g.get("size"),
                _spans(doc, ("segments", gid), g),
            )
            for gid, g in (d.get("segments") or {}).items()
        },
        channels={cid: _channel(doc, cid, c or {}) for cid, c in (d.get("channels") or {}).items()},
        targets=_targets(doc, d),
        admission=_admission(doc, d.get("admission"), out),
        points=_points(doc, d.get("points")),
        teams=_teams(doc, d.get("teams")),
    )


def _channel(doc: Document, cid: str, c: dict[str, Any]) -> Channel:
    return Channel(
        cid,
        c.get("title") or cid,
        fraction(c.get("share")),
        bool(c.get("referral")),
        c.get("opens"),
        _spans(doc, ("channels", cid), c),
    )


def _attributes(doc: Document, data: dict[str, Any]) -> dict[str, Attribute]:
    out = {}
    for aid, a in data.items():
        out[aid] = Attribute(
            id=aid,
            type=AttributeType(a["type"]),
            title=a.get("title") or aid,
            values=tuple(str(v) for v in a.get("values") or ()),
            pii=bool(a.get("pii")),
            default=a.get("default"),
            spans=_spans(doc, ("members", "attributes", aid), a),
            description=a.get("description", ""),
        )
    return out


def _count(doc: Document, path: KeyPath, c: dict[str, Any], out: Collector) -> Count:
    """`{members: COND}`, `{ever: COND}`, `{joins: COND, window}`, `{events: T, where, window}`."""
    of = next(CountOf(k) for k in ("members", "ever", "joins", "events") if k in c)
    where: Expression | None = None
    event = None
    if of == CountOf.EVENTS:
        event = c["events"]
        if "where" in c:
            where = expression(doc, (*path, "where"), c["where"], out)
    else:
        cond = c[of.value]
        if isinstance(cond, str):
            where = expression(doc, (*path, of.value), cond, out)
        elif cond is False:  # counts nobody; kept as a condition so outputs show it
            where = expression(doc, (*path, of.value), "false", None)
    return Count(of, where, event, _dur(c.get("window")), _spans(doc, path, c))


def _metric(doc: Document, mid: str, m: dict[str, Any], out: Collector) -> Metric:
    path: KeyPath = ("metrics", mid)
    return Metric(
        mid,
        m.get("unit", "count"),
        m.get("description", ""),
        expression(doc, (*path, "definition"), m["definition"], out) if "definition" in m else None,
        _target(doc, (*path, "target"), mid, m["target"]) if "target" in m else None,
        count=_count(doc, (*path, "count"), m["count"], out) if "count" in m else None,
        per=_count(doc, (*path, "per"), m["per"], out) if "per" in m else None,
        by_channel=bool(m.get("by_channel")),
        cumulative=bool(m.get("cumulative")),
        spans=_spans(doc, path, m),
    )


def _target(doc: Document, path: KeyPath, metric: str, t: Any) -> Target:
    """`500`, `30%` (at least, by the horizon) or `{at_least|at_most: v, by: 90d}`."""
    if isinstance(t, dict):
        at_most = "at_most" in t
        key = "at_most" if at_most else "at_least"
        spans = _spans(doc, path, t)
        spans["value"] = doc.span((*path, key))
        value = fraction(t[key])
        return Target(
            metric,
            value if value is not None else 0.0,
            at_most,
            _dur(t.get("by")),
            spans,
            _percent(t[key]),
        )
    spans = _spans(doc, path, {})
    spans["value"] = doc.span(path)
    value = fraction(t)
    return Target(metric, value if value is not None else 0.0, spans=spans, percent=_percent(t))


def _percent(raw: Any) -> bool:
    return isinstance(raw, str) and raw.strip().endswith("%")


def _targets(doc: Document, d: dict[str, Any]) -> dict[str, Target]:
    """`targets:` and every `metrics.*.target` (both for one metric is SOP273; `targets:` wins)."""
    result: dict[str, Target] = {}
    for mid, m in (d.get("metrics") or {}).items():
        if isinstance(m, dict) and "target" in m:
            result[mid] = _target(doc, ("metrics", mid, "target"), mid, m["target"])
    for mid, t in (d.get("targets") or {}).items():
        result[mid] = _target(doc, ("targets", mid), mid, t)
    return result


def _admission(doc: Document, a: dict[str, Any] | None, out: Collector) -> Admission | None:
    if not a:
        return None
    review = a.get("review") or {}
    spans = _spans(doc, ("admission",), a)
    spans.update({f"review.{k}": doc.span(("admission", "review", k)) for k in review})
    for i in range(len(a.get("require") or [])):
        spans[f"require.{i}"] = doc.span(("admission", "require", i))
    return Admission(
        require=tuple(a.get("require") or ()),
        review_owner=review.get("owner", ""),
        review_within=_dur(review.get("within")) or timedelta(hours=24),
        approve=expression(doc, ("admission", "approve"), a["approve"], out)
        if "approve" in a
        else None,
        spans=spans,
    )


def _points(doc: Document, p: dict[str, Any] | None) -> Points | None:
    if not p:
        return None
    earn = dict(p.get("earn") or {})
    spans = _spans(doc, ("points",), p)
    spans.update({f"earn.{k}": doc.key_span(("points", "earn", k)) for k in earn})
    return Points(
        earn={k: int(v) for k, v in earn.items()},
        redeem={
            rid: Redemption(
                rid,
                r.get("title") or rid,
                int(r["cost"]),
                r.get("stock"),
                _spans(doc, ("points", "redeem", rid), r),
            )
            for rid, r in (p.get("redeem") or {}).items()
        },
        expire=_dur(p.get("expire")),
        spans=spans,
    )


def _teams(doc: Document, t: dict[str, Any] | None) -> Teams | None:
    if not t:
        return None
    return Teams(
        names=tuple(str(n) for n in t.get("names") or ()),
        assign=TeamAssignment(t.get("assign", TeamAssignment.ROUND_ROBIN.value)),
        score=t["score"],
        by=t.get("by"),
        spans=_spans(doc, ("teams",), t),
    )


def _stage(
    doc: Document,
    path: KeyPath,
    sid: str,
    s: dict[str, Any],
    actions: tuple[str, ...],
    out: Collector,
) -> Stage:
    after = s.get("after") or []
    dur = s.get("duration") or {}
    ex = s.get("exit") or {}
    # `exit.deadline`, or `deadline:` beside `exits:` (both at once is SOP286; this one wins)
    dl_path: KeyPath = (*path, "deadline") if "deadline" in s else (*path, "exit", "deadline")
    dl = s.get("deadline") or ex.get("deadline")
    deadline = None
    max_d = _dur(dur.get("max"))
    if dl is not None:
        then = dl["then"]
        deadline = Deadline(
            after=_dur(dl.get("after")) or max_d or timedelta(0),
            extend=_dur(then.get("extend")),
            goto=then.get("goto"),
            alert=then.get("alert"),
            abort=bool(then.get("abort")),
            spans=_with(
                _spans(doc, dl_path, dl),
                {f"then.{k}": doc.span((*dl_path, "then", k)) for k in then},
            ),
        )
    exits = _exits(doc, path, s, out)
    spans = _spans(doc, path, s)
    for k in ("exit", "exits", "deadline"):
        if k in s:  # where each form is written (SOP286 points at the key)
            spans[f"key.{k}"] = doc.key_span((*path, k))
    if "deadline" in ex:
        spans["key.exit.deadline"] = doc.key_span((*path, "exit", "deadline"))
    for k in ("min", "max"):
        if k in dur:
            spans[f"duration.{k}"] = doc.span((*path, "duration", k))
    for k in ex:
        spans[f"exit.{k}"] = doc.span((*path, "exit", k))
    if isinstance(after, list):
        for i in range(len(after)):
            spans[f"after.{i}"] = doc.span((*path, "after", i))
    if "goto" in (ex.get("then") or {}):
        spans["exit.then.goto"] = doc.span((*path, "exit", "then", "goto"))
    return Stage(
        id=sid,
        title=s.get("title") or sid,
        after=(after,) if isinstance(after, str) else tuple(after),
        rescue=bool(s.get("rescue")),
        optional=bool(s.get("optional")),
        min_duration=_dur(dur.get("min")),
        max_duration=max_d,
        actions=actions,
        gate=exits[0].when if exits else None,
        goto=exits[0].goto if exits else None,
        deadline=deadline,
        spans=spans,
        exits=exits,
    )


def _exits(doc: Document, path: KeyPath, s: dict[str, Any], out: Collector) -> tuple[Exit, ...]:
    """`exits:` in order, else the single `exit:` as one exit named `pass`.

    With both (SOP286) `exits:` wins, so the model has one answer.
    """
    items = s.get("exits")
    if isinstance(items, list):
        result = []
        for i, e in enumerate(items):
            ep: KeyPath = (*path, "exits", i)
            result.append(
                Exit(
                    id=e["id"],
                    when=expression(doc, (*ep, "when"), e["when"], out),
                    hold=_dur(e.get("for")),
                    goto=e.get("goto"),
                    spans=_spans(doc, ep, e),
                )
            )
        return tuple(result)
    ex = s.get("exit") or {}
    if "when" not in ex:
        return ()
    ep = (*path, "exit")
    spans = _spans(doc, ep, ex)
    if "goto" in (ex.get("then") or {}):
        spans["goto"] = doc.span((*ep, "then", "goto"))
    return (
        Exit(
            id="pass",
            when=expression(doc, (*ep, "when"), ex["when"], out),
            hold=_dur(ex.get("for")),
            goto=(ex.get("then") or {}).get("goto"),
            spans=spans,
        ),
    )


def _with(spans: LazySpans, extra: dict[str, Span]) -> LazySpans:
    spans.update(extra)
    return spans


def _backends(doc: Document, data: dict[str, Any]) -> dict[str, Any]:
    from .model import BackendSpec

    out = {
        bid: BackendSpec(
            bid,
            b["type"],
            b.get("rate"),
            b.get("url"),
            b.get("key"),
            b.get("token"),
            b.get("notify"),
            b.get("path"),
            _spans(doc, ("backends", bid), b),
            dict(b.get("options") or {}),
        )
        for bid, b in data.items()
    }
    # `console` always exists: the terminal of whoever runs `sop run`
    if "console" not in out:
        none = None
        out["console"] = BackendSpec(
            "console", "console", none, none, none, none, none, none, _spans(doc, (), {})
        )
    return out


def _tiers(doc: Document, t: dict[str, Any] | None, out: Collector) -> Tiers | None:
    if not t:
        return None
    levels = []
    for rank, (tid, lv) in enumerate((t.get("levels") or {}).items()):
        lv = lv or {}
        path: KeyPath = ("tiers", "levels", tid)
        dm = lv.get("demote") or {}
        spans = _spans(doc, path, lv)
        spans.update({f"demote.{k}": doc.span((*path, "demote", k)) for k in dm})
        levels.append(
            Tier(
                id=tid,
                rank=rank,
                title=lv.get("title") or tid,
                promote=expression(doc, (*path, "promote"), lv["promote"], out)
                if "promote" in lv
                else None,
                demote_silent_for=_dur(dm.get("silent_for")),
                demote_when=expression(doc, (*path, "demote", "when"), dm["when"], out)
                if "when" in dm
                else None,
                demote_to=dm.get("to"),
                demote_message=dm.get("message"),
                spans=spans,
                size=lv.get("size"),
            )
        )
    review = (t.get("review") or {}).get("cron")
    spans = _spans(doc, ("tiers",), t)
    if review:
        spans["review.cron"] = doc.span(("tiers", "review", "cron"))
    return Tiers(tuple(levels), review, float(t.get("hysteresis", 1.0)), spans)


def _moderation(doc: Document, m: dict[str, Any] | None) -> Moderation | None:
    if not m:
        return None
    v = m.get("violations") or {}
    spans = _spans(doc, ("moderation",), m)
    spans.update({f"violations.{k}": doc.span(("moderation", "violations", k)) for k in v})
    return Moderation(
        tuple(m.get("rules") or []),
        v.get("warn_at"),
        v.get("remove_at"),
        _dur(v.get("window")),
        v.get("warn"),
        v.get("announce"),
        spans,
    )


def _incidents(doc: Document, data: dict[str, Any], out: Collector) -> dict[str, Incident]:
    result = {}
    for iid, inc in data.items():
        path: KeyPath = ("incidents", iid)
        steps = []
        for i, st in enumerate(inc.get("steps") or []):
            if "do" in st:
                kind, target, delay = "do", st["do"], None
            elif "alert" in st:
                kind, target, delay = "alert", st["alert"], _dur(st.get("within"))
            else:
                kind, target, delay = "escalate", st["escalate"], _dur(st.get("after"))
            steps.append(
                IncidentStep(
                    kind,
                    target,
                    delay,
                    st.get("template"),
                    st.get("text"),
                    _spans(doc, (*path, "steps", i), st),
                )
            )
        result[iid] = Incident(
            iid,
            inc.get("title") or iid,
            inc["owner"],
            expression(doc, (*path, "detect"), inc["detect"], out) if "detect" in inc else None,
            tuple(steps),
            _spans(doc, path, inc),
        )
    return result
