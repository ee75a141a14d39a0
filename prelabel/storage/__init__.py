"""Reading images where teams keep them: public URLs, private S3 and GCS buckets.

The layer sits below the Segments connector and never imports it: plain HTTP(S) goes through a
callable it is given (the Segments client's download), and the URL Segments signs for an image
is asked for through another, only after a refused read. boto3 and google-cloud-storage are
optional (the ``s3`` and ``gcs`` extras) and imported only when such a URL is met.
See :mod:`prelabel.storage.reader` for the rules.
"""

from __future__ import annotations

from prelabel.storage.reader import HttpGet, ImageReader, SignedUrl
from prelabel.storage.urls import BucketObject, HttpObject, display_url, parse_url

__all__ = [
    "BucketObject",
    "HttpGet",
    "HttpObject",
    "ImageReader",
    "SignedUrl",
    "display_url",
    "parse_url",
]
