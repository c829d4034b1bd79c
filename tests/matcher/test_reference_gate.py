"""The enrolment quality gate for reference photos (``is_searchable_reference``)."""

from __future__ import annotations

import math

import pytest

from matcher import REFERENCE_MIN_IOD_PX, Quality, frontal_iod, is_searchable_reference
from matcher.pipeline import MIN_BLUR, REFERENCE_YAW_CAP_DEG, quality_issues


def quality(iod: float, *, yaw: float = 0.0, blur: float = 120.0, det: float = 0.99) -> Quality:
    issues = quality_issues(iod, blur, yaw, 0.0, det)
    return Quality(iod_px=iod, blur=blur, yaw_deg=yaw, pitch_deg=0.0, det_score=det, ok=not issues, issues=issues)


def test_threshold_is_three_quarters_of_the_chip_eye_distance() -> None:
    from matcher.geometry import CHIP_TEMPLATE_150

    chip_iod = float(CHIP_TEMPLATE_150[1, 0] - CHIP_TEMPLATE_150[0, 0])
    assert REFERENCE_MIN_IOD_PX == pytest.approx(0.75 * chip_iod, abs=0.5)


@pytest.mark.parametrize(
    ("iod", "expected"),
    [(REFERENCE_MIN_IOD_PX, True), (REFERENCE_MIN_IOD_PX - 0.1, False), (28.0, False), (90.0, True), (0.0, False)],
)
def test_small_frontal_faces_are_not_searchable(iod: float, expected: bool) -> None:
    assert is_searchable_reference(quality(iod)) is expected


def test_turned_face_is_judged_at_its_frontal_size() -> None:
    # a three-quarter view at 45 degrees: 32 px between the eyes is 45 px from the front
    q = quality(32.0, yaw=45.0)
    assert "turned" in q.issues  # flagged, yet a useful reference
    assert frontal_iod(q) == pytest.approx(32.0 / math.cos(math.radians(45.0)))
    assert is_searchable_reference(q)
    assert is_searchable_reference(quality(32.0, yaw=-45.0))
    assert not is_searchable_reference(quality(32.0, yaw=20.0))


def test_yaw_correction_is_capped() -> None:
    # a profile (90 degrees) cannot make a tiny face big: the correction stops at the cap
    q = quality(10.0, yaw=89.0)
    assert frontal_iod(q) == pytest.approx(10.0 / math.cos(math.radians(REFERENCE_YAW_CAP_DEG)))
    assert not is_searchable_reference(q)


def test_unknown_yaw_uses_the_measured_distance() -> None:
    assert frontal_iod(quality(50.0, yaw=float("nan"))) == 50.0
    assert is_searchable_reference(quality(50.0, yaw=float("nan")))
    assert not is_searchable_reference(quality(30.0, yaw=float("nan")))


def test_blurred_reference_is_not_searchable_low_confidence_is() -> None:
    assert not is_searchable_reference(quality(90.0, blur=MIN_BLUR - 1))
    low = quality(90.0, det=0.6)
    assert "low_confidence" in low.issues
    assert is_searchable_reference(low)


@pytest.mark.model
def test_packaged_faces_are_searchable(astronaut_face, hopper_face) -> None:
    assert is_searchable_reference(astronaut_face.quality)
    assert is_searchable_reference(hopper_face.quality)


@pytest.mark.model
def test_the_gate_follows_the_photo_resolution(pipeline, astronaut, astronaut_face) -> None:
    import cv2

    from tests.matcher.conftest import encode

    iod = astronaut_face.quality.iod_px  # about 41 px in the 512-px photo: just above the gate
    verdicts = {}
    for target in (28.0, 64.0):
        s = target / iod
        resized = cv2.resize(astronaut, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        face = pipeline.enrol(encode(resized))
        assert face.quality.iod_px == pytest.approx(target, rel=0.15)
        verdicts[target] = is_searchable_reference(face.quality)
    assert verdicts == {28.0: False, 64.0: True}
