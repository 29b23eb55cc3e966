"""Write a realistic, messy community export: members.csv and activity.csv (seeded).

    python tests/data/calibrate/make_export.py        # rewrites both files beside this script

Three years (2022-03-01 .. 2025-02-28) of a WeChat-style community, built from a process that is
NOT one of `sop calibrate`'s models, so a backtest on it measures misspecification too:
- joins: Bass diffusion (p = 0.0012, q = 0.0045 a day, m = 3300) with weekends at 60 %, six
  campaign days (+40 joins each, source `event`) and 120 members imported on the first day;
- retention: 20 % "tourists" (35 % of event joins, 10 % of referrals) leave after an
  exponential 7 days on average; everyone else has a monthly churn propensity θ ~ Beta(1, 25),
  scaled by the source (referral 0.7, poster 1.2) and by the join month (log-normal, sd 0.2:
  cohorts differ), and a rising individual hazard: P(still in after τ months | θ) =
  (1 − θ)^{τ^1.6}. After the tourists' first month the pooled hazard rises for about five
  months, then falls as the fragile leave;
- activity: speaking propensity s ~ Beta(0.9, 4), correlated with staying (Gaussian copula,
  ρ = 0.5 between s and 1 − θ), decaying with tenure as 0.45 + 0.55·e^{−days/75}; 1 + Poisson(2)
  messages on a speaking day, exported as one row per member per calendar month (dated the 1st).
Messy on purpose: a BOM, CRLF line ends, `YYYY/MM/DD` on a fifth of the rows, trailing spaces,
header names in another case.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
START = date(2022, 3, 1)
END = date(2025, 2, 28)
SEED = 20250228


def _bass_daily(days: int, p: float, q: float, m: float) -> np.ndarray:
    t = np.arange(days + 1, dtype=float)
    e = np.exp(-(p + q) * t)
    f = (1 - e) / (1 + (q / p) * e)
    return np.diff(m * f)


def _fmt(d: date, rng: np.random.Generator) -> str:
    text = d.isoformat() if rng.random() > 0.2 else d.strftime("%Y/%m/%d")
    return text + (" " if rng.random() < 0.05 else "")


def simulate(
    seed: int = SEED,
    *,
    tourist: float = 0.2,
    shape: tuple[float, float, float] = (1.0, 25.0, 1.6),
    cohort_sd: float = 0.2,
    activity: bool = True,
) -> dict:
    """The export's members (join day, leave day, source) and activity rows, as arrays."""
    from scipy.special import ndtr
    from scipy.stats import beta as beta_dist

    rng = np.random.default_rng(seed)
    days = (END - START).days + 1
    mean = _bass_daily(days, 0.0012, 0.0045, 3300.0)
    weekday = np.array([(START + timedelta(d)).weekday() for d in range(days)])
    mean *= np.where(weekday >= 5, 0.6, 1.16)
    joins = rng.poisson(mean)
    campaign = rng.choice(np.arange(30, days - 60), 6, replace=False)
    joins[campaign] += 40
    joins[0] += 120
    day = np.repeat(np.arange(days), joins)
    n = len(day)
    src = rng.choice(4, n, p=[0.45, 0.25, 0.2, 0.1])
    src[np.isin(day, campaign)] = 3
    src[day == 0] = 0
    # retention
    scale = tourist / 0.2
    tourist_p = np.where(src == 3, 0.35, np.where(src == 2, 0.1, 0.2)) * scale
    is_tourist = rng.random(n) < tourist_p
    month = np.array([(START + timedelta(int(d))).year * 12 + (START + timedelta(int(d))).month
                      for d in day])  # fmt: skip
    months = np.unique(month)
    cohort_factor = dict(zip(months, np.exp(rng.normal(0, cohort_sd, len(months))), strict=True))
    z = rng.standard_normal((n, 2))
    z[:, 1] = 0.5 * z[:, 0] + math.sqrt(1 - 0.25) * z[:, 1]
    a, b, c = shape
    theta = beta_dist.ppf(ndtr(-z[:, 0]), a, b)  # high z: low churn
    theta *= np.where(src == 2, 0.7, np.where(src == 1, 1.2, 1.0))
    theta *= np.array([cohort_factor[m] for m in month])
    theta = np.clip(theta, 1e-4, 0.95)
    u = rng.random(n)
    tau_months = (np.log(u) / np.log1p(-theta)) ** (1 / c)
    life = tau_months * 30.4
    life = np.where(is_tourist, rng.exponential(7.0, n), life)
    left = day + np.floor(life).astype(np.int64)
    rows = []
    last = days - 1
    if activity:
        s = beta_dist.ppf(ndtr(z[:, 1]), 0.9, 4.0)
        for i in range(n):
            stop = min(left[i], last)
            span = np.arange(day[i], stop + 1)
            if not len(span):
                continue
            g = 0.45 + 0.55 * np.exp(-(span - day[i]) / 75.0)
            speak = rng.random(len(span)) < s[i] * g
            msgs = (1 + rng.poisson(2.0, int(speak.sum()))).astype(int)
            per: dict[tuple[int, int], int] = {}
            for d, k in zip(span[speak], msgs, strict=True):
                when = START + timedelta(int(d))
                per[(when.year, when.month)] = per.get((when.year, when.month), 0) + int(k)
            for (y, mo), k in per.items():
                rows.append((i, date(y, mo, 1), k))
    return {"day": day, "left": left, "src": src, "rows": rows, "last": last, "rng": rng}


def main() -> None:
    sim = simulate()
    day, left, src, rows, last, rng = (
        sim[k] for k in ("day", "left", "src", "rows", "last", "rng")
    )
    n = len(day)
    sources = np.array(["wechat-group", "poster", "referral", "event"])
    ids = [f"u{100000 + i}" for i in range(n)]
    lines = ["Member_ID,Joined,Left,Source "]
    for i in range(n):
        j = START + timedelta(int(day[i]))
        gone = left[i] <= last
        lft = _fmt(START + timedelta(int(left[i])), rng) if gone else ""
        lines.append(f"{ids[i]} ,{_fmt(j, rng)},{lft},{sources[src[i]]}")
    (HERE / "members.csv").write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    act = ["member_id,date,count"]
    act += [f"{ids[i]},{d.isoformat()},{c}" for i, d, c in rows]
    (HERE / "activity.csv").write_text("\n".join(act) + "\n", encoding="utf-8")
    print(f"{n} members, {len(rows)} activity rows, {int((left <= last).sum())} left by {END}")


if __name__ == "__main__":
    main()
