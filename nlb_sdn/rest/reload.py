"""``POST /v1/config/reload``: where the reload takes the VIPs from (``?vips=`` or the body ``{"vips": ...}``) and
what its failures answer."""

from __future__ import annotations

from webob import Request

from nlb_sdn.config import ConfigError
from nlb_sdn.config.reload import VipsSource
from nlb_sdn.rest.body import read_json_object
from nlb_sdn.rest.errors import HttpError
from nlb_sdn.rest.views import one_of

RELOAD_PARAMS = ("vips",)
"""The query parameters of ``POST /v1/config/reload``."""


def reload_source(request: Request) -> VipsSource:
    """The ``vips`` choice of a reload request, from the query or an optional JSON body (not both); 400 otherwise."""
    for key in request.GET:
        if key not in RELOAD_PARAMS:
            raise HttpError(400, "invalid", f"{key}: unknown query parameter")
    choices = tuple(str(source) for source in VipsSource)
    chosen = one_of(request, "vips", choices)
    if request.content_length:
        body = read_json_object(request)
        unknown = sorted(set(body) - set(RELOAD_PARAMS))
        if unknown:
            raise HttpError(400, "invalid", f"{unknown[0]}: unknown key")
        value = body.get("vips", chosen)
        if value not in choices:
            raise HttpError(400, "invalid", f"vips: {value!r} is not one of {', '.join(choices)}")
        if chosen not in (None, value):
            raise HttpError(400, "invalid", "vips: the query and the body disagree")
        chosen = value
    return VipsSource(chosen or VipsSource.STORE)


def reload_refused(exc: ConfigError) -> HttpError:
    """A 400 ``invalid`` listing every problem of the config file, one ``FILE[:LINE:COLUMN]: KEY: REASON`` a line."""
    return HttpError(400, "invalid", f"the config file was not reloaded, nothing changed:\n{exc}")
