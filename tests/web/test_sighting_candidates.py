"""The ranked candidates of a sighting: shown to managers once decided, never to a recognizer or officer."""

from __future__ import annotations

from sqlmodel import Session

from tests.conftest import add_user, login
from tests.factories import image_store, make_candidate
from triage.models import Candidate, Role


def test_ranked_candidates_for_managers_only(make_client, engine, settings) -> None:
    rico = add_user(engine, "rico", Role.officer, Role.recognizer)  # an officer who also reviews
    add_user(engine, "boss", Role.manager)
    with Session(engine, expire_on_commit=False) as s:
        cand = make_candidate(s, image_store(settings), settings, rico.id)  # type: ignore[arg-type]
        s.commit()
    boss, own = make_client(), make_client()
    login(boss, "boss")
    login(own, "rico")
    page = boss.get(f"/sightings/{cand.sighting_id}")
    # Not decided yet: nothing named, only how many are waiting.
    assert page.context["ranked"] == [] and page.context["waiting"] == 1 and "still under review" in page.text
    with Session(engine) as s:
        row = s.get(Candidate, cand.id)
        row.status = "cleared"  # type: ignore[union-attr]
        s.add(row)
        s.commit()
    page = boss.get(f"/sightings/{cand.sighting_id}")
    (ranked,) = page.context["ranked"]
    assert ranked.candidate.id == cand.id and ranked.decision.startswith("cleared")
    assert 'id="ranked-candidates"' in page.text and ranked.subject.name in page.text
    # The uploader, who also reviews, sees the outcome of their own sighting but never who was proposed.
    mine = own.get(f"/sightings/{cand.sighting_id}")
    assert mine.status_code == 200 and mine.context["ranked"] is None
    assert 'id="ranked-candidates"' not in mine.text and ranked.subject.name not in mine.text
    frag = own.get(f"/sightings/{cand.sighting_id}/status", headers={"HX-Request": "true"})
    assert ranked.subject.name not in frag.text and "rank" not in frag.text.lower()
