#!/usr/bin/env python3
"""Checks the links of a built mdBook (offline): every relative href/src must name a file of
the book, and every #fragment an id (or name) in the page it points to. External links
(http, https, mailto, file) are not followed: the book must not depend on them to make sense.
Exit 1 with one line per broken link, 0 when there is none.

    scripts/check-links.py target/book
"""
import html.parser
import os
import sys
import urllib.parse

SKIP_SCHEMES = ("http:", "https:", "mailto:", "file:", "javascript:", "data:")
# mdBook's own pages and assets, not written by us.
SKIP_FILES = {"print.html", "404.html", "toc.html"}


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("id", "name"):
            if a.get(k):
                self.ids.add(a[k])
        for k in ("href", "src"):
            if a.get(k) is not None:
                self.links.append((tag, a[k]))


def parse(path, cache={}):
    if path not in cache:
        p = Page()
        with open(path, encoding="utf-8") as f:
            p.feed(f.read())
        cache[path] = p
    return cache[path]


def main(root):
    root = os.path.abspath(root)
    broken, checked = [], 0
    for d, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".html") or name in SKIP_FILES:
                continue
            page = os.path.join(d, name)
            rel_page = os.path.relpath(page, root)
            for tag, link in parse(page).links:
                if not link or link.startswith(SKIP_SCHEMES) or link.startswith("//"):
                    continue
                url = urllib.parse.urlsplit(link)
                target = page if not url.path else os.path.normpath(os.path.join(d, urllib.parse.unquote(url.path)))
                if os.path.isdir(target):
                    target = os.path.join(target, "index.html")
                checked += 1
                if not os.path.exists(target):
                    broken.append(f"{rel_page}: {link}: no such file")
                    continue
                if url.fragment and target.endswith(".html"):
                    frag = urllib.parse.unquote(url.fragment)
                    if frag not in parse(target).ids:
                        broken.append(f"{rel_page}: {link}: no anchor #{frag} in {os.path.relpath(target, root)}")
    for b in sorted(set(broken)):
        print(b)
    print(f"{checked} links checked, {len(set(broken))} broken", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/book"))
