"""Open-vocabulary segmentation and detection in the synthetic world, through the toolkits'
own tools.

    python tools/synthetic/ov.py prepare         # scenes, a POMP prompt on the world CLIP
    python tools/synthetic/ov.py run             # train + test, POMP vs hand, seeds 0 1 2
    python tools/synthetic/ov.py run --quick     # one seed, a short schedule
    python tools/synthetic/ov.py run --parts seg # segmentation only
    python tools/synthetic/ov.py probe           # zero-shot region embeddings of train boxes
    python tools/synthetic/ov.py run --clip vit  # world v2's ViT CLIP (SAN; older numbers)
    python tools/synthetic/ov.py diagnose --run work_dirs/synthetic_ov/cnn/det/hand_seed0_epoch3

``--clip cnn`` (the default) is world v3's CLIP, pomp-world-CNN-T: a dense head on its per-pixel
CLIP embeddings (configs/mmseg/*_world-cnn_synthetic-scenes.py) and Faster R-CNN with F-VLM
region embeddings (configs/mmdet/*_faster-rcnn_world-cnn_synthetic-scenes.py); its files go to
work_dirs/synthetic_ov/cnn. ``--clip vit`` is the ViT of world v2 with SAN
(configs/mmseg/*_synthetic-scenes.py, configs/mmdet/*_faster-rcnn_world-vit_synthetic-scenes.py)
in work_dirs/synthetic_ov. ``prepare`` renders the scene sets (pomp_mm.synthetic.scenes) to
work_dirs/synthetic_ov/scenes (shared), converts the ViT to SAN's layout (pomp_mm.mmseg.convert)
and pre-trains a POMP prompt on the chosen CLIP (as make demo does). ``run`` trains the POMP and
hand-template configs with tools/train.py on the 15 seen / base classes, tests them on all 20
with tools/test.py, prints the table and writes results.json. Finished runs are kept
(resumable); a run folder made from another config or other options is refused, not reused.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from pomp_mm.synthetic import experiments as exp
from pomp_mm.synthetic.experiments import prepare_set, run_tool, train_prompt
from pomp_mm.synthetic.report import markdown_table

WORK = 'work_dirs/synthetic_ov'


class Setup(NamedTuple):
    """One world CLIP's seg and det configs; the prompt is pre-trained on that CLIP."""
    model: str
    pomp_config: str
    seg_configs: Dict[str, str]
    det_configs: Dict[str, str]
    subdir: str  # of the work dir, for its prompt, runs and results
    seg_label: str
    #: test-time variants of the det configs (F-VLM score fusion) run on their checkpoints
    det_fused_configs: Dict[str, str] = {}


SETUPS = {
    'cnn': Setup('pomp-world-CNN-T', exp.POMP_CONFIG,
                 {'hand': 'configs/mmseg/handprompt_world-cnn_synthetic-scenes.py',
                  'pomp': 'configs/mmseg/pomp_world-cnn_synthetic-scenes.py'},
                 {'hand': 'configs/mmdet/handprompt_faster-rcnn_world-cnn_synthetic-scenes.py',
                  'pomp': 'configs/mmdet/pomp_faster-rcnn_world-cnn_synthetic-scenes.py'},
                 'cnn', 'a dense head on the world CNN CLIP\'s pixel embeddings',
                 {'hand': 'configs/mmdet/handprompt_faster-rcnn_world-cnn-fvlm_synthetic-scenes.py',
                  'pomp': 'configs/mmdet/pomp_faster-rcnn_world-cnn-fvlm_synthetic-scenes.py'}),
    'vit': Setup('pomp-world-ViT-T-8', exp.POMP_VIT_CONFIG,
                 {'hand': 'configs/mmseg/handprompt_synthetic-scenes.py',
                  'pomp': 'configs/mmseg/pomp_synthetic-scenes.py'},
                 {'hand': 'configs/mmdet/handprompt_faster-rcnn_world-vit_synthetic-scenes.py',
                  'pomp': 'configs/mmdet/pomp_faster-rcnn_world-vit_synthetic-scenes.py'},
                 '', 'SAN on the world ViT CLIP'),
}
DEFAULT_CLIP = 'cnn'  # world v3's CLIP
SEG_CONFIGS = SETUPS[DEFAULT_CLIP].seg_configs
DET_CONFIGS = SETUPS[DEFAULT_CLIP].det_configs
SEG_KEYS = ('mIoU-seen', 'mIoU-unseen', 'hIoU')
#: tools/test.py's metric names -> results.json's
DET_KEYS = {'coco/base_ap50': 'base_ap50', 'coco/novel_ap50': 'novel_ap50'}
#: Scene sets of the protocol (seeds differ from every classification set's)
SCENE_SPLITS = {'train': (2000, 101), 'val': (200, 102)}
QUICK_SCENES = {'train': 400, 'val': 100}
#: (segmentation iterations, detection epochs) of a full and a --quick run
SCHEDULES = {False: (800, 3), True: (200, 5)}


def _read(path: str) -> str:
    with open(path, encoding='utf-8') as f:
        return f.read()


def _paths(work: str, clip: str = DEFAULT_CLIP) -> Dict[str, str]:
    root = os.path.join(work, SETUPS[clip].subdir)
    paths = {'scenes': os.path.join(work, 'scenes'), 'root': root,
             'prompt': os.path.join(root, 'pomp', 'prompt_latest.pth')}
    if clip == 'vit':
        paths['san'] = os.path.join(work, 'pomp-world-ViT-T-8_san.pth')
    return paths


def prepare(work: str, quick: bool, quiet: bool, clip: str = DEFAULT_CLIP) -> Dict[str, str]:
    """Scenes, SAN weights (ViT) and the world POMP prompt (each kept if already there)."""
    import torch

    from pomp_mm.fileio import atomic_torch_save
    from pomp_mm.mmseg.convert import clip_to_san_state_dict
    from pomp_mm.synthetic import protocol
    from pomp_mm.synthetic import world_clip as wc
    from pomp_mm.synthetic.scenes import write_scene_set
    paths, setup = _paths(work, clip), SETUPS[clip]
    # the SAN weights, the prompt and every finished run belong to one world CLIP
    card = wc.read_card(wc.asset_path(setup.model, '.card.json'))
    sha, stamp = card['sha256'], os.path.join(paths['root'], 'clip.sha256')
    had = _read(stamp).strip() if os.path.isfile(stamp) else sha
    if had != sha:
        raise ValueError(f'{paths["root"]} was made with another world CLIP (sha256 '
                         f'{had}, now {sha}): use another --work-dir, '
                         'or move that folder away to start over')
    os.makedirs(paths['root'], exist_ok=True)
    with open(stamp, 'w', encoding='utf-8') as f:
        f.write(sha + '\n')
    for split, (count, seed) in SCENE_SPLITS.items():
        count = QUICK_SCENES[split] if quick else count
        marker = os.path.join(paths['scenes'], 'splits', f'{split}.txt')
        if not os.path.isfile(marker) or len(_read(marker).split()) != count:
            write_scene_set(paths['scenes'], split, count, seed, progress=not quiet)
    if 'san' in paths and not os.path.isfile(paths['san']):
        weights = wc.world_clip_weights(wc.VIT_WEIGHTS_PATH, wc.VIT_CARD_PATH)
        state = torch.load(weights, map_location='cpu', weights_only=True)
        atomic_torch_save(clip_to_san_state_dict(state, split=3), paths['san'])
    if not os.path.isfile(paths['prompt']):
        data = prepare_set(os.path.join(work, 'pretrain'), protocol.pretrain_classes(), 1, 1,
                           setup.pomp_config, 'synthetic-pretrain', work, quiet)
        train_prompt(setup.pomp_config, os.path.dirname(paths['prompt']), data, seed=0, quiet=quiet)
    return paths


def config_digest(config: str, options: Sequence[str]) -> str:
    """sha256 of ``config`` as loaded (its bases included) and the run's options."""
    import hashlib

    from mmengine.config import Config
    text = Config.fromfile(config).pretty_text + '\n' + '\n'.join(options)
    return hashlib.sha256(text.encode()).hexdigest()


def _finished(run_dir: str, digest: str) -> Optional[Dict[str, float]]:
    """A finished run's test metrics, if ``run_dir`` holds one made from the same config."""
    metrics_path = os.path.join(run_dir, 'test.json')
    if not os.path.isfile(metrics_path):
        return None
    stamp = os.path.join(run_dir, 'config.sha256')
    had = _read(stamp).strip() if os.path.isfile(stamp) else 'none recorded'
    if had != digest:
        raise ValueError(f'{run_dir} holds a run of another config or options (sha256 {had}, '
                         f'now {digest}): move that folder away to rerun it')
    with open(metrics_path, encoding='utf-8') as f:
        return json.load(f)


def _train_and_test(config: str, run_dir: str, checkpoint: str, options: List[str],
                    quiet: bool) -> Dict[str, float]:
    """tools/train.py then tools/test.py on ``config``; the test metrics (also in
    run_dir/test.json). A finished run of the same config and options is reused."""
    digest = config_digest(config, options)
    done = _finished(run_dir, digest)
    if done is not None:
        return done
    metrics_path = os.path.join(run_dir, 'test.json')
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, 'config.sha256'), 'w', encoding='utf-8') as f:
        f.write(digest + '\n')
    run_tool(['train.py', config, '--work-dir', run_dir, '--cfg-options'] + options,
             os.path.join(run_dir, 'train_tool.log') if quiet else None)
    run_tool(['test.py', config, os.path.join(run_dir, checkpoint), '--work-dir',
              os.path.join(run_dir, 'test'), '--out', metrics_path, '--cfg-options'] + options,
             os.path.join(run_dir, 'test_tool.log') if quiet else None)
    with open(metrics_path, encoding='utf-8') as f:
        return json.load(f)


def seg_options(method: str, seed: int, paths: Dict[str, str], iters: int) -> List[str]:
    """``--cfg-options`` of one segmentation run."""
    options = [f'randomness.seed={seed}'] + (
        [f'model.pretrained={paths["san"]}'] if 'san' in paths else []) + [
               f'max_iters={iters}', f'train_cfg.max_iters={iters}',
               f'train_cfg.val_interval={iters}', f'param_scheduler.0.end={iters}',
               f'default_hooks.checkpoint.interval={iters}',
               f'train_dataloader.dataset.data_root={paths["scenes"]}',
               f'val_dataloader.dataset.data_root={paths["scenes"]}',
               f'test_dataloader.dataset.data_root={paths["scenes"]}']
    if method == 'pomp':
        options.append(f'model.text_encoder.prompt={paths["prompt"]}')
    return options


def det_options(method: str, seed: int, paths: Dict[str, str], epochs: int) -> List[str]:
    """``--cfg-options`` of one detection run."""
    scenes = paths['scenes'] + os.sep
    ann = os.path.join(paths['scenes'], 'annotations', 'instances_val.json')
    options = [f'randomness.seed={seed}', f'train_cfg.max_epochs={epochs}',
               f'train_cfg.val_interval={epochs}', f'param_scheduler.1.end={epochs}',
               f'param_scheduler.1.milestones=[{max(1, epochs - 1)}]',
               f'default_hooks.checkpoint.interval={epochs}',
               f'train_dataloader.dataset.data_root={scenes}',
               f'val_dataloader.dataset.data_root={scenes}',
               f'test_dataloader.dataset.data_root={scenes}',
               f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    if method == 'pomp':
        options.append(f'model.roi_head.bbox_head.classifier.text_encoder.prompt='
                       f'{paths["prompt"]}')
    return options


def _seg_run(method: str, seed: int, clip: str, paths: Dict[str, str], iters: int,
             quiet: bool) -> Dict[str, float]:
    run_dir = os.path.join(paths['root'], 'seg', f'{method}_seed{seed}_iter{iters}')
    return _train_and_test(SETUPS[clip].seg_configs[method], run_dir, f'iter_{iters}.pth',
                           seg_options(method, seed, paths, iters), quiet)


def _det_run(method: str, seed: int, clip: str, paths: Dict[str, str], epochs: int,
             quiet: bool) -> Dict[str, float]:
    run_dir = os.path.join(paths['root'], 'det', f'{method}_seed{seed}_epoch{epochs}')
    return _det_metrics(_train_and_test(SETUPS[clip].det_configs[method], run_dir,
                                        f'epoch_{epochs}.pth',
                                        det_options(method, seed, paths, epochs), quiet))


def _det_fused_run(method: str, seed: int, clip: str, paths: Dict[str, str], epochs: int,
                   quiet: bool) -> Dict[str, float]:
    """tools/test.py with the F-VLM-fused config on a finished detection run's checkpoint
    (run_dir/test_fvlm.json; reused if its config and options are unchanged)."""
    run_dir = os.path.join(paths['root'], 'det', f'{method}_seed{seed}_epoch{epochs}')
    config = SETUPS[clip].det_fused_configs[method]
    options = det_options(method, seed, paths, epochs)
    digest = config_digest(config, options)
    out, stamp = os.path.join(run_dir, 'test_fvlm.json'), os.path.join(run_dir, 'fvlm.sha256')
    if os.path.isfile(out) and os.path.isfile(stamp) and _read(stamp).strip() == digest:
        with open(out, encoding='utf-8') as f:
            return _det_metrics(json.load(f))
    if os.path.isfile(out):
        os.remove(out)  # from another config or options: rerun, nothing else is at stake
    with open(stamp, 'w', encoding='utf-8') as f:
        f.write(digest + '\n')
    run_tool(['test.py', config, os.path.join(run_dir, f'epoch_{epochs}.pth'), '--work-dir',
              os.path.join(run_dir, 'test_fvlm'), '--out', out, '--cfg-options'] + options,
             os.path.join(run_dir, 'test_fvlm_tool.log') if quiet else None)
    with open(out, encoding='utf-8') as f:
        return _det_metrics(json.load(f))


def _det_metrics(raw: Dict[str, float]) -> Dict[str, float]:
    """AP50 in % (mmdet reports fractions)."""
    return {ours: round(100 * float(raw[theirs]), 2) for theirs, ours in DET_KEYS.items()}


def _summary(per_seed: Dict[str, List[Dict[str, float]]], keys) -> Tuple[Dict, Dict]:
    means = {m: {k: round(_mean_sd([r[k] for r in runs])['mean'], 2) for k in keys}
             for m, runs in per_seed.items()}
    sds = {m: {k: round(_mean_sd([r[k] for r in runs])['sd'], 2) for k in keys}
           for m, runs in per_seed.items()}
    return means, sds


def _mean_sd(values: List[float]) -> Dict[str, float]:
    return {'mean': statistics.fmean(values),
            'sd': statistics.stdev(values) if len(values) > 1 else 0.0}


def run(work: str, seeds: List[int], quick: bool, quiet: bool,
        parts: Sequence[str] = ('seg', 'det'), clip: str = DEFAULT_CLIP) -> Dict:
    paths = prepare(work, quick, quiet, clip)
    iters, epochs = SCHEDULES[quick]
    # a part not run this time keeps its last summary
    out_path = os.path.join(paths['root'], 'results.json')
    results: Dict = {'seg': None, 'det': None}
    results.update(exp.load_state(out_path, {}))
    results['clip'] = SETUPS[clip].model
    if 'seg' in parts:
        per_seed = {m: [_seg_run(m, s, clip, paths, iters, quiet) for s in seeds]
                    for m in SETUPS[clip].seg_configs}
        results['seg'], results['seg_sd'] = _summary(per_seed, SEG_KEYS)
        results.update(seg_iters=iters, seg_seeds=seeds, seg_quick=quick)
    if 'det' in parts:
        per_seed = {m: [_det_run(m, s, clip, paths, epochs, quiet) for s in seeds]
                    for m in SETUPS[clip].det_configs}
        results['det'], results['det_sd'] = _summary(per_seed, DET_KEYS.values())
        fused = SETUPS[clip].det_fused_configs
        if fused:
            per_seed = {f'{m} + F-VLM fusion': [_det_fused_run(m, s, clip, paths, epochs, quiet)
                                                for s in seeds] for m in fused}
            means, sds = _summary(per_seed, DET_KEYS.values())
            results['det'].update(means)
            results['det_sd'].update(sds)
        results.update(det_epochs=epochs, det_seeds=seeds, det_quick=quick)
    exp.save_state(out_path, results)
    print(format_table(results))
    return results


def probe_regions(scenes: str, split: str = 'train', limit: int = 300) -> Dict[str, float]:
    """Zero-shot 20-way top-1 (%) of ground-truth boxes, no training: the region embedding
    from averaged last-block patch tokens (through the CLIP's ln_post and projection) vs
    :class:`ClipRoIExtractor`'s, against the hand prompt's text embeddings."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    from PIL import Image

    import pomp_mm.mmdet  # noqa: F401
    from pomp_mm import PompTextEncoder
    from pomp_mm.synthetic import world_clip as wc
    init_default_scope('mmdet')
    images, names, boxes = _scene_boxes(scenes, split)
    clip = wc.load_world_clip(model_name=wc.VIT_MODEL_NAME)
    spec = dict(clip_model=wc.VIT_MODEL_NAME, pretrained=wc.VIT_WEIGHTS_PATH)
    tokens = MODELS.build(dict(type='OpenClipViT', patch_embed_out=True, **spec))
    regions = MODELS.build(dict(type='ClipRoIExtractor', **spec))
    with torch.no_grad():
        text = PompTextEncoder(clip_model=wc.VIT_MODEL_NAME, clip_module=clip, vocabulary=['x'],
                               templates='single', cat_bg=False).encode_text(names)
    hits, total = {'patch tokens, averaged': 0, 'ClipRoIExtractor': 0}, 0
    v = clip.visual
    for image in images[:limit]:
        if image['id'] not in boxes:
            continue
        path = os.path.join(scenes, 'images', split, image['file_name'])
        with Image.open(path) as im:
            pixels = wc.images_to_tensor([im.convert('RGB')])  # CLIP-normalised [1, 3, H, W]
        xyxy = torch.tensor([b for b, _ in boxes[image['id']]], dtype=torch.float)
        labels = torch.tensor([k for _, k in boxes[image['id']]])
        with torch.no_grad():
            patches, last = tokens(pixels)
            rois = torch.cat([xyxy.new_zeros(len(xyxy), 1), xyxy], dim=1)
            pooled = []
            for x1, y1, x2, y2 in (xyxy / tokens.patch_size).tolist():
                cells = last[0, :, int(y1):max(int(y1) + 1, int(np.ceil(y2))),
                             int(x1):max(int(x1) + 1, int(np.ceil(x2)))]
                pooled.append(v.ln_post(cells.flatten(1).mean(1)) @ v.proj)
            for key, emb in (('patch tokens, averaged', torch.stack(pooled)),
                             ('ClipRoIExtractor', regions((patches,), rois)[:, :, 0, 0])):
                pred = (F.normalize(emb, dim=-1) @ text.T).argmax(-1)
                hits[key] += int((pred == labels).sum())
        total += len(labels)
    if not total:
        raise SystemExit(f'no boxes in the first {limit} {split} scenes under {scenes}')
    return {key: round(100 * n / total, 1) for key, n in hits.items()} | {
        'boxes': total, 'chance': round(100 / len(names), 1)}


def _scene_boxes(scenes: str, split: str):
    """Class names (category-id order) and {image: [(xyxy, label index)]} of a scene set."""
    with open(os.path.join(scenes, 'annotations', f'instances_{split}.json'),
              encoding='utf-8') as f:
        coco = json.load(f)
    names = [c['name'] for c in sorted(coco['categories'], key=lambda c: c['id'])]
    label = {c['id']: names.index(c['name']) for c in coco['categories']}
    boxes: Dict[int, list] = {}
    for a in coco['annotations']:
        x, y, w, h = a['bbox']
        boxes.setdefault(a['image_id'], []).append(([x, y, x + w, y + h], label[a['category_id']]))
    return coco['images'], names, boxes


def probe_conv_regions(scenes: str, split: str = 'train', limit: int = 300) -> Dict[str, float]:
    """Zero-shot 20-way top-1 (%) of ground-truth boxes, no training, on world v3's CNN CLIP:
    :class:`ClipPoolRoIExtractor`'s region embedding (RoIAlign on the last map, the tower's
    pooling head) and the whole tower on the box, widened 1.5x, cropped to its input size
    (crop and classify), against the hand
    prompt's text embeddings."""
    import torch
    import torch.nn.functional as F
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    from mmcv.ops import roi_align
    from PIL import Image

    import pomp_mm.mmdet  # noqa: F401
    from pomp_mm import PompTextEncoder
    from pomp_mm.conv_clip import input_size
    from pomp_mm.synthetic import world_clip as wc
    init_default_scope('mmdet')
    images, names, boxes = _scene_boxes(scenes, split)
    spec = dict(clip_model=wc.MODEL_NAME, pretrained=wc.WEIGHTS_PATH)
    backbone = MODELS.build(dict(type='OpenClipConvNet', **spec))
    regions = MODELS.build(dict(type='ClipPoolRoIExtractor', **spec))
    visual = backbone.visual
    size = input_size(visual)
    with torch.no_grad():
        text = PompTextEncoder(clip_model=wc.MODEL_NAME, pretrained=wc.WEIGHTS_PATH,
                               vocabulary=['x'], templates='single',
                               cat_bg=False).encode_text(names)
    hits, total = {'ClipPoolRoIExtractor': 0, 'box crop (1.5x) through the tower': 0}, 0
    for image in images[:limit]:
        if image['id'] not in boxes:
            continue
        with Image.open(os.path.join(scenes, 'images', split, image['file_name'])) as im:
            pixels = wc.images_to_tensor([im.convert('RGB')])  # CLIP-normalised [1, 3, H, W]
        xyxy = torch.tensor([b for b, _ in boxes[image['id']]], dtype=torch.float)
        labels = torch.tensor([k for _, k in boxes[image['id']]])
        rois = torch.cat([xyxy.new_zeros(len(xyxy), 1), xyxy], dim=1)
        with torch.no_grad():
            # the CLIP saw objects filling about two thirds of its input; mmcv's RoIAlign reads
            # raw memory (the pixels may be channels-last)
            centre, half = (xyxy[:, :2] + xyxy[:, 2:]) / 2, (xyxy[:, 2:] - xyxy[:, :2]) * 0.75
            wide = torch.cat([rois[:, :1], centre - half, centre + half], dim=1)
            crops = roi_align(pixels.contiguous(), wide, (size, size), 1.0, 0, 'avg', True)
            for key, emb in (('ClipPoolRoIExtractor', regions(backbone(pixels), rois)[:, :, 0, 0]),
                             ('box crop (1.5x) through the tower', visual(crops))):
                pred = (F.normalize(emb, dim=-1) @ text.T).argmax(-1)
                hits[key] += int((pred == labels).sum())
        total += len(labels)
    if not total:
        raise SystemExit(f'no boxes in the first {limit} {split} scenes under {scenes}')
    return {key: round(100 * n / total, 1) for key, n in hits.items()} | {
        'boxes': total, 'chance': round(100 / len(names), 1)}


def diagnose_detector(config: str, checkpoint: Optional[str], scenes: str,
                      split: str = 'val', prompt: Optional[str] = None) -> Dict[str, Dict]:
    """Where a world detector loses novel objects, on the ground-truth boxes of ``split``:
    the RPN's recall (top 100 proposals, IoU >= 0.5), the trained box head's 20-way argmax
    (background column left out) and the region embedding's zero-shot argmax against the same
    text embeddings, for base and novel boxes apart. ``checkpoint`` None: the head as
    initialised."""
    import torch
    import torch.nn.functional as F
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import bbox_overlaps
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from PIL import Image

    import pomp_mm.mmdet
    from pomp_mm.synthetic import world_clip as wc
    init_default_scope('mmdet')
    cfg = Config.fromfile(config)
    if prompt is not None or cfg.model.roi_head.bbox_head.classifier.text_encoder.get('prompt'):
        cfg.model.roi_head.bbox_head.classifier.text_encoder.prompt = prompt
    model = MODELS.build(cfg.model)
    model.init_weights()
    if checkpoint is not None:
        from pomp_mm.compat import register_mmengine_safe_globals
        register_mmengine_safe_globals()  # mmengine's checkpoint objects, nothing else
        state = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
        model.load_state_dict(state)
    images, names, boxes = _scene_boxes(scenes, split)
    pomp_mm.mmdet.set_detector_vocabulary(model, names)
    model.eval()
    head = model.roi_head.bbox_head
    novel = set(cfg.novel_classes)
    counts = {k: {'boxes': 0, 'rpn_recall': 0, 'head': 0, 'zero_shot': 0}
              for k in ('base', 'novel')}
    with torch.no_grad():
        text = F.normalize(head.fc_cls.text_encoder.encode_text(names).float(), dim=-1)
        for image in images:
            if image['id'] not in boxes:
                continue
            with Image.open(os.path.join(scenes, 'images', split, image['file_name'])) as im:
                pixels = wc.images_to_tensor([im.convert('RGB')])
            xyxy = torch.tensor([b for b, _ in boxes[image['id']]], dtype=torch.float)
            feats = model.extract_feat(pixels)
            region = model.roi_head.bbox_roi_extractor(
                feats, torch.cat([xyxy.new_zeros(len(xyxy), 1), xyxy], dim=1))
            head_pred = head(region)[0][:, :len(names)].argmax(-1)
            zero_shot = (F.normalize(region.flatten(1), dim=-1) @ text.T).argmax(-1)
            size = tuple(pixels.shape[-2:])
            sample = DetDataSample(metainfo=dict(img_shape=size, ori_shape=size,
                                                 scale_factor=(1.0, 1.0), pad_shape=size,
                                                 batch_input_shape=size))
            proposals = model.rpn_head.predict(feats, [sample], rescale=False)[0].bboxes[:100]
            best = bbox_overlaps(xyxy, proposals).max(dim=1).values if len(proposals) \
                else torch.zeros(len(xyxy))
            for j, (_, k) in enumerate(boxes[image['id']]):
                c = counts['novel' if names[k] in novel else 'base']
                c['boxes'] += 1
                c['rpn_recall'] += int(best[j] >= 0.5)
                c['head'] += int(head_pred[j] == k)
                c['zero_shot'] += int(zero_shot[j] == k)
    return {split_name: {'boxes': c['boxes']} | {
        key: round(100 * c[key] / max(c['boxes'], 1), 1)
        for key in ('rpn_recall', 'head', 'zero_shot')} for split_name, c in counts.items()}


def _rows(means: Dict, sds: Dict, keys) -> List[str]:
    return markdown_table(['prompt'] + list(keys),
                          [[method] + [f'{row[k]:.1f} ± {sds[method][k]:.1f}' for k in keys]
                           for method, row in means.items()])


def format_table(results: Dict) -> str:
    lines = ['Synthetic scenes, mean ± sd over seeds; 15 seen / 5 unseen classes', '']
    if results.get('seg') is not None:
        seeds = ', '.join(map(str, results['seg_seeds']))
        setup = next((v for v in SETUPS.values() if v.model == results.get('clip')),
                     SETUPS['vit'])  # results from before the CNN say nothing: the ViT's
        lines += [f'Segmentation ({setup.seg_label}, {results["seg_iters"]} iterations, '
                  f'seeds {seeds}):', '']
        lines += _rows(results['seg'], results['seg_sd'], SEG_KEYS) + ['']
    if results.get('det') is not None:
        seeds = ', '.join(map(str, results['det_seeds']))
        lines += [f'Detection (Faster R-CNN, frozen {results.get("clip", "world")} backbone, '
                  f'PompBBoxHead, '
                  f'{results["det_epochs"]} epochs, seeds {seeds}):', '']
        lines += _rows(results['det'], results['det_sd'], list(DET_KEYS.values()))
    return '\n'.join(lines)


def _diagnose_run(run_dir: Optional[str], work: str, clip: str) -> Dict[str, Dict]:
    """:func:`diagnose_detector` on a finished ``ov.py run`` detection folder."""
    if not run_dir or not os.path.isdir(run_dir):
        raise SystemExit(f'diagnose needs --run, a detection run folder; got {run_dir!r}')
    name = os.path.basename(os.path.normpath(run_dir))
    method, epochs = name.split('_')[0], name.rsplit('epoch', 1)[-1]
    if method not in SETUPS[clip].det_configs or not epochs.isdigit():
        raise SystemExit(f'{run_dir} is not an ov.py detection run folder '
                         '(<method>_seed<s>_epoch<e>)')
    paths = _paths(work, clip)
    return diagnose_detector(SETUPS[clip].det_configs[method],
                             os.path.join(run_dir, f'epoch_{epochs}.pth'), paths['scenes'],
                             prompt=paths['prompt'] if method == 'pomp' else None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('command', choices=('prepare', 'run', 'probe', 'diagnose'))
    p.add_argument('--run', default=None,
                   help='diagnose: a detection run folder (its config and last checkpoint)')
    p.add_argument('--work-dir', default=WORK)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--quick', action='store_true',
                   help='one seed, 400 scenes, 200 segmentation iterations, 5 detection '
                   'epochs (250 iterations)')
    p.add_argument('--parts', nargs='+', choices=('seg', 'det'), default=['seg', 'det'])
    p.add_argument('--clip', choices=tuple(SETUPS), default=DEFAULT_CLIP,
                   help='world CLIP: cnn (world v3, the default) or vit (world v2, SAN)')
    p.add_argument('--quiet', action='store_true', help='tool output to log files')
    args = p.parse_args(argv)
    seeds = args.seeds[:1] if args.quick else args.seeds
    work = os.path.abspath(args.work_dir)
    if args.command == 'prepare':
        print(json.dumps(prepare(work, args.quick, args.quiet, args.clip), indent=1))
    elif args.command == 'diagnose':
        print(json.dumps(_diagnose_run(args.run, work, args.clip), indent=1))
    elif args.command == 'probe':
        probe = probe_regions if args.clip == 'vit' else probe_conv_regions
        print(json.dumps(probe(_paths(work, args.clip)['scenes']), indent=1))
    else:
        run(work, seeds, args.quick, args.quiet, args.parts, args.clip)
    return 0


if __name__ == '__main__':
    from pomp_mm import cli  # not `import run`: this module has a run() of its own
    cli.run(main)
