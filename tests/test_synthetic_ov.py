"""Open-vocabulary segmentation in the synthetic world: the SAN config on the world's CLIP."""
import os

import pytest
import torch
import torch.nn.functional as F
from helpers import demo_on_an_unseen_object, train_then_test

from pomp_mm.synthetic import protocol
from pomp_mm.synthetic import world_clip as wc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEG_CONFIG = os.path.join(ROOT, 'configs', 'mmseg', 'pomp_synthetic-scenes.py')


def test_config_classes_are_the_protocols():
    from mmengine.config import Config
    cfg = Config.fromfile(SEG_CONFIG)
    names = [c.name for c in protocol.scene_classes()]
    assert list(cfg.classes) == names
    assert list(cfg.unseen_classes) == [names[i] for i in protocol.scene_unseen_ids()]
    assert cfg.model.text_encoder.vocabulary == names
    assert cfg.model.decode_head.num_classes == 20


@pytest.fixture(scope='module')
def san_weights(tmp_path_factory):
    from pomp_mm.mmseg.convert import clip_to_san_state_dict
    state = torch.load(wc.VIT_WEIGHTS_PATH, map_location='cpu', weights_only=True)
    path = str(tmp_path_factory.mktemp('san') / 'world_san.pth')
    torch.save(clip_to_san_state_dict(state, split=3), path)
    return path


def _build(san_weights):
    import pomp_mm.mmseg  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(SEG_CONFIG)
    cfg.model.pretrained = san_weights
    cfg.model.text_encoder.prompt = None  # the hand templates: no prompt file needed
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def test_converted_clip_runs_in_san_as_in_open_clip(san_weights):
    """SAN's image encoder (3 blocks) gives open_clip's tokens after block 3, and its
    recognition layer with zero attention bias gives every query open_clip's image embedding."""
    model = _build(san_weights)
    clip = wc.load_world_clip(model_name=wc.VIT_MODEL_NAME)
    x = torch.randn(2, 3, 64, 64)
    hidden = {}
    handle = clip.visual.transformer.resblocks[2].register_forward_hook(
        lambda m, i, o: hidden.setdefault('x', o))
    with torch.no_grad():
        want_emb = F.normalize(clip.encode_image(x).float(), dim=-1)
        outs = model.image_encoder(x)
    handle.remove()
    tokens = hidden['x']  # [B, 1 + 64, 128]
    feat, cls = outs[-1]
    torch.testing.assert_close(cls, tokens[:, 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(feat.flatten(2).transpose(1, 2), tokens[:, 1:], atol=1e-4, rtol=0)
    rec = model.decode_head.rec_with_attnbias
    bias = [torch.zeros(2, 4, rec.sos_token_num, 8, 8)]
    with torch.no_grad():
        got = rec(bias, outs[-1])
    assert got.shape == (2, rec.sos_token_num, 64)
    torch.testing.assert_close(got, want_emb[:, None].expand_as(got), atol=1e-4, rtol=0)


def test_conversion_refuses_bad_input():
    from pomp_mm.mmseg.convert import clip_to_san_state_dict
    state = torch.load(wc.VIT_WEIGHTS_PATH, map_location='cpu', weights_only=True)
    with pytest.raises(ValueError, match='split must be in 1..3 for a 4-block ViT, got 4'):
        clip_to_san_state_dict(state, split=4)
    with pytest.raises(ValueError, match='not an open_clip ViT CLIP state dict'):
        clip_to_san_state_dict({k: v for k, v in state.items() if not k.startswith('visual.')},
                               split=3)


# ------------------------------------------------------------------- training through the tools
HAND_CONFIG = os.path.join(ROOT, 'configs', 'mmseg', 'handprompt_synthetic-scenes.py')
#: the --quick schedule of tools/synthetic/ov.py: 400 scenes, 200 iterations
LEARN_ITERS = 200
#: mIoU-unseen (%) the seeded short run must reach. A model that never predicts an unseen class
#: scores 0, uniformly random labels 2.6 (measured on the protocol's validation scenes).
UNSEEN_FLOOR = 10.0
def _options(root, san, iters, prompt=None):
    opts = [f'model.pretrained={san}', f'max_iters={iters}', f'train_cfg.max_iters={iters}',
            f'train_cfg.val_interval={iters}', f'param_scheduler.0.end={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'randomness.seed=0',
            f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}']
    return opts + ([f'model.text_encoder.prompt={prompt}'] if prompt else [])


@pytest.fixture(scope='module')
def hand_run(scenes, san_weights, tmp_path_factory):
    """The hand-template config trained LEARN_ITERS iterations on the seen classes, then
    tested on all 20 with tools/test.py."""
    work = str(tmp_path_factory.mktemp('hand'))
    return train_then_test(HAND_CONFIG, work, _options(scenes, san_weights, LEARN_ITERS),
                           f'iter_{LEARN_ITERS}.pth')


@pytest.mark.slow
def test_pomp_config_trains_and_tests_through_the_tools(scenes, san_weights, tmp_path):
    """configs/mmseg/pomp_synthetic-scenes.py with a prompt file for the world CLIP: two
    iterations through tools/train.py, then tools/test.py writes the open-vocabulary metrics."""
    import pomp_mm
    prompt = pomp_mm.save_prompt(str(tmp_path / 'prompt.pth'), torch.randn(4, 64) * 0.02,
                                 clip_model=wc.VIT_MODEL_NAME)
    opts = _options(scenes, san_weights, 2, prompt)
    # train.py's own validation runs too: the config's val loop is part of what is tested
    _, metrics = train_then_test(SEG_CONFIG, str(tmp_path / 'w'), opts, 'iter_2.pth', validate=True)
    assert {'mIoU-seen', 'mIoU-unseen', 'hIoU'} <= set(metrics)
    s, u = metrics['mIoU-seen'], metrics['mIoU-unseen']
    assert metrics['hIoU'] == pytest.approx(2 * s * u / (s + u), abs=0.02)


@pytest.mark.slow
def test_short_schedule_segments_unseen_classes(hand_run):
    """Trained on the 15 seen classes only, the model segments the 5 unseen ones through the
    world CLIP's text embeddings (seeded run: 15.5 % mIoU-unseen, 23.6 % seen)."""
    _, metrics = hand_run
    assert metrics['mIoU-unseen'] >= UNSEEN_FLOOR, metrics


@pytest.mark.slow
def test_seg_demo_finds_an_unseen_class_in_a_rendered_scene(hand_run, tmp_path):
    """tools/seg_demo.py with a custom vocabulary that includes an unseen class, on a scene
    that holds it: the PNG is written and the unseen class is predicted on its pixels."""
    ckpt, _ = hand_run
    scene, j, target, vocab, labels, _ = demo_on_an_unseen_object(
        tmp_path, 'seg_demo', 'segment', HAND_CONFIG, ckpt)
    pixels = labels[scene.labels == j + 1]
    share = float((pixels == vocab.index(target)).mean())
    assert share >= 0.5, (target, share)


@pytest.mark.parametrize('clip,card', [('cnn', wc.CARD_PATH), ('vit', wc.VIT_CARD_PATH)])
def test_report_refuses_a_folder_of_another_clip(tmp_path, clip, card):
    """SAN weights, prompt and finished runs belong to one world CLIP: a work dir stamped
    with another CLIP's sha256 is refused before anything is reused. Each CLIP has its own
    folder (the ViT's is the work dir itself, as before the CNN)."""
    from helpers import load_tool
    tool = load_tool('synthetic/ov')
    root = tool._paths(str(tmp_path), clip)['root']
    assert root == str(tmp_path / 'cnn') if clip == 'cnn' else root.rstrip(os.sep) == str(tmp_path)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, 'clip.sha256'), 'w') as f:
        f.write('0' * 64 + '\n')
    with pytest.raises(ValueError, match=f"another world CLIP \\(sha256 {'0' * 64}, now "
                       f"{wc.read_card(card)['sha256']}\\)"):
        tool.prepare(str(tmp_path), quick=True, quiet=True, clip=clip)


@pytest.mark.slow
def test_report_resumes_finished_runs_and_keeps_the_other_part(tmp_path, capsys, monkeypatch):
    """Finished runs (their test.json) are read back, not retrained; a part not run keeps its
    last summary in results.json; the table shows means and spreads per part."""
    import json

    from helpers import load_tool
    tool = load_tool('synthetic/ov')
    paths = tool._paths(str(tmp_path))
    root = tmp_path / 'cnn'
    os.makedirs(os.path.dirname(paths['prompt']))
    with open(paths['prompt'], 'wb'):  # present: not pre-trained
        pass
    iters, epochs = tool.SCHEDULES[True]

    def no_training(argv, log=None):
        raise AssertionError(f'a finished run was retrained: {argv}')
    monkeypatch.setattr(tool, 'run_tool', no_training)

    def finished(run, config, options, metrics):
        run.mkdir(parents=True)
        (run / 'config.sha256').write_text(tool.config_digest(config, options) + '\n')
        (run / 'test.json').write_text(json.dumps(metrics))

    seg = {'hand': [(20.0, 10.0), (22.0, 14.0)], 'pomp': [(21.0, 12.0), (21.0, 12.0)]}
    for method, rows in seg.items():
        for seed, (s, u) in enumerate(rows):
            finished(root / 'seg' / f'{method}_seed{seed}_iter{iters}',
                     tool.SEG_CONFIGS[method], tool.seg_options(method, seed, paths, iters),
                     {'mIoU-seen': s, 'mIoU-unseen': u, 'hIoU': 2 * s * u / (s + u)})
        run = root / 'det' / f'{method}_seed0_epoch{epochs}'
        options = tool.det_options(method, 0, paths, epochs)
        finished(run, tool.DET_CONFIGS[method], options,
                 {'coco/base_ap50': 0.5, 'coco/novel_ap50': 0.125})
        fused = tool.SETUPS['cnn'].det_fused_configs[method]
        (run / 'fvlm.sha256').write_text(tool.config_digest(fused, options) + '\n')
        (run / 'test_fvlm.json').write_text(json.dumps({'coco/base_ap50': 0.5,
                                                        'coco/novel_ap50': 0.25}))
    tool.run(str(tmp_path), [0, 1], quick=True, quiet=True, parts=['seg'])
    out = tool.run(str(tmp_path), [0], quick=True, quiet=True, parts=['det'])
    assert out['seg']['hand'] == {'mIoU-seen': 21.0, 'mIoU-unseen': 12.0, 'hIoU': 15.22}
    assert out['seg_sd']['hand']['mIoU-unseen'] == pytest.approx(2.83, abs=0.01)
    assert out['det']['pomp'] == {'base_ap50': 50.0, 'novel_ap50': 12.5}
    assert out['det']['pomp + F-VLM fusion'] == {'base_ap50': 50.0, 'novel_ap50': 25.0}
    assert out['seg_seeds'] == [0, 1] and out['det_seeds'] == [0]
    assert out['clip'] == wc.MODEL_NAME
    with open(root / 'results.json') as f:
        assert json.load(f) == out
    table = capsys.readouterr().out
    assert '| hand | 21.0 ± 1.4 | 12.0 ± 2.8 | 15.2 ± 2.7 |' in table
    assert '| pomp | 50.0 ± 0.0 | 12.5 ± 0.0 |' in table


def test_report_refuses_a_run_of_another_config(tmp_path):
    """A finished run folder whose config or options changed since is refused, not reused."""
    from helpers import load_tool
    tool = load_tool('synthetic/ov')
    paths = tool._paths(str(tmp_path))
    run = tmp_path / 'det' / 'hand_seed0_epoch1'
    run.mkdir(parents=True)
    (run / 'test.json').write_text('{}')
    options = tool.det_options('hand', 0, paths, 1)
    with pytest.raises(ValueError, match=f'{run} holds a run of another config or options '
                       r'\(sha256 none recorded, now [0-9a-f]{64}\)'):
        tool._train_and_test(tool.DET_CONFIGS['hand'], str(run), 'epoch_1.pth', options, True)
    digest = tool.config_digest(tool.DET_CONFIGS['hand'], options)
    assert digest != tool.config_digest(tool.DET_CONFIGS['pomp'], options)
    assert digest != tool.config_digest(tool.DET_CONFIGS['hand'],
                                        tool.det_options('hand', 1, paths, 1))
    (run / 'config.sha256').write_text(digest + '\n')
    assert tool._train_and_test(tool.DET_CONFIGS['hand'], str(run), 'epoch_1.pth', options,
                                True) == {}
