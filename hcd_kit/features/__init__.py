"""Frozen features: a backbone's features of every patch (``hcd embed``) and linear probes on them (``hcd probe``).

    from hcd_kit.features import embed, probe
    embed("data", "uni", "features/uni", tta=2)            # FEATURES/{train,test}_features.npy, resumable
    probe("features/uni", "data", "runs/uni-probe")        # a run folder like `hcd train`'s, with submission.csv

Modules: ``store`` (the feature store's format, read and written), ``embedding`` (``hcd embed``), ``probes``
(``hcd probe``: per-fold logistic regression or a small MLP, written as a run that ``hcd cv``, ``hcd
ensemble`` and ``hcd submit`` take like any other), ``probe_evaluation`` (``hcd evaluate`` of a probe run: the
probes refitted and checked against their OOF, applied to a labelled folder's features). Names load on first use (``hcd_kit.lazy``);
no module is named like a function, so ``features.embed`` is always the function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hcd_kit.lazy import public_api

__all__, __getattr__, __dir__ = public_api(
    __name__,
    {
        "embedding": "EmbedResult PooledFeatures SplitEmbed embed",
        "probe_evaluation": "evaluate_probe",
        "probes": "ProbeFold ProbeResult parse_c probe",
        "store": "FeatureSplit FeatureStore open_features",
    },
)

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from hcd_kit.features.embedding import EmbedResult, PooledFeatures, SplitEmbed, embed
    from hcd_kit.features.probe_evaluation import evaluate_probe
    from hcd_kit.features.probes import ProbeFold, ProbeResult, parse_c, probe
    from hcd_kit.features.store import FeatureSplit, FeatureStore, open_features
