"""Hand-prompt templates: the zero-shot baseline a learned prompt is compared with."""
from __future__ import annotations

from typing import List, Sequence, Union

__all__ = ['TemplateSpec', 'get_templates']

TemplateSpec = Union[str, Sequence[str]]


def get_templates(spec: TemplateSpec) -> List[str]:
    """Prompt templates (``'{}'`` marks the class name) by name or as given.

    Names: ``'single'`` ("a photo of a {}."), ``'simple_imagenet'`` (open_clip's 7),
    ``'openai_imagenet'`` (CLIP's 80 ImageNet templates, from open_clip) and ``'vild'``
    (mmseg's 14 ViLD templates, what SAN uses).
    """
    if not isinstance(spec, str):
        templates = list(spec)
    elif spec == 'single':
        templates = ['a photo of a {}.']
    elif spec in ('simple_imagenet', 'openai_imagenet'):
        from open_clip import zero_shot_metadata as zsm
        fns = (zsm.SIMPLE_IMAGENET_TEMPLATES
               if spec == 'simple_imagenet' else zsm.OPENAI_IMAGENET_TEMPLATES)
        templates = [fn('{}') for fn in fns]
    elif spec == 'vild':
        # mmseg's SAN baseline prompts; imported only when asked (the core needs no mmseg)
        try:
            from mmseg.utils import get_predefined_templates
        except ImportError as err:
            raise ImportError("templates='vild' are mmseg's ViLD templates: install "
                              "mmsegmentation, or use 'single', 'openai_imagenet' or a list "
                              f'({err})') from err
        templates = list(get_predefined_templates('vild'))
    elif '{}' in spec:
        templates = [spec]
    else:
        raise ValueError(f"unknown templates {spec!r}; use 'single', 'simple_imagenet', "
                         "'openai_imagenet', 'vild' or a list of strings with '{}'")
    bad = [t for t in templates if '{}' not in t]
    if not templates or bad:
        raise ValueError(f'each template needs a {{}} for the class name; got {bad or templates}')
    return templates
