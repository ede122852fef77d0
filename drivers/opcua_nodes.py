"""Parse configured OPC UA node references and resolve them on a server.

A configured reference never holds a bare namespace index, because a server
may number its namespaces differently after a restart. Node ids name their
namespace by URI (``nsu=urn:vendor:sensors;s=Motor4.Temperature``); browse
paths name each element's namespace the same way
(``{urn:vendor:sensors}Motor4``). Both are turned into concrete node ids
with the server's current NamespaceArray, which the driver reads again
after every reconnect.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asyncua import Client, ua

from drivers.errors import DriverConfigError
from drivers.spec import OpcUaNodeRef

_NSU_NODE_ID = re.compile(r"^nsu=(?P<uri>[^;]+);(?P<kind>[sigb])=(?P<ident>.+)$")
_NS0_NODE_ID = re.compile(r"^(?:ns=0;)?(?P<kind>[sigb])=(?P<ident>.+)$")
_INDEXED_NODE_ID = re.compile(r"^ns=(?P<index>\d+);")
_BROWSE_ELEMENT = re.compile(r"^(?:\{(?P<uri>[^{}]+)\})?(?P<name>[^{}]+)$")

STANDARD_NAMESPACE_URI = "http://opcfoundation.org/UA/"


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedNodeId:
    """A node id split into its namespace URI and ``kind=identifier`` text."""

    namespace_uri: str
    identifier: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedBrowseElement:
    """One qualified name of a browse path."""

    namespace_uri: str
    name: str


def parse_node_id(text: str, *, device: str, where: str) -> ParsedNodeId:
    """Split a configured node id into namespace URI and identifier.

    Raises:
        DriverConfigError: the node id uses a namespace index other than 0,
            or matches none of the accepted forms.
    """
    if match := _NSU_NODE_ID.match(text):
        return ParsedNodeId(
            namespace_uri=match["uri"],
            identifier=f"{match['kind']}={match['ident']}",
        )
    if match := _NS0_NODE_ID.match(text):
        return ParsedNodeId(
            namespace_uri=STANDARD_NAMESPACE_URI,
            identifier=f"{match['kind']}={match['ident']}",
        )
    if _INDEXED_NODE_ID.match(text):
        raise DriverConfigError(
            f"device {device!r}: {where}: node id {text!r} names its namespace "
            "by index, which can change when the server restarts; expected "
            "the namespace URI form 'nsu=URI;s=Name' (or i=, g=, b=)",
            device=device,
        )
    raise DriverConfigError(
        f"device {device!r}: {where}: invalid node id {text!r}; expected "
        "'nsu=URI;s=Name' (or i=, g=, b= after the URI), or 'i=NUMBER' in "
        "the standard namespace",
        device=device,
    )


def parse_browse_path(
    elements: Sequence[str], *, device: str, where: str
) -> tuple[ParsedBrowseElement, ...]:
    """Split configured browse path elements into URI and name.

    An element without ``{uri}`` is in the standard namespace (index 0).

    Raises:
        DriverConfigError: the path is empty or an element is malformed.
    """
    if not elements:
        raise DriverConfigError(
            f"device {device!r}: {where}: empty browse path; expected at least "
            "one element such as '{urn:vendor:sensors}Motor4'",
            device=device,
        )
    parsed = []
    for element in elements:
        match = _BROWSE_ELEMENT.match(element)
        if match is None:
            raise DriverConfigError(
                f"device {device!r}: {where}: invalid browse path element "
                f"{element!r}; expected '{{namespace-uri}}Name' or 'Name'",
                device=device,
            )
        parsed.append(
            ParsedBrowseElement(
                namespace_uri=match["uri"] or STANDARD_NAMESPACE_URI,
                name=match["name"],
            )
        )
    return tuple(parsed)


def check_node_ref(ref: OpcUaNodeRef, *, device: str, where: str) -> None:
    """Check a reference before any I/O.

    Raises:
        DriverConfigError: neither or both of node id and browse path are
            set, or the one that is set is malformed.
    """
    if (ref.node_id is None) == (ref.browse_path is None):
        raise DriverConfigError(
            f"device {device!r}: {where}: expected exactly one of node_id and "
            f"browse_path, found {'both' if ref.node_id else 'neither'}",
            device=device,
        )
    if ref.node_id is not None:
        parse_node_id(ref.node_id, device=device, where=where)
    else:
        parse_browse_path(ref.browse_path or (), device=device, where=where)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """Node ids found for references, and why the others were not found."""

    found: dict[OpcUaNodeRef, ua.NodeId]
    missing: dict[OpcUaNodeRef, str]


def _namespace_index(namespaces: Sequence[str], uri: str) -> int | None:
    try:
        return list(namespaces).index(uri)
    except ValueError:
        return None


async def resolve_nodes(
    client: Client, refs: Iterable[OpcUaNodeRef], namespaces: Sequence[str]
) -> Resolution:
    """Resolve references with one TranslateBrowsePathsToNodeIds call.

    ``namespaces`` is the server's NamespaceArray read on this connection.
    References whose namespace the server lacks, or whose browse path
    matches no node, are listed in ``missing`` with the reason.
    """
    found: dict[OpcUaNodeRef, ua.NodeId] = {}
    missing: dict[OpcUaNodeRef, str] = {}
    paths: list[tuple[OpcUaNodeRef, ua.BrowsePath]] = []

    for ref in dict.fromkeys(refs):
        if ref.node_id is not None:
            parsed = parse_node_id(ref.node_id, device="", where="")
            index = _namespace_index(namespaces, parsed.namespace_uri)
            if index is None:
                missing[ref] = f"namespace {parsed.namespace_uri!r} not on server"
                continue
            found[ref] = ua.NodeId.from_string(f"ns={index};{parsed.identifier}")
            continue
        browse_path, reason = _browse_path(ref, namespaces)
        if browse_path is None:
            missing[ref] = reason
        else:
            paths.append((ref, browse_path))

    if paths:
        results = await client.uaclient.translate_browsepaths_to_nodeids(
            [path for _, path in paths]
        )
        for (ref, _), result in zip(paths, results, strict=True):
            if not result.StatusCode.is_good() or not result.Targets:
                missing[ref] = f"browse path not found ({result.StatusCode.name})"
                continue
            target = result.Targets[0].TargetId
            found[ref] = ua.NodeId(
                target.Identifier, target.NamespaceIndex, target.NodeIdType
            )
    return Resolution(found=found, missing=missing)


def _browse_path(
    ref: OpcUaNodeRef, namespaces: Sequence[str]
) -> tuple[ua.BrowsePath | None, str]:
    elements = []
    for part in parse_browse_path(ref.browse_path or (), device="", where=""):
        index = _namespace_index(namespaces, part.namespace_uri)
        if index is None:
            return None, f"namespace {part.namespace_uri!r} not on server"
        elements.append(
            ua.RelativePathElement(
                ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                IsInverse=False,
                IncludeSubtypes=True,
                TargetName=ua.QualifiedName(part.name, index),
            )
        )
    path = ua.BrowsePath(
        StartingNode=ua.NodeId(ua.ObjectIds.ObjectsFolder),
        RelativePath=ua.RelativePath(Elements=elements),
    )
    return path, ""
