"""Backbones beyond timm's own names: the registry of pathology foundation models, the hub's reachability.

``registry`` knows each foundation model's hub id, the ``create_model`` arguments timm alone does not know,
its input size, normalisation, licence and cost; ``resolve(spec)`` turns whatever ``--model`` holds (a
registry name, a timm name, ``hf-hub:ORG/NAME``, ``local-dir:/path``) into one ``Backbone``. ``hub`` decides,
before timm tries, whether weights can come from the Hugging Face hub at all, so an offline machine fails in
one line instead of a minute of retries. ``hcd_kit.model.create_model`` is the one factory that builds them.
"""

from hcd_kit.backbones.registry import Backbone, Entry, entries, get_entry, resolve

__all__ = ["Backbone", "Entry", "entries", "get_entry", "resolve"]
