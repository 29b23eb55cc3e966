"""Simulation scenarios: defaults from the seed documents, scenario files, `--set` overrides."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..core.diagnostics import Collector, Diagnostic, Severity
from ..lang.loader import Document, LoadError, load_file
from ..lang.model import Playbook
from .parameters import (
    METRIC_KEYS,
    RETENTION_PARAMETERS,
    UNCERTAIN,
    Dist,
    JointDraws,
    is_distribution,
    parse,
    problems,
)

# `activity.retention_coupling` by default (engine/sim/retention.py): the correlation of the
# process behind tests/data/calibrate, whose export shows members 1.9x as likely to leave after a
# silent month; under the default scenario it makes a member silent for a whole 30-day period
# 1.5x as likely to leave in the next (docs/simulation.md, "Engagement and retention").
DEFAULT_COUPLING = 0.5


@dataclass(frozen=True)
class ChannelInflow:
    """One acquisition channel's joins: its own Poisson stream and its share of the rest.

    `per_day` joins a day come by the channel itself once it is open (its playbook `opens:`
    stage entered) and from day `from_day`; `share` is the share of the organic, Bass, seed and
    action joins that are attributed to it (the remainder goes to the default channel).
    """

    per_day: float = 0.0
    from_day: float = 0.0
    share: float = 0.0


@dataclass(frozen=True)
class Acquisition:
    """Seed users, organic inflow, Bass word of mouth and referral invitations."""

    seed_users: float = 80.0
    start_stage: str | None = None
    organic_per_day: float = 4.0
    bass_p: float = 0.03  # per year (Bass 1969)
    bass_q: float = 0.38  # per year
    market: float = 5000.0
    invites_per_member_per_day: float = 0.01
    invite_conversion: float = 0.15
    invite_decay_days: float = 30.0
    # per-channel inflow (`acquisition.channels`); joins no channel claims land in
    # `default_channel` (a declared channel id), else in `organic` (catalog.ORGANIC)
    channels: dict[str, ChannelInflow] = field(default_factory=dict)
    default_channel: str | None = None


@dataclass(frozen=True)
class Retention:
    """Each member's churn probability per period is drawn from Beta(alpha, beta); `model`
    (retention_models.RetentionModel) adds tenure dependence `c` and early quitters."""

    # E[theta] = 0.4 -> ~60 % stay past day 30; S(3 periods) = beta/(beta+3) ~ 33 % at day 90,
    # the seed SOP's targets (retention_d30 >= 60 %, retention_d90 >= 30 %).
    alpha: float = 1.0
    beta: float = 1.5
    period_days: float = 30.0
    model: str = "sbg"  # sbg | sbg-mixture | bdw | bdw-mixture (engine/sim/retention.py)
    c: float = 1.0  # bdw: S(t | theta) = (1 - theta)^(t^c)
    early_quit_share: float = 0.0  # sbg-mixture, bdw-mixture: leave in the first period
    # joint draws of the model's parameters in its order (alpha, beta, [c], [early_quit_share])
    draws: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class Activity:
    """Heterogeneous daily speaking, decaying with tenure; UGC and violations while speaking."""

    speak_alpha: float = 1.2  # mean 0.23: the seed's "daily speaking rate >= 20 %"
    speak_beta: float = 4.0
    tenure_decay_days: float = 120.0
    decay_floor: float = 0.4
    ugc_per_speak: float = 0.02
    violation_per_speak: float = 0.002
    # Gaussian-copula correlation of speaking and staying (engine/sim/retention.py)
    retention_coupling: float = DEFAULT_COUPLING


@dataclass(frozen=True)
class Conversion:
    """The funnel outside of actions."""

    base_daily: float = 0.0005


@dataclass(frozen=True)
class Distribution:
    """How a declared member attribute is drawn for a joiner.

    Strings and enums: `values` maps a value to its probability (the rest stays unset); numbers:
    Normal(`mean`, `sd`) clipped to [`low`, `high`] (integers rounded); booleans: true with
    probability `p`.
    """

    values: dict[str, float] = field(default_factory=dict)
    mean: float | None = None
    sd: float = 0.0
    low: float | None = None
    high: float | None = None
    p: float | None = None


@dataclass(frozen=True)
class AttributeModel:
    """A declared attribute's distribution, overridden per acquisition channel."""

    base: Distribution = field(default_factory=Distribution)
    by_channel: dict[str, Distribution] = field(default_factory=dict)


@dataclass(frozen=True)
class AdmissionModel:
    """Applications and staff decisions under the playbook's `admission:`."""

    # of the acquisition model's arrivals, the share who file an application (the entry
    # threshold deters the rest)
    applications_per_join: float = 1.0
    approve_rate: float = 0.8  # share of reviewed applications staff approve
    review_days: float | None = None  # days to a decision; None: the playbook's `review.within`


@dataclass(frozen=True)
class PointsModel:
    """How members spend points (`points.redeem`)."""

    redeem_per_day: float = 0.02  # daily chance that a member who can afford an item redeems


@dataclass(frozen=True)
class CustomMetric:
    """A custom metric the playbook reads but does not define: a noisy trend."""

    start: float = 0.0
    per_day: float = 0.0
    noise: float = 0.0
    per_member: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """Everything `simulate` assumes about the world."""

    name: str = "default"
    acquisition: Acquisition = field(default_factory=Acquisition)
    retention: Retention = field(default_factory=Retention)
    activity: Activity = field(default_factory=Activity)
    conversion: Conversion = field(default_factory=Conversion)
    metrics: dict[str, CustomMetric] = field(default_factory=dict)
    attributes: dict[str, AttributeModel] = field(default_factory=dict)
    admission: AdmissionModel = field(default_factory=AdmissionModel)
    points: PointsModel = field(default_factory=PointsModel)
    # actions whose effects the calibrated parameters already hold (not applied again)
    history_includes: tuple[str, ...] = ()
    # parameters given as distributions, by path (`retention.alpha`): each run draws its own
    uncertain: dict[str, Dist] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for reports and JSON (a distribution where the scenario gave one)."""
        out = dataclasses.asdict(self)
        out.pop("uncertain")
        for path, dist in self.uncertain.items():
            node = out
            *parents, leaf = path.split(".")
            for k in parents:
                node = node.setdefault(k, {})
            node[leaf] = dist.as_dict()
        return out

    def joint_draws(self) -> JointDraws | None:
        """`retention.draws` with the names of the retention model's parameters, if any."""
        if not self.retention.draws:
            return None
        return JointDraws(RETENTION_PARAMETERS[self.retention.model], self.retention.draws)


class ScenarioError(Exception):
    """A scenario file or override is invalid; carries located diagnostics."""

    def __init__(self, diagnostics: list[Diagnostic], document: Document | None = None) -> None:
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics = diagnostics
        # the scenario text read within limits, when there was one: its lines may be quoted
        self.document = document


_SECTIONS: dict[str, Any] = {
    "acquisition": Acquisition,
    "retention": Retention,
    "activity": Activity,
    "conversion": Conversion,
    "admission": AdmissionModel,
    "points": PointsModel,
}


def from_data(data: dict[str, Any]) -> Scenario:
    """A Scenario from schema-valid data; missing values take the defaults, and a parameter
    given as a distribution takes its point value (`uncertain` keeps the distribution)."""
    kw: dict[str, Any] = {}
    uncertain: dict[str, Dist] = {}
    for name, cls in _SECTIONS.items():
        if name in data:
            kw[name] = cls(
                **{k: _uncertain(f"{name}.{k}", v, uncertain) for k, v in data[name].items()}
            )
    if "attributes" in data:
        kw["attributes"] = {
            k: AttributeModel(
                _distribution(v),
                {c: _distribution(x) for c, x in (v.get("by_channel") or {}).items()},
            )
            for k, v in data["attributes"].items()
        }
    if "metrics" in data:
        kw["metrics"] = {
            k: CustomMetric(
                **{f: _uncertain(f"metrics.{k}.{f}", x, uncertain) for f, x in v.items()}
            )
            for k, v in data["metrics"].items()
        }
    if data.get("history_includes"):
        kw["history_includes"] = tuple(str(a) for a in data["history_includes"])
    return Scenario(name=data.get("scenario", "custom"), uncertain=uncertain, **kw)


def _uncertain(path: str, v: Any, uncertain: dict[str, Dist]) -> Any:
    """A value of `path`; a distribution is kept in `uncertain` and stands as its point."""
    if not is_distribution(v) or path.endswith(".channels"):
        return _value(path.rsplit(".", 1)[-1], v)
    dist = uncertain[path] = parse(v, _range(path))
    return dist.point


def value_range(path: str) -> tuple[float, float]:
    """[low, high] of a scenario number, from the scenario schema (exclusive ends as given)."""
    number = _number_schema(path)
    lo = number.get("minimum", number.get("exclusiveMinimum", -math.inf))
    return (float(lo), float(number.get("maximum", math.inf)))


_range = value_range  # the name this module's own readers use


def _range_exclusive(path: str) -> bool:
    """Whether the low end of a scenario number's range is excluded."""
    return "exclusiveMinimum" in _number_schema(path)


def _number_schema(path: str) -> dict[str, Any]:
    """The number branch of a scenario parameter's schema ({} when there is none)."""
    from ..lang.schema import load_schema

    node: Any = load_schema("scenario.schema.json")
    parts = path.split(".")
    if parts[0] == "metrics":
        parts = ["metrics", "*", *parts[2:]]
    for k in parts:
        if not isinstance(node, dict):
            return {}
        props = node.get("properties", {})
        node = props.get(k) if k in props else node.get("additionalProperties", {})
    if not isinstance(node, dict):
        return {}
    for branch in node.get("anyOf", [node]):
        if isinstance(branch, dict) and branch.get("type") == "number":
            return branch
    return {}


def _value(key: str, v: Any) -> Any:
    """A section's value: text stays text, `channels` become ChannelInflow, `draws` rows of
    numbers, numbers floats."""
    if key == "channels":
        return {c: ChannelInflow(**{f: float(x) for f, x in m.items()}) for c, m in v.items()}
    if key == "draws":
        return tuple(tuple(float(x) for x in row) for row in v)
    if v is None or isinstance(v, str):
        return v
    return float(v)


def _distribution(data: dict[str, Any]) -> Distribution:
    number: dict[str, float] = {k: float(data[k]) for k in ("mean", "sd", "p") if k in data}
    if "min" in data:
        number["low"] = float(data["min"])
    if "max" in data:
        number["high"] = float(data["max"])
    values = {str(k): float(x) for k, x in (data.get("values") or {}).items()}
    return Distribution(values=values, **number)


def load_scenario(
    path: str | None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    root: str | None = None,
    playbook: Playbook | None = None,
    warnings: list[Diagnostic] | None = None,
) -> Scenario:
    """Load and validate a scenario file (or the defaults), then apply `path=value` overrides.

    The file is read through sop.engine.core.files, confined to `root` (default: its own folder).
    With `playbook`, the scenario's stage, metric, channel and attribute names are checked against
    it (SOP293, SOP294, SOP288, SOP289): an error raises ScenarioError, warnings (SOP295) are
    added to `warnings`.
    """
    from ..lang.schema import validator

    data: dict[str, Any] = {}
    if path:
        try:
            doc = load_file(path, root=root)
        except LoadError as e:
            raise ScenarioError([e.diagnostic], e.document) from None
        out = Collector()
        validator("scenario.schema.json").validate(doc, out)
        if not out.items:
            check_parameters(doc, out)
        if playbook is not None and not out.items:
            check_scenario(playbook, doc, out)
        if _errors(out.items):
            raise ScenarioError(out.items, doc)
        if warnings is not None:
            warnings.extend(out.items)
        data = doc.data
    for item in overrides:
        data = _override(data, item)
    out = Collector()
    merged = Document("--set", "", data)
    validator("scenario.schema.json").validate(merged, out)
    if overrides and not out.items:
        check_parameters(merged, out)
    if playbook is not None and overrides and not out.items:
        check_scenario(playbook, merged, out)  # the file was clean: a finding comes from --set
    if _errors(out.items):
        raise ScenarioError(out.items)
    if warnings is not None:
        warnings.extend(out.items)
    return from_data(data)


def _errors(items: list[Diagnostic]) -> bool:
    return any(d.severity == Severity.ERROR for d in items)


def check_parameters(doc: Document, out: Collector) -> None:
    """A schema-valid scenario's parameters fit their models (SOP287): the retention model
    takes each retention key given, `retention.draws` rows have its parameters, and every
    distribution is a usable one."""
    data = doc.data if isinstance(doc.data, dict) else {}
    ret = data.get("retention")
    ret = ret if isinstance(ret, dict) else {}
    model = str(ret.get("model", "sbg"))
    names = RETENTION_PARAMETERS[model]  # schema-valid: one of its keys

    def bad(path: tuple[Any, ...], message: str, key: bool = True) -> None:
        out.add(
            "SOP287",
            doc.key_span(path) if key else doc.span(path),
            message,
            json_path="$." + ".".join(str(p) for p in path),
        )

    for key in ("c", "early_quit_share"):
        if key in ret and key not in names:
            takes = ", ".join(names)
            having = ", ".join(m for m, takes in RETENTION_PARAMETERS.items() if key in takes)
            bad(
                ("retention", key),
                f"retention model `{model}` has no `{key}` (it takes {takes}): this value would"
                f" be ignored; choose a model that has it ({having})",
            )
    draws = ret.get("draws")
    for i, row in enumerate(draws if isinstance(draws, list) else ()):
        if isinstance(row, list) and len(row) != len(names):
            bad(
                ("retention", "draws", i),
                f"draw {i + 1} has {len(row)} number(s); retention model `{model}` takes"
                f" {len(names)} ({', '.join(names)}, in that order)",
                key=False,
            )
            break
        row = row if isinstance(row, list) else []
        outside = _outside([(f"retention.{n}", x) for n, x in zip(names, row, strict=False)])
        if outside:
            bad(("retention", "draws", i), f"draw {i + 1}: {outside}", key=False)
            break
    if isinstance(draws, list):
        for key in names:
            if is_distribution(ret.get(key)):
                bad(
                    ("retention", key),
                    f"`retention.{key}` is a distribution and `retention.draws` draws it too:"
                    " give one of them",
                )
    for path, value in _distributions(data):
        name = ".".join(path)
        values = [value.get(k) for k in ("mean", "min", "max", "low", "high")]
        values += list(value.get("draws") or [])
        outside = _outside([(name, x) for x in values if isinstance(x, (int, float))])
        for message in [*problems(value), *([outside] if outside else [])]:
            bad(path, f"{name}: {message}", key=False)


def _outside(values: list[tuple[str, Any]]) -> str:
    """Why one of (path, number) lies outside its parameter's range ('' when none does)."""
    for path, x in values:
        lo, hi = _range(path)
        exclusive = _range_exclusive(path)
        if not isinstance(x, (int, float)) or x > hi or x < lo or (exclusive and x <= lo):
            low = f"more than {lo:g}" if exclusive else f"{lo:g}"
            return f"{x} is outside the range of `{path}` ({low} to {hi:g})"
    return ""


def _distributions(data: dict[str, Any]) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """(path, mapping) of every parameter a scenario gives as a distribution."""
    out: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for section, keys in UNCERTAIN.items():
        sec = data.get(section)
        if not isinstance(sec, dict):
            continue
        for key in keys:
            if is_distribution(sec.get(key)):
                out.append(((section, key), sec[key]))
    metrics = data.get("metrics")
    for name, model in metrics.items() if isinstance(metrics, dict) else ():
        for key in METRIC_KEYS if isinstance(model, dict) else ():
            if is_distribution(model.get(key)):
                out.append((("metrics", name, key), model[key]))
    return out


def check_scenario(pb: Playbook, doc: Document, out: Collector) -> None:
    """The stage and metrics a schema-valid scenario names exist in the playbook it simulates."""
    from ..core.catalog import BUILTIN_METRICS
    from ..core.suggest import did_you_mean

    data = doc.data if isinstance(doc.data, dict) else {}
    included = data.get("history_includes")
    for i, aid in enumerate(included if isinstance(included, list) else ()):
        if aid not in pb.actions:
            out.add(
                "SOP249",
                doc.span(("history_includes", i)),
                f"`history_includes` names `{aid}`, which is no action of playbook `{pb.id}`:"
                " its effects would not be left out of the forecast",
                hint=did_you_mean(str(aid), pb.actions),
                json_path=f"$.history_includes[{i}]",
            )
    acq = data.get("acquisition")
    first = acq.get("start_stage") if isinstance(acq, dict) else None
    if isinstance(first, str) and first not in pb.stages:
        out.add(
            "SOP293",
            doc.span(("acquisition", "start_stage")),
            f"`start_stage: {first}` is not a stage of playbook `{pb.id}`: acquisition would"
            f" never open and the forecast would be empty (stages: {', '.join(pb.stages)})",
            hint=did_you_mean(first, pb.stages),
            json_path="$.acquisition.start_stage",
        )
    _check_members(pb, doc, out)
    metrics = data.get("metrics")
    for name in metrics if isinstance(metrics, dict) else {}:
        span = doc.key_span(("metrics", name))
        jp = f"$.metrics.{name}"
        if name in BUILTIN_METRICS:
            out.add(
                "SOP294",
                span,
                f"`{name}` is a built-in metric: the simulation computes it, so this model would"
                " be ignored",
                json_path=jp,
            )
        elif name not in pb.metrics:
            declared = ", ".join(pb.metrics) or "none"
            out.add(
                "SOP294",
                span,
                f"metric `{name}` is not declared by playbook `{pb.id}` (its metrics:"
                f" {declared}): this model would be ignored",
                hint=did_you_mean(name, pb.metrics),
                json_path=jp,
            )
        elif pb.metrics[name].definition is not None or pb.metrics[name].count is not None:
            how = "a `definition:`" if pb.metrics[name].definition is not None else "a `count:`"
            out.add(
                "SOP295",
                span,
                f"metric `{name}` has {how} in playbook `{pb.id}`, which the"
                " simulation uses: this model would be ignored",
                json_path=jp,
            )


def _check_members(pb: Playbook, doc: Document, out: Collector) -> None:
    """Channels, attributes, admission and points a scenario models exist in the playbook
    (SOP288), and each attribute's distribution fits the attribute's type (SOP289)."""
    from ..core.suggest import did_you_mean

    data = doc.data if isinstance(doc.data, dict) else {}

    def unknown(path: tuple[str, ...], what: str, name: str, known: Any, key: bool) -> None:
        names = list(known)
        out.add(
            "SOP288",
            doc.key_span(path) if key else doc.span(path),
            f"{what} `{name}` is not declared by playbook `{pb.id}`"
            f" ({', '.join(names) or 'none declared'}): this model would be ignored",
            hint=did_you_mean(name, names),
            json_path="$." + ".".join(path),
        )

    acq = data.get("acquisition")
    acq = acq if isinstance(acq, dict) else {}
    channels = acq.get("channels")
    for c in channels if isinstance(channels, dict) else {}:
        if c not in pb.channels:
            unknown(("acquisition", "channels", c), "channel", c, pb.channels, True)
    default = acq.get("default_channel")
    if isinstance(default, str) and default not in pb.channels:
        unknown(("acquisition", "default_channel"), "channel", default, pb.channels, False)
    attrs = data.get("attributes")
    for name, model in attrs.items() if isinstance(attrs, dict) else ():
        a = pb.attributes.get(name)
        if a is None:
            unknown(("attributes", name), "member attribute", name, pb.attributes, True)
            continue
        if not isinstance(model, dict):
            continue
        _check_distribution(a, model, ("attributes", name), doc, out)
        by = model.get("by_channel")
        for c, m in by.items() if isinstance(by, dict) else ():
            path = ("attributes", name, "by_channel", c)
            if c not in pb.channels:
                unknown(path, "channel", c, pb.channels, True)
            elif isinstance(m, dict):
                _check_distribution(a, m, path, doc, out)
    for section, declared in (("admission", pb.admission), ("points", pb.points)):
        if section in data and declared is None:
            out.add(
                "SOP288",
                doc.key_span((section,)),
                f"playbook `{pb.id}` has no `{section}:`: this model would be ignored",
                json_path=f"$.{section}",
            )


def _check_distribution(
    a: Any, model: dict[str, Any], path: tuple[str, ...], doc: Document, out: Collector
) -> None:
    """A distribution's keys fit attribute `a`'s type; enum values are among its values."""
    from ..lang.model import AttributeType as T

    kinds = {
        T.STRING: {"values"},
        T.ENUM: {"values"},
        T.NUMBER: {"mean", "sd", "min", "max"},
        T.INTEGER: {"mean", "sd", "min", "max"},
        T.BOOLEAN: {"p"},
        T.DATE: set(),
    }
    allowed = kinds.get(a.type, set())
    for key in model:
        if key == "by_channel" or key in allowed:
            continue
        fits = ", ".join(sorted(allowed)) or "nothing: dates are not simulated"
        out.add(
            "SOP289",
            doc.key_span((*path, key)),
            f"`{key}` does not fit attribute `{a.id}` of type {a.type} (it takes: {fits})",
            json_path="$." + ".".join((*path, key)),
        )
    values = model.get("values")
    if not isinstance(values, dict):
        return
    for v in values:
        if a.type == T.ENUM and str(v) not in a.values:
            out.add(
                "SOP289",
                doc.key_span((*path, "values", v)),
                f"`{v}` is not a value of enum attribute `{a.id}` ({', '.join(a.values)})",
                json_path="$." + ".".join((*path, "values", str(v))),
            )
    total = sum(float(x) for x in values.values() if isinstance(x, (int, float)))
    if total > 1 + 1e-9:
        out.add(
            "SOP289",
            doc.span((*path, "values")),
            f"the probabilities of attribute `{a.id}` add up to {total:g}, more than 1",
            json_path="$." + ".".join((*path, "values")),
        )


def scenario_beside(playbook_path: str) -> str | None:
    """The scenario by convention: `scenarios/<playbook file name>` beside the playbook, if any."""
    beside = os.path.join(
        os.path.dirname(playbook_path), "scenarios", os.path.basename(playbook_path)
    )
    return beside if os.path.isfile(beside) else None


def playbook_beside(scenario_path: str) -> str | None:
    """The playbook a scenario belongs to by the same convention (`../<scenario file name>`)."""
    folder = os.path.dirname(os.path.abspath(scenario_path))
    if os.path.basename(folder) != "scenarios":
        return None
    pb = os.path.join(os.path.dirname(folder), os.path.basename(scenario_path))
    return pb if os.path.isfile(pb) else None


MAX_SWEEP_AXES = 2


MAX_SWEEP_POINTS = 100  # simulations one `simulate --sweep` runs (e.g. 10 values times 10)


def sweep_values(specs: tuple[str, ...] | list[str]) -> list[dict[str, str]]:
    """Every combination of `name=v1,v2,...` specs (one or two), as `--set` values; UsageError."""
    import itertools

    from ..core.status import UsageError

    if len(specs) > MAX_SWEEP_AXES:
        raise UsageError("--sweep takes one or two parameters")
    axes = []
    points = 1
    for spec in specs:
        name, _, values = spec.partition("=")
        if not name or not values:
            raise UsageError(f"--sweep {spec!r}: expected name=v1,v2,...")
        axes.append([(name, v) for v in values.split(",")])
        points *= len(axes[-1])
    if points > MAX_SWEEP_POINTS:  # each point is a whole simulation: refused, not run for hours
        raise UsageError(
            f"--sweep asks for {points:,} simulations; at most {MAX_SWEEP_POINTS}: give fewer"
            " values"
        )
    return [dict(combo) for combo in itertools.product(*axes)]


def _override(data: dict[str, Any], item: str) -> dict[str, Any]:
    """Apply `section.key=value` (or `metrics.name.key=value`)."""
    from ..lang.loader import load_text

    if "=" not in item:
        raise ScenarioError([_usage(f"--set {item!r}: expected path=value")])
    path, raw = item.split("=", 1)
    keys = path.strip().split(".")
    try:
        value = load_text(f"v: {raw}").data["v"]
    except LoadError:
        value = raw
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    node = out
    for k in keys[:-1]:
        inner = node.get(k)
        # a section given a scalar (`--set acquisition=5`) is replaced, and the schema then
        # reports whatever is wrong with the result, located at --set
        node[k] = dict(inner) if isinstance(inner, dict) else {}
        node = node[k]
    node[keys[-1]] = value
    return out


def _usage(message: str) -> Diagnostic:
    return Diagnostic("--set", 1, 1, 1, 1, "SOP103", Severity.ERROR, message, "")
