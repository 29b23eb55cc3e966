"""Property-based tests of the Program: generated playbooks always plan and simulate sanely."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sop.engine.core.catalog import MESSAGE_KINDS
from sop.engine.plan.timeline import PlanOptions, make_plan
from sop.engine.program import Program
from sop.engine.sim.montecarlo import SimOptions, simulate
from sop.engine.sim.scenario import Scenario
from sop.engine.validate import load_playbook

ZONES = ["Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC"]
KINDS = ["post", "task", "poll", "live", "message", "digest"]

crons = st.builds(
    lambda m, h, dow: f"{m} {h} * * {dow}",
    st.sampled_from(["0", "30", "15,45"]),
    st.sampled_from(["1", "2", "8", "20", "23", "9-11"]),
    st.sampled_from(["*", "1-5", "3", "0,6"]),
)


@st.composite
def playbooks(draw: st.DrawFn) -> str:
    n_stages = draw(st.integers(1, 3))
    lines = [
        "playbook: gen",
        f"timezone: {draw(st.sampled_from(ZONES))}",
        "roles: {ops: {headcount: 3}}",
        f'defaults: {{owner: ops, quiet_hours: "{draw(st.sampled_from(["22:00-08:00", "23:30-07:00", "00:00-06:00"]))}"}}',  # noqa: E501
        "stages:",
    ]
    k = 0
    for s in range(n_stages):
        lines.append(f"  s{s}:")
        if s:
            lines.append(f"    after: s{s - 1}")
        lines.append(f"    duration: {{min: {draw(st.integers(2, 20))}d}}")
        lines.append("    exit: {when: members >= 0}")
        lines.append("    actions:")
        roots = []
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(KINDS))
            if draw(st.booleans()):
                sched = f'cron: "{draw(crons)}"'
            else:
                sched = f'day: {draw(st.integers(0, 1))}, time: "{draw(st.integers(0, 23)):02d}:00"'
            lines.append(f"      a{k}: {{{sched}, do: {kind}, text: x}}")
            roots.append(k)
            k += 1
        for _ in range(draw(st.integers(0, 2))):
            anchor = draw(st.sampled_from(roots))
            rel = draw(st.sampled_from(["after", "before"]))
            amount = draw(st.sampled_from(["1h", "1d", "2d", "30m"]))
            word = "delay" if rel == "after" else "by"
            lines.append(f"      a{k}: {{{rel}: a{anchor}, {word}: {amount}, do: post, text: y}}")
            k += 1
    return "\n".join(lines) + "\n"


SETTINGS = settings(
    max_examples=int(os.environ.get("SOP_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _load(tmp_path: Path, text: str) -> Program:
    p = tmp_path / "gen.yaml"
    p.write_text(text, encoding="utf-8")
    res = load_playbook(str(p))
    assert res.playbook is not None, [(d.code, d.message) for d in res.diagnostics]
    return Program(res.playbook)


@SETTINGS
@given(
    text=playbooks(), start=st.dates(date(2026, 1, 1), date(2027, 12, 31)), days=st.integers(1, 60)
)
def test_plans_are_ordered_bounded_unique_and_quiet(tmp_path, text, start, days) -> None:
    prog = _load(tmp_path, text)
    tl = make_plan(prog, PlanOptions(start=start, days=days))
    occ = tl.occurrences
    assert [o.at for o in occ] == sorted(o.at for o in occ)
    assert all(tl.start <= o.at < tl.end for o in occ)
    assert len({o.key for o in occ}) == len(occ)
    for o in occ:
        a = prog.playbook.actions[o.action]
        assert o.at >= o.scheduled and o.at - o.scheduled < timedelta(days=1)
        if a.kind in MESSAGE_KINDS and a.quiet_hours:
            local = o.at.astimezone(prog.tz).time().replace(second=0, microsecond=0)
            assert not a.quiet_hours.contains(local), (o, a.quiet_hours)
        else:
            assert o.at == o.scheduled
        # an occurrence happens while its stage is active
        assert o.stage in tl.stage_of(o.scheduled)


@SETTINGS
@given(text=playbooks(), start=st.dates(date(2026, 1, 1), date(2027, 12, 31)))
def test_a_longer_plan_extends_a_shorter_one(tmp_path, text, start) -> None:
    prog = _load(tmp_path, text)
    short = make_plan(prog, PlanOptions(start=start, days=20)).occurrences
    long = make_plan(prog, PlanOptions(start=start, days=40)).occurrences
    cut = make_plan(prog, PlanOptions(start=start, days=20)).end
    assert [o.key for o in short] == [o.key for o in long if o.at < cut]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=playbooks(),
    seed=st.integers(0, 2**32 - 1),
    alpha=st.floats(0.2, 5),
    beta=st.floats(0.2, 10),
    seeds=st.integers(0, 300),
)
def test_simulated_metrics_stay_in_range(tmp_path, text, seed, alpha, beta, seeds) -> None:
    from sop.engine.sim.scenario import Acquisition, Retention

    prog = _load(tmp_path, text)
    sc = Scenario(
        acquisition=Acquisition(seed_users=seeds), retention=Retention(alpha=alpha, beta=beta)
    )
    res = simulate(prog.playbook, sc, SimOptions(runs=3, days=40, seed=seed))
    from sop.engine.program.metrics import DEFINITIONS

    m = res.metrics
    assert not np.isinf(m).any()
    idx = {n: i for i, n in enumerate(res.metric_names)}
    for name, d in DEFINITIONS.items():
        if name in idx:  # undefined (NaN) only where the definition allows it, else in range
            v = m[:, :, idx[name]]
            assert d.undefined or not np.isnan(v).any(), name
            v = v[~np.isnan(v)]
            assert (v >= d.low).all() and (v <= d.high).all(), name
    assert (m[:, :, idx["members"]] >= 0).all()
    assert (m[:, :, idx["daily_speakers"]] <= m[:, :, idx["members"]]).all()
