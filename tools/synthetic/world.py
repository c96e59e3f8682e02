"""The synthetic world: render its datasets, rebuild its CLIP, measure the renderer.

    python tools/synthetic/world.py train-clip            # rebuild the committed CLIP (~25 min)
    python tools/synthetic/world.py render-pretrain --out work_dirs/world/pretrain --shots 1
    python tools/synthetic/world.py render-eval --out work_dirs/world/eval
    python tools/synthetic/world.py bench                  # rendering throughput, one core
    python tools/synthetic/world.py check-clip             # sha256 + recorded accuracies
"""
from __future__ import annotations

import argparse
import json
import os
import time


from pomp_mm.cli import positive_int


def _train_clip(args) -> None:
    from pomp_mm.synthetic import world_clip as wc
    out = args.out or wc.asset_path(args.model, '.pt')
    record = wc.train_world_clip(out, steps=args.steps, batch_size=args.batch_size,
                                 seed=args.seed, threads=args.threads, captions=args.captions,
                                 hard_share=args.hard_share, model_name=args.model,
                                 device=args.device, workers=args.workers,
                                 image_steps=args.image_steps,
                                 image_batch_size=args.image_batch_size,
                                 shape_first_steps=args.shape_first_steps,
                                 trunk_from=args.trunk_from)
    command = (f'python tools/synthetic/world.py train-clip --model {args.model}' +
               ('' if args.out is None else f' --out {args.out}') +
               f' --steps {args.steps} --batch-size {args.batch_size} --seed {args.seed} '
               f'--threads {args.threads} --captions {args.captions} '
               f'--hard-share {args.hard_share}' +
               (f' --image-steps {args.image_steps} --image-batch-size '
                f'{args.image_batch_size} --shape-first-steps {args.shape_first_steps}'
                if args.image_steps else '') +
               (f' --trunk-from {os.path.relpath(args.trunk_from)}' if args.trunk_from else ''))
    card_path = os.path.splitext(out)[0] + '.card.json'
    card = wc.write_card(out, record, command, card_path, version=args.protocol,
                         model_name=args.model)
    print(json.dumps(card, indent=1))
    if args.captions in ('v3', 'v4'):  # says which probe failed; weights and card stay
        wc.check_probes(card, head_only=args.captions == 'v4')


def _check_clip(args) -> int:
    from pomp_mm.synthetic import world_clip as wc
    card = wc.read_card()
    clip = wc.load_world_clip()
    got = wc.hand_prompt_accuracy(clip, list(card['hand_prompt_top1']),
                                  version=card.get('protocol', 'v2'))
    bad = 0
    print(f'sha256 ok ({card["sha256"][:16]}...)')
    for name, want in card['hand_prompt_top1'].items():
        ok = abs(got[name] - want) <= card['tolerance_points']
        bad += not ok
        print(f'{name:22s} recorded {want:6.2f}  now {got[name]:6.2f}  {"ok" if ok else "OFF"}')
    return 1 if bad else 0


def _classes(spec: str):
    from pomp_mm.synthetic import protocol
    if spec == 'all':
        return protocol.pretrain_classes()
    if spec == 'coop':
        return protocol.coop_classes()
    try:
        return protocol.subset_classes(int(spec))
    except ValueError as err:
        raise SystemExit(f"--classes must be 'all', 'coop' or a class count: {err}")


def _render_pretrain(args) -> None:
    from pomp_mm.synthetic.datasets import write_pretrain_set
    path = write_pretrain_set(args.out, _classes(args.classes), args.shots, args.seed)
    print(f'wrote {path}')


def _render_eval(args) -> None:
    from pomp_mm.synthetic.datasets import write_eval_sets
    for folder in write_eval_sets(args.out, args.sets or None):
        print(f'wrote {folder}')


def _bench(args) -> None:
    import numpy as np
    import torch
    from pomp_mm.synthetic.render import DOMAINS, SceneObject, render_object, render_scene
    from pomp_mm.synthetic.world import all_classes
    torch.set_num_threads(1)
    classes = all_classes()
    rng = np.random.default_rng(0)
    print('| what | size | images | seconds | images/s |\n|---|---|---|---|---|')
    for domain in DOMAINS:
        start = time.perf_counter()
        for i in range(args.images):
            render_object(classes[int(rng.integers(len(classes)))], 0, i, 64, domain)
        sec = time.perf_counter() - start
        print(f'| object, {domain} | 64 | {args.images} | {sec:.2f} | {args.images / sec:.0f} |')
    objs = [SceneObject('plain', 'red', 'star'), SceneObject('striped', 'blue', 'circle'),
            SceneObject('dotted', 'green', 'heart'), SceneObject('hollow', 'black', 'square')]
    n = max(1, args.images // 4)
    start = time.perf_counter()
    for i in range(n):
        render_scene(objs, 'grass', 0, i, 128)
    sec = time.perf_counter() - start
    print(f'| scene, 4 objects + labels | 128 | {n} | {sec:.2f} | {n / sec:.0f} |')


def main(argv=None) -> int:
    from pomp_mm.synthetic import world_clip as wc
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    t = sub.add_parser('train-clip', help='train the world CLIP and write its card')
    t.add_argument('--model', default=wc.MODEL_NAME, choices=wc.WORLD_MODELS)
    t.add_argument('--out', default=None, help='weights file (default: the committed one of '
                   '--model); the card goes beside it, the resumable checkpoint to OUT.ckpt')
    t.add_argument('--hard-share', type=float, default=0.0,
                   help='share of each batch drawn as hard-negative groups (v3 recipe: 0.5)')
    t.add_argument('--protocol', default='v3', help='protocol whose sets the card records')
    t.add_argument('--device', default='cpu', help="where the model trains ('cuda' on a GPU)")
    t.add_argument('--workers', type=int, default=0, help='processes rendering the batches')
    t.add_argument('--steps', type=int, default=1200, help='contrastive steps')
    t.add_argument('--image-steps', type=int, default=0,
                   help='steps of the labelled image-trunk stage before the contrastive one, '
                   'whose trunk is then locked (v3 recipe: 2500; needs a timm trunk)')
    t.add_argument('--image-batch-size', type=int, default=128)
    t.add_argument('--shape-first-steps', type=int, default=0,
                   help='the first steps of the image stage train the shape head alone '
                   '(v3 recipe: 1200)')
    t.add_argument('--batch-size', type=positive_int, default=256)
    t.add_argument('--seed', type=int, default=0)
    t.add_argument('--threads', type=positive_int, default=2,
                   help='torch threads (part of the recipe: another count changes the float '
                   'sums, hence the weights)')
    t.add_argument('--captions', default='v2', choices=('v1', 'v2', 'v3', 'v4'),
                   help='caption grammar: v4 (v3 with a long tail of value frequencies), v3 '
                   '(web-like alt-text), v2 (photos, sketches, noisy images, captions that '
                   'describe their look) or v1 (photos, image-independent templates)')
    t.add_argument('--trunk-from', default=None,
                   help='world CLIP weights whose image trunk is reused, locked (v4: '
                   'pomp_mm/synthetic/assets/pomp-world-CNN-T.pt); no image stage')
    sub.add_parser('check-clip', help='check the committed CLIP against its card')
    r = sub.add_parser('render-pretrain', help='few-shot pre-training set (ImageList CSV)')
    r.add_argument('--out', required=True)
    r.add_argument('--classes', default='all', help="'all' (23,900), 'coop' (1,000) or a count")
    r.add_argument('--shots', type=int, default=1)
    r.add_argument('--seed', type=int, default=1)
    e = sub.add_parser('render-eval', help='downstream evaluation sets (class folders)')
    e.add_argument('--out', required=True)
    e.add_argument('--sets', nargs='*', help='set names (default: all)')
    b = sub.add_parser('bench', help='rendering throughput on one core')
    b.add_argument('--images', type=int, default=1000)
    args = p.parse_args(argv)
    try:
        if args.cmd == 'check-clip':
            return _check_clip(args)
        {'train-clip': _train_clip, 'render-pretrain': _render_pretrain,
         'render-eval': _render_eval, 'bench': _bench}[args.cmd](args)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f'error: {err}')
    return 0


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
