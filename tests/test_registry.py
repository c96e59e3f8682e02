import os
import subprocess
import sys

import pytest
import torch
from helpers import run_tool_here

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_core_imports_without_toolkits():
    code = ("import sys\n"
            "for m in ('mmdet', 'mmseg', 'mmcv'):\n"
            "    sys.modules[m] = None  # importing them now fails\n"
            "import pomp_mm\n"
            "from pomp_mm import PompTextEncoder, load_vocabulary\n"
            "assert len(load_vocabulary('imagenet21k')) == 21841\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == 'ok', res.stderr


@pytest.mark.parametrize('registry', ['mmengine', 'mmdet', 'mmseg'])
def test_build_from_registry(registry):
    import importlib

    import pomp_mm  # noqa: F401
    models = importlib.import_module(f'{registry}.registry').MODELS
    torch.manual_seed(0)
    enc = models.build(dict(type='PompTextEncoder', clip_model='tiny',
                            vocabulary=['cat', 'dog', 'car'], ctx_init='a photo of a',
                            cat_bg=True))
    assert type(enc).__name__ == 'PompTextEncoder'
    assert enc().shape == (4, 32)


def test_custom_imports_from_a_config(tmp_path):
    """What a user's MM config does: custom_imports, then a model dict naming our type."""
    from mmengine.config import Config
    from mmengine.registry import MODELS

    cfg_file = tmp_path / 'user_cfg.py'
    cfg_file.write_text(
        "custom_imports = dict(imports=['pomp_mm'], allow_failed_imports=False)\n"
        "text_encoder = dict(type='PompTextEncoder', clip_model='tiny',\n"
        "                    dataset_name='imagenet1k', templates='simple_imagenet')\n")
    cfg = Config.fromfile(str(cfg_file))
    enc = MODELS.build(cfg.text_encoder)
    assert enc.num_classes == 1000 and len(enc.templates) == 7


@pytest.mark.parametrize('toolkit', ['mmseg', 'mmdet'])
def test_shipped_config_fragments_build(toolkit, tmp_path, make_encoder):
    """The _base_ fragments users inherit, with the weights swapped for tiny local ones."""
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from pomp_mm import save_prompt

    prompt = str(tmp_path / 'prompt.pth')
    save_prompt(prompt, make_encoder(n_ctx=4).prompt_learner.ctx)
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', toolkit, '_base_',
                                       'pomp_text_encoder.py'))
    assert cfg.custom_imports.imports[0] == 'pomp_mm'
    enc_cfg = dict(cfg.pomp_text_encoder, clip_model='tiny', pretrained=None, prompt=prompt,
                   cache_dir=str(tmp_path / 'cache'))
    if toolkit == 'mmseg':
        enc = MODELS.build(enc_cfg)
        with torch.no_grad():
            assert enc().shape == (171 + 1, 32)  # coco-stuff + background row
        return
    # mmdet: the fragment is the text encoder of a zero-shot box classifier; the head names
    # the classes
    assert cfg.custom_imports.imports == ['pomp_mm', 'pomp_mm.mmdet']
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')  # an earlier test may have left mmseg's scope set
    head = DET_MODELS.build(dict(type='ZeroShotClassifier', in_features=8, out_features=1204,
                                 text_encoder=enc_cfg, vocabulary='lvis')).eval()
    with torch.no_grad():
        assert head(torch.randn(2, 8)).shape == (2, 1203 + 1)  # lvis + background


def test_test_tool_refuses_a_predictions_out_path(tmp_path, monkeypatch, capsys):
    """mmdet's / mmseg's own tools/test.py --out dumps predictions (res.pkl); ours writes the
    metrics, so a non-JSON --out is refused before anything runs (the tool in this process:
    helpers.run_tool_here)."""
    res = run_tool_here('test.py', ['cfg.py', 'ckpt.pth', '--out', str(tmp_path / 'res.pkl')],
                        monkeypatch, capsys)
    assert res.returncode != 0
    assert 'writes the metrics as JSON, so give a .json path' in res.stderr
    assert not (tmp_path / 'res.pkl').exists()
