"""The images a run tunes on: data sets (datasets.py: the embedded tasks, ImageFolder trees,
CoOp's splits; its names are offered here too, as sharpzo_ext.clip.data offered them in 0.1.0),
the procedural shapes they are drawn from (synthetic.py), real handwritten digits (digits.py),
and the augmented views a head averages (views.py)."""

from sharpzo_ext.clip.data.datasets import (BUILTIN_TASKS, COOP_DATASETS, EMBEDDED_TASKS,
                                            DataError, Dataset, builtin_task, coop_dataset,
                                            embedded_task, few_shot, image_folder, load_images)

__all__ = ["DataError", "Dataset", "EMBEDDED_TASKS", "BUILTIN_TASKS", "embedded_task",
           "builtin_task", "image_folder", "coop_dataset", "few_shot", "load_images",
           "COOP_DATASETS"]
