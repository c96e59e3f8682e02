"""Export class embeddings as a C x D float32 .npy (Detic's ZeroShotClassifier format) plus a
JSON sidecar (class names, model, prompt fingerprint, normalisation).

``--format yolo-world`` also writes the class-text JSON YOLO-World's configs and tools read
(``[["person"], ["bicycle"], ...]``, vocabulary order) beside the array, which is already what
its ``tools/generate_text_prompts.py`` writes (N x D float32, L2-normalised rows) and what
``reparameterize_yoloworld.py --text-embed`` and ``SimpleYOLOWorldDetector(embedding_path=...)``
read.

Examples::

    python tools/export_embeddings.py --vocab lvis --prompt pomp_vit_b16.pth.tar \\
        --clip-model ViT-B-16 --pretrained openai --out lvis_pomp.npy
    python tools/export_embeddings.py --vocab my_classes.txt --clip-model ViT-B-16 \\
        --pretrained /weights/ViT-B-16.pt --templates openai_imagenet --out mine.npy
    python tools/export_embeddings.py --vocab coco --format yolo-world \\
        --clip-model transformers:checkpoints/clip-vit-base-patch32 \\
        --prompt vit_b32_ep20_randaug2_unc1000_16shots_nctx16_cscFalse_ctpend_seed42.pth.tar \\
        --out coco_pomp_b32.npy
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch


from pomp_mm import PompTextEncoder, save_embeddings
from pomp_mm.cli import check_clip_inputs, positive_int
from pomp_mm.clip import resolve_clip_spec
from pomp_mm.embedding_cache import default_cache_dir


FORMATS = ('detic', 'yolo-world')


def class_texts_path(out: str) -> str:
    """The default class-text JSON of ``--format yolo-world`` beside ``out`` (``F.npy`` ->
    ``F_class_texts.json``, as YOLO-World names its ``coco_class_texts.json``)."""
    return os.path.splitext(out)[0] + '_class_texts.json'


def write_class_texts(path: str, names) -> str:
    """YOLO-World's class-text file: one list of texts per class, in row order."""
    from pomp_mm.fileio import atomic_write
    data = json.dumps([[n] for n in names], indent=1, ensure_ascii=False).encode('utf-8')
    atomic_write(path, lambda f: f.write(data))
    return path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--vocab', required=True,
                   help='built-in vocabulary (lvis, coco, ...), a text file (one class per '
                   'line) or "a . b . c"')
    p.add_argument('--prompt', default=None,
                   help='prompt checkpoint; without it, --templates are used')
    p.add_argument('--templates', default='single',
                   help="'single', 'simple_imagenet' or 'openai_imagenet' (no --prompt only)")
    p.add_argument('--clip-model', default='ViT-B-16',
                   help="open_clip model name, open_clip config .json, 'tiny', or "
                   "transformers:<folder or hub id> (a Hugging Face CLIP, with its weights)")
    p.add_argument('--pretrained', default=None, help='open_clip tag or local weights file')
    p.add_argument('--out', required=True, help='output .npy (the sidecar goes beside it)')
    p.add_argument('--format', choices=FORMATS, default='detic',
                   help="'detic' (default): the .npy and its sidecar; 'yolo-world': also the "
                   'class-text JSON YOLO-World reads (--class-texts)')
    p.add_argument('--class-texts', default=None,
                   help="with --format yolo-world: where the class-text JSON goes (default: "
                   "beside --out, as <name>_class_texts.json)")
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--chunk-size', type=positive_int, default=1024)
    p.add_argument('--cache-dir', default=default_cache_dir())
    p.add_argument('--no-cache', action='store_true', help='do not read or write the cache')
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    if not args.out.endswith('.npy'):
        raise SystemExit(f'--out must end with .npy, got {args.out!r}')
    if args.class_texts and args.format != 'yolo-world':
        raise SystemExit(f'--class-texts {args.class_texts!r} is written by --format '
                         f'yolo-world only (got --format {args.format})')
    check_clip_inputs(args.clip_model, args.pretrained, [args.prompt])
    encoder = PompTextEncoder(
        clip_model=resolve_clip_spec(args.clip_model), pretrained=args.pretrained,
        prompt=args.prompt, templates=args.templates, vocabulary=args.vocab, cat_bg=False,
        chunk_size=args.chunk_size, cache_dir=None if args.no_cache else args.cache_dir)
    encoder = encoder.to(args.device).eval()
    start = time.perf_counter()
    with torch.no_grad():
        emb = encoder.encode_text(encoder.vocabulary)
    seconds = time.perf_counter() - start
    npy, side = save_embeddings(
        args.out, emb, encoder.vocabulary.names, class_ids=list(encoder.vocabulary.ids),
        vocabulary=args.vocab, clip_model=encoder.model_id,
        prompt=os.path.abspath(args.prompt) if args.prompt else None,
        prompt_fingerprint=encoder.prompt_fingerprint(),
        templates=None if args.prompt else encoder.templates)
    texts = ''
    if args.format == 'yolo-world':
        texts = ', ' + write_class_texts(args.class_texts or class_texts_path(npy),
                                         encoder.vocabulary.names)
    print(f'wrote {npy} ({emb.shape[0]} x {emb.shape[1]} float32, L2-normalised rows), '
          f'{side}{texts} in {seconds:.2f} s')
    return npy


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
