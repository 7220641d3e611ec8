"""Synthetic data, the reference net's size, and a few real training steps."""

import numpy as np
import pytest

from heatdeploy.models.evalset import EVAL_DIR, SAMPLES_DIR, read_labelled_set
from heatdeploy.models.reference import ReferencePoseNet, count_macs, reference_spec
from heatdeploy.models.synthetic import render_batch, render_sample


def test_samples_are_deterministic_and_labelled():
    a = render_sample(np.random.default_rng(5))
    b = render_sample(np.random.default_rng(5))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.keypoints, b.keypoints)
    assert a.image.shape == (256, 192, 3) and a.image.dtype == np.uint8
    assert not (a.visible & ~a.present).any()  # visible implies present


def test_present_means_inside_the_frame():
    _, kp, present, _ = render_batch(np.random.default_rng(1), 64)
    inside = (kp[..., 0] >= 0) & (kp[..., 0] <= 191) & (kp[..., 1] >= 0) & (kp[..., 1] <= 255)
    assert np.array_equal(present, inside)
    assert 0.05 < 1 - present.mean() < 0.5  # the set has existence negatives, but not mostly


def test_reference_is_sized_like_edge_pose_models():
    macs = count_macs(ReferencePoseNet())
    assert 0.5e9 <= macs <= 1.0e9  # 1-2 GFLOP at 256x192
    params = sum(p.numel() for p in ReferencePoseNet().parameters())
    assert params * 4 <= 20e6


def test_shipped_splits_match_labels():
    for root in (EVAL_DIR, SAMPLES_DIR):
        split = read_labelled_set(root)
        assert len(split.files) == len(split.keypoints) > 0
        assert all(f.is_file() for f in split.files)
    assert len(read_labelled_set(EVAL_DIR).files) >= 200


def test_a_few_training_steps_reduce_the_loss(tmp_path):
    """CI runs a few real steps of train-reference: weights and the record are written atomically."""
    import torch

    from heatdeploy.models.train import TrainConfig, train_reference

    cfg = TrainConfig(steps=6, batch=4, val_every=6, val_size=8, warmup=1, lr=3e-3)
    losses = []
    record = train_reference(tmp_path / "w.pt", cfg, log=lambda s: losses.append(float(s.split("loss ")[1].split()[0]))
                             if s.startswith("step") else None)
    assert (tmp_path / "w.pt").is_file() and (tmp_path / "w.json").is_file()
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    ReferencePoseNet().load_state_dict(state)
    assert record["history"][-1]["step"] == 6
    assert losses[-1] < losses[0]


def test_bad_labels_file_is_clear(tmp_path):
    (tmp_path / "labels.json").write_text("{}")
    with pytest.raises(ValueError, match="labels.json: not a readable labels file"):
        read_labelled_set(tmp_path)


def test_reference_spec_matches_the_net():
    import torch

    spec = reference_spec()
    hm, ex = ReferencePoseNet().eval()(torch.zeros(1, 3, spec.input.height, spec.input.width))
    assert tuple(hm.shape[1:]) == (spec.num_keypoints, *spec.heatmap_size)
    assert tuple(ex.shape) == (1, spec.num_keypoints)
