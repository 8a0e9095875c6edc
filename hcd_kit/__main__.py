"""``python -m hcd_kit`` runs the ``hcd`` CLI (used by torchrun, which needs a module to launch)."""

from hcd_kit.cli import main

if __name__ == "__main__":
    main()
