"""OpenVocabIoUMetric against hand-computed IoUs on a 4x4 label map."""
import math
from fractions import Fraction as F

import pytest
import torch

from pomp_mm.mmseg import OpenVocabIoUMetric

CLASSES = ('cat', 'dog', 'bird', 'fish')
X = 255  # ignore_index

# 'fish' (3) is absent from the GT and predicted only on ignored pixels, so it is absent from
# both after masking: IoU 0/0 = NaN, to be left out of the means.
GT = [[0, 0, 1, 1],
      [0, 0, 1, 1],
      [2, 2, X, X],
      [2, 2, 1, 0]]
PRED = [[0, 1, 1, 1],
        [0, 0, 1, 2],
        [2, 0, 3, 3],
        [2, 2, 1, 1]]

# Hand computation over the 14 non-ignored pixels:
#   class  GT  pred  intersection  union           IoU
#   cat     5    4        3        5 + 4 - 3 = 6   3/6 = 1/2
#   dog     5    6        4        5 + 6 - 4 = 7   4/7
#   bird    4    4        3        4 + 4 - 3 = 5   3/5
#   fish    0    0        0        0               NaN
IOU = {'cat': F(1, 2), 'dog': F(4, 7), 'bird': F(3, 5)}
A_ACC = F(3 + 4 + 3, 14)                                  # 5/7
M_IOU = (IOU['cat'] + IOU['dog'] + IOU['bird']) / 3       # 39/70
# Split: unseen = {dog, fish}, seen = {cat, bird}; fish is NaN so unseen is dog alone.
SEEN = (IOU['cat'] + IOU['bird']) / 2                     # 11/20
UNSEEN = IOU['dog']                                       # 4/7
H_IOU = 2 * SEEN * UNSEEN / (SEEN + UNSEEN)               # 88/157


def pct(x) -> float:
    """A fraction in percent, rounded like mmseg."""
    return round(float(x) * 100, 2)


def samples(gt=GT, pred=PRED, rows=None):
    """Data samples in the format mmseg's SegDataSample.to_dict() gives IoUMetric."""
    gt, pred = torch.tensor(gt), torch.tensor(pred)
    rows = rows or [slice(None)]
    return [dict(gt_sem_seg=dict(data=gt[None, r]), pred_sem_seg=dict(data=pred[None, r]))
            for r in rows]


def run(metric, classes=CLASSES, **kw):
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, samples(**kw))
    return metric.compute_metrics(metric.results)


def test_hand_computed_numbers():
    assert (A_ACC, M_IOU, SEEN, UNSEEN, H_IOU) == (F(5, 7), F(39, 70), F(11, 20), F(4, 7),
                                                   F(88, 157))
    res = run(OpenVocabIoUMetric(unseen_classes=['dog', 'fish']))
    assert res['aAcc'] == pct(A_ACC) == 71.43
    assert res['mIoU'] == pct(M_IOU) == 55.71
    assert res['mIoU-seen'] == pct(SEEN) == 55.0
    assert res['mIoU-unseen'] == pct(UNSEEN) == 57.14
    assert res['hIoU'] == pct(H_IOU) == 56.05


def test_seen_classes_give_the_same_split_and_accumulate_over_images():
    # Two images (top and bottom halves): IoU comes from the summed areas, not per-image means.
    metric = OpenVocabIoUMetric(seen_classes=['bird', 'cat'])
    metric.dataset_meta = dict(classes=CLASSES)
    for half in (slice(0, 2), slice(2, 4)):
        metric.process({}, samples(rows=[half]))
    res = metric.evaluate(size=2)
    assert (res['mIoU-seen'], res['mIoU-unseen'], res['hIoU']) == (55.0, 57.14, 56.05)


@pytest.mark.parametrize('iou_metrics', [['mIoU'], ['mIoU', 'mDice', 'mFscore']])
def test_parent_keys_equal_mmseg_iou_metric(iou_metrics):
    from mmseg.evaluation.metrics import IoUMetric
    ours = run(OpenVocabIoUMetric(unseen_classes=['dog'], iou_metrics=iou_metrics))
    theirs = run(IoUMetric(iou_metrics=iou_metrics))
    assert {k: ours[k] for k in theirs} == theirs
    assert set(ours) - set(theirs) == {'mIoU-seen', 'mIoU-unseen', 'hIoU'}


def test_split_still_computed_without_miou_in_iou_metrics():
    res = run(OpenVocabIoUMetric(unseen_classes=['dog', 'fish'], iou_metrics=['mDice']))
    assert 'mIoU' not in res and res['hIoU'] == 56.05


def test_hiou_is_zero_when_both_means_are_zero():
    # Every valid pixel wrong: IoU(a) = IoU(b) = 0, so s + u == 0 and hIoU is 0, not NaN.
    res = run(OpenVocabIoUMetric(unseen_classes=['b']), classes=('a', 'b'),
              gt=[[0, 1, X]], pred=[[1, 0, 0]])
    assert (res['mIoU-seen'], res['mIoU-unseen'], res['hIoU']) == (0.0, 0.0, 0.0)


def test_all_nan_split_is_nan_unless_nan_to_num():
    res = run(OpenVocabIoUMetric(unseen_classes=['fish']))
    assert math.isnan(res['mIoU-unseen']) and math.isnan(res['hIoU'])
    assert res['mIoU-seen'] == pct(M_IOU)  # cat, dog, bird
    res = run(OpenVocabIoUMetric(unseen_classes=['fish'], nan_to_num=0))
    assert res['mIoU-unseen'] == 0.0 and res['hIoU'] == 0.0


def test_classes_in_neither_split_count_in_miou_only():
    res = run(OpenVocabIoUMetric(seen_classes=['cat'], unseen_classes=['dog']))
    assert res['mIoU'] == pct(M_IOU)
    assert res['mIoU-seen'] == pct(IOU['cat']) and res['mIoU-unseen'] == pct(IOU['dog'])


def test_unknown_class_is_named_when_dataset_meta_is_set():
    metric = OpenVocabIoUMetric(unseen_classes=['dog', 'zebra'])
    with pytest.raises(ValueError, match=r"unseen_classes: class 'zebra' is not in"):
        metric.dataset_meta = dict(classes=CLASSES)
    metric = OpenVocabIoUMetric(seen_classes=['cats'])
    with pytest.raises(ValueError, match=r"seen_classes: class 'cats'.*did you mean \['cat'\]"):
        metric.dataset_meta = dict(classes=CLASSES)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(), ValueError, 'needs seen_classes or unseen_classes'),
    (dict(seen_classes=['cat', 'dog'], unseen_classes=['dog']), ValueError,
     r"\['dog'\] are in both"),
    (dict(unseen_classes='dog'), TypeError, 'list of class names'),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        OpenVocabIoUMetric(**kwargs)


def test_empty_split_is_rejected():
    metric = OpenVocabIoUMetric(unseen_classes=list(CLASSES))
    with pytest.raises(ValueError, match='seen split is empty'):
        metric.dataset_meta = dict(classes=CLASSES)


def test_builds_from_the_mmseg_registry():
    import pomp_mm.mmseg  # noqa: F401  (registers the metric)
    from mmengine.registry import init_default_scope
    from mmseg.evaluation.metrics import IoUMetric
    from mmseg.registry import METRICS
    # as a config's runner builds it; the scope an earlier test left (another toolkit's, under
    # pytest-xdist another module order) would send the build to that registry
    init_default_scope('mmseg')
    metric = METRICS.build(dict(type='OpenVocabIoUMetric', unseen_classes=['dog', 'fish'],
                                ignore_index=X))
    assert isinstance(metric, OpenVocabIoUMetric) and isinstance(metric, IoUMetric)
    assert run(metric)['hIoU'] == pct(H_IOU)
