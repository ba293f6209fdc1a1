"""Every component's plan-time checks, run first so a converge stops before its first operation.

A cause that is knowable before the converge (a firewall that would lock this SSH session out, an
unsupported release, a GPU host that cannot get a driver, the pip route without its Python, a missing
certificate) stops every host's run with a ``DeployError`` before anything on any host changed.
The checks are ``deploy.guards.plan_check`` functions, so the components' own calls reuse their results.

Example (deploy/site.py)::

    checks()
    base()
"""

from pyinfra.api import deploy

from ollastack.deploy.certbot import refuse_without_domain
from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.firewall import refuse_lockout
from ollastack.deploy.nvidia import usable_gpu
from ollastack.deploy.openwebui import refuse_pip_without_python
from ollastack.deploy.release import host_release
from ollastack.deploy.tls import certificate_to_upload


@deploy("Checks", data_defaults=DEFAULTS)
def checks():
    host_release()
    refuse_lockout()
    usable_gpu()
    refuse_pip_without_python()
    certificate_to_upload()
    refuse_without_domain()
