"""The `seed-write` and `seed-remove` verbs: an instance's cloud-init NoCloud seed,
a FAT image labelled `cidata` holding `meta-data`, `user-data` and
`network-config` (the texts the orchestrator generated), written to the helper's
own path for that instance, /var/lib/corral/seed/NAME.img (root, 0600, in a 0700
directory), which `vm-start` with `"seed": true` attaches read-only; and removed
from there once the instance's copy leaves the node (removed, moved, renamed).

Standard library only; acts only through the environment protocol. The caller
sends texts, never a path or a filesystem: the helper builds the image itself.
"""

from __future__ import annotations

from collections.abc import Callable

from nodehelper.devices import seed_path
from nodehelper.env import NodeEnv, Outcome
from nodehelper.fields import Refused, check_name, check_object, check_text, parse_json_body
from nodehelper.vfat import fat_image

SEED_LABEL = "cidata"
SEED_TEXT_MAX = 128 * 1024
SEED_FILES = (
    ("meta_data", "meta-data"),
    ("user_data", "user-data"),
    ("network_config", "network-config"),
)


def seed_request(value: object) -> tuple[str, list[tuple[str, bytes]]]:
    """{name, meta_data, user_data, network_config} -> (name, the image's files)."""
    doc = check_object(
        value, what="seed-write", required=frozenset({"name", *(k for k, _ in SEED_FILES)})
    )
    name = check_name(doc["name"], what="instance name")
    files = []
    for key, file in SEED_FILES:
        text = check_text(doc[key], what=key, limit=SEED_TEXT_MAX)
        if "\0" in text:
            raise Refused(f"{key} must not hold NUL characters")
        files.append((file, text.encode()))
    return name, files


def seed_write(args: list[str], options: list[str], stdin: bytes) -> Callable[[NodeEnv], Outcome]:
    name, files = seed_request(parse_json_body(stdin, what="seed-write", limit=512 * 1024))
    try:
        image = fat_image(SEED_LABEL, files)
    except ValueError as exc:
        raise Refused(f"seed-write: {exc}") from None
    path = seed_path(name)

    def act(env: NodeEnv) -> Outcome:
        env.write_private(path, image)
        return Outcome(0, f"wrote {path} ({len(image)} bytes)\n".encode())

    return act


def seed_remove(args: list[str], options: list[str], stdin: bytes) -> Callable[[NodeEnv], Outcome]:
    """Remove NAME's seed image; an absent one is fine (the verb is repeatable)."""
    path = seed_path(check_name(args[0], what="instance name"))

    def act(env: NodeEnv) -> Outcome:
        gone = env.remove_file(path)
        return Outcome(0, (f"removed {path}\n" if gone else f"{path} was absent\n").encode())

    return act
