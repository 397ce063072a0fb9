"""Bridges to training frameworks, each an optional dependency imported only by its own module:

    from sharpzo_ext.integrations.transformers import ZOTrainer   # needs transformers, accelerate

`import sharpzo_ext` (or this package) imports none of them.
"""
