"""A synthetic world in which POMP runs for real, offline: 24,000 compositional classes, a
deterministic renderer, a small committed CLIP, the experimental protocol and dataset writers.
No MMDetection / MMSegmentation imports. See docs/synthetic_world.md."""
from .render import DOMAINS, Scene, SceneObject, render_object, render_scene
from .world import (ATTRIBUTES, NUM_CLASSES, WorldClass, all_classes, class_at, parse_class,
                    world_vocabulary)

__all__ = ['ATTRIBUTES', 'DOMAINS', 'NUM_CLASSES', 'Scene', 'SceneObject', 'WorldClass',
           'all_classes', 'class_at', 'parse_class', 'render_object', 'render_scene',
           'world_vocabulary']


def _vocabulary(which: str):
    def build():
        from . import protocol, world
        classes = {'synthetic-24k': world.all_classes, 'synthetic-pretrain':
                   protocol.pretrain_classes, 'synthetic-1k': protocol.coop_classes}[which]()
        return world.world_vocabulary(classes, which)
    return build


def _register() -> None:
    """The world as a pomp_mm plugin (setup.cfg): its CLIPs become open_clip model names and
    its class lists built-in vocabularies: all 24,000 compositions, the 23,900 pre-training
    ones (held-out compositions removed) and the CoOp baseline's 1,000."""
    from ..vocabulary import register_vocabulary
    from .world_clip import WORLD_MODELS, register_world_model
    for name in WORLD_MODELS:
        register_world_model(name)
    for which in ('synthetic-24k', 'synthetic-pretrain', 'synthetic-1k'):
        register_vocabulary(which, _vocabulary(which))


_register()
