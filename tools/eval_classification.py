"""Zero-shot classification of CLIP with hand prompts, template ensembles and POMP prompts.

Datasets are read from CoOp's folder layout under --data-root (caltech-101/, oxford_pets/, ...,
imagenet/images/val, imagenetv2/, imagenet-sketch/, imagenet-adversarial/, imagenet-rendition/,
imagenet21k_resized/); see pomp_mm.evaluation.build_dataset. Missing ones are skipped. The table
has one row per method and one column per dataset, plus 'mean' over the cross-dataset targets
(Caltech101 ... UCF101) that were evaluated, as in POMP's Table 2. Examples::

    python tools/eval_classification.py --data-root data --clip-model ViT-B-16 \\
        --pretrained openai --prompts pomp_vit_b16.pth.tar --out-dir work_dirs/zeroshot
    python tools/eval_classification.py --data-root data --datasets cross --max-images 500 \\
        --no-ensemble --prompts a.pth b.pth --folder mine=/data/my_classes
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import time
from typing import Dict, List, Optional, Tuple

import torch


from pomp_mm import PompTextEncoder
from pomp_mm.cli import check_clip_inputs, check_folder, positive_int
from pomp_mm.prompt_checkpoint import load_prompt
from pomp_mm.clip import build_clip, resolve_clip_spec
from pomp_mm.towers.hf_clip import is_hf_spec
from pomp_mm.evaluation import (ALL_DATASETS, CROSS_DATASETS, DatasetNotFound,
                                build_dataset, embed_images, image_folder_dataset,
                                per_class_accuracy, predict, resolve_dataset_names)

logger = logging.getLogger('eval_classification')


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--data-root', default=None,
                   help='folder holding the datasets under their CoOp folder names (needed '
                   'unless --datasets none)')
    p.add_argument('--datasets', nargs='+', default=['all'],
                   help=f'dataset names or groups (all, cross, imagenet-variants); known: '
                   f'{", ".join(ALL_DATASETS)} (default: all)')
    p.add_argument('--folder', action='append', default=[], metavar='NAME=PATH',
                   help='also evaluate a folder with one sub-folder of images per class '
                   '(repeatable; not part of the mean)')
    p.add_argument('--clip-model', default='ViT-B-16',
                   help="open_clip model name, open_clip config .json, 'tiny', or "
                   "transformers:<folder or hub id> (a Hugging Face CLIP, with its weights)")
    p.add_argument('--pretrained', default=None,
                   help="open_clip tag (e.g. openai) or local weights file; required for a named "
                   "open_clip model (only 'tiny' and .json configs may run with random weights)")
    p.add_argument('--prompts', nargs='+', default=[], metavar='CKPT',
                   help='prompt checkpoints (pomp_mm or official POMP/CoOp format), one row each')
    p.add_argument('--no-hand', action='store_true', help='skip the "a photo of a {}." row')
    p.add_argument('--no-ensemble', action='store_true',
                   help="skip the row of CLIP's 80 ImageNet templates")
    p.add_argument('--json', default=None, metavar='FILE',
                   help='also write {method: {dataset: top-1 %%}} and the image counts here')
    p.add_argument('--batch-size', type=positive_int, default=64)
    p.add_argument('--workers', type=int, default=4, help='DataLoader workers')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--out-dir', default='work_dirs/eval_classification',
                   help='where results.csv and results.md go')
    p.add_argument('--max-images', type=int, default=None,
                   help='evaluate at most this many (evenly spaced) images per dataset')
    p.add_argument('--seed', type=int, default=0,
                   help='torch seed set before building CLIP (only matters for random weights)')
    p.add_argument('--chunk-size', type=positive_int, default=1024,
                   help='classes per text-tower call')
    p.add_argument('--cache-dir', default=None, help='embedding cache folder (default: none)')
    args = p.parse_args(argv)
    if args.no_hand and args.no_ensemble and not args.prompts:
        p.error('nothing to evaluate: --no-hand and --no-ensemble without --prompts')
    if args.max_images is not None and args.max_images < 1:
        p.error(f'--max-images must be >= 1, got {args.max_images}')
    if args.data_root is None and [d for d in args.datasets if d.lower() != 'none']:
        p.error('--data-root is needed to evaluate --datasets '
                f'{" ".join(args.datasets)} (use --datasets none with --folder only)')
    if args.batch_size < 1:
        p.error(f'--batch-size must be >= 1, got {args.batch_size}')
    return args


def _parse_folders(specs: List[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition('=')
        if not sep or not name or not path:
            raise SystemExit(f'--folder expects NAME=PATH, got {spec!r}')
        if name in out or name.lower() in {n.lower() for n in ALL_DATASETS} | {'mean'}:
            raise SystemExit(f'--folder name {name!r} is already used; pick another')
        if not os.path.isdir(path):  # named on purpose: an error, not a skipped dataset
            raise FileNotFoundError(f'--folder {name}: {path!r} is not a folder')
        out[name] = path
    return out


def _method_names(prompts: List[str]) -> List[str]:
    """Row labels for prompt files: the file name, or the path as given where names clash."""
    bases = [os.path.basename(p) for p in prompts]
    return [b if bases.count(b) == 1 else p for b, p in zip(bases, prompts)]


def _check_shared_context(path: str) -> None:
    """Every dataset is read with its own class names: a class-specific prompt works only
    where its contexts name their classes."""
    ckpt = load_prompt(path)
    if ckpt.ctx.dim() == 3 and not ckpt.meta.get('csc_names'):
        raise ValueError(f'{path} is a class-specific prompt ({ckpt.ctx.shape[0]} contexts) '
                         'saved without the class names of its contexts, so it cannot be '
                         'matched to any dataset\'s classes: evaluate a shared-context prompt, '
                         'or one saved with csc_names')


def build_methods(args: argparse.Namespace, clip: torch.nn.Module,
                  spec) -> List[Tuple[str, PompTextEncoder]]:
    common = dict(clip_model=spec, pretrained=args.pretrained, clip_module=clip,
                  vocabulary=['object'],  # placeholder: each dataset's names are passed in
                  chunk_size=args.chunk_size, cache_dir=args.cache_dir, cat_bg=False)
    methods = []
    if not args.no_hand:
        methods.append(('hand prompt', PompTextEncoder(templates='single', **common)))
    if not args.no_ensemble:
        methods.append(('template ensemble',
                        PompTextEncoder(templates='openai_imagenet', **common)))
    for label, path in zip(_method_names(args.prompts), args.prompts):
        _check_shared_context(path)
        methods.append((label, PompTextEncoder(prompt=path, **common)))
    return [(m, enc.to(args.device).eval()) for m, enc in methods]


def _fmt(value: Optional[float], digits: int) -> str:
    return '' if value is None else f'{value:.{digits}f}'


def make_table(results: Dict[str, Dict[str, float]], columns: List[str],
               methods: List[str]) -> List[List[Optional[float]]]:
    """Rows of accuracies per method for ``columns`` + the mean over cross-datasets."""
    cross = [c for c in columns if c in CROSS_DATASETS]
    rows = []
    for m in methods:
        row: List[Optional[float]] = [results[m].get(c) for c in columns]
        row.append(sum(results[m][c] for c in cross) / len(cross) if cross else None)
        rows.append(row)
    return rows


def write_outputs(out_dir: str, columns: List[str], methods: List[str],
                  rows: List[List[Optional[float]]], notes: List[str]) -> str:
    os.makedirs(out_dir, exist_ok=True)
    header = ['method'] + columns + ['mean']
    with open(os.path.join(out_dir, 'results.csv'), 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for m, row in zip(methods, rows):
            writer.writerow([m] + [_fmt(v, 4) for v in row])
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' + '---:|' * (len(header) - 1)]
    lines += ['| ' + ' | '.join([m] + [_fmt(v, 2) or '-' for v in row]) + ' |'
              for m, row in zip(methods, rows)]
    md = '\n'.join(lines + [''] + notes) + '\n'
    with open(os.path.join(out_dir, 'results.md'), 'w', encoding='utf-8') as f:
        f.write(md)
    return md


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        names = resolve_dataset_names(args.datasets)
    except ValueError as err:
        raise SystemExit(str(err))
    folders = _parse_folders(args.folder)
    if names:  # a missing root is a mistake, not a row of skipped datasets
        check_folder(args.data_root, '--data-root')
    check_clip_inputs(args.clip_model, args.pretrained, args.prompts, prompt_flag='--prompts')

    spec = resolve_clip_spec(args.clip_model)
    if isinstance(spec, str) and spec != 'tiny' and not is_hf_spec(spec) \
            and not args.pretrained:
        # a named model without weights is randomly initialised: near-chance accuracies that
        # look like a result
        raise SystemExit(f'--clip-model {args.clip_model!r} needs --pretrained (an open_clip tag '
                         'such as openai, or a weights file); only a model config (tiny or a '
                         '.json file) is evaluated with random weights')
    torch.manual_seed(args.seed)  # random (tiny) CLIPs must be reproducible
    clip = build_clip(spec, args.pretrained, args.device)
    methods = build_methods(args, clip, spec)
    method_names = [m for m, _ in methods]

    results: Dict[str, Dict[str, float]] = {m: {} for m in method_names}
    per_class: Dict[str, Dict[str, List[float]]] = {m: {} for m in method_names}
    counts: Dict[str, int] = {}
    num_classes: Dict[str, int] = {}
    skipped: Dict[str, str] = {}
    failed: Dict[str, str] = {}
    todo = [(n, None) for n in names] + list(folders.items())
    # sets that share a class list (a domain's renderings of the same classes) share their text
    # embeddings: each method encodes a class list once
    texts: Dict[Tuple[str, Tuple[str, ...]], torch.Tensor] = {}
    for name, folder in todo:
        try:
            dataset = (image_folder_dataset(folder, name) if folder is not None
                       else build_dataset(name, args.data_root))
            dataset = dataset.subset(args.max_images)
            start = time.perf_counter()
            feats, labels = embed_images(clip.visual, dataset, args.batch_size, args.device,
                                         args.workers)
        except DatasetNotFound as err:
            logger.warning('skipping %s: %s is missing', name, err.path)
            skipped[name] = err.path
            continue
        except (ValueError, OSError) as err:
            logger.error('%s failed: %s', name, err)
            failed[name] = str(err)
            continue
        counts[name] = len(labels)
        num_classes[name] = len(dataset.classnames)
        for method, encoder in methods:
            key = (method, tuple(dataset.classnames))
            if key not in texts:
                with torch.no_grad():
                    texts[key] = encoder.encode_text(dataset.classnames)
            text = texts[key]
            pred = predict(feats, text)
            results[method][name] = 100.0 * int((pred == labels).sum()) / len(labels)
            per_class[method][name] = [round(float(a), 4) for a in per_class_accuracy(
                pred.numpy(), labels.numpy(), len(dataset.classnames))]
            logger.info('%s / %s: %.2f%% top-1 (%d images, %d classes)', name, method,
                        results[method][name], len(labels), len(dataset.classnames))
        logger.info('%s took %.1f s', name, time.perf_counter() - start)
        del feats, labels

    columns = [n for n, _ in todo if n in counts]
    if not columns:
        raise FileNotFoundError('nothing was evaluated: ' + '; '.join(
            [f'{n} missing ({p})' for n, p in skipped.items()] +
            [f'{n} failed ({e})' for n, e in failed.items()]))
    rows = make_table(results, columns, method_names)
    cross = [c for c in columns if c in CROSS_DATASETS]
    notes = [f'Model: {args.clip_model}' + (f' ({args.pretrained})' if args.pretrained else '')
             + '. Top-1 accuracy (%).',
             'Mean: over the cross-datasets evaluated (' + (', '.join(cross) or 'none') + ').']
    if counts:
        notes.append('Images: ' + ', '.join(f'{n} {c}' for n, c in counts.items()) + '.')
    if skipped:
        notes.append('Skipped (not found): ' + '; '.join(f'{n} (missing {p})'
                                                         for n, p in skipped.items()) + '.')
    if failed:
        notes.append('Failed: ' + '; '.join(f'{n} ({e})' for n, e in failed.items()) + '.')
    md = write_outputs(args.out_dir, columns, method_names, rows, notes)
    if args.json:
        import json
        payload = {'results': {m: dict(results[m]) for m in method_names}, 'images': counts,
                   'per_class': per_class,
                   'classes': num_classes, 'failed': failed, 'skipped': skipped}
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(payload, f, indent=1)
    print(md)
    print(f'wrote {os.path.join(args.out_dir, "results.csv")} and results.md')
    return 1 if failed else 0


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
