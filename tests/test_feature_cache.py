import json
import os

import pytest
import torch

from pomp_mm.clip import clip_config
from helpers import IMAGE_CLASSES, run_repo_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = IMAGE_CLASSES
BAD = 3  # ('car', 1) in small_image_folder


@pytest.fixture(scope='module')
def model():
    from pomp_mm.pretrain import PompPretrainer
    torch.manual_seed(0)
    return PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4,
                          num_sampled=4).eval()


def _dataset(folder):
    from pomp_mm.pretrain import ImageList
    return ImageList(folder, num_views=2, image_size=32, train=True)


def _build(model, dataset, out, **kw):
    from pomp_mm.pretrain.feature_cache import build_feature_cache
    kw.setdefault('shard_size', 5)
    kw.setdefault('batch_size', 3)
    return build_feature_cache(model, dataset, str(out), progress=False, **kw)


def _shards(out):
    return {n: torch.load(os.path.join(out, n), weights_only=True)
            for n in sorted(os.listdir(out)) if n.startswith('shard_')}


def test_cached_loss_matches_live_loss(tmp_path, model, small_image_folder):
    """Same views (seeded per index) give the same loss from the cache as from the images."""
    from pomp_mm.pretrain.feature_cache import CachedFeatures, collate_features, load_views
    dataset = _dataset(small_image_folder)
    assert dataset.items[BAD][0].endswith(os.path.join('car', '1.jpg'))
    good = [i for i in range(len(dataset)) if i != BAD][:6]
    live = [load_views(dataset, i, seed=7) for i in good]
    inputs = torch.stack([s['inputs'] for s in live])
    labels = torch.tensor([s['label'] for s in live])
    rng_state = torch.get_rng_state()
    caches = {}
    for dtype in ('float32', 'float16'):
        _build(model, dataset, tmp_path / dtype, seed=7, dtype=dtype)
        cached = CachedFeatures(str(tmp_path / dtype))
        by_index = {int(cached[i]['index']): cached[i] for i in range(len(cached))}
        caches[dtype] = collate_features([by_index[i] for i in good])
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's RNG is left alone
    batch = caches['float32']
    assert batch['features'].shape == (6, 2, 32) and batch['features'].dtype == torch.float32
    assert torch.equal(batch['labels'], labels) and batch['indices'].tolist() == good

    def loss(**data):
        model.forward_count.zero_()  # same step -> same sampled negatives
        with torch.no_grad():
            return model(labels=labels, mode='loss', **data)['loss']

    ref = loss(inputs=inputs)
    live_feats = model.encode_images(inputs).reshape(6, 2, -1)
    # float32 storage: the very numbers the live path computes (up to batch-size dependent
    # matmul kernels), so the loss agrees to float32 round-off
    torch.testing.assert_close(batch['features'], live_feats, atol=1e-6, rtol=0)
    torch.testing.assert_close(loss(features=batch['features']), ref, atol=1e-6, rtol=0)
    # float16 storage (the default): each unit-norm feature is off by at most half an ulp
    # (2**-12 absolute for |x| < 1); the loss moves by at most 2 * logit_scale * ||dfeat||
    # (the gradient of cross-entropy w.r.t. the logits has L1 norm <= 2), about 0.014 here at
    # worst and ~1e-4 in practice since rounding errors cancel in the dot products
    half = caches['float16']['features']
    assert (half - live_feats).abs().max() <= 2 ** -12
    bound = 2 * model.text_encoder.tower.logit_scale.exp() * (half - live_feats).norm(dim=-1).max()
    diff = (loss(features=half) - ref).abs()
    assert diff <= bound and diff < 1e-3


def test_resume_recomputes_only_missing_shard(tmp_path, model, small_image_folder):
    from pomp_mm.pretrain.feature_cache import read_cache_meta
    dataset = _dataset(small_image_folder)
    out = str(tmp_path / 'cache')
    meta = _build(model, dataset, out)
    assert meta['complete'] and meta['num_shards'] == 4 and meta['feature_dim'] == 32
    assert meta['completed_shards'] == [f'shard_0000{i}.pt' for i in range(4)]
    first = _shards(out)
    # simulate an interruption before shard 2 was finished (a stale temp file included)
    os.unlink(os.path.join(out, 'shard_00002.pt'))
    meta['completed_shards'].remove('shard_00002.pt')
    with open(os.path.join(out, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    open(os.path.join(out, '.shard_00002.pt123.tmp'), 'wb').close()

    seen = []
    real = model.encode_images
    model.encode_images = lambda images: (seen.append(images.shape[0]), real(images))[1]
    try:
        # other batch size: the views depend on (seed, index) only
        _build(model, dataset, out, batch_size=2)
    finally:
        del model.encode_images
    assert sum(seen) == 5  # shard 2 = indices 10..14, one image per call
    second = _shards(out)
    assert sorted(second) == sorted(first)
    for name in first:
        for key in ('features', 'labels', 'indices'):
            assert torch.equal(first[name][key], second[name][key]), (name, key)
    assert read_cache_meta(out)['complete']
    assert not [n for n in os.listdir(out) if n.endswith('.tmp')]
    # a cache made with other settings is refused, not extended
    with pytest.raises(ValueError, match='seed: cached 0, now 1'):
        _build(model, dataset, out, seed=1)


def test_unreadable_image_is_skipped_and_counted(tmp_path, model, small_image_folder):
    from pomp_mm.pretrain.feature_cache import CachedFeatures
    dataset = _dataset(small_image_folder)
    out = str(tmp_path / 'cache')
    meta = _build(model, dataset, out)
    assert meta['skipped_images'] == 1 and meta['num_images'] == len(dataset) - 1 == 15
    assert meta['shards']['shard_00000.pt'] == {'start': 0, 'stop': 5, 'num_images': 4,
                                               'skipped': 1}
    on_disk = json.load(open(os.path.join(out, 'meta.json')))
    assert on_disk['skipped_images'] == 1
    cached = CachedFeatures(out)
    assert len(cached) == 15 and BAD not in cached.indices.tolist()
    assert cached.metainfo == dataset.metainfo
    assert cached.class_counts == [2, 1, 2, 2, 2, 2, 2, 2]  # car: 1


def test_incomplete_cache_is_refused(tmp_path, model, small_image_folder):
    from pomp_mm.pretrain.feature_cache import CachedFeatures
    with pytest.raises(FileNotFoundError, match='meta.json'):
        CachedFeatures(str(tmp_path))
    out = str(tmp_path / 'cache')
    _build(model, _dataset(small_image_folder), out, shard_size=8)
    os.unlink(os.path.join(out, 'shard_00001.pt'))
    with pytest.raises(RuntimeError, match=r'1 of 2 shards missing \(shard_00001.pt\)'):
        CachedFeatures(out)


@pytest.mark.slow
def test_cache_features_tool(tmp_path, small_image_folder):
    from pomp_mm.pretrain import PompPretrainer
    from pomp_mm.pretrain.feature_cache import CachedFeatures, visual_fingerprint
    model = dict(type='PompPretrainer', clip_model='tiny', vocabulary=CLASSES, n_ctx=4,
                 num_sampled=4)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"""
model = {model!r}
train_dataloader = dict(
    batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
    collate_fn=dict(type='collate_views'),
    dataset=dict(type='ImageList', source={small_image_folder!r}, num_views=1, image_size=32,
                 vocabulary={CLASSES!r}))
randomness = dict(seed=0)
""")
    out = tmp_path / 'features'
    res = run_repo_tool('cache_features.py', cfg, '--out-dir', out, '--num-views', '2',
                        '--batch-size', '8', '--device', 'cpu', '--shard-size', '10',
                        '--cfg-options', 'train_dataloader.dataset.shots=1', timeout=300,
                        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert str(out) in res.stdout and "type='CachedFeatures'" in res.stdout
    assert "collate_fn=dict(type='collate_features')" in res.stdout
    meta = json.load(open(out / 'meta.json'))
    # shots=1 from --cfg-options: 8 images (one per class), --num-views overrides the config
    assert meta['dataset_length'] == 8 and meta['num_views'] == 2 and meta['num_shards'] == 1
    cached = CachedFeatures(str(out))
    assert cached[0]['features'].shape == (2, 32)
    # seeded like mmengine's Runner: the cache belongs to the tower a training run builds
    torch.manual_seed(0)
    same = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4, num_sampled=4)
    assert meta['visual_fingerprint'] == visual_fingerprint(same.visual)
    # the printed snippet trains (one step through mmengine's Runner)
    snippet = res.stdout[res.stdout.index('_base_ = '):]
    (tmp_path / 'cached.py').write_text(snippet + '''
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False))
''')
    run_repo_tool('pretrain.py', tmp_path / 'cached.py', '--work-dir', tmp_path / 'work',
                  timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert os.path.isfile(tmp_path / 'work' / 'iter_1.pth')


def test_visual_fingerprint_tells_the_activation_apart():
    """Same weights, GELU vs QuickGELU: other features, so a cache of one is not the other's."""
    from pomp_mm.clip import build_clip
    from pomp_mm.pretrain.feature_cache import visual_fingerprint
    torch.manual_seed(0)
    gelu = build_clip('tiny')
    quick = build_clip(dict(clip_config('tiny'), quick_gelu=True))
    quick.load_state_dict(gelu.state_dict())
    assert visual_fingerprint(gelu.visual) != visual_fingerprint(quick.visual)


def test_image_features_run_convolutional_towers_channels_last_with_the_same_values():
    """A CNN tower runs channels-last (its weights converted once, the fingerprint unchanged);
    the features match the plain forward; a ViT's single patch convolution is left alone."""
    from pomp_mm.clip import build_clip, image_features, weights_fingerprint
    from pomp_mm.synthetic.world_cnn import WorldCNN
    torch.manual_seed(0)
    cnn = WorldCNN().eval()
    images = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(cnn(images.reshape(-1, 3, 32, 32)), dim=-1)
        before = weights_fingerprint(cnn)
        got = image_features(cnn, images)
    assert got.shape == (6, 256)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert cnn.features[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert weights_fingerprint(cnn) == before
    vit = build_clip('tiny').visual
    image_features(vit, torch.randn(2, 3, 32, 32))
    assert vit.conv1.weight.is_contiguous()
