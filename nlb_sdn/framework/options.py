"""The manager's OpenFlow listener options (``--ofp-listen-host``, ports, TLS files), set from the config file.

The manager parses its command line before it makes the apps, and its OpenFlow server reads the options only when
it starts, after every app was made. So the classifier sets the config's values as the options' *defaults* in its
``__init__``: an option given on the manager's command line still wins, and a bare ``osken-manager`` run with
``NLB_SDN_CONFIG`` listens where the config says, as ``nlb-sdn controller`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from nlb_sdn.framework.api import import_framework_module


@dataclass(frozen=True)
class ListenerOptions:
    """Where and how the manager's OpenFlow server listens: TCP, or TLS only when ``cert``, ``key`` are set."""

    listen_host: str
    port: int
    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    @property
    def tls(self) -> bool:
        """Whether the listener speaks TLS (switch certificates checked against ``ca``)."""
        return self.cert is not None and self.key is not None

    def defaults(self) -> dict[str, object]:
        """The manager option defaults (oslo names) these settings map to."""
        return {
            "ofp_listen_host": self.listen_host,
            "ofp_tcp_listen_port": None if self.tls else self.port,
            "ofp_ssl_listen_port": self.port if self.tls else None,
            "ctl_privkey": self.key,
            "ctl_cert": self.cert,
            "ca_certs": self.ca,
        }


def set_listener_defaults(options: ListenerOptions) -> dict[str, object]:
    """Make ``options`` the defaults of the manager's listener options; the values now in effect, by option name."""
    import_framework_module("controller.controller")  # registers the options
    conf = import_framework_module("cfg").CONF
    for name, value in options.defaults().items():
        conf.set_default(name, value)
    return {name: getattr(conf, name) for name in options.defaults()}
