"""Points (`points:`): what each event earns, the ledger's lots (spent oldest first, lapsing
after `expire`), and whether a redemption goes through.

A member's ledger is an array of lots, oldest first, with the day each was earned (day d of the
playbook); the balance is their sum. Spending takes from the oldest lots first; at a daily check
lots earned `expire` days ago or earlier lapse. The arithmetic is array arithmetic with the lot
axis last, so the runtime's one ledger and the simulator's runs-by-members ledgers (lots in day
buckets) are the same functions.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..lang.model import Points, Redemption


def earned(points: Points, event: str) -> int:
    """Points one event of type `event` earns (0 when `points.earn` does not name it)."""
    return int(points.earn.get(event, 0))


def expire_days(points: Points) -> int | None:
    """After how many days points lapse (None: never)."""
    if points.expire is None:
        return None
    return max(1, math.ceil(points.expire.total_seconds() / 86400))


def balance(lots: Any) -> Any:
    """The balance: the sum of the lots (a float, or one per member)."""
    import numpy as np

    out = np.asarray(lots, dtype=float).sum(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def spend(lots: Any, amount: Any) -> Any:
    """The lots after spending `amount` oldest first (the caller checked the balance)."""
    import numpy as np

    lots = np.asarray(lots, dtype=float)
    amount = np.asarray(amount, dtype=float)
    before = np.cumsum(lots, axis=-1) - lots  # what the older lots hold
    take = np.clip(amount[..., None] - before, 0.0, lots)
    return lots - take


def lapse(lots: Any, lot_days: Any, today: int, expire: int | None) -> tuple[Any, Any]:
    """(the lots kept, the points lapsed) at the check after day `today`: a lot earned on day
    e lapses once today - e >= expire (None: nothing lapses)."""
    import numpy as np

    lots = np.asarray(lots, dtype=float)
    if expire is None:
        return lots, np.zeros(lots.shape[:-1])
    old = (today - np.asarray(lot_days)) >= expire
    gone = np.where(old, lots, 0.0)
    return lots - gone, gone.sum(axis=-1)


class Refusal(enum.StrEnum):
    """Why a redemption does not go through."""

    UNKNOWN_ITEM = "unknown-item"
    BALANCE = "balance"
    STOCK = "stock"


@dataclass(frozen=True, slots=True)
class RedeemCheck:
    """The answer to a redemption: None when it goes through, else why not, with a message."""

    refusal: Refusal | None
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the redemption goes through."""
        return self.refusal is None


def can_redeem(balance_: Any, cost: float, stock_left: Any = None) -> Any:
    """Whether a redemption goes through: balance >= cost and stock left (None: unlimited)."""
    import numpy as np

    ok = np.asarray(balance_, dtype=float) >= cost
    if stock_left is not None:
        ok = ok & (np.asarray(stock_left) > 0)
    return bool(ok) if np.ndim(ok) == 0 else ok


def check_redeem(
    items: Mapping[str, Redemption], item: str, balance_: float, redeemed: int = 0
) -> RedeemCheck:
    """Whether one member may redeem `item` now (`redeemed`: how many went out so far)."""
    it = items.get(item)
    if it is None:
        return RedeemCheck(Refusal.UNKNOWN_ITEM, f"no item `{item}` in points.redeem")
    stock_left = None if it.stock is None else it.stock - redeemed
    if stock_left is not None and stock_left <= 0:
        return RedeemCheck(Refusal.STOCK, f"`{item}` is out of stock ({it.stock} redeemed)")
    if not can_redeem(balance_, it.cost):
        return RedeemCheck(
            Refusal.BALANCE, f"`{item}` costs {it.cost} points; the balance is {balance_:g}"
        )
    return RedeemCheck(None)
