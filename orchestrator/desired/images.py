"""The image catalogue of a desired-state file (`images:`: name, source, sha256,
format; or `kind: ganeti-os`, a Ganeti OS definition on the nodes named
`NAME+VARIANT`, with its `parameters`) and an instance's `cloud_init:` (SSH keys,
user-data), read into `events.specs.ImageSpec` / `CloudInitSpec`; `os:` resolved
against the catalogue (an unknown name is a problem at the `os` value, naming the
entries declared), with an instance's `osparams:` over its definition's parameters.

Pure: no I/O, no logging. Must not raise for any input: problems are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from events.fields.images import MAX_OS_PARAMS
from events.specs import CloudInitSpec, ImageSpec
from orchestrator.desired import schema as s
from orchestrator.desired.schema import At, Problems, YamlMapping

_IMAGE_KEYS = ("name", "kind", "source", "sha256", "format", "parameters")
_IMAGE_ONLY = ("source", "sha256", "format")
_CLOUD_INIT_KEYS = ("ssh_keys", "user_data")
NO_OS = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalogue:
    images: dict[str, ImageSpec]
    broken: frozenset[str]  # names of entries with problems (reported already)


def read_images(problems: Problems, entries: list[tuple[int, Any, At]]) -> Catalogue:
    """The catalogue by name; duplicates and bad entries reported."""
    images: dict[str, ImageSpec] = {}
    broken: set[str] = set()
    first: dict[str, At] = {}
    for _, item, at in entries:
        m = YamlMapping(problems, item, at, allowed=_IMAGE_KEYS, what="an image")
        if not m.ok:
            continue
        name = m.req("name", s.rule(ImageSpec, "name"))
        kind = m.opt("kind", s.rule(ImageSpec, "kind"), "image")
        entry = _definition(problems, m, name) if kind == "ganeti-os" else _image(problems, m, name)
        if name == NO_OS:
            problems.add(m.value_at("name"), f"{NO_OS!r} means no image; name the image otherwise")
            continue
        if name is None or kind is None or entry is None:
            if name is not None:
                broken.add(name)
            continue
        if name in first:
            problems.add(
                m.value_at("name"),
                f"duplicate image name {name!r} (first declared at "
                f"{first[name].line_ref(m.value_at('name'))})",
            )
            continue
        first[name] = m.value_at("name")
        images[name] = entry
    return Catalogue(images=images, broken=frozenset(broken))


def _image(problems: Problems, m: YamlMapping, name: str | None) -> ImageSpec | None:
    source = m.req("source", s.rule(ImageSpec, "source"))
    sha = m.req(
        "sha256",
        s.rule(ImageSpec, "sha256"),
        message="required field 'sha256' is missing: corral writes no image it cannot check",
    )
    fmt = m.opt("format", s.rule(ImageSpec, "format"), "raw")
    ok = True
    if m.has("parameters"):
        problems.add(
            m.key_at("parameters"), "only a Ganeti OS definition (kind: ganeti-os) takes parameters"
        )
        ok = False
    if name is not None and "+" in name:
        problems.add(
            m.value_at("name"),
            f"image name {name!r} must not hold '+': NAME+VARIANT names a Ganeti OS definition "
            "(add `kind: ganeti-os`)",
        )
        ok = False
    if not ok or name is None or source is None or sha is None or fmt is None:
        return None
    return ImageSpec(name=name, source=source, sha256=sha, format=fmt)


def _definition(problems: Problems, m: YamlMapping, name: str | None) -> ImageSpec | None:
    """A Ganeti OS definition: only its name (`NAME+VARIANT` or `NAME`, as
    `gnt-instance add -o` takes it) and its parameters; its directory is found on
    the node when an instance is installed."""
    ok = True
    for key in _IMAGE_ONLY:
        if m.has(key):
            problems.add(
                m.key_at(key),
                f"a Ganeti OS definition (kind: ganeti-os) has no {key}: its create script "
                "installs the OS",
            )
            ok = False
    params = m.opt("parameters", s.rule(ImageSpec, "parameters"), ())
    if not ok or name is None or params is None:
        return None
    return ImageSpec(name=name, kind="ganeti-os", parameters=tuple(params))


def cloud_init(problems: Problems, value: Any, at: At) -> CloudInitSpec | None:
    return cloud_init_over(CloudInitSpec())(problems, value, at)


def cloud_init_over(base: CloudInitSpec) -> s.Parser[CloudInitSpec]:
    """`cloud_init:` whose keys replace those of `base` (the defaults'), key by key."""

    def parse(problems: Problems, value: Any, at: At) -> CloudInitSpec | None:
        m = YamlMapping(problems, value, at, allowed=_CLOUD_INIT_KEYS, what="cloud_init")
        if not m.ok:
            return None
        keys = m.opt("ssh_keys", s.rule(CloudInitSpec, "ssh_keys"), base.ssh_keys)
        user_data = m.opt("user_data", s.rule(CloudInitSpec, "user_data"), base.user_data)
        if keys is None or user_data is None:
            return None
        return CloudInitSpec(ssh_keys=tuple(keys), user_data=user_data)

    return parse


def _with_osparams(
    problems: Problems, m: YamlMapping, image: ImageSpec | None, os_name: str
) -> tuple[bool, ImageSpec | None]:
    """An instance's own `osparams` over its definition's `parameters` (Ganeti's
    `gnt-instance add -O` over the OS's)."""
    own = m.opt("osparams", s.rule(ImageSpec, "parameters"), ())
    if own is None:
        return False, None
    if image is None or not image.ganeti_os:
        problems.add(
            m.key_at("osparams"),
            f"osparams are a Ganeti OS definition's parameters; os {os_name!r} is not a "
            "definition of the catalogue (kind: ganeti-os)",
        )
        return False, None
    merged = {**dict(image.parameters), **dict(own)}
    if len(merged) > MAX_OS_PARAMS:
        problems.add(m.key_at("osparams"), f"at most {MAX_OS_PARAMS} parameters in all")
        return False, None
    return True, replace(image, parameters=tuple(sorted(merged.items())))


def resolve_os(
    problems: Problems,
    m: YamlMapping,
    *,
    os_name: str,
    catalogue: Catalogue,
) -> tuple[bool, ImageSpec | None]:
    """(ok, the image `os` names): `none` is no image; any other name must be in
    the catalogue (reported at the instance's `os`, or the instance when the
    name came from defaults); a definition with the instance's `osparams` over
    its own parameters."""
    image = None if os_name == NO_OS else catalogue.images.get(os_name)
    if m.has("osparams"):
        return _with_osparams(problems, m, image, os_name)
    if os_name == NO_OS:
        return True, None
    if image is not None:
        return True, image
    if os_name in catalogue.broken:
        return False, None  # its entry's problems are reported there
    declared = ", ".join(sorted(catalogue.images)[:10]) or "none (add an `images:` section)"
    problems.add(
        m.value_at("os") if m.has("os") else m.at,
        f"os {os_name!r} is not an image or OS definition of the catalogue; declared images: "
        f"{declared} "
        f"(or `os: {NO_OS}` for a blank disk)",
    )
    return False, None
