"""The v3 world CLIP (the CNN): the committed weights are the ones its card describes, were
trained as the card says, and see every attribute its captions name."""
import os

import pytest

from pomp_mm.synthetic import protocol
from pomp_mm.synthetic import world_clip as wc

MODEL = 'pomp-world-CNN-T'
WEIGHTS, CARD = wc.asset_path(MODEL, '.pt'), wc.asset_path(MODEL, '.card.json')


@pytest.fixture(scope='module')
def card():
    return wc.read_card(CARD)


@pytest.fixture(scope='module')
def clip():
    return wc.load_world_clip(path=WEIGHTS, model_name=MODEL)


def test_v3_is_the_default_world_clip():
    assert wc.MODEL_NAME == MODEL
    assert (wc.WEIGHTS_PATH, wc.CARD_PATH) == (WEIGHTS, CARD)


def test_committed_weights_match_the_card_and_its_recipe(card):
    assert card['model'] == MODEL and card['weights'] == os.path.basename(WEIGHTS)
    assert wc.sha256_file(WEIGHTS) == card['sha256']
    assert os.path.getsize(WEIGHTS) == card['bytes'] <= 20 * 2 ** 20
    training = card['training']
    assert training['captions'] == 'v3' and card['protocol'] == 'v3'
    assert training['image_steps'] > 0 and training['steps'] > 0
    # the card's command rebuilds these weights: it names the two-stage recipe
    for flag in ('--model pomp-world-CNN-T', '--captions v3', '--image-steps',
                 '--shape-first-steps'):
        assert flag in card['command'], flag


def test_recorded_probes_pass_and_reproduce(card, clip):
    wc.check_probes(card)
    assert set(card['probes_top1']) == set(wc.PROBE_PHRASES)
    got = wc.attribute_probes(clip, per_value=card['probe_per_value'], seed=card['probe_seed'],
                              model_name=MODEL)
    for kind, want in card['probes_top1'].items():
        assert got[kind] >= wc.PROBE_THRESHOLD, (kind, got[kind])
        assert abs(got[kind] - want) <= 3.0, (kind, got[kind], want)


@pytest.mark.slow
def test_recorded_hand_prompt_accuracies_reproduce(card, clip):
    sets = protocol.eval_sets('v3')
    got = wc.hand_prompt_accuracy(clip, list(card['hand_prompt_top1']), model_name=MODEL,
                                  version='v3')
    for name, want in card['hand_prompt_top1'].items():
        assert abs(got[name] - want) <= card['tolerance_points'], (name, got[name], want)
        assert want > 2 * sets[name].chance, (name, want, sets[name].chance)
