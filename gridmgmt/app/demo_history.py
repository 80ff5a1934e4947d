"""The demo city's past: real Los Angeles 311 requests replayed through the lifecycle.

The requests of `la311_requests_2020-01.csv` (shared data: MyLA311, 1-3 January 2020) that
fall in the demo's eight neighborhood councils become the demo's cases, each taken through
the same services a working city runs (report, verify, file, dispatch, accept, report done,
check, close), at the moments of its own past (`gridmgmt.kernel.clock.at`), so events,
deadlines on the business calendar, on-time and overdue all come out of the real code.

What is real: the place, the address, the kind of problem, the channel it came in by, the
time of day it was reported, whether the city cancelled it, and how long the city took to
close it. What is not: the shared data holds three days, so each request is moved to a day
of the past year that ended yesterday (a fixed-seed draw, a twelfth of them in the last three
days so that every role has work in progress today; the requests Los Angeles had not closed,
and in each community the one it took longest to close, in the last two weeks, so that they
are still open today: every unit's queue has work); who verified, checked and closed it, and
the share of returns, reworks, extensions and suspensions, which Los Angeles does not publish,
are drawn at the rates `Rates` names; people act in the working time of the city's calendar,
and the dispatcher's watch marks a case overdue the minute its deadline passes unhandled.
The unit's "after" photo is a plain placeholder image.
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from PIL import Image, ImageDraw
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cases import followup, rehandling
from cases.followup import AnswerInput, Channel, Fixed, Respondent, Satisfaction
from cases.intake import ReportInput, report_case
from cases.lifecycle import (
    SYSTEM,
    Action,
    ActionInput,
    Actor,
    CaseContext,
    RejectReason,
    apply_action,
    locked_case,
)
from cases.models import Case, CaseSource
from cases.photos import Upload
from cases.status import DEADLINE_RUNS
from dispatch.services import dispatch_case
from gridmgmt.kernel import clock
from gridmgmt.kernel.business_calendar import BusinessCalendar
from gridmgmt.kernel.errors import DomainError
from gridmgmt.kernel.models import Role, Unit, User
from maps.evaluation import refresh_rollup

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
LA_311 = "la311_requests_2020-01.csv"
LA_TIME = ZoneInfo("America/Los_Angeles")
SEED = 2020  # the draws are the same at every seeding
WATCH_EVERY = timedelta(minutes=1)  # the dispatcher's watch: a periodic job, every minute
# A request kept open today is reported at least this many working hours before now (its
# verification, filing and dispatch take up to about 4, the unit's accepting up to 6 more),
# and at most this many days before (still open today, not a forgotten one). Eight hours
# leave a day to place every such request on, whatever the day of the year (16 did not,
# around holidays: checked at every fifth hour of 2026).
REACHES_UNIT_HOURS = 8
OPEN_WITHIN_DAYS = 14

# MyLA311 request types → the catalogue's classes (cases/data/categories.json). Homeless
# encampments and "Other" have no class of urban management here: left out.
LA_CLASSES = {
    "Bulky Items": "E0108",  # discarded furniture and appliances
    "Metal/Household Appliances": "E0108",
    "Electronic Waste": "E0108",
    "Graffiti Removal": "E0604",
    "Illegal Dumping Pickup": "E0103",  # accumulated garbage and spoil
    "Dead Animal Removal": "E0603",
    "Single Streetlight Issue": "C0118",
    "Multiple Streetlight Issue": "C0118",
    # Water running to waste (leaks, broken sprinklers), for the water utility (LADWP): the
    # class of a leaking supply pipe, which the water department handles.
    "Report Water Waste": "E0402",
}
# Kinds MyLA311 closes the minute they come in, handing them on to another agency's own
# system (water waste to LADWP): the closing time says nothing of the work, so Los Angeles's
# time to close is unknown and the case is still in the unit's hands, like an open request.
HANDED_ON = {"Report Water Waste"}
# MyLA311 channels → who reports: a city driver's own report is an inspector's; a call, a
# letter or an e-mail is typed in by an operator at the hotline; the app is Open311; a
# resident's own web report is the demo citizen's.
INSPECTOR_SOURCES = {"Driver Self Report"}
CITIZEN_SOURCES = {"Self Service"}
APP_SOURCES = {"Mobile App"}


@dataclass(frozen=True)
class Rates:
    """How often what Los Angeles does not publish happens (each drawn per case)."""

    recent_share: float = 0.08  # requests placed in the last three days: today's work
    returned: float = 0.04  # the community says "not ours": the dispatcher sends it on
    extension: float = 0.04  # the unit asks for two more days, granted
    suspension: float = 0.01  # waiting on a third party, for 3-10 days
    rework: float = 0.06  # the on-site check fails: done again
    # The follow-up (回访) of closed cases whose reporter can be reached (the demo citizen's
    # own reports; hotline callers, called back by the operator):
    answered: float = 0.7  # ...who answer
    fixed: tuple[float, float] = (0.85, 0.08)  # yes, no (the rest: don't know)
    satisfied: tuple[float, float] = (0.68, 0.22)  # satisfied, basically (the rest: not)
    complaint_reason: float = 0.8  # a "no" or "dissatisfied" that says why: reviewed
    reasonable: float = 0.4  # ...judged reasonable: re-handled (重办) by the same unit


@dataclass(frozen=True)
class Request311:
    """One real request, as the replay needs it."""

    number: str
    kind: str
    source: str
    cancelled: bool
    still_open: bool
    created: datetime  # Los Angeles local time, naive, as published
    took: timedelta | None  # created → closed, when closed
    lon: float
    lat: float
    address: str


def read_requests(path: Path) -> list[Request311]:
    """The geocoded requests of the kinds the catalogue has a class for."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    requests = []
    for row in rows:
        if row["requesttype"] not in LA_CLASSES or not row["latitude"]:
            continue
        created = datetime.strptime(row["createddate"], "%m/%d/%y %H:%M")
        closed = (
            datetime.strptime(row["closeddate"], "%m/%d/%y %H:%M") if row["closeddate"] else None
        )
        requests.append(
            Request311(
                number=row["srnumber"],
                kind=row["requesttype"],
                source=row["requestsource"],
                cancelled=row["status"] == "Cancelled",
                still_open=row["status"] in ("Open", "Pending"),
                created=created,
                took=None if not closed or row["requesttype"] in HANDED_ON else closed - created,
                lon=float(row["longitude"]),
                lat=float(row["latitude"]),
                address=row["address"],
            )
        )
    return requests


@dataclass
class Replayed:
    """What the replay made: cases by last status, and the counts of the drawn events."""

    statuses: Counter[str]
    drawn: Counter[str]
    outside: int  # requests outside the demo territory (not the demo's)
    first: date | None = None
    last: date | None = None


class _Cast:
    """The demo's people, as the lifecycle's actors."""

    def __init__(self, session: Session) -> None:
        users = {u.username: u for u in session.scalars(select(User))}
        self.inspector = users["inspector"]
        self.operator = users["operator"]
        self.dispatcher = users["dispatcher"]
        self.citizen = users["citizen"]
        self.staff_of = {u.unit_id: u for u in users.values() if u.role == Role.UNIT_STAFF}
        self.sanitation = session.scalar(select(Unit.id).where(Unit.code == "DEPT-SANITATION"))

    @staticmethod
    def of(user: User) -> Actor:
        return Actor(user.role, user.id, user.unit_id)

    def unit(self, unit_id: int) -> Actor:
        """The unit's staff: the demo login of that unit, else its staff without a login."""
        user = self.staff_of.get(unit_id)
        return Actor(Role.UNIT_STAFF.value, user.id if user else None, unit_id)


COMPLAINTS = (
    "it is still there",
    "they came back two days later and it was there again",
    "only half of it was taken away",
    "it took more than a week",
)


def caller_phone(request: Request311) -> dict[str, str]:
    """A hotline caller's number, for the operator's call back: from the 555-0100..0199
    range the North American plan keeps for fiction (nobody's real number)."""
    return {"phone": f"+1 213 555 01{int(request.number.rsplit('-', 1)[-1]) % 100:02d}"}


def after_photo(label: str) -> Upload:
    """A plain placeholder for the unit's "after" photo (the rules ask for one)."""
    image = Image.new("RGB", (320, 240), (96, 125, 139))
    ImageDraw.Draw(image).text((16, 108), f"demo: {label}", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70)
    return Upload("after.jpg", out.getvalue())


class _Replay:
    """Takes one request through the loop, step by step, until today."""

    def __init__(
        self, session: Session, context: CaseContext, rates: Rates, until: datetime
    ) -> None:
        self.session = session
        self.context = context
        self.rates = rates
        self.until = until
        self.cast = _Cast(session)
        self.photo = after_photo("after")
        self.drawn: Counter[str] = Counter()

    def act(self, case_id: int, action: Action, actor: Actor, **given: object) -> Case:
        case = locked_case(self.session, case_id, None, None)
        return apply_action(self.session, case, action, actor, ActionInput(**given), self.context)

    def replay(self, request: Request311, reported: datetime, draw: random.Random) -> Case | None:
        """Report the request at `reported` and take it as far as it got by `until`; None
        when its point is outside the demo territory."""
        with clock.at(reported):
            try:
                case_id = self._report(request, reported)
            except DomainError:  # outside the demo's councils
                return None
        for moment, step in self._steps(request, reported, case_id, draw):
            if moment > self.until:
                break
            self._watch(case_id, moment)
            with clock.at(moment):
                step()
        self._watch(case_id, self.until)
        return self.session.get(Case, case_id)

    def _watch(self, case_id: int, before: datetime) -> None:
        """The dispatcher's watch (run every minute in a working city): the case is marked
        overdue a minute after its deadline, when that passed before `before` while it ran."""
        case = self.session.get(Case, case_id)
        assert case is not None
        due = case.deadline
        if case.status not in DEADLINE_RUNS or due is None or case.overdue_at is not None:
            return
        if due + WATCH_EVERY <= before:
            with clock.at(due + WATCH_EVERY):
                self.act(case_id, Action.MARK_OVERDUE, Actor(SYSTEM))

    def _report(self, request: Request311, reported: datetime) -> int:
        if request.source in INSPECTOR_SOURCES:
            reporter, source = self.cast.inspector, CaseSource.INSPECTOR
        elif request.source in CITIZEN_SOURCES:
            reporter, source = self.cast.citizen, CaseSource.CITIZEN
        elif request.source in APP_SOURCES:
            reporter, source = None, CaseSource.OPEN311
        else:
            reporter, source = self.cast.operator, CaseSource.HOTLINE
        data = ReportInput(
            category_code=LA_CLASSES[request.kind],
            lon=request.lon,
            lat=request.lat,
            description=f"{request.kind} (MyLA311 {request.number})",
            address=request.address,
            idempotency_key=f"demo-la311-{request.number}",
            contact=caller_phone(request) if source == CaseSource.HOTLINE else {},
        )
        result = report_case(self.session, data, reporter, source, self.context.photo_root)
        return result.case_id

    def _steps(
        self, request: Request311, reported: datetime, case_id: int, draw: random.Random
    ) -> Iterator[tuple[datetime, Callable[[], object]]]:
        """The request's steps, each with its moment, in order (a generator: a step's
        moment may depend on the ones before)."""
        cast, act = self.cast, self.act
        calendar = self.context.calendar

        def later(moment: datetime, low: float, high: float) -> datetime:
            # People act in working time: low-high working minutes after `moment`.
            return calendar.add_working_hours(moment, draw.uniform(low, high) / 60)

        t = reported
        status = self.session.scalar(select(Case.status).where(Case.id == case_id))
        if status == "reported":  # a citizen's, the app's or a call's: verified on site first
            t = later(t, 30, 180)
            if request.cancelled:
                yield t, lambda: act(case_id, Action.INVALIDATE, cast.of(cast.inspector),
                                     reason="nothing to do on site")  # fmt: skip
                return
            yield t, lambda: act(case_id, Action.VERIFY, cast.of(cast.inspector))
        elif request.cancelled:
            t = later(t, 5, 30)
            yield t, lambda: act(case_id, Action.REJECT, cast.of(cast.operator),
                                 reason=RejectReason.NOT_CITY_PROBLEM.value)  # fmt: skip
            return
        t = later(t, 5, 30)
        yield t, lambda: act(case_id, Action.FILE, cast.of(cast.operator))
        t += timedelta(minutes=draw.uniform(1, 5))  # the dispatcher job, day and night
        yield t, lambda: dispatch_case(self.session, case_id, None, ActionInput(), self.context)
        case = self.session.get(Case, case_id)
        assert case is not None
        unit = lambda: cast.unit(case.unit_id)  # noqa: E731  (the unit it has now)
        t = later(t, 30, 360)
        if case.category.unit_type == "community" and draw.random() < self.rates.returned:
            self.drawn["returned"] += 1
            why = "dumped on a lot the sanitation department clears"
            yield t, lambda: act(case_id, Action.RETURN, unit(), reason=why)
            t = later(t, 15, 90)
            onward = ActionInput(unit_id=cast.sanitation)
            yield (
                t,
                lambda: dispatch_case(self.session, case_id, cast.dispatcher, onward, self.context),
            )
            t = later(t, 30, 240)
        yield t, lambda: act(case_id, Action.ACCEPT, unit())
        if request.still_open or request.took is None:
            return  # still open in Los Angeles: in progress here
        if draw.random() < self.rates.extension:
            self.drawn["extension"] += 1
            t = later(t, 60, 240)
            yield t, lambda: act(case_id, Action.REQUEST_EXTENSION, unit(),
                                 reason="waiting for a truck", extra_value="2",
                                 extra_unit="days")  # fmt: skip
            t = later(t, 30, 180)
            yield t, lambda: act(case_id, Action.APPROVE_EXTENSION, cast.of(cast.dispatcher))
        if draw.random() < self.rates.suspension:
            self.drawn["suspension"] += 1
            t = later(t, 60, 240)
            yield t, lambda: act(case_id, Action.REQUEST_SUSPENSION, unit(),
                                 reason="the owner of the lot must be found")  # fmt: skip
            t = later(t, 30, 180)
            yield t, lambda: act(case_id, Action.APPROVE_SUSPENSION, cast.of(cast.dispatcher))
            t += timedelta(days=draw.uniform(3, 10))
            yield t, lambda: act(case_id, Action.RESUME, cast.of(cast.dispatcher))
        # Los Angeles's own time to close the request is when the work was done here.
        t = max(reported + request.took, later(t, 20, 60))
        done = lambda: act(case_id, Action.REPORT_DONE, unit(), note="done",  # noqa: E731
                           photos=[self.photo])  # fmt: skip
        yield t, done
        t = later(t, 10, 60)
        yield t, lambda: act(case_id, Action.ASSIGN_CHECK, cast.of(cast.operator),
                             inspector_id=cast.inspector.id)  # fmt: skip
        t = later(t, 60, 360)
        if draw.random() < self.rates.rework:
            self.drawn["rework"] += 1
            yield t, lambda: act(case_id, Action.CHECK_FAIL, cast.of(cast.inspector),
                                 note="still there: cleared only in part")  # fmt: skip
            t = later(t, 60, 240)
            yield t, lambda: act(case_id, Action.ACCEPT, unit())
            t = later(t, 4 * 60, 16 * 60)
            yield t, done
            t = later(t, 10, 60)
            yield t, lambda: act(case_id, Action.ASSIGN_CHECK, cast.of(cast.operator),
                                 inspector_id=cast.inspector.id)  # fmt: skip
            t = later(t, 60, 360)
        yield t, lambda: act(case_id, Action.CHECK_PASS, cast.of(cast.inspector), note="checked")
        t = later(t, 5, 30)
        yield t, lambda: act(case_id, Action.CLOSE, cast.of(cast.operator))
        yield from self._follow_up(request, case_id, t, draw, later)

    def _follow_up(
        self,
        request: Request311,
        case_id: int,
        closed: datetime,
        draw: random.Random,
        later: Callable[[datetime, float, float], datetime],
    ) -> Iterator[tuple[datetime, Callable[[], object]]]:
        """The follow-up of a closed case: the reporter's answer, when they can be reached
        and answer; a complaint with a reason reviewed, and re-handled when reasonable."""
        if request.source in INSPECTOR_SOURCES | APP_SOURCES:
            return  # an inspector is not asked; the app's reporters left no contact
        by_phone = request.source not in CITIZEN_SOURCES  # a hotline caller: called back
        if draw.random() >= self.rates.answered:
            return
        self.drawn["answered"] += 1
        answer = self._draw_answer(draw)
        t = later(closed, 60, 3 * 8 * 60)  # within three working days
        answers: list[int] = []
        yield t, lambda: answers.append(self._answer(case_id, answer, by_phone))
        if not followup.needs_review(answer.fixed, answer.satisfaction, answer.comment):
            return
        cast, act = self.cast, self.act
        t = later(t, 8 * 60, 5 * 8 * 60)  # reviewed within a week: the last wait in the queue
        if draw.random() >= self.rates.reasonable:
            self.drawn["complaint dismissed"] += 1
            yield t, lambda: self._review(answers[0], rehandling.Verdict.UNREASONABLE,
                                          "the unit's photo shows it was done")  # fmt: skip
            return
        self.drawn["re-handled"] += 1
        yield t, lambda: self._review(answers[0], rehandling.Verdict.REASONABLE, "")
        unit = lambda: cast.unit(self.session.get(Case, case_id).unit_id)  # noqa: E731
        t = later(t, 30, 240)
        yield t, lambda: act(case_id, Action.ACCEPT, unit())
        t = later(t, 4 * 60, 16 * 60)
        yield t, lambda: act(case_id, Action.REPORT_DONE, unit(), note="done again",
                             photos=[self.photo])  # fmt: skip
        t = later(t, 10, 60)
        yield t, lambda: act(case_id, Action.ASSIGN_CHECK, cast.of(cast.operator),
                             inspector_id=cast.inspector.id)  # fmt: skip
        t = later(t, 60, 360)
        yield t, lambda: act(case_id, Action.CHECK_PASS, cast.of(cast.inspector), note="checked")
        t = later(t, 5, 30)
        yield t, lambda: act(case_id, Action.CLOSE, cast.of(cast.operator))

    def _draw_answer(self, draw: random.Random) -> AnswerInput:
        yes, no = self.rates.fixed
        satisfied, basically = self.rates.satisfied
        roll, rating = draw.random(), draw.random()
        fixed = Fixed.YES if roll < yes else Fixed.NO if roll < yes + no else Fixed.UNKNOWN
        satisfaction = (
            Satisfaction.SATISFIED if rating < satisfied
            else Satisfaction.BASICALLY_SATISFIED if rating < satisfied + basically
            else Satisfaction.DISSATISFIED
        )  # fmt: skip
        comment = ""
        complaint = fixed == Fixed.NO or satisfaction == Satisfaction.DISSATISFIED
        if complaint and draw.random() < self.rates.complaint_reason:
            comment = draw.choice(COMPLAINTS)
        return AnswerInput(fixed, satisfaction, comment, Respondent.REPORTER, Channel.LINK, "")

    def _answer(self, case_id: int, drawn: AnswerInput, by_phone: bool) -> int:
        """Record the reporter's answer: on the link they were sent, or by phone to the
        operator who called them back."""
        case = self.session.get(Case, case_id)
        assert case is not None
        round_ = followup.current_round(self.session, case, link_days=14)
        answer = AnswerInput(
            drawn.fixed,
            drawn.satisfaction,
            drawn.comment,
            Respondent.REPORTER,
            Channel.PHONE if by_phone else Channel.LINK,
            followup.respondent_key("reporter", case_id),
            recorded_by=self.cast.operator.id if by_phone else None,
        )
        row = followup.record_answer(self.session, case_id, round_.number, answer, clock.now_utc())
        return row.id

    def _review(self, answer_id: int, verdict: rehandling.Verdict, reason: str) -> None:
        rehandling.review_answer(
            self.session, answer_id, self.cast.operator, verdict, reason, None, self.context
        )


def communities(session: Session, requests: list[Request311]) -> list[str | None]:
    """The code of the territory's community each request's point is in (None: another
    city's), in one query."""
    found = dict(
        session.execute(
            text("""
                SELECT p.i, (SELECT a.code FROM areas a WHERE a.level = 'community'
                             AND ST_Intersects(a.geom,
                                               ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326))
                             ORDER BY a.code LIMIT 1)
                FROM unnest(CAST(:lon AS float8[]), CAST(:lat AS float8[]))
                    WITH ORDINALITY AS p(lon, lat, i)
            """),
            {"lon": [r.lon for r in requests], "lat": [r.lat for r in requests]},
        ).all()
    )
    return [found.get(i + 1) for i in range(len(requests))]


def inside_territory(session: Session, requests: list[Request311]) -> list[int]:
    """The indexes of the requests whose point is in a community of the territory (the
    others are another city's)."""
    return [i for i, code in enumerate(communities(session, requests)) if code is not None]


def open_today(requests: list[Request311], community: list[str | None]) -> set[int]:
    """The requests to place so that they are still open today: those Los Angeles had not
    closed (or handed on: no time to close of its own), and in each community the one it
    took longest to close (so each community's queue has work)."""
    kept = {i for i, r in enumerate(requests) if not r.cancelled and r.took is None}
    longest: dict[str, tuple[timedelta, int]] = {}
    for i, request in enumerate(requests):
        code = community[i]
        if code is None or request.cancelled or request.took is None:
            continue
        if code not in longest or request.took > longest[code][0]:
            longest[code] = (request.took, i)
    return kept | {i for _, i in longest.values()}


def _on_day(request: Request311, day: date) -> datetime:
    """The request's own Los Angeles time of day on `day`, in UTC."""
    local = datetime.combine(day, time(request.created.hour, request.created.minute))
    return local.replace(tzinfo=LA_TIME).astimezone(UTC)


def _recent_days(today: date) -> list[date]:
    return [today - timedelta(days=back) for back in range(1, OPEN_WITHIN_DAYS + 1)]


def _open_now(request: Request311, day: date, now: datetime, calendar: BusinessCalendar) -> bool:
    """Reported on `day`, the request has reached its unit by `now` and is not done yet."""
    reported = _on_day(request, day)
    reached = calendar.add_working_hours(reported, REACHES_UNIT_HOURS) <= now
    return reached and (request.took is None or reported + request.took > now)


def report_moments(
    requests: list[Request311],
    now: datetime,
    rates: Rates,
    draw: random.Random,
    calendar: BusinessCalendar | None = None,
    keep_open: Collection[int] = (),
) -> list[datetime]:
    """Each request's new report time (UTC), on a day of the year that ended yesterday (a
    twelfth in its last three days), at the request's own Los Angeles time of day. The
    requests of `keep_open` go to a day of the last two weeks from which they reach their
    unit by `now` (in the `calendar`'s working time) and Los Angeles's own time to close
    them has not run out: still open today."""
    today = now.astimezone(LA_TIME).date()
    moments = []
    for i, request in enumerate(requests):
        if i in keep_open and calendar is not None:
            days = [d for d in _recent_days(today) if _open_now(request, d, now, calendar)]
            if days:
                moments.append(_on_day(request, draw.choice(days)))
                continue
        back = draw.randint(1, 3) if draw.random() < rates.recent_share else draw.randint(4, 365)
        moments.append(_on_day(request, today - timedelta(days=back)))
    return moments


def seed_history(
    session: Session,
    context: CaseContext,
    say: Callable[[str], None] = print,
    rates: Rates | None = None,
    now: datetime | None = None,
    data: Path | None = None,
) -> Replayed | None:
    """Replay the real requests in the caller's transaction, oldest first; None (and
    nothing done) when the city already has cases: the past is seeded once and kept."""
    if session.scalar(select(func.count()).select_from(Case)):
        say("demo history: the city already has cases, kept as they are")
        return None
    rates = rates or Rates()
    now = now or clock.now_utc()
    everywhere = read_requests((data or SHARED_DATA) / LA_311)
    community = communities(session, everywhere)
    inside = [i for i, code in enumerate(community) if code is not None]
    requests = [everywhere[i] for i in inside]
    keep_open = open_today(requests, [community[i] for i in inside])
    draw = random.Random(SEED)
    moments = report_moments(requests, now, rates, draw, context.calendar, keep_open)
    replay = _Replay(session, context, rates, until=now)
    statuses: Counter[str] = Counter()
    outside = len(everywhere) - len(requests)
    order = sorted(range(len(requests)), key=lambda i: moments[i])
    for done, i in enumerate(order, start=1):
        case = replay.replay(requests[i], moments[i], draw)
        if case is None:
            outside += 1
        else:
            statuses[case.status] += 1
        if done % 100 == 0:
            say(f"demo history: {done:,} of {len(requests):,} requests replayed")
    session.flush()
    refresh_rollup(session)
    kept = [moments[i] for i in order]
    first, last = (kept[i].astimezone(LA_TIME).date() for i in (0, -1))  # the city's days
    replayed = Replayed(statuses, replay.drawn, outside, first, last)
    say(
        f"demo history: {sum(statuses.values()):,} real MyLA311 requests replayed as cases "
        f"from {replayed.first} to {replayed.last} ({outside:,} outside the demo councils)"
    )
    return replayed
