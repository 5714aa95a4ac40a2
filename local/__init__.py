"""Local stack: the handlers of template.yaml behind an emulated API Gateway, over local
storage (files and SQLite) or moto.

The parts: :mod:`local.server` (HTTP/1.1), :mod:`local.api_gateway` (routing, authorizers,
usage plans, proxy events, gateway responses), :mod:`local.lambda_runtime` (the functions,
in containers), all read from template.yaml by :mod:`local.template`; :mod:`local.stack`
wires them. Run it with ``dicomweb-serve`` (``make serve``); tests use
:class:`local.stack.LocalStack`. What is and is not reproduced: ``docs/local-stack.md``.
"""
