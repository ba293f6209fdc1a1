"""Stand-ins for what cannot exist on this machine (no Ollama release can be downloaded here).

``ollama_standin.py`` plays the ``ollama`` binary; ``build_archive.build_archive`` packages it in the
real release layout so deploys install it exactly as they would install a real release.
"""
