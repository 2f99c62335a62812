"""Object storage for DICOM files, recordings and documents (filesystem or S3 through the minio SDK)."""
