"""The pyarrow filesystem of a storage URI, with retries on S3.

A bucket answers now and then with a throttle (503 SlowDown), a server error
(500 InternalError) or a dropped connection. The AWS SDK under pyarrow's
S3FileSystem retries those with exponential backoff, up to
``RAYLTH_S3_MAX_ATTEMPTS`` attempts (default 10) per request. What still
fails after them is reported by remote.py as one line.

One such error the SDK does not retry: pyarrow reads an object into a
buffer of the size it asks for, and an error reply longer than that (a
SlowDown's XML on a read of a small file) fails as "Failed to flush response
stream", marked final. ``reading`` retries those reads the way the SDK would.
"""

from __future__ import annotations

import os
import random
import re
import time

from pyarrow import fs as pafs

from raylth.errors import StoreError

MAX_ATTEMPTS_VARIABLE = "RAYLTH_S3_MAX_ATTEMPTS"
DEFAULT_MAX_ATTEMPTS = 10

# What the SDK retries, as pyarrow's messages name it: its retryable error types and any 5xx or 429 status.
_TRANSIENT = re.compile(r"AWS Error (SLOW_DOWN|THROTTLING|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|NETWORK_CONNECTION"
                        r"|REQUEST_TIMEOUT)\b|HTTP status (5\d\d|429)\b")
_UNRETRIED_READ = "Failed to flush response stream"


def max_attempts() -> int:
    """Attempts per S3 request: $RAYLTH_S3_MAX_ATTEMPTS, else 10."""
    raw = os.environ.get(MAX_ATTEMPTS_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_ATTEMPTS
    if not raw.isdigit() or int(raw) < 1:
        raise StoreError(f"{MAX_ATTEMPTS_VARIABLE}={raw!r}: give a whole number of attempts of at least 1 "
                         f"(unset: {DEFAULT_MAX_ATTEMPTS})")
    return int(raw)


def is_transient(err: OSError) -> bool:
    """An error of the kind the SDK retries: when it reaches us, its attempts are spent."""
    return bool(_TRANSIENT.search(str(err)))


def reading(read, attempts: int | None):
    """``read()``, again after a failed read the SDK left unretried (up to ``attempts`` in all), after
    the SDK's standard backoff: a random wait of up to 1, 2, 4 ... 20 s."""
    tries = attempts or 1
    for attempt in range(tries):
        try:
            return read()
        except OSError as err:
            if _UNRETRIED_READ not in str(err) or attempt + 1 == tries:
                raise
            time.sleep(random.uniform(0, min(2 ** attempt, 20)))


def open_filesystem(uri: str):
    """(filesystem, path in it) of ``uri``; an s3:// one retries with the SDK's standard strategy."""
    filesystem, path = pafs.FileSystem.from_uri(uri)
    if filesystem.type_name == "s3":
        # from_uri takes no retry strategy; its pickled state is every option it read from the URI
        # (endpoint, region, scheme, credentials), so rebuild from that
        filesystem = RetryingS3FileSystem(max_attempts(), filesystem.__reduce__()[1][0])
    return filesystem, path


class RetryingS3FileSystem(pafs.S3FileSystem):
    """S3FileSystem(**options) retrying each request up to ``attempts`` times, also once pickled: Ray
    sends Tune's storage filesystem to its workers, and pyarrow's own pickling drops the strategy."""

    def __init__(self, attempts: int, options: dict):
        super().__init__(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts), **options)
        self.attempts = attempts

    def __reduce__(self):
        return RetryingS3FileSystem, (self.attempts, super().__reduce__()[1][0])
