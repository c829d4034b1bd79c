"""The managers' page, CSV and JSON show the confusion matrices, weekly trends and known-answer accuracy
on known-same and known-different pairs apart, from the same computation."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

from bench.metrics import seed
from tests.conftest import add_user, login
from triage.models import Role


def test_confusion_weeks_and_known_answer_on_the_page_the_csv_and_the_api(engine, make_client):
    seed(engine, candidates=300, days=40, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), recognizers=8)
    add_user(engine, "boss", Role.manager)
    boss = make_client()
    login(boss, "boss")
    r = boss.get("/stats", params={"days": "30"})
    assert r.status_code == 200
    m = r.context["m"]
    assert m.confusion and m.weeks and m.known_answer
    # One accessible table per pair: a caption, column and row headers, counts that add up to the pair's rounds.
    # 8 recognizers, 28 pairs: the 12 with the most rounds together are on the page, busiest first.
    assert len(m.confusion) > 12 and r.text.count('<table class="confusion"') == 12
    assert f"The 12 pairs with the most rounds together, of {len(m.confusion)}" in r.text
    first = max(m.confusion, key=lambda c: c.total)
    items = {(p.a, p.b): p.items for p in m.pairs}[(first.a, first.b)]
    found = re.search(r'<table class="confusion" id="confusion-1">(.*?)</table>', r.text, re.S)
    assert found is not None
    table = found.group(1)
    assert f"<caption>{first.a} (rows) against {first.b} (columns), {items} rounds" in table
    assert table.count('<th scope="row">') == 3 and table.count('<th scope="col">') == 4
    cells = [int(v) for v in re.findall(r"<td(?: class=\"agree\")?>(\d+)</td>", table)]
    assert len(cells) == 9 and sum(cells) == items
    found = re.search(r'<table id="weeks">(.*?)</table>', r.text, re.S)
    assert found is not None
    weeks = found.group(1)
    assert weeks.count("<tr>") == len(m.weeks) + 1 and m.weeks[-1].week.isoformat() in weeks
    assert "Agreement per week" in r.text and "First-round dispute rate per week" in r.text
    assert "Known same" in r.text and "Known different" in r.text

    rows = list(csv.reader(io.StringIO(boss.get("/stats/export.csv", params={"days": "30"}).text)))
    confusion = [row for row in rows if row[0] == "confusion"]
    assert len(confusion) == 9 * len(m.confusion)
    assert sum(int(row[2]) for row in confusion) == m.items
    assert {row[1] for row in rows if row[0] == "week_dispute_rate"} == {w.week.isoformat() for w in m.weeks}
    assert [row for row in rows if row[0] == "known_same_accuracy"] and \
        [row for row in rows if row[0] == "known_different_accuracy"]

    body = boss.get("/api/metrics", params={"days": "30"}).json()
    assert [c["counts"] for c in body["confusion"]] == [c.counts for c in m.confusion]
    assert [w["week"] for w in body["weeks"]] == [w.week.isoformat() for w in m.weeks]
    assert all("dispute_rate" in w and "mean_wait_seconds" in w for w in body["weeks"])
    assert {k["recognizer"]: (k["same_answered"], k["different_answered"]) for k in body["known_answer"]} == {
        k.recognizer: (k.same_answered, k.different_answered) for k in m.known_answer}
    # A recognizer sees none of it.
    add_user(engine, "zed", Role.recognizer)
    rec = make_client()
    login(rec, "zed")
    assert rec.get("/stats").status_code == 403 and rec.get("/api/metrics").status_code == 403
