"""Text for systemd unit files and environment files: the one escaping helper every drop-in uses.

Example::

    files.template(..., environment={k: systemd_quoted(v) for k, v in env.items()})
    # templates: Environment="{{ key }}={{ value }}"
"""

from __future__ import annotations

from ollastack.config import control_characters


def systemd_quoted(value: str, specifiers: bool = True) -> str:
    """Escape ``value`` for a double-quoted systemd string (``Environment="KEY=..."``).

    ``\\`` and ``"`` get a backslash; with ``specifiers`` (unit files) ``%`` is doubled, since it starts a
    specifier there (environment files have none). Control characters are refused, not escaped: a
    newline would end the line and start a directive of its own (``ExecStartPre=+...``).

    Example: ``systemd_quoted('50% "off" \\\\ on') == '50%% \\\\"off\\\\" \\\\\\\\ on'``
    """
    if found := control_characters(value):
        raise ValueError(f"control characters ({', '.join(found)}) cannot go into a systemd unit: {value!r}")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return escaped.replace("%", "%%") if specifiers else escaped
