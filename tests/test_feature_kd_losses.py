"""The feature-distillation losses PKDLoss and RelationalKDLoss against their formulas, on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

import qdr_plugin  # noqa: F401  (the torchvision alias basicsr 1.4.2 needs, before any basicsr import)
from qdr_plugin.losses.feature_kd_loss import PKDLoss, RelationalKDLoss


def features(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


ALL_LOSSES = [PKDLoss(), RelationalKDLoss(grid=2), RelationalKDLoss(grid=2, anchors='teacher')]


# ---------------------------------------------------------------------------------------------------- PKD
def test_pkd_is_zero_for_identical_inputs():
    x = features(2, 3, 5, 4)
    assert PKDLoss()(x, x.clone()).item() == 0.0


def test_pkd_ignores_a_per_channel_affine_change_of_the_teacher():
    s, t = features(2, 3, 6, 6, seed=1), features(2, 3, 6, 6, seed=2)
    scale = torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1)
    shift = torch.tensor([-3.0, 0.25, 10.0]).view(1, 3, 1, 1)
    loss = PKDLoss()
    assert loss(s, t * scale + shift).item() == pytest.approx(loss(s, t).item(), rel=1e-5)
    assert loss(s, s * scale + shift).item() == pytest.approx(0.0, abs=1e-5)


def test_pkd_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)  # mean 2.5, variance 1.25
    t = torch.tensor([[1.0, 1.0], [1.0, 5.0]]).view(1, 1, 2, 2)  # mean 2, variance 3
    s_hat = [v / math.sqrt(1.25 + 1e-6) for v in (-1.5, -0.5, 0.5, 1.5)]
    t_hat = [v / math.sqrt(3.0 + 1e-6) for v in (-1.0, -1.0, -1.0, 3.0)]
    expected = sum((a - b) ** 2 for a, b in zip(s_hat, t_hat)) / 4 / 2
    assert PKDLoss()(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert PKDLoss(loss_weight=6.0)(s, t).item() == pytest.approx(6.0 * expected, rel=1e-6)
    assert PKDLoss(reduction='sum')(s, t).item() == pytest.approx(4 * expected, rel=1e-6)


def test_pkd_standardises_per_sample_and_per_channel():
    s, t = features(2, 2, 4, 4, seed=3), features(2, 2, 4, 4, seed=4)
    expected = sum(PKDLoss()(s[n:n + 1, c:c + 1], t[n:n + 1, c:c + 1]) for n in range(2) for c in range(2)) / 4
    assert PKDLoss()(s, t).item() == pytest.approx(expected.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------------- relational KD
@pytest.mark.parametrize('anchors', ['self', 'teacher'])
def test_relational_is_zero_for_identical_inputs(anchors):
    x = features(2, 4, 8, 8)
    assert RelationalKDLoss(grid=4, anchors=anchors)(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize('anchors', ['self', 'teacher'])
def test_relational_ignores_a_positive_per_sample_scale(anchors):
    s, t = features(2, 4, 8, 8, seed=1), features(2, 4, 8, 8, seed=2)
    scale = torch.tensor([0.1, 30.0]).view(2, 1, 1, 1)
    loss = RelationalKDLoss(grid=4, anchors=anchors)
    reference = loss(s, t).item()
    assert reference > 0
    assert loss(s * scale, t).item() == pytest.approx(reference, rel=1e-5)
    assert loss(s, t * scale).item() == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize('anchors', ['self', 'teacher'])
def test_relational_ignores_a_channel_permutation_of_both(anchors):
    s, t = features(2, 5, 8, 8, seed=1), features(2, 5, 8, 8, seed=2)
    perm = torch.tensor([3, 0, 4, 1, 2])
    loss = RelationalKDLoss(grid=4, anchors=anchors)
    assert loss(s[:, perm], t[:, perm]).item() == pytest.approx(loss(s, t).item(), rel=1e-5)


@pytest.mark.parametrize('anchors', ['self', 'teacher'])
def test_relational_sees_shuffled_spatial_content(anchors):
    t = features(2, 4, 8, 8, seed=5)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    s = t.flatten(2)[:, :, perm].view_as(t)
    assert RelationalKDLoss(grid=4, anchors=anchors)(s, t).item() > 1e-3


def test_relational_matches_a_hand_computation():
    # grid 2 on a 2x2 map: the tokens are the pixels' channel vectors (1, 0), (0, 1), (1, 1), (-1, 0)
    t = torch.tensor([[[1.0, 0.0], [1.0, -1.0]], [[0.0, 1.0], [1.0, 0.0]]]).unsqueeze(0)
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [0.0, 0.0]]]).unsqueeze(0)  # (1,0) (0,1) (1,0) (1,0)
    c = 1 / math.sqrt(2)
    r_t = [[1, 0, c, -1], [0, 1, c, 0], [c, c, 1, -c], [-1, 0, -c, 1]]
    r_s = [[1, 0, 1, 1], [0, 1, 0, 0], [1, 0, 1, 1], [1, 0, 1, 1]]

    def smooth_l1(d: float, beta: float) -> float:
        return d * d / (2 * beta) if abs(d) < beta else abs(d) - beta / 2

    for beta in (0.1, 1.0):
        expected = sum(smooth_l1(a - b, beta) for ra, rb in zip(r_s, r_t) for a, b in zip(ra, rb)) / 16
        assert RelationalKDLoss(grid=2, beta=beta)(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_teacher_anchors_differ_from_self_anchors_where_expected():
    t = features(2, 4, 8, 8, seed=6)
    self_mode, teacher_mode = RelationalKDLoss(grid=4), RelationalKDLoss(grid=4, anchors='teacher')
    # a student whose feature space is a rotation of the teacher's (sign flip, channel permutation) has the
    # teacher's self-similarities, but its tokens are not where the teacher's tokens (the anchors) are
    for student in (-t, t[:, torch.tensor([1, 2, 3, 0])]):
        assert self_mode(student, t).item() == pytest.approx(0.0, abs=1e-6)
        assert teacher_mode(student, t).item() > 1e-2
    # an unrelated student: the two modes measure different things
    s = features(2, 4, 8, 8, seed=7)
    assert teacher_mode(s, t).item() != pytest.approx(self_mode(s, t).item(), rel=1e-3)


def test_relational_teacher_mode_distils_against_the_teacher_tokens():
    s, t = features(1, 3, 4, 4, seed=8), features(1, 3, 4, 4, seed=9)
    loss = RelationalKDLoss(grid=2, anchors='teacher', beta=0.0)
    t_s, t_t = loss.tokens(s), loss.tokens(t)
    expected = (t_s @ t_t.transpose(1, 2) - t_t @ t_t.transpose(1, 2)).abs().mean()
    assert loss(s, t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_relational_options_are_checked():
    for kwargs in ({'grid': 0}, {'grid': 2.5}, {'beta': -1.0}, {'anchors': 'text'}, {'reduction': 'none'}):
        with pytest.raises(ValueError, match='RelationalKDLoss'):
            RelationalKDLoss(**kwargs)
    with pytest.raises(ValueError, match='PKDLoss'):
        PKDLoss(reduction='none')


# ---------------------------------------------------------------------------------------------------- both
@pytest.mark.parametrize('loss', ALL_LOSSES, ids=['pkd', 'relational-self', 'relational-teacher'])
def test_lists_of_features_average_over_the_pairs(loss):
    s = [features(2, 3, 4, 4, seed=1), features(2, 5, 6, 2, seed=2)]
    t = [features(2, 3, 4, 4, seed=3), features(2, 5, 6, 2, seed=4)]
    expected = (loss(s[0], t[0]) + loss(s[1], t[1])) / 2
    assert loss(s, t).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss(tuple(s), tuple(t)).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize('loss', ALL_LOSSES, ids=['pkd', 'relational-self', 'relational-teacher'])
def test_gradient_reaches_the_student_only(loss):
    s = features(2, 3, 4, 4, seed=1).requires_grad_()
    t = features(2, 3, 4, 4, seed=2).requires_grad_()
    loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize('loss', ALL_LOSSES, ids=['pkd', 'relational-self', 'relational-teacher'])
@pytest.mark.parametrize('value', [0.0, 3.0])
def test_constant_features_give_a_finite_loss_and_gradient(loss, value):
    constant = torch.full((2, 3, 4, 4), value)
    for s, t in ((constant.clone(), features(2, 3, 4, 4)), (features(2, 3, 4, 4), constant.clone()),
                 (constant.clone(), constant.clone())):
        s.requires_grad_()
        out = loss(s, t)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(s.grad).all()


@pytest.mark.parametrize('loss', ALL_LOSSES, ids=['pkd', 'relational-self', 'relational-teacher'])
def test_shape_mismatches_are_refused_by_name(loss):
    name = type(loss).__name__
    x = features(2, 3, 4, 4)
    cases = [
        (features(2, 5, 4, 4), 'student feature 2x5x4x4 and teacher feature 2x3x4x4 differ in channels'),
        (features(2, 3, 8, 4), 'student feature 2x3x8x4 and teacher feature 2x3x4x4 differ in spatial size'),
        (features(1, 3, 4, 4), 'differ in batch size'),
        (features(3, 4, 4), 'must be N x C x H x W'),
    ]
    for student, message in cases:
        with pytest.raises(ValueError, match=f'{name}: .*{message}'):
            loss(student, x)
    with pytest.raises(ValueError, match='as many teacher features as student features'):
        loss([x, x], [x])
    with pytest.raises(ValueError, match='both be tensors or both be lists'):
        loss([x], x)


def test_built_by_basicsr_build_loss():
    from basicsr.losses import build_loss

    import qdr_plugin.losses.feature_kd_loss  # noqa: F401  (registers the losses)

    pkd = build_loss({'type': 'PKDLoss', 'loss_weight': 6.0})
    assert isinstance(pkd, PKDLoss) and pkd.loss_weight == 6.0
    rkd = build_loss({'type': 'RelationalKDLoss', 'grid': 4, 'beta': 0.5, 'anchors': 'teacher'})
    assert isinstance(rkd, RelationalKDLoss) and (rkd.grid, rkd.beta, rkd.anchors) == (4, 0.5, 'teacher')


def test_accepted_as_a_dfd_distance_by_the_options_check():
    from qdr_plugin.models.train_options import check_loss

    check_loss({'type': 'PKDLoss', 'loss_weight': 6.0}, 'train.dfd_opt', distance=True)
    check_loss({'type': 'RelationalKDLoss', 'grid': 4, 'beta': 0.1, 'anchors': 'teacher'}, 'train.dfd_opt',
               distance=True)
