"""Where a stack's state and certificates live, and the lock that keeps two commands off one stack.

The CLI runs as a real child process from a directory other than the stack file's, as a user
would run it inside their own git repository.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.repo import REPO

ROOT = REPO
OVERRIDES = ("OLLASTACK_STATE_DIR", "OLLASTACK_SSL_DIR", "OLLASTACK_CONFIG", "OLLASTACK_LOCK_FD")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's git repository holding a static stack description (hosts are never contacted here)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-ed25519 AAAA test\n")
    private.write_text("not used\n")
    (repo / "stack.toml").write_text(
        f'[stack]\nname = "demo"\nprovider = "static"\n[static]\nhosts = ["127.0.0.1"]\n'
        f'[access]\nssh_public_key = "{public}"\nssh_private_key = "{private}"\n')
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


def cli(*args: str, cwd: Path, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    return subprocess.run([sys.executable, "-m", "ollastack.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=120, **kwargs)


def test_secrets_follow_the_stack_file_and_stay_out_of_git(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli("--config", str(project / "stack.toml"), "admin-password", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    password_file = project / ".ollastack" / "state" / "demo.openwebui-admin-password"
    assert password_file.read_text().strip() == result.stdout.strip()
    assert list(elsewhere.iterdir()) == []
    # The CA and keys a converge writes land beside the stack file too, resolved in a pyinfra-like child.
    child = ("from ollastack import certs; d = certs.ssl_dir('demo'); certs.ensure_server_cert(d, 'demo-1', "
             "['127.0.0.1']); print(d)")
    made = subprocess.run([sys.executable, "-c", child], cwd=elsewhere, capture_output=True, text=True, check=True,
                          env={**{k: v for k, v in os.environ.items() if k not in OVERRIDES},
                               "PYTHONPATH": str(ROOT), "OLLASTACK_CONFIG": str(project / "stack.toml")})
    assert Path(made.stdout.strip()) == project / "ssl" / "demo"
    for directory in (project / ".ollastack", project / ".ollastack" / "state", project / "ssl", project / "ssl" / "demo"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    for secret in (password_file, project / "ssl" / "demo" / "ca-key.pem", project / "ssl" / "demo" / "demo-1-key.pem"):
        assert secret.stat().st_mode & 0o777 == 0o600, secret
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=project, capture_output=True, text=True,
                            check=True).stdout.split()
    assert staged == ["stack.toml"]


def test_environment_overrides_still_win(project, tmp_path):
    state, ssl = tmp_path / "state", tmp_path / "ssl"
    env = {"OLLASTACK_STATE_DIR": str(state), "OLLASTACK_SSL_DIR": str(ssl)}
    result = cli("--config", str(project / "stack.toml"), "admin-password", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (state / "demo.openwebui-admin-password").exists() and (state / ".gitignore").read_text().endswith("*\n")
    assert not (project / ".ollastack").exists()


def _wait_for_lock(path: Path, pid: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not (path.exists() and path.read_text().strip() == str(pid)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first `up` never took the lock"
        time.sleep(0.1)


def test_second_up_of_a_running_stack_fails_at_once_and_other_stacks_go_on(project, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "stack.toml").write_text((project / "stack.toml").read_text().replace('name = "demo"', 'name = "other"'))
    # A real `up` that holds the lock while it waits for SSH on a host that never lets it in.
    clean = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    first = subprocess.Popen([sys.executable, "-m", "ollastack.cli", "--config", str(project / "stack.toml"), "up"],
                             cwd=tmp_path, env={**clean, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_lock(project / ".ollastack" / "state" / "demo.lock", first.pid, first)
        second = cli("--config", str(project / "stack.toml"), "up", cwd=tmp_path)
        assert second.returncode == 1
        assert second.stderr.splitlines() == [f"error: another ollastack up/down of stack demo is running (pid {first.pid})"]
        down = cli("--config", str(project / "stack.toml"), "down", "--yes", cwd=tmp_path)
        assert down.returncode == 1 and "stack demo is running" in down.stderr
        # A plain pyinfra converge of the same stack is refused too.
        converge = subprocess.run([sys.executable, "-m", "pyinfra", "inventories/static.py", "debug-inventory"],
                                  cwd=ROOT, capture_output=True, text=True, timeout=120,
                                  env={**clean, "PYTHONPATH": str(ROOT), "OLLASTACK_CONFIG": str(project / "stack.toml")})
        assert converge.returncode == 1
        assert converge.stderr.splitlines()[-1] == f"error: another ollastack up/down of stack demo is running (pid {first.pid})"
        elsewhere = cli("--config", str(other / "stack.toml"), "down", "--yes", cwd=tmp_path)
        assert elsewhere.returncode == 0, elsewhere.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    after = cli("--config", str(project / "stack.toml"), "down", "--yes", cwd=tmp_path)
    assert after.returncode == 0, after.stderr
