"""pomp_mm: POMP prompt pre-training and open-vocabulary prompt text encoders for OpenMMLab.

The core (this package) imports without MMDetection / MMSegmentation; toolkit adapters live in
``pomp_mm.mmdet`` and ``pomp_mm.mmseg``. Importing pomp_mm registers :class:`PompTextEncoder` in
mmengine's root ``MODELS`` registry and makes mmengine checkpoints loadable under torch >= 2.6.
"""
from .compat import register_mmengine_safe_globals
from .embeddings_io import load_embeddings, save_embeddings
from .prompt_checkpoint import PromptCheckpoint, load_prompt, save_prompt
from .prompt_learner import PromptLearner
from .text_encoder import PompTextEncoder, get_templates
from .version import __version__
from .vocabulary import Vocabulary, builtin_vocabularies, load_vocabulary, parse_vocabulary

register_mmengine_safe_globals()

__all__ = [
    '__version__', 'PompTextEncoder', 'PromptLearner', 'PromptCheckpoint', 'Vocabulary',
    'builtin_vocabularies', 'get_templates', 'load_embeddings', 'load_prompt', 'load_vocabulary',
    'parse_vocabulary', 'save_embeddings', 'save_prompt'
]
