"""hcd_kit: the Histopathologic Cancer Detection toolkit (data, training, inference and Kaggle sub-packages).

The ``hcd`` command line (``hcd_kit.cli``) is a thin layer over these sub-packages; ``hcd --version`` prints
the installed version.
"""
