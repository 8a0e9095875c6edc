"""Kaggle: every call to the official client (download, submit, kernels, datasets) and the submission ledger.

    from hcd_kit.kaggle import download_competition, submit_file
"""

from hcd_kit.kaggle.dataset import build_dataset, push_dataset
from hcd_kit.kaggle.download import download_competition
from hcd_kit.kaggle.kernel import KernelSpec, kernel_output, kernel_status, push_kernel, render_kernel
from hcd_kit.kaggle.ledger import LedgerRecord, read_ledger
from hcd_kit.kaggle.submit import refresh_ledger, submit_file, wait_for_score

__all__ = [
    "KernelSpec", "LedgerRecord", "build_dataset", "download_competition", "kernel_output", "kernel_status",
    "push_dataset", "push_kernel", "read_ledger", "refresh_ledger", "render_kernel", "submit_file", "wait_for_score",
]
