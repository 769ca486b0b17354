"""The azure source: an Azure Files share through azure-storage-file-share (``source``), with
the credential chosen and read without the SDK (``auth``: a connection string, or an account
key / SAS file re-read every pass)."""

from dagsync.sources.azure.source import AzureSource

__all__ = ["AzureSource"]
