"""Where a case stands: its statuses and the groups the rules share (open, ended, deadline
running). Pure: the lifecycle, the maps' aggregates and the SQL of every package read these."""

from __future__ import annotations

from enum import Enum


class CaseStatus(str, Enum):
    """Where a case stands in the seven-step loop (what people see)."""

    REPORTED = "reported"
    VERIFIED = "verified"
    INVALID = "invalid"
    FILED = "filed"
    REJECTED = "rejected"
    MERGED = "merged"
    DISPATCHED = "dispatched"
    IN_PROGRESS = "in_progress"
    RETURNED = "returned"
    SUSPENDED = "suspended"
    HANDLED = "handled"
    CHECKING = "checking"
    CHECKED = "checked"
    CLOSED = "closed"


# Which statuses are open, which ended, and in which a unit's deadline runs: the rules the
# lifecycle, the deadline watch, the maps and the evaluation share.
OPEN_STATUSES = frozenset(CaseStatus) - {
    CaseStatus.CLOSED,
    CaseStatus.INVALID,
    CaseStatus.REJECTED,
    CaseStatus.MERGED,
}
ENDED_STATUSES = frozenset(CaseStatus) - OPEN_STATUSES  # closed, and cases that never became one
# A unit has the case: its deadline counts.
DEADLINE_RUNS = (CaseStatus.DISPATCHED, CaseStatus.IN_PROGRESS)
# Reports that never became a case (refused, invalid, merged): never in public counts.
NEVER_CASES = ENDED_STATUSES - {CaseStatus.CLOSED}
