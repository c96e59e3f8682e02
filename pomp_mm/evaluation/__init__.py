"""Evaluation of POMP prompts: zero-shot image classification (no MMDetection/MMSegmentation)."""
from .classification import accuracy, embed_images, evaluate, predict
from .datasets import (ALL_DATASETS, COOP_LAYOUTS, CROSS_DATASETS, IMAGENET_DATASETS,
                       ClassificationDataset, CoopLayout, DatasetNotFound, build_dataset,
                       image_folder_dataset, read_coop_split, read_fgvc_aircraft,
                       resolve_dataset_names)
from .intervals import Interval, paired_bootstrap, per_class_accuracy

__all__ = [
    'ALL_DATASETS', 'COOP_LAYOUTS', 'CROSS_DATASETS', 'IMAGENET_DATASETS', 'ClassificationDataset',
    'CoopLayout', 'DatasetNotFound', 'accuracy', 'build_dataset', 'embed_images', 'evaluate',
    'image_folder_dataset', 'read_coop_split', 'read_fgvc_aircraft', 'resolve_dataset_names',
    'predict', 'Interval', 'paired_bootstrap', 'per_class_accuracy'
]
