"""The staff lists' words worked out once per page (`i18n.Words`, `cases.views.ListedCase`)
say what Flask-Babel and the templates' `_` say, in both languages."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask, render_template_string

from cases.models import CaseStatus
from cases.views import LIST_COLUMNS, listed_cases
from gridmgmt.kernel import i18n

# Around the display zones' changes of offset (Los Angeles' DST, St John's half hours,
# Shanghai's none), a naive time (taken as UTC) and a year before 1000.
MOMENTS = [
    datetime(2025, 3, 9, 9, 59, tzinfo=UTC),
    datetime(2025, 3, 9, 10, 0, tzinfo=UTC),
    datetime(2025, 11, 2, 8, 30, tzinfo=UTC),
    datetime(2025, 11, 2, 9, 1, tzinfo=UTC),
    datetime(2025, 3, 9, 5, 29, tzinfo=UTC),
    datetime(2025, 3, 9, 5, 31, tzinfo=UTC),
    datetime(2024, 12, 31, 23, 59, tzinfo=UTC),
    datetime(2024, 6, 1, 12, 0),
    datetime(999, 6, 1, 12, 0, tzinfo=UTC),
    datetime(2025, 7, 1, 12, 0, tzinfo=UTC).astimezone(datetime.now().astimezone().tzinfo),
]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("zone", ["America/Los_Angeles", "America/St_Johns", "Asia/Shanghai"])
def test_words_say_what_flask_babel_says(app: Flask, lang: str, zone: str) -> None:
    """Dates, statuses, categories and run-time labels: the same as `localtime`,
    `status_label`, `localized` and a template's `_`, with their escaping."""
    app.config["DISPLAY_TZ"], before = zone, app.config.get("DISPLAY_TZ")
    try:
        with app.test_request_context("/", headers={"Accept-Language": lang}):
            app.preprocess_request()
            w = i18n.words()
            for moment in [*MOMENTS, None]:
                assert w.localtime(moment) == i18n.localtime(moment)
                assert w.localtime(moment, "medium") == i18n.localtime(moment, "medium")
            for status in CaseStatus:
                assert w.status(status) == w.status(status.value) == i18n.status_label(status)
            labels = ["Asks for extension", "Citizen", "Not city problem", "No such words <b>"]
            template = "{% for m in labels %}[{{ _(m) }}|{{ w(m) }}]{% endfor %}"
            shown = render_template_string(template, labels=labels, w=w)
            assert shown.count("[") == len(labels)
            for pair in shown.strip("[]").split("]["):
                said, bound = pair.split("|")
                assert said == bound
            named = type("Named", (), {"name_en": "Potholes", "name_zh": "坑洼"})()
            assert w.localized(named, "name") == i18n.localized(named, "name")
            assert w.localized(object(), "name") == ""
    finally:
        app.config["DISPLAY_TZ"] = before


TABLE = '{% from "cases/_macros.html" import case_table with context %}{{ case_table(cases) }}'
# A row as `list_cases` reads it: the columns of `LIST_COLUMNS`, by name.
Row = namedtuple("Row", [column.key for column in LIST_COLUMNS])  # type: ignore[misc]


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("en", ["Urgent", "Rework ×2", "Asks for extension", "In progress", "Overdue"]),
        ("zh", ["紧急", "返工 ×2", "申请延期", "处置中", "已超期"]),
    ],
)
def test_a_list_row_shows_its_badges_and_deadline(app: Flask, lang: str, words: list[str]) -> None:
    """An urgent case reworked twice, asking for more time and past its deadline shows each
    badge, its status and its deadline marked overdue, in the reader's language; a case whose
    deadline does not run (being checked) is not marked."""
    now = datetime(2025, 5, 1, 12, tzinfo=UTC)
    due = now - timedelta(hours=1)
    late = Row(7, "C-7", "in_progress", 3, "citizen", True, 2, "extension", "", "1 Main <St>",
               now - timedelta(days=2), due, "坑洼", "Potholes")  # fmt: skip
    checking = late._replace(id=8, number="C-8", status="checking", urgent=False, rework_count=0)
    with app.test_request_context("/", headers={"Accept-Language": lang}):
        app.preprocess_request()
        listed = listed_cases([late, checking], now)
        assert listed[0].url == "/cases/7"
        assert listed[0].category == ("坑洼" if lang == "zh" else "Potholes")
        assert (listed[0].late, listed[1].late) == (True, False)
        shown = render_template_string(TABLE, cases=listed)
        due_shown = i18n.localtime(due)
    assert '<tr data-case="C-7" class="rework">' in shown
    assert '<tr data-case="C-8">' in shown
    assert "1 Main &lt;St&gt;" in shown
    when = f'<span class="when">{due_shown}</span>'  # date and time kept on one line
    assert f'<span class="overdue">{when} · {words[-1]}</span>' in shown
    assert f'<span class="">{when}</span>' in shown
    for word in words:
        assert word in shown
