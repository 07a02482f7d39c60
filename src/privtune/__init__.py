"""privtune — fine-tune language models on private text and measure what it costs in privacy, utility and compute.

The public API is small; everything the CLI does is available from Python::

    from privtune.data import load_dataset, synth
"""

__version__ = "0.1.0"
