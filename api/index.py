"""Vercel entry point: the WSGI app, created without any I/O."""

import os
import sys

# Vercel installs the project's requirements but runs this file from the repository root.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from nazzil.app import create_app  # noqa: E402

app = create_app()
