"""Is there a shared context better than the hand prompt? A held-out headroom probe.

For each protocol set (and for 2,000 of the pre-training classes) a 4-token context initialised
from "a photo of a" is fitted with a full softmax on new images of the set's own classes and
scored on images it never saw: the set's usual evaluation images (the pre-training classes:
shot 63). Step 0 is the hand prompt, so the gain is the room a shared context has over it on
that set. Protocol: docs/synthetic_world.md, "Held-out headroom".

    python tools/synthetic/headroom.py                 # 3 seeds, all sets (~10 min on 2 cores)
    python tools/synthetic/headroom.py --quick         # one seed, shapes only, 20 steps

Writes work_dir/headroom.json (every seed's numbers) and headroom.md (the table).
"""
from __future__ import annotations

import argparse
import os
import statistics
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


from pomp_mm.synthetic import protocol
from pomp_mm.fileio import atomic_write_json
from pomp_mm.synthetic import world_clip as wc
from pomp_mm.synthetic.datasets import eval_image, pretrain_image_index
from pomp_mm.synthetic.render import render_object

PRETRAIN_SET = 'pretrain-2000'
#: The same 2,000 classes split at the median of caption stream v4's class frequency (world v4's
#: prediction 2 asks for room on the tail half)
PRETRAIN_HALVES = ('pretrain-2000-head', 'pretrain-2000-tail')
CTX_INIT = 'a photo of a'
_PRETRAIN_RENDER_SEED = 1
_PRETRAIN_SCORE_SHOT = 63


def _encode(clip, images, chunk: int = 512) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            batch = wc.images_to_tensor(images[i:i + chunk])
            out.append(F.normalize(clip.encode_image(batch).float(), dim=-1))
    return torch.cat(out)


def pretrain_probe_classes(name: str = PRETRAIN_SET):
    """The 2,000 pre-training classes of the probe, or one of :data:`PRETRAIN_HALVES`."""
    classes = protocol.subset_classes(2000, seed=0)
    if name == PRETRAIN_SET:
        return classes
    if name not in PRETRAIN_HALVES:
        raise ValueError(f'unknown pre-training set {name!r}; choose from '
                         f'{[PRETRAIN_SET, *PRETRAIN_HALVES]}')
    from pomp_mm.synthetic.captions_v4 import class_weights
    w = class_weights(classes)
    tail = w < float(np.median(w))
    return [c for c, t in zip(classes, tail) if t == name.endswith('-tail')]


def set_images(clip, name: str, shots: int) -> Tuple[List[str], Tuple, Tuple]:
    """``(classnames, (fit features, labels), (score features, labels))`` of one set."""
    if name == PRETRAIN_SET or name in PRETRAIN_HALVES:
        classes = pretrain_probe_classes(name)
        names = [c.name for c in classes]

        def draw(k, shot):
            return render_object(classes[k], _PRETRAIN_RENDER_SEED,
                                 pretrain_image_index(classes[k], shot))
        fit = [(k, s) for s in range(shots) for k in range(len(names))]
        score = [(k, _PRETRAIN_SCORE_SHOT) for k in range(len(names))]
    else:
        sets = protocol.eval_sets('v2')  # the v2 world's experiment
        if name not in sets:
            raise ValueError(f'unknown set {name!r}; choose from '
                             f'{[PRETRAIN_SET, *PRETRAIN_HALVES, *sets]}')
        eval_set = sets[name]
        names = list(eval_set.classnames)

        def draw(k, j):
            return eval_image(eval_set, k, j)
        per = eval_set.per_class
        fit = [(k, per + j) for j in range(shots) for k in range(len(names))]
        score = [(k, j) for k in range(len(names)) for j in range(per)]

    def features(pairs):
        labels = torch.tensor([k for k, _ in pairs])
        return _encode(clip, [draw(k, j) for k, j in pairs]), labels
    return names, features(fit), features(score)


def accuracy(encoder, names: Sequence[str], feats: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        text = encoder.encode_text(list(names))
    return float(((feats @ text.T).argmax(-1) == labels).float().mean()) * 100


def fit_context(names: Sequence[str], fit, score, seed: int, steps: int,
                record: Sequence[int], batch_size: int = 256, lr: float = 0.02,
                model_name: str = wc.MODEL_NAME) -> Dict[int, float]:
    """Fit the context on ``fit``; score accuracy on ``score`` at step 0 and each ``record``
    (features of world CLIP ``model_name``)."""
    from pomp_mm.pretrain import PompPretrainer
    model = PompPretrainer(clip_model=model_name, pretrained=wc.asset_path(model_name, '.pt'),
                           vocabulary=list(names), n_ctx=None, ctx_init=CTX_INIT,
                           num_sampled=None, seed=seed)
    opt = torch.optim.SGD([model.prompt_learner.ctx], lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    (fit_feats, fit_labels), (score_feats, score_labels) = fit, score
    scores = {0: accuracy(model.text_encoder, names, score_feats, score_labels)}
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(fit_labels), (batch_size,), generator=gen)
        loss = model(features=fit_feats[idx][:, None], labels=fit_labels[idx])['loss']
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in record:
            scores[step] = accuracy(model.text_encoder, names, score_feats, score_labels)
    return scores


def format_table(results: Dict[str, Dict[str, Dict[int, float]]], steps: Sequence[int]) -> str:
    head = ['set', 'hand'] + [f'fitted, {s} steps' for s in steps] + [f'gain at {steps[-1]}']
    lines = ['| ' + ' | '.join(head) + ' |', '|---' + '|---:' * (len(head) - 1) + '|']
    for name, by_seed in results.items():
        runs = list(by_seed.values())
        cells = [name, f'{runs[0][0]:.1f}']
        for s in steps:
            vals = [r[s] for r in runs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f'{statistics.mean(vals):.1f} ± {sd:.1f}')
        cells.append(f'{statistics.mean(r[steps[-1]] - r[0] for r in runs):+.1f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--work-dir', default='work_dirs/headroom')
    p.add_argument('--sets', nargs='+', default=[PRETRAIN_SET, *protocol.eval_sets('v2')])
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--shots', type=int, default=8, help='fitting images per class')
    p.add_argument('--steps', type=int, default=200)
    p.add_argument('--world-clip', choices=wc.WORLD_MODELS, default=wc.MODEL_NAME,
                   help='the committed world CLIP to probe (default: the current one)')
    p.add_argument('--quick', action='store_true', help='one seed, shapes only, 20 steps')
    args = p.parse_args(argv)
    if args.quick:
        args.sets, args.seeds, args.steps = ['shapes'], [0], 20
    if not 1 <= args.shots <= 8:
        p.error(f'--shots must be in 1..8 (new images per class), got {args.shots}')
    if args.steps < 1:
        p.error(f'--steps must be positive, got {args.steps}')
    return args


def main(argv=None) -> Dict:
    args = parse_args(argv)
    from tqdm import tqdm
    clip = wc.load_world_clip(model_name=args.world_clip)
    record = sorted({min(50, args.steps), args.steps})
    results: Dict[str, Dict[str, Dict[int, float]]] = {}
    for name in tqdm(args.sets, desc='sets'):
        names, fit, score = set_images(clip, name, args.shots)
        results[name] = {str(seed): fit_context(names, fit, score, seed, args.steps, record,
                                                model_name=args.world_clip)
                         for seed in args.seeds}
    table = format_table(results, record)
    title = (f'Held-out headroom on {args.world_clip}: a context fitted from "{CTX_INIT}" on '
             f'{args.shots} new images per class, scored on unseen images (top-1 %, seeds '
             f'{args.seeds})')
    os.makedirs(args.work_dir, exist_ok=True)
    atomic_write_json(os.path.join(args.work_dir, 'headroom.json'),
                      {'args': vars(args), 'results': results})
    with open(os.path.join(args.work_dir, 'headroom.md'), 'w', encoding='utf-8') as f:
        f.write(f'{title}\n\n{table}\n')
    print(f'\n{title}\n\n{table}')
    return results


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
