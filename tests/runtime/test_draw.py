"""Drawing: present points filled in palette colour, absent ones grey and crossed out."""

from __future__ import annotations

import numpy as np
import pytest

from heatdeploy.runtime.draw import ABSENT_COLOUR, draw_batch, draw_keypoints, keypoint_colour

BG = 60
KPS = np.array([[50.0, 60.0], [150.0, 60.0], [150.0, 150.0], [50.0, 150.0]])
PRESENCE = np.array([0.9, 0.8, 0.1, 0.95])
PRESENT = PRESENCE > 0.5  # keypoint 2 is absent
SKELETON = [(0, 1), (1, 2), (0, 3)]


def _image(size: int = 200) -> np.ndarray:
    return np.full((size, size, 3), BG, np.uint8)


def _draw(**kwargs) -> np.ndarray:
    args = {"skeleton": SKELETON, "legend": False} | kwargs
    return draw_keypoints(_image(), KPS, PRESENCE, PRESENT, **args)


def test_returns_a_new_bgr_image() -> None:
    img = _image()
    out = draw_keypoints(img, KPS, PRESENCE, PRESENT, SKELETON)
    assert out.shape == img.shape and out.dtype == np.uint8 and out is not img
    assert (img == BG).all()  # the input is left alone


def test_present_keypoints_are_filled_in_their_colour() -> None:
    out = _draw()
    for i in np.flatnonzero(PRESENT):
        x, y = KPS[i].astype(int)
        assert out[y, x].tolist() == list(keypoint_colour(i))


def test_absent_keypoint_is_grey_crossed_circle_not_a_dot() -> None:
    out = _draw()
    x, y = KPS[2].astype(int)
    centre = out[y, x].astype(int)
    assert centre.tolist() != list(keypoint_colour(2))
    assert np.ptp(centre) <= 2 and np.abs(centre - ABSENT_COLOUR[0]).max() < 40  # grey 'x' crossing
    patch = out[y - 6 : y + 7, x - 6 : x + 7]
    assert (patch != BG).any(axis=2).sum() < patch.shape[0] * patch.shape[1]  # hollow, not filled


def test_edges_only_join_present_keypoints() -> None:
    out = _draw()
    assert (out[60, 100] != BG).any()  # 0-1: both present
    assert (out[105, 50] != BG).any()  # 0-3: both present
    assert (out[105, 150] == BG).all()  # 1-2: keypoint 2 absent


def test_all_absent_draws_no_coloured_dots() -> None:
    out = draw_keypoints(_image(), KPS, np.zeros(4), np.zeros(4, bool), SKELETON, legend=False)
    changed = out[(out != BG).any(axis=2)].astype(int)
    assert len(changed) and (np.ptp(changed, axis=1) <= 2).all()  # only grey marks


def test_nan_keypoints_are_skipped() -> None:
    kps = KPS.copy()
    kps[0] = np.nan
    out = draw_keypoints(_image(), kps, PRESENCE, PRESENT, SKELETON, legend=False)
    assert (out[60, 100] == BG).all()  # its edge is gone too
    x, y = KPS[1].astype(int)
    assert out[y, x].tolist() == list(keypoint_colour(1))


def test_legend_labels_and_grey_input() -> None:
    plain = _draw()
    assert (_draw(legend=True)[:8, :40] != plain[:8, :40]).any()
    labelled = _draw(names=["a", "b", "c", "d"], scores=np.array([0.5, 0.6, 0.7, 0.8]))
    assert (labelled != plain).any(axis=2).sum() > 50
    grey = draw_keypoints(np.full((200, 200), BG, np.uint8), KPS, PRESENCE, PRESENT)
    assert grey.shape == (200, 200, 3)


def test_marks_scale_with_image_size() -> None:
    def dot_area(size: int) -> int:
        out = draw_keypoints(_image(size), np.array([[size / 2, size / 2]]), [1.0], [True], legend=False)
        return int((out != BG).any(axis=2).sum())

    assert dot_area(1600) > 10 * dot_area(160)


def test_draw_batch() -> None:
    kps = np.stack([KPS, KPS + 5])
    outs = draw_batch([_image(), _image()], kps, np.stack([PRESENCE] * 2), np.stack([PRESENT] * 2), SKELETON)
    assert len(outs) == 2 and all(o.shape == (200, 200, 3) for o in outs)
    with pytest.raises(ValueError, match="2 images"):
        draw_batch([_image(), _image()], kps[:1], PRESENCE[None], PRESENT[None], SKELETON)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="presence and present"):
        draw_keypoints(_image(), KPS, PRESENCE[:3], PRESENT, SKELETON)


def test_label_modes() -> None:
    names = ["nose", "b", "c", "d"]
    plain = _draw()
    np.testing.assert_array_equal(_draw(names=names, labels="none"), plain)  # names known, none drawn
    by_name = _draw(names=names, labels="names")
    by_score = _draw(names=names, labels="scores")
    assert (by_name != plain).any() and (by_score != plain).any() and (by_name != by_score).any()
    near_absent = (slice(130, 170), slice(130, 200))  # the absent keypoint 2 is never labelled
    np.testing.assert_array_equal(by_name[near_absent], plain[near_absent])
    with pytest.raises(ValueError, match="labels='all'"):
        _draw(labels="all")
