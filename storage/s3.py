"""S3 object store through the minio SDK (production: MinIO)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import BinaryIO

import urllib3
from minio import Minio
from minio.error import S3Error

from storage.base import HashingReader, NoSuchObject, ObjectInfo, StoredObject
from storage.keys import is_valid

PART_SIZE = 16 * 1024 * 1024


class S3Store:
    def __init__(self, *, endpoint: str, access_key: str, secret_key: str, bucket: str, region: str = "us-east-1",
                 secure: bool = True) -> None:
        http = urllib3.PoolManager(maxsize=16, retries=urllib3.Retry(total=3, backoff_factor=0.2,
                                                                     status_forcelist=[500, 502, 503, 504]))
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region,
                            http_client=http)
        self.bucket = bucket
        if not self.client.bucket_exists(bucket):
            try:
                self.client.make_bucket(bucket, location=region)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def _check(self, key: str) -> None:
        if not is_valid(key):
            raise ValueError("invalid object key")

    def put(self, key: str, stream: BinaryIO, *, content_type: str = "application/octet-stream",
            length: int | None = None) -> StoredObject:
        """Upload; of unknown length it goes multipart in PART_SIZE parts, hashed as it streams."""
        self._check(key)
        reader = HashingReader(stream)
        if length is None:
            self.client.put_object(self.bucket, key, reader, -1, content_type=content_type, part_size=PART_SIZE)
        else:
            self.client.put_object(self.bucket, key, reader, length, content_type=content_type)
        return StoredObject(key=key, size=reader.size, sha256=reader.digest.hexdigest())

    def get(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        self._check(key)
        try:
            resp = self.client.get_object(self.bucket, key, offset=start, length=length or 0)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise NoSuchObject(key) from None
            raise

        def chunks() -> Iterator[bytes]:
            try:
                yield from resp.stream(256 * 1024)
            finally:
                resp.close()
                resp.release_conn()

        return chunks()

    def read(self, key: str, *, start: int = 0, length: int | None = None) -> bytes:
        return b"".join(self.get(key, start=start, length=length))

    def stat(self, key: str) -> ObjectInfo:
        self._check(key)
        try:
            st = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                raise NoSuchObject(key) from None
            raise
        return ObjectInfo(key=key, size=st.size or 0, content_type=st.content_type, modified=st.last_modified)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NoSuchObject:
            return False
        return True

    def delete(self, key: str) -> None:
        self._check(key)
        self.client.remove_object(self.bucket, key)

    def list(self, prefix: str = "") -> Iterator[str]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if obj.object_name:
                yield obj.object_name

    def presigned_get(self, key: str, *, expires_seconds: int = 300) -> str:
        self._check(key)
        return self.client.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_seconds))
