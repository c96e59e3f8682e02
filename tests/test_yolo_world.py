"""YOLO-World: the offline-vocabulary export and the language backbone, checked against the
contracts of YOLO-World's tools and HuggingCLIPLanguageBackbone without mmyolo (a real run needs
mmcv < 2.1.0: docs/detection.md)."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip('transformers')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ['person', 'bicycle', 'traffic light', 'hot dog']


@torch.no_grad()
def _hugging_clip_backbone(folder, text):
    """What YOLO-World's HuggingCLIPLanguageBackbone computes for a batch of text lists (and
    generate_text_prompts.py for one): padded tokens, CLIPTextModelWithProjection.text_embeds,
    L2-normalised, [B, N, D]."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.CLIPTextModelWithProjection.from_pretrained(folder).eval()
    flat = [t for texts in text for t in texts]
    feats = model(**tok(text=flat, return_tensors='pt', padding=True)).text_embeds
    feats = feats / feats.norm(p=2, dim=-1, keepdim=True)
    return feats.reshape(-1, len(text[0]), feats.shape[-1])


def _prompt(tmp_path, width=64):
    from pomp_mm import save_prompt
    torch.manual_seed(5)
    return save_prompt(str(tmp_path / 'prompt.pt'), torch.randn(4, width) * 0.02)


def _export(tmp_path, folder, *extra):
    from helpers import load_tool
    out = str(tmp_path / 'emb.npy')
    load_tool('export_embeddings').main(
        ['--vocab', ' . '.join(CLASSES), '--clip-model', 'transformers:' + folder,
         '--format', 'yolo-world', '--out', out, '--no-cache', '--device', 'cpu', *extra])
    return out


def test_export_writes_what_generate_text_prompts_writes(hf_clip_folder, tmp_path):
    """--templates '{}' embeds the raw class texts: the array equals generate_text_prompts.py's
    (N x D float32, unit rows, vocabulary order), beside the class-text JSON it reads."""
    out = _export(tmp_path, hf_clip_folder, '--templates', '{}')
    arr = np.load(out)
    assert arr.dtype == np.float32 and arr.shape == (len(CLASSES), 32)
    assert np.abs(np.linalg.norm(arr, axis=1) - 1).max() < 1e-5
    with open(str(tmp_path / 'emb_class_texts.json')) as f:
        texts = json.load(f)
    assert texts == [[c] for c in CLASSES]
    ref = _hugging_clip_backbone(hf_clip_folder, [[x[0] for x in texts]])[0]
    assert np.abs(arr - ref.numpy()).max() < 1e-5


def test_exported_prompt_rows_fold_into_the_head_unchanged(hf_clip_folder, tmp_path):
    """With a POMP prompt the rows are the encoder's; reparameterize_yoloworld.py folds them
    into a 1x1 conv as they are (exp(logit_scale) * rows, no normalisation), which gives the
    contrastive head's logits only because the rows are unit vectors."""
    from pomp_mm import PompTextEncoder
    prompt = _prompt(tmp_path)
    out = _export(tmp_path, hf_clip_folder, '--prompt', prompt,
                  '--class-texts', str(tmp_path / 'texts.json'))
    embed = torch.from_numpy(np.load(out))
    enc = PompTextEncoder(clip_model='transformers:' + hf_clip_folder, prompt=prompt,
                          vocabulary=CLASSES, cat_bg=False)
    with torch.no_grad():
        assert (embed - enc.encode_text(CLASSES)).abs().max() < 1e-5
    assert json.loads((tmp_path / 'texts.json').read_text()) == [[c] for c in CLASSES]
    n, d = embed.shape
    scale, bias = torch.tensor(2.0), torch.tensor(-1.5)
    weight = (embed * scale.exp()).view(n, d, 1, 1)  # reparameterize_yoloworld's convert_head
    x = F.normalize(torch.randn(1, d, 5, 5), dim=1)
    folded = F.conv2d(x, weight, torch.ones(n) * bias)
    head = torch.einsum('bchw,kc->bkhw', x, F.normalize(embed, dim=-1)) * scale.exp() + bias
    assert (folded - head).abs().max() < 1e-5


def test_export_refuses_class_texts_without_the_format(tmp_path):
    from helpers import load_tool
    with pytest.raises(SystemExit, match='--format yolo-world only'):
        load_tool('export_embeddings').main(
            ['--vocab', 'a . b', '--clip-model', 'tiny', '--out', str(tmp_path / 'e.npy'),
             '--class-texts', str(tmp_path / 't.json')])


@pytest.fixture(scope='module')
def backbone_registry():
    """A child of mmdet's MODELS, as mmyolo's registry is: types unknown there fall back to
    the root registry PompLanguageBackbone lives in."""
    from mmdet.registry import MODELS
    from mmengine.registry import Registry
    import pomp_mm.yolo_world  # noqa: F401  (what custom_imports does)
    return Registry('model', parent=MODELS, scope='mmyolo_like')


def test_backbone_forward_contract(hf_clip_folder, backbone_registry):
    """A YOLO-World config's text_model with type swapped: same model_name and frozen_modules;
    per-image text lists in, [B, N, D] unit rows out, equal to HuggingCLIPLanguageBackbone's
    without a prompt; frozen."""
    model = backbone_registry.build(dict(type='PompLanguageBackbone', model_name=hf_clip_folder,
                                         frozen_modules=['all']))
    model.train()
    assert not model.encoder.training
    assert not any(p.requires_grad for p in model.parameters())
    # RandomLoadText pads with '' (padding_value), the demos with ' '
    same = [CLASSES + ['', ' ']] * 2
    mixed = [['person', 'bus'], ['dog', 'person']]
    for text in (same, mixed):
        out = model(text)
        assert out.shape == (len(text), len(text[0]), 32) and out.dtype == torch.float32
        assert not out.requires_grad
        assert (out - _hugging_clip_backbone(hf_clip_folder, text)).abs().max() < 1e-5
    with pytest.raises(ValueError, match=r'same number of texts, got \[2, 1\]'):
        model([['a', 'b'], ['c']])
    with pytest.raises(TypeError, match='per-image text lists'):
        model(['person', 'bus'])


def test_backbone_caches_per_vocabulary(hf_clip_folder, tmp_path, monkeypatch):
    from pomp_mm import PompTextEncoder
    from pomp_mm.yolo_world import PompLanguageBackbone
    prompt = _prompt(tmp_path)
    model = PompLanguageBackbone(model_name=hf_clip_folder, prompt=prompt, cache_size=2)
    calls = []
    encode = model.encoder.encode_names
    monkeypatch.setattr(model.encoder, 'encode_names',
                        lambda names: calls.append(list(names)) or encode(names))
    a = model([CLASSES, CLASSES])
    a.mul_(0)  # a caller's in-place change does not reach the cache
    b = model([CLASSES])
    assert calls == [CLASSES]  # the batch's shared list embedded once, then cached
    ref = PompTextEncoder(clip_model='transformers:' + hf_clip_folder, prompt=prompt,
                          vocabulary=CLASSES, cat_bg=False)
    with torch.no_grad():
        assert (b[0] - ref.encode_text(CLASSES)).abs().max() < 1e-5
    model([['cat']])
    model([['dog']])  # cache_size=2: the first vocabulary is dropped
    model([CLASSES])
    assert calls == [CLASSES, ['cat'], ['dog'], CLASSES]
    assert model.forward_text([['cat']]).shape == (1, 1, 32)  # uncached, as HF's forward_text
    assert len(calls) == 5


def test_config_fragment_swaps_the_text_model(hf_clip_folder, tmp_path, backbone_registry):
    """configs/yolo_world/pomp_text_model.py added to a config whose base is a YOLO-World one:
    the text model becomes PompLanguageBackbone on the base's model_name."""
    from mmengine.config import Config
    (tmp_path / 'yolo_world_base.py').write_text(
        "custom_imports = dict(imports=['yolo_world'], allow_failed_imports=False)\n"
        f"text_model_name = {hf_clip_folder!r}\n"
        "model = dict(type='YOLOWorldDetector', backbone=dict(type='MultiModalYOLOBackbone',\n"
        "    text_model=dict(type='HuggingCLIPLanguageBackbone', model_name=text_model_name,\n"
        "                    frozen_modules=['all'])))\n")
    with open(os.path.join(ROOT, 'configs', 'yolo_world', 'pomp_text_model.py')) as f:
        fragment = f.read()
    (tmp_path / 'mine.py').write_text("_base_ = ['yolo_world_base.py']\n" + fragment)
    cfg = Config.fromfile(str(tmp_path / 'mine.py'), import_custom_modules=False)
    assert cfg.custom_imports.imports == ['yolo_world', 'pomp_mm.yolo_world']
    text_model = cfg.model.backbone.text_model
    assert text_model.type == 'PompLanguageBackbone' and text_model.model_name == hf_clip_folder
    assert text_model.prompt.endswith('nctx16_cscFalse_ctpend_seed42.pth.tar')
    model = backbone_registry.build(dict(text_model, prompt=_prompt(tmp_path)))
    assert model([['cat', 'dog']]).shape == (1, 2, 32)
