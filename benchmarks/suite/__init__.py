"""The benchmark suite behind ``benchmarks/run.py``: settings, lab sections, scale section, figures and rendering."""
