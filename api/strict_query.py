"""Unknown query parameters are a 400 naming them, on every route: a misspelt filter (``?stauts=PAUSED``) or
one this version does not know must not silently return everything."""

from __future__ import annotations

import re
import weakref
from typing import Any

from litestar import Request
from litestar.handlers import HTTPRouteHandler

from shared.errors import FieldProblem, InvalidInput

_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
# Keyed by the handler object, weakly: ids are reused once an app (tests make many) is gone, and a stale entry
# would judge one route by another's parameters.
_aliases: weakref.WeakKeyDictionary[HTTPRouteHandler, dict[str, str]] = weakref.WeakKeyDictionary()
_query: weakref.WeakKeyDictionary[HTTPRouteHandler, frozenset[str]] = weakref.WeakKeyDictionary()


def parameter_aliases(handler: HTTPRouteHandler) -> dict[str, str]:
    """Python name -> wire name of the query, header and cookie parameters ``handler`` and its dependencies
    take (``page_size`` -> ``pageSize``): errors name parameters as clients send them."""
    cached = _aliases.get(handler)
    if cached is None:
        path_names = {name for path in handler.paths for name in _PATH_PARAM.findall(path)}
        model = handler.create_kwargs_model(path_parameters=dict.fromkeys(path_names))  # type: ignore[arg-type]
        params = model.expected_query_params | model.expected_header_params | model.expected_cookie_params
        cached = _aliases[handler] = {p.field_name: p.field_alias for p in params}
        _query[handler] = frozenset(p.field_alias for p in model.expected_query_params)
    return cached


def declared_query_parameters(handler: HTTPRouteHandler) -> frozenset[str]:
    """The query parameter names (as on the wire) ``handler`` and its dependencies take."""
    if handler not in _query:
        parameter_aliases(handler)
    return _query[handler]


async def reject_unknown_query(request: Request[Any, Any, Any]) -> None:
    """App-wide ``before_request`` hook (it runs after the guards, before the parameters are parsed)."""
    if not request.scope.get("query_string"):
        return
    handler = request.route_handler
    if not isinstance(handler, HTTPRouteHandler) or request.url.path.startswith("/schema"):
        return
    allowed = declared_query_parameters(handler)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise InvalidInput(
            [FieldProblem(name, f"unknown query parameter (this route takes: {expected})") for name in unknown]
        )
