"""HTML of incoming mail, made safe to show: ``clean`` keeps the markup a
letter is read with (nh3: no scripts, no event handlers, no forms, no
``javascript:`` links) and is applied once, when the letter is imported;
``without_remote_images`` is applied when it is shown, unless the reader
asked for the images: a remote image tells the sender that and when the
letter was opened (a tracking pixel), so it is replaced by its alt text.
"""

from __future__ import annotations

import re

import nh3

#: what a letter is allowed to keep
URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
MAX_HTML = 2_000_000


def clean(html: str) -> str:
    """The letter's HTML without anything that runs or submits."""
    return nh3.clean(
        html[:MAX_HTML],
        clean_content_tags={"script", "style", "title", "head"},
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )


def _drop_remote(tag: str, attribute: str, value: str) -> str | None:
    if attribute in ("src", "srcset", "background", "poster") and (
        _REMOTE.match(value) or attribute == "srcset"
    ):
        return None
    return value


def without_remote_images(html: str) -> str:
    """The cleaned HTML with every image that would load from the network
    left without its address (the alt text stays)."""
    return nh3.clean(
        html,
        clean_content_tags={"script", "style"},
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        attribute_filter=_drop_remote,
    )


def has_remote_images(html: str | None) -> bool:
    return (
        bool(html)
        and re.search(r"<img[^>]+src\s*=\s*\"?\s*(https?:)?//", html or "", re.I) is not None
    )
