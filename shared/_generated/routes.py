"""The routes each API key scope opens: (method, path pattern under the stage).

GENERATED: do not edit. Generator: tools/make_routes.py; source: the Api events of
template.yaml and the scopes each function requires (tools/make_routes.py).
"""

SCOPE_ROUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "store": (
        ("POST", "o3-dpacs-wado/stowRsListener/*"),
        ("GET", "o3-dpacs-wado/stowRsListener/*"),
        ("POST", "o3-dpacs-wado/rs/studies"),
        ("POST", "o3-dpacs-wado/rs/studies/*"),
    ),
    "read": (
        ("GET", "o3-dpacs-wado/qido/*"),
        ("GET", "o3-dpacs-wado/rs/*"),
        ("GET", "o3-dpacs-wado/changefeed"),
        ("GET", "o3-dpacs-wado/changefeed/*"),
        ("GET", "o3-dpacs-wado/wado"),
        ("GET", "o3-dpacs-wado/wado/*"),
    ),
    "admin": (
        ("DELETE", "o3-dpacs-wado/rs/studies/*"),
        ("POST", "o3-dpacs-wado/rs/restore/studies/*"),
        ("POST", "o3-dpacs-wado/rs/restore/studies/*/series/*"),
        ("POST", "o3-dpacs-wado/rs/restore/studies/*/series/*/instances/*"),
        ("POST", "o3-dpacs-wado/rs/studies/$bulkUpdate"),
        ("GET", "o3-dpacs-wado/iocm/rejected"),
        ("GET", "o3-dpacs-wado/iocm/rejected/*"),
        ("GET", "o3-dpacs-wado/operations/*"),
        ("GET", "o3-dpacs-wado/versions/studies/*"),
        ("GET", "o3-dpacs-wado/stowRsListener/*/uploads"),
    ),
    "read-deidentified": (
        ("GET", "o3-dpacs-wado/qido/*"),
        ("GET", "o3-dpacs-wado/rs/*"),
        ("GET", "o3-dpacs-wado/changefeed"),
        ("GET", "o3-dpacs-wado/changefeed/*"),
        ("GET", "o3-dpacs-wado/wado"),
        ("GET", "o3-dpacs-wado/wado/*"),
    ),
}

#: Routes a scope's patterns open that are another scope's: denied unless the key has
#: a scope that owns them.
SCOPE_DENIES: dict[str, tuple[tuple[str, str], ...]] = {
    "store": (
        ("POST", "o3-dpacs-wado/rs/studies/$bulkUpdate"),
    ),
    "read": (),
    "admin": (),
    "read-deidentified": (),
}
