"""PAF bottom-up decoding: rendered part maps + PAFs of known people decode to those people, limb by limb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heatdeploy.runtime.decode_paf import decode_paf, tree_limbs
from heatdeploy.runtime.heads import decode_outputs
from heatdeploy.spec import (
    OPENPOSE_COCO18_LIMBS,
    OPENPOSE_COCO18_PARTS,
    TRT_POSE_LIMBS,
    TRT_POSE_PARTS,
    HeatmapSpec,
    ModelSpec,
    PafSpec,
    SpecError,
)

H = W = 64  # 256x256 input at stride 4
K = 18
# A standing person in heatmap px relative to the nose, COCO-18 part order.
TEMPLATE = np.array([
    (0, 0), (0, 4), (-4, 4), (-6, 10), (-7, 15), (4, 4), (6, 10), (7, 15), (-3, 16), (-3, 24), (-3, 32),
    (3, 16), (3, 24), (3, 32), (-1, -1), (1, -1), (-2, 0), (2, 0),
], dtype=np.float64)


def three_people() -> np.ndarray:
    """[3,K,2]: A and B side by side with A's left arm crossing B's right arm; C's right forearm crosses B's."""
    rng = np.random.default_rng(3)
    a = TEMPLATE + (16.3, 8.2)
    b = TEMPLATE + (28.6, 14.4)
    c = TEMPLATE * (1.1, 0.95) + (46.2, 10.7)
    c[3], c[4] = (31.0, 21.0), (21.5, 27.5)  # C's right elbow and wrist reach across B's right forearm
    people = np.stack([a, b, c]) + rng.uniform(-0.3, 0.3, size=(3, K, 2))
    return people


def render(people: np.ndarray, sigma: float = 1.0, width: float = 1.0, limbs: tuple = OPENPOSE_COCO18_LIMBS,
           missing: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Part maps [K,h,w] (max over people) and PAFs [38,h,w] (unit limb vectors, averaged where limbs overlap).

    As OpenPose renders its training targets: a Gaussian per part, and per limb the unit vector on every
    pixel within ``width`` of the segment. Parts in ``missing`` (occluded) are left out with their limbs.
    """
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    parts = np.zeros((K, H, W))
    for person in people:
        for k, (x, y) in enumerate(person):
            if k in missing:
                continue
            parts[k] = np.maximum(parts[k], np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)))
    channels = 1 + max(max(limb[2], limb[3]) for limb in limbs)
    total = np.zeros((channels, H, W))
    count = np.zeros((channels, H, W))
    for person in people:
        for a, b, cx, cy in limbs:
            if a in missing or b in missing:
                continue
            pa, pb = person[a], person[b]
            d = pb - pa
            length = np.hypot(*d)
            u = d / length
            t = (xs - pa[0]) * u[0] + (ys - pa[1]) * u[1]
            perp = np.abs((xs - pa[0]) * u[1] - (ys - pa[1]) * u[0])
            on = (t >= -width) & (t <= length + width) & (perp <= width)  # OpenPose's box, widened by width
            total[cx] += on * u[0]
            total[cy] += on * u[1]
            count[cx] += on
            count[cy] += on
    return parts.astype(np.float32), (total / np.maximum(count, 1)).astype(np.float32)


def openpose_tensor(people: np.ndarray) -> np.ndarray:
    """OpenPose's one NHWC output: 18 parts, background, 38 PAFs -> [1,h,w,57]."""
    parts, pafs = render(people)
    background = 1.0 - parts.max(axis=0, keepdims=True)
    return np.concatenate([parts, background, pafs])[None].transpose(0, 2, 3, 1)


def openpose_spec(**paf: object) -> ModelSpec:
    return ModelSpec(
        keypoints=OPENPOSE_COCO18_PARTS,
        heatmap=HeatmapSpec(name="net_output", layout="NHWC", stride=4, channels=tuple(range(K))),
        existence=None,
        paf=PafSpec(name="net_output", layout="NHWC", offset=19, **paf),  # type: ignore[arg-type]
        input=ModelSpec(keypoints=("a",)).input.__class__(width=256, height=256, layout="NHWC"),
    ).validate()


def match(decoded: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """For each truth person, the decoded slot with the nearest neck."""
    d = np.linalg.norm(decoded[None, :, 1] - truth[:, None, 1], axis=-1)
    return d.argmin(axis=1)


def test_three_people_with_crossing_limbs_decode_to_the_right_people() -> None:
    truth = three_people()
    spec = openpose_spec()
    dec = decode_outputs(spec, {"net_output": openpose_tensor(truth)})
    m = spec.paf.max_people  # type: ignore[union-attr]
    assert dec.coords.shape == (1, m, K, 2) and dec.present.shape == (1, m, K)
    assert dec.instance_scores is not None and dec.instance_scores.shape == (1, m)
    valid = dec.instance_scores[0] > 0
    assert valid.sum() == 3
    assert (np.diff(dec.instance_scores[0]) <= 0).all()  # best first
    slots = match(dec.coords_hm[0, :3], truth)
    assert sorted(slots.tolist()) == [0, 1, 2]
    for person, slot in enumerate(slots):
        assert dec.present[0, slot].all(), f"person {person} lost parts"
        err = np.abs(dec.coords_hm[0, slot] - truth[person]).max()
        assert err < 0.35, f"person {person}: a part is {err:.2f} heatmap px off (another person's part?)"
    # Input pixels follow the heatmap's convention (pixel-centre at stride 4).
    np.testing.assert_allclose(dec.coords[0, :3], (dec.coords_hm[0, :3] + 0.5) * 4 - 0.5, atol=1e-4)
    assert not dec.present[0, 3:].any()


def test_grouping_comes_from_the_fields() -> None:
    # Same part maps, no PAFs: no limb scores, so no person (each peak alone is below min_parts).
    parts, pafs = render(three_people())
    people = decode_paf(parts[None], np.zeros_like(pafs)[None], OPENPOSE_COCO18_LIMBS)
    assert not people.valid.any()
    # Swap B's and C's right wrists in the fields only: the part maps are identical (same peaks), and the
    # decoder follows the fields, not proximity.
    truth = three_people()
    swapped = truth.copy()
    swapped[[1, 2], 4] = swapped[[2, 1], 4]
    _, crossed = render(swapped)
    people = decode_paf(parts[None], crossed[None], OPENPOSE_COCO18_LIMBS)
    slots = match(people.coords_hm[0, :3], truth)
    np.testing.assert_allclose(people.coords_hm[0, slots[1], 4], truth[2, 4], atol=0.35)
    np.testing.assert_allclose(people.coords_hm[0, slots[2], 4], truth[1, 4], atol=0.35)


def test_batch_items_decode_independently() -> None:
    many = three_people()
    one = (TEMPLATE + (30.4, 12.1))[None]
    p1, f1 = render(many)
    p2, f2 = render(one)
    people = decode_paf(np.stack([p1, p2]), np.stack([f1, f2]), OPENPOSE_COCO18_LIMBS, max_people=5)
    assert people.valid.sum(axis=1).tolist() == [3, 1]
    assert np.abs(people.coords_hm[1, 0] - one[0]).max() < 0.35
    alone = decode_paf(p2[None], f2[None], OPENPOSE_COCO18_LIMBS, max_people=5)
    np.testing.assert_array_equal(alone.coords_hm[0], people.coords_hm[1])


def test_a_stray_peak_joins_nobody() -> None:
    truth = (TEMPLATE + (30.4, 12.1))[None]
    parts, pafs = render(truth)
    ys, xs = np.mgrid[0:H, 0:W]
    parts[4] = np.maximum(parts[4], np.exp(-((xs - 55.0) ** 2 + (ys - 55.0) ** 2) / 2.0))  # a second right wrist
    people = decode_paf(parts[None], pafs[None], OPENPOSE_COCO18_LIMBS)
    assert people.valid[0].sum() == 1
    np.testing.assert_allclose(people.coords_hm[0, 0, 4], truth[0, 4], atol=0.35)


def test_separate_part_and_paf_tensors() -> None:
    truth = three_people()
    parts, pafs = render(truth)
    spec = ModelSpec(keypoints=OPENPOSE_COCO18_PARTS, existence=None, heatmap=HeatmapSpec(name="parts"),
                     paf=PafSpec(name="pafs"),
                     input=ModelSpec(keypoints=("a",)).input.__class__(width=256, height=256)).validate()
    assert spec.head == "paf" and spec.multi_instance and spec.output_names == ("parts", "pafs")
    dec = decode_outputs(spec, {"parts": parts[None], "pafs": pafs[None]})
    assert (dec.instance_scores[0] > 0).sum() == 3  # type: ignore[index]


def test_coco18_tree_limbs_leave_out_the_ear_shoulder_pair() -> None:
    keep = tree_limbs(OPENPOSE_COCO18_LIMBS, K)
    assert keep[:17].all() and not keep[17:].any()
    # Every PAF channel is used exactly once by the table.
    channels = sorted(c for limb in OPENPOSE_COCO18_LIMBS for c in limb[2:])
    assert channels == list(range(38))


def test_paf_spec_round_trip_and_errors() -> None:
    spec = openpose_spec(limbs=[[1, 2, 12, 13], [2, 3, 14, 15]])
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and again.paf.limb_table() == ((1, 2, 12, 13), (2, 3, 14, 15))  # type: ignore[union-attr]
    with pytest.raises(SpecError, match="paf.limbs"):
        openpose_spec(limbs=[[1, 18, 0, 1]])
    with pytest.raises(SpecError, match="paf.preset"):
        openpose_spec(preset="body25")
    with pytest.raises(Exception, match="paf output 'net_output'.*offset"):
        decode_outputs(openpose_spec(), {"net_output": openpose_tensor(three_people())[..., :40]})


def test_parity_pairs_paf_people_and_counts_a_lost_one_as_flips() -> None:
    from heatdeploy.parity import compare_keypoints, decode_keypoints, pair_instances
    from heatdeploy.runtime.pipeline import Prediction

    truth = three_people()
    spec = openpose_spec()
    eye = np.broadcast_to(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (1, 2, 3))
    ref = decode_keypoints(spec, {"net_output": openpose_tensor(truth)}, eye)
    cand = decode_keypoints(spec, {"net_output": openpose_tensor(truth[[2, 0]])}, eye)  # B lost, order changed
    r, c, img = pair_instances(ref, cand)
    assert img.tolist() == [0, 0, 0]
    lost = ~c.present.any(axis=1)
    assert lost.sum() == 1
    paired = r.present.any(axis=1) & c.present.any(axis=1)
    cmp = compare_keypoints(r, c, np.full((3, 2), 256), spec.keypoints, paired=paired)
    assert cmp.metrics.flips_lost == K and cmp.metrics.flips_gained == 0
    assert cmp.metrics.keypoints_compared == 2 * K
    # Records list the people found, each with its score and all 18 named parts.
    dec = decode_outputs(spec, {"net_output": openpose_tensor(truth)})
    pred = Prediction(keypoints=dec.coords, scores=dec.scores, presence=dec.presence, present=dec.present,
                      image_sizes=np.array([[256, 256]]), keypoints_input=dec.coords,
                      instance_scores=dec.instance_scores)
    rec = pred.to_records(spec.keypoints)[0]
    assert len(rec["instances"]) == 3 and len(rec["instances"][0]["keypoints"]) == K


def test_a_person_split_by_a_missing_tree_part_is_joined_by_a_redundant_limb() -> None:
    # No right eye: the tree path nose -> right eye -> right ear is cut; the shoulder-ear limb brings the ear back.
    truth = three_people()
    parts, pafs = render(truth, missing=(14,))
    people = decode_paf(parts[None], pafs[None], OPENPOSE_COCO18_LIMBS)
    assert people.valid[0].sum() == 3  # the lone ears did not become people
    slots = match(people.coords_hm[0, :3], truth)
    for person, slot in enumerate(slots):
        assert not people.found[0, slot, 14]
        assert people.found[0, slot, 16], f"person {person}: right ear not joined back"
        np.testing.assert_allclose(people.coords_hm[0, slot, 16], truth[person, 16], atol=0.35)


def test_trt_pose_table_decodes_its_own_part_order() -> None:
    # The same people in trt_pose's part order (COCO 17 + neck) with its 21 links, PAF channel 2k = y.
    order = [OPENPOSE_COCO18_PARTS.index(name) for name in TRT_POSE_PARTS]
    truth = three_people()[:, order]
    assert len(TRT_POSE_LIMBS) == 21 and sorted(c for limb in TRT_POSE_LIMBS for c in limb[2:]) == list(range(42))
    ears = (TRT_POSE_PARTS.index("left_ear"), TRT_POSE_PARTS.index("right_ear"))
    for missing in ((), ears):  # without ears the arms hang on the neck-shoulder links
        parts, pafs = render(truth, limbs=TRT_POSE_LIMBS, missing=missing)
        people = decode_paf(parts[None], pafs[None], TRT_POSE_LIMBS)
        assert people.valid[0].sum() == 3, missing
        slots = _match_neck(people.coords_hm[0, :3], truth, TRT_POSE_PARTS.index("neck"))
        for person, slot in enumerate(slots):
            want = np.ones(K, bool)
            want[list(missing)] = False
            np.testing.assert_array_equal(people.found[0, slot], want)
            err = np.abs(people.coords_hm[0, slot][want] - truth[person][want]).max()
            assert err < 0.35, (missing, person, err)


def _match_neck(decoded: np.ndarray, truth: np.ndarray, neck: int) -> np.ndarray:
    d = np.linalg.norm(decoded[None, :, neck] - truth[:, None, neck], axis=-1)
    return d.argmin(axis=1)


def test_a_paf_model_runs_through_onnxruntime_and_the_pipeline(tmp_path: Path) -> None:
    # A real ORT session whose output is the rendered OpenPose tensor (plus 0 x the input, so the batch follows
    # the input): the Pipeline decodes it, maps people back to the image and lists them in its records.
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from heatdeploy.exporters.onnx import embed_spec
    from heatdeploy.runtime import Pipeline

    truth = three_people()
    spec = openpose_spec()
    const = numpy_helper.from_array(openpose_tensor(truth).astype(np.float32), "rendered")
    zero = numpy_helper.from_array(np.zeros((1,), np.float32), "zero")
    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=1),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
             helper.make_node("Add", ["rendered", "nothing"], ["net_output"])]
    graph = helper.make_graph(nodes, "paf", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                          ["N", 256, 256, 3])],
                              [helper.make_tensor_value_info("net_output", TensorProto.FLOAT, ["N", H, W, 57])],
                              [const, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    embed_spec(model, spec)
    path = tmp_path / "openpose_like.onnx"
    onnx.save(model, str(path))

    pipe = Pipeline.load(path)
    frames = [np.zeros((256, 256, 3), np.uint8), np.zeros((512, 512, 3), np.uint8)]
    pred = pipe.predict(frames)
    assert pred.instance_scores is not None and (pred.instance_scores > 0).sum(axis=1).tolist() == [3, 3]
    want = (truth + 0.5) * 4 - 0.5  # input px at stride 4; the 512 frame is the same at twice the scale
    for i, scale in enumerate((1.0, 2.0)):
        slots = match(pred.keypoints_input[i, :3] / 4.0, truth)
        for person, slot in enumerate(slots):
            np.testing.assert_allclose(pred.keypoints_input[i, slot], want[person], atol=1.5)
            np.testing.assert_allclose(pred.keypoints[i, slot], (want[person] + 0.5) * scale - 0.5, atol=3.0)
    recs = pred.to_records(spec.keypoints)
    assert [len(r["instances"]) for r in recs] == [3, 3]
