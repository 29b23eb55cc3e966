"""What `admission:` means to both the plan and the runtime, named once."""

from __future__ import annotations

# The action id of an application's review task: the plan lists it as an event rule of the
# review owner (plan/sections.py) and the runtime records each review task under it
# (run/members.py), so a plan's row and a run's task name the same thing.
REVIEW_ACTION = "admission.review"
