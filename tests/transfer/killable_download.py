"""Downloads one file of a (fake) hub with the engine; ``test_sigkill`` runs it as a
separate process so that it can be killed with SIGKILL mid-file.

    python -m tests.transfer.killable_download ENDPOINT REPO FILENAME DEST

Prints the result as JSON on success.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from models_app import fetch_guard
from models_app.transfer import DownloadOptions, HfFile, download_hf_file


def main(endpoint: str, repo_id: str, filename: str, dest: str) -> None:
    # No Django here: the fake hub and its CDN on 127.0.0.1 are allowed directly.
    allow = fetch_guard.AllowList.parse(["127.0.0.0/8"])
    fetch_guard.configure(lambda: fetch_guard.FetchPolicy(allow=allow))
    source = HfFile(repo_id, filename, endpoint=endpoint)
    result = download_hf_file(source, Path(dest), DownloadOptions(space_margin=0))
    print(json.dumps({"sha256": result.sha256, "resumed_from": result.resumed_from}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
