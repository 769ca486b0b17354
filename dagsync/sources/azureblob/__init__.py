"""The azureblob source: Azure Blob Storage through azure-storage-blob (``source``), with Get
Blob on a lean path when the credential is a key or a SAS (``reads``)."""

from dagsync.sources.azureblob.source import AzureBlobSource

__all__ = ["AzureBlobSource"]
