"""Repository URLs: which are local, credentials taken out of them, relative submodule URLs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# git's scp-like form: [user@]host:path, with no slash before the first colon.
SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?:\[[^\]]+\]|[^/:]+):")
HTTP_SCHEMES = ("http", "https")
SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")


@dataclass(frozen=True)
class RepoUrl:
    """A URL as git is given it, and the basic-auth user-info taken out of an http(s) URL."""

    url: str
    username: str | None = None
    password: str | None = None


def split_userinfo(url: str) -> RepoUrl:
    """``https://user:TOKEN@host/r.git`` -> ``https://host/r.git`` + user + token (decoded), so
    the token never reaches git's argv. ssh URLs keep their user: it is the ssh login."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in HTTP_SCHEMES or "@" not in parts.netloc:
        return RepoUrl(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return RepoUrl(bare, unquote(user) or None, unquote(password) if sep else None)


def is_local(url: str) -> bool:
    """Whether git reaches ``url`` through its file transport (file:// or a plain path)."""
    if SCHEME.match(url):
        return url.lower().startswith("file://")
    return not SCP_LIKE.match(url)


def is_ssh(url: str) -> bool:
    if SCHEME.match(url):
        return url.split("://", 1)[0].lower() in SSH_SCHEMES
    return not is_local(url)  # scp-like host:path


def resolve_submodule_url(parent: str, url: str) -> str:
    """A relative submodule URL (``../lib.git``) is relative to the superproject's URL."""
    if not url.startswith(("./", "../")):
        return url
    base = parent.rstrip("/")
    # The path part starts after scheme://host, or after host: in the scp-like form.
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*", base) or re.match(r"^[^/:]+:", base)
    floor = m.end() if m else 0
    while url.startswith(("./", "../")):
        if url.startswith("./"):
            url = url[2:]
            continue
        url = url[3:]
        cut = base.rfind("/", floor)
        base = base[:cut] if cut >= floor else base[:floor]
    return base + url if base.endswith((":", "/")) else f"{base}/{url}"
