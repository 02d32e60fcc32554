"""`rehost bucket`: the object storage MGN's import and export read and write (`rehost.objectstore`).

StartImport reads a CSV file from a bucket and StartExport writes one; with rehost's default storage a
bucket is a directory under the data directory, and these commands put files there and get them back:

    rehost bucket put migration-plans wave1.csv ./wave1.csv     # creates the bucket if needed
    aws mgn start-import --s3-bucket-source s3Bucket=migration-plans,s3Key=wave1.csv
    rehost bucket get migration-plans exports/inventory.csv ./inventory.csv
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rehost.errors import InvalidInput
from rehost.objectstore import MAX_OBJECT_BYTES, check_bucket, check_key, for_data_dir


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bucket", help="put files into, and get them from, the buckets MGN imports "
                                                  "from and exports to")
    sub = parser.add_subparsers(dest="bucket_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("create", help="create a bucket")
    p.add_argument("bucket", metavar="BUCKET")
    _data_dir(p)
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("put", help="store a file as BUCKET/KEY (creating the bucket if needed); FILE - is stdin")
    p.add_argument("bucket", metavar="BUCKET")
    p.add_argument("key", metavar="KEY")
    p.add_argument("file", metavar="FILE")
    _data_dir(p)
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("get", help="write BUCKET/KEY to FILE (default: stdout)")
    p.add_argument("bucket", metavar="BUCKET")
    p.add_argument("key", metavar="KEY")
    p.add_argument("file", metavar="FILE", nargs="?", default="-")
    _data_dir(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("ls", help="list a bucket's keys and sizes (JSON)")
    p.add_argument("bucket", metavar="BUCKET")
    _data_dir(p)
    p.set_defaults(func=cmd_ls)


def _data_dir(p: argparse.ArgumentParser) -> None:
    default = os.environ.get("REHOST_DATA_DIR")
    p.add_argument("--data-dir", default=default, required=default is None, metavar="D")


def cmd_create(args: argparse.Namespace) -> int:
    for_data_dir(Path(args.data_dir)).create_bucket(args.bucket)
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    check_bucket(args.bucket)
    check_key(args.key)
    if args.file == "-":
        data = sys.stdin.buffer.read(MAX_OBJECT_BYTES + 1)
    else:
        try:
            with open(args.file, "rb") as f:
                data = f.read(MAX_OBJECT_BYTES + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read {args.file}: {exc.strerror}") from None
    if len(data) > MAX_OBJECT_BYTES:
        raise InvalidInput(f"{args.file} is larger than {MAX_OBJECT_BYTES} bytes")
    store = for_data_dir(Path(args.data_dir))
    store.create_bucket(args.bucket)
    store.put(args.bucket, args.key, data)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    data = for_data_dir(Path(args.data_dir)).get(args.bucket, args.key)
    if args.file == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        try:
            Path(args.file).write_bytes(data)
        except OSError as exc:
            raise InvalidInput(f"cannot write {args.file}: {exc.strerror}") from None
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    items = for_data_dir(Path(args.data_dir)).list(args.bucket)
    print(json.dumps({"Contents": [{"Key": key, "Size": size} for key, size in items]}, indent=2))
    return 0
