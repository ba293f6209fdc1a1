"""The Let's Encrypt component on pyinfra's fake connector: the files it writes are complete shell scripts
with the domain quoted (a template variable missing at merge time once broke every issuance)."""

from __future__ import annotations

import subprocess

from ollastack.config import parse_stack
from ollastack.deploy.nginx import RELOAD
from ollastack.hostdata import host_data
from tests.unit.test_gpu_fake import LINUX, converge
from tests.unit.test_ollama_env import uploads  # noqa: F401 (fixture: what the deploy uploads)

HOOK = "/etc/letsencrypt/renewal-hooks/deploy/ollastack-nginx"


def letsencrypt():
    from ollastack.deploy.certbot import letsencrypt as component
    component()


def test_deploy_hook_is_a_complete_script_naming_the_lineage(tmp_path, uploads):  # noqa: F811
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-ed25519 AAAA test\n")
    private.write_text("key\n")
    stack = parse_stack({"stack": {"name": "letest", "provider": "static"}, "static": {"hosts": ["192.0.2.10"]},
                         "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
                         "openwebui": {"install": "none"},
                         "tls": {"mode": "letsencrypt", "domain": "chat.example.com", "email": "ops@example.com",
                                 "check_dns": False}})
    changed, commands = converge(LINUX, deploy=letsencrypt, **host_data(stack))
    hook = uploads[HOOK]
    assert subprocess.run(["sh", "-n"], input=hook, text=True).returncode == 0
    assert "live=/etc/letsencrypt/live/chat.example.com\n" in hook
    # The converge's own reload, which returns only once nginx serves the new certificate.
    assert hook.rstrip().endswith("\nnginx -t -q\n# Returns once nginx's new workers serve the new certificate "
                                  f"(deploy/nginx.py, RELOAD).\n{RELOAD}")
    assert any(c.startswith("/usr/local/lib/ollastack/certbot-issue.py chat.example.com ops@example.com ")
               for c in commands), commands
