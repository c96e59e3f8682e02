"""Zero-shot region classifier: region feature -> projection -> cosine with class embeddings.

:class:`ZeroShotClassifier` is a ``cls_predictor_cfg`` for any mmdet ``BBoxHead`` (mmdet builds
it with ``in_features`` / ``out_features``); :class:`PompBBoxHead` is ``Shared2FCBBoxHead`` with
it built in. Logits are ``temperature * cos(proj(x), e_c)`` for each class embedding ``e_c`` and
a constant 0 for background (Detic's zero background column), plus an optional learned bias.

Class embeddings come from a :class:`~pomp_mm.PompTextEncoder` (computed once per vocabulary,
on first use, and kept out of the checkpoint) or from a Detic-format ``.npy`` file. Training
uses the train vocabulary, evaluation the test vocabulary; :meth:`set_vocabulary` switches the
latter at any time. ``baked=True`` holds a fixed embedding table in a plain ``nn.Linear``
(``tools/bake_detector.py`` writes one), so a deployed model needs no text tower.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS
from torch import nn

from ..embeddings_io import load_embeddings
from ..text_encoder import PompTextEncoder
from ..vocabulary import Vocabulary, VocabularyLike, parse_vocabulary

__all__ = ['ZeroShotClassifier', 'PompBBoxHead', 'check_mask_heads', 'set_detector_vocabulary',
           'zero_shot_classifiers']

logger = logging.getLogger(__name__)


class _Source:
    """Where one split's class embeddings come from: names for the text encoder, or a file."""

    def __init__(self, vocabulary: Optional[Vocabulary], npy: Optional[str]):
        self.vocabulary = vocabulary
        self.npy = npy
        self.table: Optional[torch.Tensor] = None  # normalised [C, D], filled on first use
        self.weight: Optional[torch.Tensor] = None  # table + background row, on the model's device
        if npy is not None:
            self.table, side = load_embeddings(
                npy, names=None if vocabulary is None else vocabulary.names, normalize=True)
            if vocabulary is None and side and side.get('class_names'):
                self.vocabulary = Vocabulary(tuple(side['class_names']), (), npy)

    def __len__(self) -> int:
        return len(self.vocabulary) if self.vocabulary is not None else self.table.shape[0]

    @property
    def names(self) -> List[str]:
        if self.vocabulary is not None:
            return list(self.vocabulary.names)
        return [f'class {i}' for i in range(len(self))]

    def describe(self) -> str:
        return repr(self.npy) if self.npy is not None else f'{len(self)} names'


@MODELS.register_module()
class ZeroShotClassifier(nn.Module):
    """Cosine-similarity classifier over class embeddings, with a background column.

    Args:
        in_features: Region feature width (set by the bbox head).
        out_features: Number of train classes + 1 (set by the bbox head from ``num_classes``).
        embed_dim: Width of the projection, i.e. of the class embeddings; inferred from the
            embeddings when None.
        text_encoder: Config of a :class:`~pomp_mm.PompTextEncoder` that embeds the vocabularies.
        vocabulary: Train class names (list, ``' . '``-string, file or built-in name); by
            default the text encoder's own vocabulary.
        test_vocabulary: Class names for evaluation; by default the train vocabulary.
        embeddings: A Detic-format ``.npy`` (C x D) of train class embeddings, instead of the
            text encoder.
        test_embeddings: A ``.npy`` of test class embeddings.
        temperature: Scale of the cosine logits (Detic uses 50).
        bias_init: Initial value of a learned bias added to every logit (e.g. -4.6, a 1% prior,
            for the sigmoid loss); None for no bias.
        baked: The class embeddings are a fixed ``nn.Linear`` restored from a checkpoint
            (``out_features`` rows); no text encoder and no ``.npy``.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 embed_dim: Optional[int] = None,
                 text_encoder: Optional[dict] = None,
                 vocabulary: Optional[VocabularyLike] = None,
                 test_vocabulary: Optional[VocabularyLike] = None,
                 embeddings: Optional[str] = None,
                 test_embeddings: Optional[str] = None,
                 temperature: float = 50.0,
                 bias_init: Optional[float] = None,
                 baked: bool = False):
        super().__init__()
        self.temperature = float(temperature)
        self._encoder = None  # built lazily outside the module tree (frozen, not checkpointed)
        self._encoder_cfg = None
        if baked:
            if any(v is not None for v in (text_encoder, embeddings, test_embeddings)):
                raise ValueError('a baked ZeroShotClassifier holds its embeddings already; '
                                 'drop text_encoder / embeddings / test_embeddings')
            if embed_dim is None:
                raise ValueError('a baked ZeroShotClassifier needs embed_dim')
            names = parse_vocabulary(vocabulary) if vocabulary is not None else None
            if names is not None and len(names) + 1 != out_features:
                raise ValueError(f'baked vocabulary has {len(names)} classes but the head has '
                                 f'num_classes={out_features - 1}')
            self.train_source = self.test_source = None
            self.baked_names = None if names is None else list(names.names)
            self.fixed = nn.Linear(embed_dim, out_features, bias=False)
        else:
            if text_encoder is None and embeddings is None:
                raise ValueError('ZeroShotClassifier needs a text_encoder config or an '
                                 'embeddings .npy (or baked=True)')
            if text_encoder is not None:
                self._encoder_cfg = dict(text_encoder)
            train_vocab = self._vocabulary(vocabulary, default_from_encoder=embeddings is None)
            self.train_source = _Source(train_vocab, embeddings)
            if test_embeddings is not None or test_vocabulary is not None:
                self.test_source = self._make_source(test_vocabulary, test_embeddings)
            else:
                self.test_source = self.train_source
            if len(self.train_source) + 1 != out_features:
                raise ValueError(
                    f'the train vocabulary ({self.train_source.describe()}) has '
                    f'{len(self.train_source)} classes but the bbox head has '
                    f'num_classes={out_features - 1}; make them equal')
            embed_dim = self._check_width(embed_dim)
        self.embed_dim = embed_dim
        self.proj = nn.Linear(in_features, embed_dim)
        self.bias_init = bias_init
        self.bias = None if bias_init is None else nn.Parameter(torch.tensor(float(bias_init)))

    def init_weights(self) -> None:
        """Projection as ``nn.Linear`` (as Detic) and the logit bias at ``bias_init``.

        mmengine calls this after the bbox head's own ``init_cfg``, whose default
        (``Normal`` with ``override=dict(name='fc_cls')``, meant for a plain linear classifier)
        sets every ``bias`` attribute under ``fc_cls`` to 0, this prior included.
        """
        self.proj.reset_parameters()
        if self.bias is not None:
            with torch.no_grad():
                self.bias.fill_(float(self.bias_init))

    # ---------------------------------------------------------------- sources
    def _vocabulary(self, spec: Optional[VocabularyLike],
                    default_from_encoder: bool) -> Optional[Vocabulary]:
        if spec is not None:
            return parse_vocabulary(spec)
        if not default_from_encoder:
            return None
        cfg = self._encoder_cfg
        if cfg.get('vocabulary') is not None:
            return parse_vocabulary(cfg['vocabulary'])
        if cfg.get('dataset_name') is not None:
            return parse_vocabulary(cfg['dataset_name'])
        raise ValueError('give ZeroShotClassifier a vocabulary (or the text encoder a '
                         'vocabulary / dataset_name)')

    def _make_source(self, vocabulary: Optional[VocabularyLike],
                     npy: Optional[str]) -> _Source:
        if isinstance(vocabulary, str) and not vocabulary.strip(' .'):
            raise ValueError(f'the test vocabulary {vocabulary!r} is empty: give at least one '
                             'class name')
        vocab = None if vocabulary is None else parse_vocabulary(vocabulary)
        if npy is None and self._encoder_cfg is None:
            raise ValueError(f'test vocabulary {vocabulary!r} needs a text_encoder to embed '
                             'it (or give test_embeddings)')
        return _Source(vocab, npy)

    def _check_width(self, embed_dim: Optional[int]) -> int:
        widths = {s.npy: s.table.shape[1] for s in (self.train_source, self.test_source)
                  if s.table is not None}
        if self._encoder_cfg is not None and embed_dim is None:
            widths['text encoder'] = self._encoder_width()
        if embed_dim is None:
            if len(set(widths.values())) > 1:
                raise ValueError(f'class embeddings have different widths: {widths}')
            return next(iter(widths.values()))
        bad = {k: w for k, w in widths.items() if w != embed_dim}
        if bad:
            src, width = next(iter(bad.items()))
            raise ValueError(f'class embeddings from {src} have width {width} but the '
                             f'projection has embed_dim={embed_dim}')
        return embed_dim

    def _encoder_width(self) -> int:
        """The text encoder's output width, from its CLIP config when it has one: mmdet builds
        the classifier twice per bbox head, and loading CLIP just to learn a width is slow."""
        cfg = self._encoder_cfg
        if cfg.get('type') in ('PompTextEncoder', PompTextEncoder) and \
                cfg.get('clip_module') is None:
            spec = cfg.get('clip_model')  # left out: the encoder's default, learnt by building
            if isinstance(spec, dict) and spec.get('embed_dim') is not None:
                return int(spec['embed_dim'])
            if isinstance(spec, str):
                import open_clip
                model_cfg = open_clip.get_model_config(spec)
                if model_cfg and model_cfg.get('embed_dim') is not None:
                    return int(model_cfg['embed_dim'])
        return self.text_encoder.tower.output_dim  # e.g. another encoder type: build it

    @property
    def text_encoder(self):
        """The :class:`~pomp_mm.PompTextEncoder` (built on first use)."""
        if self._encoder is None:
            if self._encoder_cfg is None:
                raise RuntimeError('this ZeroShotClassifier has no text_encoder config')
            from mmengine.registry import MODELS as ROOT_MODELS

            import pomp_mm  # noqa: F401  registers PompTextEncoder
            cfg = dict(self._encoder_cfg)
            cfg.setdefault('cat_bg', False)  # only encode_text is used: no background row
            # the hand-prompt baseline of detection (prompt=None) stays Detic's single prompt
            cfg.setdefault('templates', 'single')
            if cfg.get('vocabulary') is None and cfg.get('dataset_name') is None:
                cfg['vocabulary'] = list(self.train_source.names)
            encoder = ROOT_MODELS.build(cfg)
            encoder.requires_grad_(False)
            encoder.eval()
            self.__dict__['_encoder'] = encoder  # not a submodule: frozen, not saved
        return self._encoder

    def __deepcopy__(self, memo: Dict[int, Any]) -> 'ZeroShotClassifier':
        # Copies (mmengine's EMA model is a deepcopy of the detector) share the frozen text
        # encoder: it holds no trained state, and a second CLIP text tower only costs memory.
        if self._encoder is not None:
            memo.setdefault(id(self._encoder), self._encoder)
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(self.__dict__, memo))
        return new

    def set_vocabulary(self, vocabulary: Optional[VocabularyLike] = None,
                       embeddings: Optional[str] = None) -> None:
        """Use another test vocabulary (names for the text encoder, or a ``.npy``)."""
        if self.train_source is None:
            raise RuntimeError('a baked ZeroShotClassifier has a fixed vocabulary; bake again '
                               'with tools/bake_detector.py --vocabulary')
        if vocabulary is None and embeddings is None:
            raise ValueError('give a vocabulary or an embeddings .npy')
        source = self._make_source(vocabulary, embeddings)
        if source.table is not None and source.table.shape[1] != self.embed_dim:
            raise ValueError(f'{embeddings!r} has width {source.table.shape[1]} but the '
                             f'projection has embed_dim={self.embed_dim}')
        self.test_source = source

    # ---------------------------------------------------------------- embeddings
    def _weight(self, source: _Source, device: torch.device) -> torch.Tensor:
        """``source``'s table with the zero background row, built once per device."""
        if source.weight is None or source.weight.device != device:
            table = self._table(source, device)
            source.weight = torch.cat([table, table.new_zeros(1, table.shape[1])])
        return source.weight

    def _table(self, source: _Source, device: torch.device) -> torch.Tensor:
        if source.table is None:
            encoder = self.text_encoder
            if encoder.tower.token_embedding.weight.device != device:
                encoder.to(device)
            # The table is kept for the run (and in the disk cache, whose key has no
            # precision): compute it in float32 even when the first forward runs under AMP.
            with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
                source.table = encoder.encode_text(source.vocabulary).float()
            if source.table.shape[1] != self.embed_dim:
                raise ValueError(f'the text encoder gives width {source.table.shape[1]} but '
                                 f'the projection has embed_dim={self.embed_dim}')
        return source.table.to(device)

    def class_weight(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """The [C + 1, D] matrix the logits use: normalised embeddings and a zero background
        row, for the current mode (train or test vocabulary)."""
        if self.train_source is None:
            return self.fixed.weight
        device = device if device is not None else self.proj.weight.device
        return self._weight(self.train_source if self.training else self.test_source, device)

    def vocabulary_for(self, training: bool) -> Tuple[int, Optional[List[str]]]:
        """Class count and names (None when unknown, e.g. a ``.npy`` without sidecar) of the
        train (``training=True``) or test vocabulary; a baked classifier has one for both."""
        if self.train_source is None:
            return self.fixed.out_features - 1, self.baked_names
        source = self.train_source if training else self.test_source
        names = None if source.vocabulary is None else list(source.vocabulary.names)
        return len(source), names

    @property
    def num_classes(self) -> int:
        """Classes of the current mode's vocabulary (background not counted)."""
        return self.vocabulary_for(self.training)[0]

    @property
    def class_names(self) -> List[str]:
        size, names = self.vocabulary_for(self.training)
        return names or [f'class {i}' for i in range(size)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.temperature * F.normalize(self.proj(x), dim=1)
        if self.train_source is None:
            logits = self.fixed(z)
        else:
            logits = F.linear(z, self.class_weight(z.device).to(z.dtype))
        return logits if self.bias is None else logits + self.bias

    def extra_repr(self) -> str:
        if self.train_source is None:
            return f'baked, classes={self.num_classes}, temperature={self.temperature}'
        return (f'train={self.train_source.describe()}, test={self.test_source.describe()}, '
                f'embed_dim={self.embed_dim}, temperature={self.temperature}')


@MODELS.register_module()
class PompBBoxHead(Shared2FCBBoxHead):
    """``Shared2FCBBoxHead`` whose classification branch is a :class:`ZeroShotClassifier`.

    Box regression is class-agnostic, so the test vocabulary can differ from the train one;
    ``num_classes`` follows the vocabulary of the current mode.

    With ``vlm_fusion`` and a frozen-CLIP region embedding as input (``ClipPoolRoIExtractor``,
    ``ClipRoIExtractor``), test-time class probabilities are F-VLM's (Kuo et al., ICLR 2023)
    geometric mean of the head's and the embedding's zero-shot ones: for each class
    ``p_head ** (1 - w) * p_clip ** w``, ``w = base`` for classes of the train vocabulary and
    ``novel`` for the others; the background probability is the head's; the row is
    renormalised. The trained head is sharp on the classes it was trained on and forgets the
    others; CLIP's own scores keep them.

    Args:
        classifier: :class:`ZeroShotClassifier` arguments (``text_encoder``, ``vocabulary``,
            ``test_vocabulary``, ``embeddings``, ``test_embeddings``, ``embed_dim``,
            ``temperature``, ``bias_init``, ``baked``).
        num_classes: Number of train classes (must match the train vocabulary).
        vlm_fusion: ``dict(base=..., novel=..., temperature=...)``: the zero-shot score weights
            and the temperature of its cosine softmax (F-VLM's: 0.35, 0.65, 0.01); None: off.
        **kwargs: ``Shared2FCBBoxHead`` arguments.
    """

    def __init__(self, classifier: Dict[str, Any], num_classes: int,
                 reg_class_agnostic: bool = True,
                 vlm_fusion: Optional[Dict[str, float]] = None, **kwargs: Any):
        if not reg_class_agnostic:
            raise ValueError('PompBBoxHead needs reg_class_agnostic=True: per-class box '
                             'regressors cannot follow a new test vocabulary')
        if 'cls_predictor_cfg' in kwargs:
            raise ValueError("PompBBoxHead builds its own cls_predictor_cfg; put its "
                             "arguments in 'classifier'")
        cls_cfg = dict(type='ZeroShotClassifier', **classifier)
        super().__init__(num_classes=num_classes, reg_class_agnostic=True,
                         cls_predictor_cfg=cls_cfg, **kwargs)
        self.vlm_fusion = _check_fusion(vlm_fusion)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Shared2FCBBoxHead's outputs; at test time with ``vlm_fusion``, class log-
        probabilities fused with the region embedding's zero-shot ones (mmdet's softmax then
        gives the fused probabilities back)."""
        cls_score, bbox_pred = super().forward(x)
        if self.training or self.vlm_fusion is None or cls_score is None:
            return cls_score, bbox_pred
        return self._fuse(cls_score, x.flatten(1)), bbox_pred

    def _fuse(self, cls_score: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        clf = self.fc_cls
        classes = cls_score.shape[1] - 1
        text = clf.class_weight(cls_score.device)[:classes].float()
        if region.shape[1] != text.shape[1]:
            raise ValueError(f'vlm_fusion needs the frozen CLIP region embedding as the head\'s '
                             f'input ({text.shape[1]} wide, e.g. ClipPoolRoIExtractor with '
                             f'roi_feat_size=1), got {region.shape[1]} features per RoI')
        clip_probs = F.softmax(F.normalize(region.float(), dim=1) @ F.normalize(text, dim=1).T
                               / self.vlm_fusion['temperature'], dim=1)
        head_probs = F.softmax(cls_score.float(), dim=1)
        weight = self._fusion_weights(classes, cls_score.device)
        fused = head_probs[:, :classes] ** (1 - weight) * clip_probs ** weight
        probs = torch.cat([fused, head_probs[:, classes:]], dim=1)
        probs = probs / probs.sum(dim=1, keepdim=True)
        return probs.clamp_min(torch.finfo(torch.float32).tiny).log().to(cls_score.dtype)

    def _fusion_weights(self, classes: int, device: torch.device) -> torch.Tensor:
        """Per test class: ``base`` if the train vocabulary has it, else ``novel`` (all
        ``novel`` when the names are unknown, as F-VLM without a base indicator)."""
        _, train = self.fc_cls.vocabulary_for(True)
        _, test = self.fc_cls.vocabulary_for(False)
        if train is None or test is None or len(test) != classes:
            return torch.full((classes,), self.vlm_fusion['novel'], device=device)
        seen = set(train)
        return torch.tensor([self.vlm_fusion['base' if n in seen else 'novel'] for n in test],
                            device=device)

    @property
    def num_classes(self) -> int:
        fc_cls = self._modules.get('fc_cls')
        return self._num_classes if fc_cls is None else fc_cls.num_classes

    @num_classes.setter
    def num_classes(self, value: int) -> None:
        self._num_classes = value


def _check_fusion(fusion: Optional[Dict[str, float]]) -> Optional[Dict[str, float]]:
    if fusion is None:
        return None
    fusion = dict(fusion)
    unknown = sorted(set(fusion) - {'base', 'novel', 'temperature'})
    if unknown or not {'base', 'novel'} <= set(fusion):
        raise ValueError(f'vlm_fusion takes base, novel and optionally temperature, got '
                         f'{dict(fusion)}')
    fusion.setdefault('temperature', 0.01)
    for key in ('base', 'novel'):
        if not 0.0 <= float(fusion[key]) <= 1.0:
            raise ValueError(f'vlm_fusion {key} weight must be in [0, 1], got {fusion[key]!r}')
    if not float(fusion['temperature']) > 0:
        raise ValueError(f'vlm_fusion temperature must be positive, got '
                         f'{fusion["temperature"]!r}')
    return {k: float(v) for k, v in fusion.items()}


def zero_shot_classifiers(model: nn.Module) -> List[ZeroShotClassifier]:
    """Every :class:`ZeroShotClassifier` in ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, ZeroShotClassifier)]


def check_mask_heads(model: nn.Module) -> None:
    """Refuse a per-class mask head in a detector with a :class:`ZeroShotClassifier`.

    Its mask channels are fixed classes, while predicted labels index the test vocabulary (any
    list set at test time): a label would pick another class's mask, or none (IndexError).

    Raises:
        ValueError: naming the first mask head with ``class_agnostic=False``.
    """
    if not zero_shot_classifiers(model):
        return
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead, MaskPointHead
    for name, module in model.named_modules():
        if isinstance(module, (FCNMaskHead, MaskPointHead)) and not module.class_agnostic:
            raise ValueError(
                f'{name} ({type(module).__name__}) has class_agnostic=False: its '
                f'{module.num_classes} mask channels cannot follow the zero-shot head\'s '
                'vocabularies; set class_agnostic=True')


def set_detector_vocabulary(model: nn.Module, vocabulary: Optional[VocabularyLike] = None,
                            embeddings: Optional[str] = None) -> List[str]:
    """Point every :class:`ZeroShotClassifier` of ``model`` at a new test vocabulary.

    A model's EMA copy (mmengine's ``EMAHook``) keeps its old test vocabulary; that is harmless
    because the hook evaluates ``model`` itself, with the averaged weights swapped in.

    Raises:
        ValueError: ``model`` has no zero-shot head, or has a per-class mask head.

    Returns:
        The class names the detector now predicts (its labels index this list).
    """
    heads = zero_shot_classifiers(model)
    if not heads:
        raise ValueError(f'{type(model).__name__} has no ZeroShotClassifier (is its bbox head '
                         'a PompBBoxHead?)')
    check_mask_heads(model)
    for head in heads:
        head.set_vocabulary(vocabulary, embeddings)
    was_training = heads[0].training
    heads[0].eval()
    names = heads[0].class_names
    heads[0].train(was_training)
    return names
