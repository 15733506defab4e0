"""The REST surface as the descriptor set declares it: one HttpBinding per google.api.http rule."""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

__all__ = ["HttpBinding", "http_bindings", "path_template_segments", "path_template_variables", "service_names"]

API_PACKAGE = "crm_hub.v1"
_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
_SEGMENT_VARIABLE = re.compile(r"^\{[^}=]+(?:=([^}]*))?\}$")


@dataclass(frozen=True)
class HttpBinding:
    """One REST route: ``verb path`` → ``service/method``, with the request field the body binds to."""

    service: str  # full name, e.g. crm_hub.v1.SyncService
    method: str  # e.g. SyncLead
    verb: str  # GET, POST, PUT, PATCH, DELETE (or a custom verb)
    path: str  # the rule's path template, e.g. /crm/sync/lead/{lead_id}
    body: str  # "", "*" or a request field name
    input_type: str  # full name without the leading dot
    output_type: str
    comment: str = ""
    #: The RPC answers with a stream of messages: over REST, one JSON object a line.
    server_streaming: bool = False

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method}"

    @property
    def path_variables(self) -> list[str]:
        return path_template_variables(self.path)


def path_template_variables(path: str) -> list[str]:
    """Field paths bound by a path template: ``/a/{kind}/b/{x.y=*}`` → ``["kind", "x.y"]``."""
    return _VARIABLE.findall(path)


def path_template_segments(path: str) -> list[str]:
    """A path template as segments to match a request path against, the way the transcoder does.

    A literal segment stays itself; ``{var}``, ``{var=*}`` and ``*`` become ``"*"`` (any one segment);
    ``{var=**}`` and ``**`` become ``"**"`` (the rest of the path, last only):
    ``/leads/{lead_id}/timeline`` → ``["leads", "*", "timeline"]``. ValueError for what the gateway's
    matcher does not know (multi-segment variables such as ``{name=shelves/*}``, custom verbs).
    """
    if not path.startswith("/") or ":" in path.rsplit("/", 1)[-1].split("}")[-1]:
        raise ValueError(f"unsupported path template {path!r}: it must start with / and have no custom verb")
    segments = []
    for part in path[1:].split("/"):
        variable = _SEGMENT_VARIABLE.match(part)
        pattern = (variable.group(1) or "*") if variable else part
        if pattern in ("*", "**"):
            segments.append(pattern)
        elif variable or "{" in part or "*" in part:
            raise ValueError(f"unsupported path template {path!r}: segment {part!r}")
        else:
            segments.append(part)
    if "**" in segments[:-1]:
        raise ValueError(f"unsupported path template {path!r}: ** must be the last segment")
    return segments


def _http_rule(method: descriptor_pb2.MethodDescriptorProto) -> tuple[str, str, str] | None:
    from google.api import annotations_pb2, http_pb2

    # Re-parse so the google.api.http extension is read even if the set was parsed before it was registered.
    options = descriptor_pb2.MethodOptions.FromString(method.options.SerializeToString())
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        return None
    if pattern == "custom":
        return rule.custom.kind.upper(), rule.custom.path, rule.body
    return pattern.upper(), str(getattr(rule, pattern)), rule.body


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(location.path): location.leading_comments.strip()
        for location in file.source_code_info.location
        if location.leading_comments
    }


def http_bindings(files: descriptor_pb2.FileDescriptorSet, package: str = API_PACKAGE) -> list[HttpBinding]:
    """Every google.api.http rule of ``package``'s services, in declaration order."""
    bindings = []
    for file in files.file:
        if file.package != package:
            continue
        comments = _comments(file)
        for service_index, service in enumerate(file.service):
            for method_index, method in enumerate(service.method):
                rule = _http_rule(method)
                if rule is None:
                    continue
                verb, path, body = rule
                # FileDescriptorProto.service = 6, ServiceDescriptorProto.method = 2
                comment = comments.get((6, service_index, 2, method_index), "")
                bindings.append(
                    HttpBinding(
                        service=f"{file.package}.{service.name}",
                        method=method.name,
                        verb=verb,
                        path=path,
                        body=body,
                        input_type=method.input_type.lstrip("."),
                        output_type=method.output_type.lstrip("."),
                        comment=comment,
                        server_streaming=method.server_streaming,
                    )
                )
    return bindings


def service_names(files: descriptor_pb2.FileDescriptorSet, package: str = API_PACKAGE) -> list[str]:
    """Full names of ``package``'s services: what the transcoder serves."""
    return [
        f"{file.package}.{service.name}" for file in files.file if file.package == package for service in file.service
    ]
