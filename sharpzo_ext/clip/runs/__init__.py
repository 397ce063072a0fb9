"""A prompt-tuning run, as `sharpzo-ext train`, `eval` and `compare` run it: its configuration
(config.py), the table of methods (method_table.py) and a method made ready (methods.py), the
model, data and cached features (prepare.py, feature_cache.py), the run loop (train.py), its
directory (run_dir.py) and its prompt file (prompt_file.py), evaluation (evaluate.py), and the
comparison of methods with its report (compare.py, compare_report.py, confidence.py)."""
