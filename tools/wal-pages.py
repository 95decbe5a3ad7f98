#!/usr/bin/env python3
"""Which tables and indexes each commit in a SQLite write-ahead log dirties.

Usage:
    tools/wal-pages.py DB                 (reads DB-wal beside it)
    tools/wal-pages.py --json DB
    tools/wal-pages.py --last N DB        (only the log's last N commits)

Reads the frames of DB's write-ahead log that belong to its current generation
(those carrying the salts of the log's header, up to the first that does not),
groups them into transactions at each commit frame, and leaves out the frames
after the last commit (a transaction still being written). Every page number is
then mapped to the table or index that owns it now, through SQLite's `dbstat`
table on a copy of DB and its log, so the files themselves are only read. It
prints the commits, the frames per commit, and the distinct pages per commit by
tree and page type (leaf, internal, overflow). Page 1 is named `page 1 (header)`:
besides being the schema's root, it holds the database's size, which a commit
that grows the file rewrites. A page no tree owns any longer is `(free)`.

A running otpd's files are consistent between two of its writes, so stop it for
the copy:
    kill -STOP $PID; cp otpd.sqlite3 otpd.sqlite3-wal /tmp/snap/; kill -CONT $PID
    tools/wal-pages.py /tmp/snap/otpd.sqlite3

BENCHMARKS.md ("Where the CPU goes now") has what it showed for
`otpd-httpbench`.
"""

import collections
import json
import os
import shutil
import sqlite3
import struct
import sys
import tempfile

WAL_HEADER = 32
FRAME_HEADER = 24
MAGIC = (0x377F0682, 0x377F0683)


def read_commits(wal_path):
    """(page size, [[page numbers of one transaction, in frame order], ...])."""
    with open(wal_path, "rb") as f:
        wal = f.read()
    if len(wal) < WAL_HEADER:
        return 0, []
    magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = struct.unpack(
        ">8I", wal[:WAL_HEADER]
    )
    if magic not in MAGIC:
        sys.exit(f"{wal_path}: not a SQLite write-ahead log (magic {magic:#x})")
    commits, current = [], []
    at = WAL_HEADER
    while at + FRAME_HEADER + page_size <= len(wal):
        page, size_after, s1, s2 = struct.unpack(">4I", wal[at : at + 16])
        if (s1, s2) != (salt1, salt2):
            break
        current.append(page)
        if size_after:
            commits.append(current)
            current = []
        at += FRAME_HEADER + page_size
    return page_size, commits


def page_owners(db_path, wal_path):
    """Page number -> (tree, page type), read from a copy of the database."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "copy.db")
        shutil.copyfile(db_path, copy)
        if os.path.exists(wal_path):
            shutil.copyfile(wal_path, copy + "-wal")
        conn = sqlite3.connect(copy)
        try:
            rows = conn.execute("SELECT name, pageno, pagetype FROM dbstat").fetchall()
        finally:
            conn.close()
    owners = {page: (name, kind) for name, page, kind in rows}
    owners[1] = ("page 1 (header)", owners.get(1, ("", "leaf"))[1])
    return owners


def census(db_path, last=None):
    wal_path = db_path + "-wal"
    page_size, commits = read_commits(wal_path)
    if last is not None:
        commits = commits[-last:]
    owners = page_owners(db_path, wal_path)
    pages = collections.Counter()
    for commit in commits:
        for page in set(commit):
            pages[owners.get(page, ("(free)", ""))] += 1
    n = len(commits)
    frames = sum(len(c) for c in commits)
    return {
        "page_size": page_size,
        "commits": n,
        "frames": frames,
        "frames_per_commit": frames / n if n else 0.0,
        "pages_per_commit": sum(len(set(c)) for c in commits) / n if n else 0.0,
        "by_tree": [
            {"tree": tree, "type": kind, "per_commit": count / n}
            for (tree, kind), count in sorted(pages.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


def main(args):
    as_json, last = False, None
    while args and args[0].startswith("--"):
        if args[0] == "--json":
            as_json, args = True, args[1:]
        elif args[0] == "--last" and len(args) > 1 and args[1].isdigit() and int(args[1]) > 0:
            last, args = int(args[1]), args[2:]
        else:
            sys.exit(__doc__)
    if len(args) != 1:
        sys.exit(__doc__)
    report = census(args[0], last)
    if as_json:
        print(json.dumps(report))
        return
    print(
        f"{report['commits']} commits, {report['frames_per_commit']:.2f} frames and "
        f"{report['pages_per_commit']:.2f} distinct pages per commit "
        f"({report['page_size']}-byte pages)"
    )
    for row in report["by_tree"]:
        print(f"{row['per_commit']:8.2f}  {row['tree']} ({row['type']})")


if __name__ == "__main__":
    main(sys.argv[1:])
