"""Local stack: moto in server mode plus an API Gateway (REST) emulator driven by template.yaml.

Run it with ``python -m local`` (``make serve``); tests use :class:`local.stack.LocalStack`.
What is and is not reproduced is described in ``docs/local-stack.md``.
"""
