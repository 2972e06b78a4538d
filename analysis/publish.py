"""The report as artifacts of the sweep's own run (run_kind=sweep), under `report/`.

MLflow's client cannot delete artifacts, so publishing logs each file of the new report into `report/`, replacing
files of the same name (the artifact store's overwrite semantics), and leaves files of earlier reports that the new
one did not write where they are; `publish` names them so the caller can say so.
"""

from __future__ import annotations

import os

from cluster import conventions as C


def sweep_run_id(client, experiment_id: str) -> str | None:
    """The id of the experiment's sweep run (the oldest run tagged run_kind=sweep), or None when it has none."""
    found = client.search_runs([experiment_id], filter_string=f"tags.{C.TAG_RUN_KIND} = '{C.RUN_KIND_SWEEP}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    return found[0].info.run_id if found else None


def publish(client, run_id: str, paths: list[str]) -> list[str]:
    """Log the files `paths` as artifacts `report/<file name>` of run `run_id`; return the names of the files under
    `report/` that earlier reports left there and this one did not write (sorted)."""
    for path in paths:
        client.log_artifact(run_id, path, C.REPORT_ARTIFACT_DIR)
    written = {os.path.basename(path) for path in paths}
    present = {os.path.basename(item.path) for item in client.list_artifacts(run_id, C.REPORT_ARTIFACT_DIR)
               if not item.is_dir}
    return sorted(present - written)
