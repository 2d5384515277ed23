"""Reading HDF5 files without reading other files: only data stored inside the file.

HDF5 can make a name in one file stand for data elsewhere: an external link
(another HDF5 file), a virtual dataset (assembled from other files; a missing
source reads as the fill value, zeros) and external raw storage (the bytes of
any file, e.g. ``external=[('/etc/passwd', 0, 8)]``). h5py follows all three
silently. nncli reads data files and checkpoints that anyone may hand it, so
it accepts only datasets stored in the file itself, reached through hard links
or soft links that resolve inside the file. Anything else is one error line
naming the file and the dataset; a soft link that dangles or loops is one too.

``get(f, name, ...)`` replaces ``f[name]`` for the objects nncli reads;
``check_file(f, ...)`` walks every link of a file once (checkpoints).
"""

from __future__ import annotations

from typing import Callable

import h5py

from nncli.errors import NncliError

MAX_SOFT_LINKS = 16   # HDF5's own default limit on soft-link hops (H5Pset_nlinks)

ErrorType = Callable[[str], NncliError]


def _outside(where: str, name: str, how: str) -> str:
    return f"{where}: '{name}' {how}; nncli reads only datasets stored in the file itself"


def check_dataset(ds: h5py.Dataset, where: str, name: str, error: ErrorType) -> h5py.Dataset:
    """`ds` if its data is stored in this file; else `error` naming the file and dataset."""
    if ds.is_virtual:
        raise error(_outside(where, name, "is a virtual dataset (its data lives in other files)"))
    if ds.id.get_create_plist().get_external_count() > 0:
        raise error(_outside(where, name, "is stored in another file (external raw storage)"))
    return ds


def _resolve(f: h5py.File, start: h5py.Group, path: str, where: str, name: str, error: ErrorType,
             hops: int):
    """The object at `path` (from `start`, or the root for an absolute path), following hard
    links and in-file soft links only; None where a component does not exist."""
    node = f if path.startswith("/") else start
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise error(_outside(where, name, f"is a link to another file ({link.filename}:{link.path})"))
        if isinstance(link, h5py.SoftLink):
            if hops >= MAX_SOFT_LINKS:
                raise error(f"{where}: '{name}' is a soft link that loops (more than "
                            f"{MAX_SOFT_LINKS} links followed)")
            target = _resolve(f, node, link.path, where, name, error, hops + 1)
            if target is None:
                raise error(f"{where}: '{name}' is a soft link to '{link.path}', which does not exist")
            node = target
        elif isinstance(link, h5py.HardLink):
            node = node[part]
        else:  # pragma: no cover - a link class of a future h5py
            raise error(f"{where}: '{name}' is a link of an unknown kind ({type(link).__name__})")
    return node


def get(f: h5py.File, name: str, where: str, error: ErrorType):
    """``f[name]`` checked to hold only data of this file; None where there is no such name."""
    obj = _resolve(f, f, name, where, name, error, 0)
    if isinstance(obj, h5py.Dataset):
        check_dataset(obj, where, name, error)
    return obj


def dataset_names(f: h5py.Group) -> list[str]:
    """The names of the datasets at the top of `f` reached through hard links (for messages)."""
    out = []
    for key in f:
        if isinstance(f.get(key, getlink=True), h5py.HardLink) and isinstance(f[key], h5py.Dataset):
            out.append(key)
    return out


def check_file(f: h5py.File, where: str, error: ErrorType) -> None:
    """Every link of the file: no external link, every soft link resolving inside the file, and
    every dataset stored in the file (h5py visits each hard-linked object once)."""
    links: list = []
    try:
        if hasattr(f, "visititems_links"):  # h5py >= 3.11
            # collected first: an exception raised inside HDF5's visit callback comes out mangled
            f.visititems_links(lambda name, link: links.append((name, link)))
        else:  # pragma: no cover - older h5py
            _walk(f, "", links, set())
    except (SystemError, RuntimeError, OSError, ValueError, KeyError) as exc:  # a damaged file
        cause = exc.__cause__ or exc.__context__ or exc  # h5py wraps HDF5's error in a SystemError
        first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise error(f"{where}: damaged file: cannot list its contents ({first})") from None
    for name, _ in links:
        get(f, f"/{name}", where, error)  # external and dangling links, outside data: errors


def _walk(group: h5py.Group, prefix: str, links: list, seen: set) -> None:  # pragma: no cover
    for key in group:
        name = f"{prefix}{key}"
        link = group.get(key, getlink=True)
        links.append((name, link))
        if isinstance(link, h5py.HardLink):
            obj = group[key]
            addr = h5py.h5o.get_info(obj.id).addr
            if isinstance(obj, h5py.Group) and addr not in seen:
                seen.add(addr)
                _walk(obj, f"{name}/", links, seen)
