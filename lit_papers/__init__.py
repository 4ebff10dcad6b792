"""lit_papers: five landmark deep-learning papers as PyTorch Lightning modules behind one CLI."""

__version__ = "0.1.0"
