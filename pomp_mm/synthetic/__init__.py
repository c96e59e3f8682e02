"""A synthetic world in which POMP runs for real, offline: 24,000 compositional classes, a
deterministic renderer, a small committed CLIP, the experimental protocol and dataset writers.
No MMDetection / MMSegmentation imports. See docs/synthetic_world.md."""
from .render import DOMAINS, Scene, SceneObject, render_object, render_scene
from .world import (ATTRIBUTES, NUM_CLASSES, WorldClass, all_classes, class_at, parse_class,
                    world_vocabulary)

__all__ = ['ATTRIBUTES', 'DOMAINS', 'NUM_CLASSES', 'Scene', 'SceneObject', 'WorldClass',
           'all_classes', 'class_at', 'parse_class', 'render_object', 'render_scene',
           'world_vocabulary']
