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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from asyncua import Client, ua
from asyncua.ua.uaerrors import UaStatusCodeError

from drivers.errors import DriverConfigError
from drivers.spec import OpcUaNodeRef

_NSU_NODE_ID = re.compile(r"^nsu=(?P<uri>[^;]+);(?P<kind>[sigb])=(?P<ident>.+)$")
_NS0_NODE_ID = re.compile(r"^(?:ns=0;)?(?P<kind>[sigb])=(?P<ident>.+)$")
_INDEXED_NODE_ID = re.compile(r"^ns=(?P<index>\d+);")
_BROWSE_ELEMENT = re.compile(r"^(?:\{(?P<uri>[^{}]+)\})?(?P<name>[^{}]+)$")

STANDARD_NAMESPACE_URI = "http://opcfoundation.org/UA/"

_MAX_NAMES_SHOWN: Final = 10
"""Child nodes or namespace URIs named in a message before "and N more"."""


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
    """Resolve references to the node ids of the current connection.

    ``namespaces`` is the server's NamespaceArray read on this connection.
    Browse paths take one TranslateBrowsePathsToNodeIds call. References
    whose namespace the server lacks, or whose browse path matches no
    node, are listed in ``missing`` with the reason. For an unmatched path
    the reason names the deepest element found and the nodes under it,
    which costs two more requests.
    """
    found: dict[OpcUaNodeRef, ua.NodeId] = {}
    missing: dict[OpcUaNodeRef, str] = {}
    paths: list[tuple[OpcUaNodeRef, list[ua.RelativePathElement]]] = []

    for ref in dict.fromkeys(refs):
        if ref.node_id is not None:
            parsed = parse_node_id(ref.node_id, device="", where="")
            index = _namespace_index(namespaces, parsed.namespace_uri)
            if index is None:
                missing[ref] = _missing_namespace(parsed.namespace_uri, namespaces)
                continue
            found[ref] = ua.NodeId.from_string(f"ns={index};{parsed.identifier}")
            continue
        elements, reason = _path_elements(ref, namespaces)
        if elements is None:
            missing[ref] = reason
        else:
            paths.append((ref, elements))

    unmatched: list[tuple[OpcUaNodeRef, list[ua.RelativePathElement], str]] = []
    if paths:
        results = await client.uaclient.translate_browsepaths_to_nodeids(
            [_browse_path(elements) for _, elements in paths]
        )
        for (ref, elements), result in zip(paths, results, strict=True):
            target = _first_target(result)
            if target is None:
                unmatched.append((ref, elements, result.StatusCode.name))
            else:
                found[ref] = target
    if unmatched:
        missing.update(await _explain_unmatched(client, unmatched, namespaces))
    return Resolution(found=found, missing=missing)


def summarize_missing(missing: Mapping[OpcUaNodeRef, str]) -> str:
    """Join the reasons of missing references, one clause per reason.

    References with the same reason, such as every path under a wrong
    browse root, share a clause that names the first of them.
    """
    groups: dict[str, list[OpcUaNodeRef]] = {}
    for ref, reason in missing.items():
        groups.setdefault(reason, []).append(ref)

    clauses = []
    for reason, refs in groups.items():
        first = refs[0].describe()
        if len(refs) > 1:
            first += f" and {len(refs) - 1} more"
        clauses.append(f"{first}: {reason}")
    return "; ".join(clauses)


def _missing_namespace(uri: str, namespaces: Sequence[str]) -> str:
    uris = _name_list([repr(n) for n in namespaces], truncated=False)
    return f"namespace {uri!r} not on server, whose NamespaceArray is [{uris}]"


def _name_list(names: Sequence[str], *, truncated: bool) -> str:
    """Join up to ``_MAX_NAMES_SHOWN`` names and count the others.

    ``truncated`` is true when the server sent only some of the names.
    """
    joined = ", ".join(names[:_MAX_NAMES_SHOWN])
    hidden = len(names) - _MAX_NAMES_SHOWN
    if truncated:
        return f"{joined} and more"
    if hidden > 0:
        return f"{joined} and {hidden} more"
    return joined


def _path_elements(
    ref: OpcUaNodeRef, namespaces: Sequence[str]
) -> tuple[list[ua.RelativePathElement] | None, str]:
    elements = []
    for part in parse_browse_path(ref.browse_path or (), device="", where=""):
        index = _namespace_index(namespaces, part.namespace_uri)
        if index is None:
            return None, _missing_namespace(part.namespace_uri, namespaces)
        elements.append(
            ua.RelativePathElement(
                ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                IsInverse=False,
                IncludeSubtypes=True,
                TargetName=ua.QualifiedName(part.name, index),
            )
        )
    return elements, ""


def _browse_path(elements: Sequence[ua.RelativePathElement]) -> ua.BrowsePath:
    return ua.BrowsePath(
        StartingNode=ua.NodeId(ua.ObjectIds.ObjectsFolder),
        RelativePath=ua.RelativePath(Elements=list(elements)),
    )


def _first_target(result: ua.BrowsePathResult) -> ua.NodeId | None:
    if not result.StatusCode.is_good() or not result.Targets:
        return None
    target = result.Targets[0].TargetId
    return ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)


async def _explain_unmatched(
    client: Client,
    unmatched: Sequence[tuple[OpcUaNodeRef, list[ua.RelativePathElement], str]],
    namespaces: Sequence[str],
) -> dict[OpcUaNodeRef, str]:
    """Return a reason per unmatched path that names its deepest node found.

    One TranslateBrowsePathsToNodeIds call tries every shorter prefix of
    the paths, and one Browse call lists the nodes under each deepest
    element. A server that rejects either call gets the plain reason.
    """
    plain = {ref: f"browse path not found ({status})" for ref, _, status in unmatched}
    prefixes: dict[tuple[str, ...], list[ua.RelativePathElement]] = {}
    for ref, elements, _ in unmatched:
        configured = ref.browse_path or ()
        for length in range(1, len(elements)):
            prefixes[configured[:length]] = elements[:length]

    try:
        parents = await _resolve_prefixes(client, prefixes)
        children = await _browse_names(client, set(parents.values()), namespaces)
    except UaStatusCodeError:
        return plain

    reasons = {}
    for ref, _, _ in unmatched:
        prefix, parent = _deepest_found(ref.browse_path or (), parents)
        if prefix:
            where = f"the deepest element found is /{'/'.join(prefix)}"
        else:
            where = "its first element is not in the Objects folder"
        reasons[ref] = f"{plain[ref]}; {where}, which {children[parent]}"
    return reasons


async def _resolve_prefixes(
    client: Client, prefixes: Mapping[tuple[str, ...], list[ua.RelativePathElement]]
) -> dict[tuple[str, ...], ua.NodeId]:
    """Return the node of each prefix found, and the Objects folder for ()."""
    found: dict[tuple[str, ...], ua.NodeId] = {
        (): ua.NodeId(ua.ObjectIds.ObjectsFolder)
    }
    if not prefixes:
        return found
    results = await client.uaclient.translate_browsepaths_to_nodeids(
        [_browse_path(elements) for elements in prefixes.values()]
    )
    for prefix, result in zip(prefixes, results, strict=True):
        target = _first_target(result)
        if target is not None:
            found[prefix] = target
    return found


def _deepest_found(
    path: Sequence[str], parents: Mapping[tuple[str, ...], ua.NodeId]
) -> tuple[tuple[str, ...], ua.NodeId]:
    for length in range(len(path) - 1, 0, -1):
        prefix = tuple(path[:length])
        if prefix in parents:
            return prefix, parents[prefix]
    return (), parents[()]


async def _browse_names(
    client: Client, nodes: Iterable[ua.NodeId], namespaces: Sequence[str]
) -> dict[ua.NodeId, str]:
    """Return a phrase per node that lists its children as path elements."""
    node_list = list(nodes)
    params = ua.BrowseParameters()
    params.RequestedMaxReferencesPerNode = _MAX_NAMES_SHOWN
    params.NodesToBrowse = [
        ua.BrowseDescription(
            NodeId=node,
            BrowseDirection=ua.BrowseDirection.Forward,
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
            IncludeSubtypes=True,
            ResultMask=ua.BrowseResultMask.BrowseName,
        )
        for node in node_list
    ]
    results = await client.uaclient.browse(params)
    await _release_continuation_points(client, results)

    described = {}
    for node, result in zip(node_list, results, strict=True):
        names = [
            _element_text(reference.BrowseName, namespaces)
            for reference in result.References
        ]
        if not result.StatusCode.is_good():
            described[node] = f"cannot be browsed ({result.StatusCode.name})"
        elif not names:
            described[node] = "is empty"
        else:
            truncated = bool(result.ContinuationPoint)
            described[node] = f"contains {_name_list(names, truncated=truncated)}"
    return described


async def _release_continuation_points(
    client: Client, results: Sequence[ua.BrowseResult]
) -> None:
    # A server keeps a continuation point for each truncated result until
    # the session ends or the client releases it.
    # NOTE: untested, because the asyncua 2.1 server used by the tests
    # ignores RequestedMaxReferencesPerNode and returns every reference.
    points = [r.ContinuationPoint for r in results if r.ContinuationPoint]
    if points:
        params = ua.BrowseNextParameters(
            ReleaseContinuationPoints=True, ContinuationPoints=points
        )
        await client.uaclient.browse_next(params)


def _element_text(name: ua.QualifiedName, namespaces: Sequence[str]) -> str:
    """Write a browse name the way configuration writes a path element."""
    if name.NamespaceIndex == 0:
        return str(name.Name)
    if name.NamespaceIndex < len(namespaces):
        return f"{{{namespaces[name.NamespaceIndex]}}}{name.Name}"
    return f"{{ns={name.NamespaceIndex}}}{name.Name}"
