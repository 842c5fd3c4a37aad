"""`vigil web user`: add or replace a review-page user in a users file (`web.users_file`).

The password is read from the terminal without echo (`getpass`), or from the first line of
standard input when it is not a terminal (scripts, configuration management); it is stored
hashed with scrypt (`auth.hash_password`), never as given. The file is written 0600.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from .auth import set_user

MIN_PASSWORD_CHARS = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("web", help="the review page's users (web.users_file)")
    sub = p.add_subparsers(dest="web_verb", metavar="ACTION")
    sub.required = True
    q = sub.add_parser("user", help="add or replace a user (password hashed with scrypt)")
    q.add_argument("--users-file", type=Path, required=True, help="the users file (created 0600)")
    q.add_argument("name", help="user name: 1 to 64 of A-Z a-z 0-9 _ . @ -")
    q.set_defaults(func=_user)


def _user(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ; nothing written", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_CHARS:
        print(f"a password needs at least {MIN_PASSWORD_CHARS} characters; nothing written",
              file=sys.stderr)
        return 1
    set_user(args.users_file, args.name, password)
    print(f"{args.name}: written to {args.users_file}")
    return 0
