from django.db import models


class SourceKind(models.TextChoices):
    HF = "hf", "Hugging Face hub"
    URL = "url", "URL"
    PATH = "path", "Path on a node"


class DownloadState(models.TextChoices):
    QUEUED = "queued", "Queued"
    DOWNLOADING = "downloading", "Downloading"
    VERIFYING = "verifying", "Verifying"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    DELETING = "deleting", "Deleting"


# A copy in one of these states holds its path: no second download of it may start.
ACTIVE_STATES = (DownloadState.QUEUED, DownloadState.DOWNLOADING, DownloadState.VERIFYING)
HOLDING_STATES = (*ACTIVE_STATES, DownloadState.READY, DownloadState.DELETING)
# An operator may delete these from disk (an active download is cancelled first).
DELETABLE_STATES = (DownloadState.READY, DownloadState.FAILED, DownloadState.CANCELLED)
