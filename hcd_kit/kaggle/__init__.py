"""Kaggle: every call to the official client (download, submit, kernels, datasets) and the submission ledger.

    from hcd_kit.kaggle import download_competition, submit_file, api
    download_competition("data")                       # DIR/train, DIR/test, the CSVs (resumable)
    rec = submit_file("sub.csv", "try 1", "data/sample_submission.csv", "histopathologic-cancer-detection",
                      ledger_path(None))   # checked, uploaded, recorded in submissions/ledger.jsonl
    api.call("list my datasets", lambda: api.get_api().dataset_list(mine=True))  # the gateway, for new calls

``timeout`` is always the time limit of one call (default ``$HCD_KAGGLE_TIMEOUT`` or 120 s);
``transfer_timeout`` bounds a whole upload or download done in one call of the client, ``stall_timeout``
the time a streamed download may go without a new byte, and ``wait_timeout`` a wait over many polls.

Names load on first use (``hcd_kit.lazy``), so importing one module of the package imports no more than it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hcd_kit.lazy import public_api

__all__, __getattr__, __dir__ = public_api(
    __name__,
    {
        "dataset": "DatasetResult WHEEL_DATASET build_dataset build_wheel check_slug push_dataset",
        "fanout": "FanoutPlan FanoutRun FoldKernel fanout_specs push_folds run_fanout",
        "download": "DownloadResult check_competition download_competition",
        "kernel": "KernelStatus PushResult kernel_output kernel_ref kernel_status push_kernel render_kernel",
        "ledger": "LedgerRecord append_record ledger_path read_ledger update_records write_ledger",
        "run": "KernelRun RunHooks RunOptions log_tail read_last_push run_kernel",
        "spec": "KernelSpec check_spec default_name kernel_spec",
        "submit": "refresh_ledger submit_file wait_for_score",
    },
)

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from hcd_kit.kaggle.dataset import (
        WHEEL_DATASET,
        DatasetResult,
        build_dataset,
        build_wheel,
        check_slug,
        push_dataset,
    )
    from hcd_kit.kaggle.download import DownloadResult, check_competition, download_competition
    from hcd_kit.kaggle.fanout import FanoutPlan, FanoutRun, FoldKernel, fanout_specs, push_folds, run_fanout
    from hcd_kit.kaggle.kernel import (
        KernelStatus,
        PushResult,
        kernel_output,
        kernel_ref,
        kernel_status,
        push_kernel,
        render_kernel,
    )
    from hcd_kit.kaggle.ledger import (
        LedgerRecord,
        append_record,
        ledger_path,
        read_ledger,
        update_records,
        write_ledger,
    )
    from hcd_kit.kaggle.run import KernelRun, RunHooks, RunOptions, log_tail, read_last_push, run_kernel
    from hcd_kit.kaggle.spec import KernelSpec, check_spec, default_name, kernel_spec
    from hcd_kit.kaggle.submit import refresh_ledger, submit_file, wait_for_score
