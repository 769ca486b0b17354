"""The baseline of scenario 5: a plain script with the same SDK that lists every object and
downloads one named object (what a hand-written "fetch what changed" script costs at least).

    python bench/perfkit/store_baseline.py oss ENDPOINT BUCKET PREFIX KEY DEST
    python bench/perfkit/store_baseline.py azure SHARE PATH CONCURRENCY FILE DEST

Credentials come from the environment as for dagsync. OSS lists with ``ObjectIteratorV2``
(1,000 keys a page); Azure walks the directory tree with a pool of CONCURRENCY threads (one
listing per directory, as dagsync does), then ``download_file`` the one file.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path


def oss(endpoint: str, bucket_name: str, prefix: str, key: str, dest: str) -> int:
    import oss2

    auth = oss2.Auth(os.environ["OSS_ACCESS_KEY_ID"], os.environ["OSS_ACCESS_KEY_SECRET"])
    bucket = oss2.Bucket(auth, endpoint, bucket_name)
    listed = sum(1 for _ in oss2.ObjectIteratorV2(bucket, prefix=prefix, max_keys=1000))
    bucket.get_object_to_file(prefix + key, dest)
    return listed


def azure(share_name: str, path: str, concurrency: str, file: str, dest: str) -> int:
    from azure.storage.fileshare import ShareClient

    share = ShareClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"], share_name
    )

    def listing(folder: str) -> tuple[int, list[str]]:
        files, dirs = 0, []
        for item in share.get_directory_client(folder).list_directories_and_files():
            if item["is_directory"]:
                dirs.append(f"{folder}/{item.name}")
            else:
                files += 1
        return files, dirs

    listed = 0
    with ThreadPoolExecutor(int(concurrency)) as pool:
        pending = {pool.submit(listing, path)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                files, dirs = future.result()
                listed += files
                pending |= {pool.submit(listing, d) for d in dirs}
    with open(dest, "wb") as fh:
        share.get_file_client(f"{path}/{file}").download_file().readinto(fh)
    return listed


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    count = {"oss": oss, "azure": azure}[kind](*args)
    if Path(args[-1]).stat().st_size == 0 or count == 0:
        sys.exit("nothing listed or downloaded")
