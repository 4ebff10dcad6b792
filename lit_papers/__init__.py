"""lit_papers: five landmark deep-learning papers as PyTorch Lightning modules behind one CLI.

The package root holds the entry point (`__main__.py`, `cli.py`), the list of modules the CLI
resolves by short name (`modules.py`), the offline sweep runner (`sweeps/`) and the two leaves
`registry.py` and `errors.py`, which import nothing of the project. Below it: `data/` and
`models/` (shared, import only the leaves), `core/` (training parts and run infrastructure), and
one folder per paper. The layers are drawn in docs/architecture.md.
"""

__version__ = "0.1.0"
