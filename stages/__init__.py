"""The stage CLIs: one module per Snakefile rule, each a parser plus a call into the library
(:mod:`speechtune`), run as ``python -m stages.<name>`` (``--help`` on each)."""
